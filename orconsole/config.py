"""Site configuration: every tolerance, margin and bound the core uses, loaded from a TOML file.

Safe defaults for the 20 Gy single-fraction trial; a site may tighten them in its file. Never
bury a tolerance as a constant in code: add it here, with a unit in its name and a range check.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """The configuration file cannot be used. The message names the file, line and field."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.field = field


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)  # "0.03" is not 0.03


class PrescriptionConfig(_Section):
    """What may be prescribed at all."""

    protocol_dose_gy: float = Field(20.0, gt=0, description="dose at the applicator surface the trial prescribes")
    hard_ceiling_dose_gy: float = Field(
        20.0, gt=0, le=20.0,
        description="no plan, continuation or delivered total may exceed this; the trial's 20 Gy single fraction")

    @model_validator(mode="after")
    def _protocol_within_ceiling(self) -> "PrescriptionConfig":
        if self.protocol_dose_gy > self.hard_ceiling_dose_gy:
            raise ValueError(
                f"protocol_dose_gy {self.protocol_dose_gy} Gy exceeds hard_ceiling_dose_gy "
                f"{self.hard_ceiling_dose_gy} Gy: lower the protocol dose")
        return self


class QaConfig(_Section):
    """Daily output check limits and the air-density correction convention."""

    k_out_window_fraction: float = Field(0.03, gt=0, le=0.05,
                                         description="|k_out - 1| above this: no treatment")
    k_out_warning_fraction: float = Field(0.02, gt=0, le=0.05,
                                          description="|k_out - 1| above this: warning to acknowledge")
    k_tp_reference_temperature_c: float = Field(20.0, ge=15.0, le=25.0,
                                                description="T0 of k_TP: 20 (PTW/Europe) or 22 (US)")
    k_tp_reference_pressure_kpa: float = Field(101.325, gt=90.0, lt=110.0)
    # the guided output check
    readings_per_series: int = Field(3, ge=2, le=20, description="readings averaged in one series")
    spread_limit_fraction: float = Field(0.005, gt=0, le=0.02,
                                         description="(max - min) / mean of a series; above it the series is repeated")
    max_series: int = Field(2, ge=1, le=5, description="a too-wide spread repeats the series up to this count")
    temperature_min_c: float = Field(10.0, ge=0.0, le=50.0, description="entered room temperature plausibility")
    temperature_max_c: float = Field(40.0, ge=0.0, le=50.0)
    pressure_min_kpa: float = Field(70.0, ge=50.0, le=120.0, description="entered air pressure plausibility")
    pressure_max_kpa: float = Field(110.0, ge=50.0, le=120.0)
    chamber_hv_v: float = Field(300.0, ge=-400.0, le=400.0, description="the chamber's nominal polarising voltage")
    chamber_hv_tolerance_v: float = Field(2.0, gt=0, le=20.0)
    hv_settle_timeout_s: float = Field(15.0, gt=0, le=120.0,
                                       description="time for the electrometer's HV to reach the setpoint")
    measurement_range: str = Field("LOW", pattern="^(VERY_LOW|LOW|MEDIUM|HIGH)$",
                                   description="electrometer range: VERY_LOW, LOW, MEDIUM or HIGH")
    zero_timeout_s: float = Field(900.0, gt=0, le=3600.0, description="warm-up plus zero correction within this")
    xrs_ready_timeout_s: float = Field(600.0, gt=0, le=3600.0, description="the X-ray unit's warm-up within this")
    beam_settle_timeout_s: float = Field(30.0, gt=0, le=120.0, description="ramp up / ramp down within this")
    backup_time_margin_fraction: float = Field(0.10, gt=0, le=0.5,
                                               description="QA exposure backup timer = exposure x (1 + this) + 1 s")
    poll_period_s: float = Field(0.05, gt=0, le=0.2, description="status polling during a QA exposure")
    # isotropy, mechanics, calibration, signatures
    isotropy_tolerance_fraction: float = Field(0.03, gt=0, le=0.10, description="per direction, vs the baseline")
    straightness_tolerance_mm: float = Field(0.2, gt=0, le=1.0)
    centering_tolerance_mm: float = Field(0.2, gt=0, le=1.0)
    calibration_max_validity_days: int = Field(366, ge=1, le=366,
                                               description="a calibration is never used longer than this")
    require_signature_for_treatment: bool = Field(
        True, description="a pass or warning counts for treatment only once a physicist signed it")

    @model_validator(mode="after")
    def _warning_inside_window(self) -> "QaConfig":
        if self.k_out_warning_fraction > self.k_out_window_fraction:
            raise ValueError(
                f"k_out_warning_fraction {self.k_out_warning_fraction} is wider than k_out_window_fraction "
                f"{self.k_out_window_fraction}: the warning must come before the refusal")
        if self.temperature_min_c >= self.temperature_max_c:
            raise ValueError(
                f"temperature_min_c {self.temperature_min_c} °C must be below temperature_max_c "
                f"{self.temperature_max_c} °C")
        if self.pressure_min_kpa >= self.pressure_max_kpa:
            raise ValueError(
                f"pressure_min_kpa {self.pressure_min_kpa} kPa must be below pressure_max_kpa "
                f"{self.pressure_max_kpa} kPa")
        if not self.require_signature_for_treatment:
            raise ValueError(
                "require_signature_for_treatment = false would let an unsigned output check clear a source for "
                "treatment; the trial requires the physicist's signature: delete the line")
        return self


class PlanningConfig(_Section):
    """Bounds on the calculated treatment time and the independent check."""

    independent_check_agreement_fraction: float = Field(0.02, gt=0, le=0.05)
    treatment_time_min_s: float = Field(60.0, gt=0, description="full-prescription time below this is implausible")
    treatment_time_max_s: float = Field(3600.0, gt=0, le=7200.0,
                                        description="full-prescription time above this is implausible")
    timer_resolution_s: float = Field(0.1, gt=0, le=0.1)

    @model_validator(mode="after")
    def _bounds_ordered(self) -> "PlanningConfig":
        if self.treatment_time_min_s >= self.treatment_time_max_s:
            raise ValueError(
                f"treatment_time_min_s {self.treatment_time_min_s} s must be below treatment_time_max_s "
                f"{self.treatment_time_max_s} s")
        return self


class DeliveryConfig(_Section):
    """Beam-time tolerances, the device's own stops, and journaling."""

    nominal_kv: float = Field(50.0, gt=0, le=50.0)
    nominal_ua: float = Field(40.0, gt=0, le=40.0)
    kv_tolerance_fraction: float = Field(0.02, gt=0, le=0.10)
    ua_tolerance_fraction: float = Field(0.05, gt=0, le=0.10)
    ramp_up_s: float = Field(3.0, ge=0, le=30.0, description="after beam on, kV/µA/dose-rate checks start after this")
    dose_rate_tolerance_fraction: float = Field(0.10, gt=0, le=0.20)
    channel_agreement_fraction: float = Field(
        0.05, gt=0, le=0.10,
        description="primary (timer x rate) vs secondary (IRM) dose; assumption, to be set by the physicist")
    channel_agreement_floor_gy: float = Field(
        0.2, ge=0, le=1.0, description="absolute slack at the start of a beam, when 5 % of little is nothing")
    record_hardware_agreement_fraction: float = Field(0.005, gt=0, le=0.02,
                                                      description="recorded vs device counter")
    backup_timer_margin_fraction: float = Field(0.05, gt=0, le=0.10)
    irm_limit_margin_fraction: float = Field(0.05, gt=0, le=0.10)
    journal_progress_interval_s: float = Field(1.0, gt=0, le=1.0)


class LinkConfig(_Section):
    """Status polling, heartbeat and the device watchdog."""

    status_poll_period_s: float = Field(0.05, gt=0, le=0.05, description="≥ 20 Hz")
    link_lost_after_s: float = Field(0.5, gt=0, le=2.0)
    device_watchdog_s: float = Field(1.0, gt=0, le=5.0)

    @model_validator(mode="after")
    def _poll_faster_than_watchdog(self) -> "LinkConfig":
        if self.status_poll_period_s * 4 > self.device_watchdog_s:
            raise ValueError(
                f"status_poll_period_s {self.status_poll_period_s} s is too slow for device_watchdog_s "
                f"{self.device_watchdog_s} s: poll at least 4 times per watchdog period")
        return self


class SiteConfig(_Section):
    """The whole site configuration. `SiteConfig()` is the safe default."""

    site_name: str = "unnamed site"
    prescription: PrescriptionConfig = PrescriptionConfig()
    qa: QaConfig = QaConfig()
    planning: PlanningConfig = PlanningConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    link: LinkConfig = LinkConfig()


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def _line_of_key(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best effort: the line where the failing key is written, honouring [section] headers."""
    keys = [str(k) for k in loc if isinstance(k, str)]
    if not keys:
        return None
    section, key = keys[:-1], keys[-1]
    current: list[str] = []
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
    assign = re.compile(r"^\s*([A-Za-z0-9_\-\.\"]+)\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        m = header.match(line)
        if m:
            current = [part.strip().strip('"') for part in m.group(1).split(".")]
            if current == keys:
                return number  # the whole section failed (e.g. a cross-field check)
            continue
        m = assign.match(line)
        if m:
            dotted = current + [part.strip('"') for part in m.group(1).split(".")]
            if dotted == section + [key] or (dotted[: len(keys)] == keys):
                return number
    return None


def parse_config(text: str, *, path: Path | None = None) -> SiteConfig:
    """Parse TOML text into a SiteConfig, or raise ConfigError naming file, line and field."""
    where = str(path) if path is not None else "<configuration text>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POSITION.search(str(exc))
        line = int(m.group(1)) if m else None
        raise ConfigError(
            f"{where}, line {line if line is not None else '?'}: not valid TOML ({exc}). "
            "Fix the syntax; no configuration was loaded, so nothing changed.",
            path=path, line=line) from exc
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        field = ".".join(str(part) for part in loc) or "(top level)"
        line = _line_of_key(text, loc)
        count = exc.error_count()
        more = f" ({count - 1} further problem(s) in the same file)" if count > 1 else ""
        raise ConfigError(
            f"{where}, line {line if line is not None else '?'}, field '{field}': {first['msg']}"
            f" (value {first.get('input')!r}){more}. Correct the value or delete the line to use the "
            "safe default; no configuration was loaded.",
            path=path, line=line, field=field) from exc


def load_config(path: str | Path | None) -> SiteConfig:
    """Load the site configuration from `path`; None means the safe defaults."""
    if path is None:
        return SiteConfig()
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the configuration file ({exc.strerror or exc}). Check the path and "
            "permissions, or start without --config to use the safe defaults.", path=path) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}). Save it as UTF-8.",
                          path=path) from exc
    return parse_config(text, path=path)
