"""The physicist's daily QA, Qt-free: air-density correction k_TP, output factor k_out with its
result levels, the guided output check against the X-ray unit and the electrometer, isotropy and
mechanics checks, the QA repository, and the treatment gate built on today's results.

A wrong QA reading must never silently rescale a treatment: k_out is bounded before it leaves this
module, a fail blocks the source, a warning needs acknowledgement, and every value is refused, never
clipped. The beam is switched off at the end of every reading and on every error path.
"""
from __future__ import annotations

import hashlib
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Callable, Iterable, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.errors import DeviceError, DeviceRefused
from drivers.hal import (BeamOffCause, BeamOffReason, DoseReadout, IsotropyReading, ReadoutFlag, ReadoutIdentity, XraySource,
                         XrsIdentity, XrsState)
from orconsole.config import SiteConfig
from orconsole.models import QaOutcome, QaResult
from orconsole.qa_models import (Acknowledgement, CalibrationRecord, ChargeReading, Instruments, IsotropyBaseline,
                                 IsotropyRecord, MechanicsRecord, OutputCheckRecord, QaRecord)

P0_KPA = 101.325
KELVIN_OFFSET = 273.15
# floating-point slack when comparing a deviation with a limit (|1.02 - 1| is 0.020000000000000018)
_LIMIT_EPSILON = 1e-12


class QaInputError(ValueError):
    """A value the physicist entered cannot be used (unit unknown, implausible). Never clipped."""


class QaIncomplete(RuntimeError):
    """The output check could not be completed; no result was produced. `message` says what to do."""

    def __init__(self, message: str, *, readings: tuple[ChargeReading, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.readings = readings


# --------------------------------------------------------------------------------------------
# Policy: every limit the QA uses, with safe defaults (the site file's [qa] section wins)
# --------------------------------------------------------------------------------------------


# SiteConfig.qa fields read under the same name; the two T0/P0 fields carry a k_tp_ prefix there
_QA_FIELDS_SAME_NAME = (
    "k_out_warning_fraction", "k_out_window_fraction", "readings_per_series", "spread_limit_fraction", "max_series",
    "temperature_min_c", "temperature_max_c", "pressure_min_kpa", "pressure_max_kpa", "chamber_hv_v",
    "chamber_hv_tolerance_v", "hv_settle_timeout_s", "measurement_range", "zero_timeout_s", "xrs_ready_timeout_s",
    "beam_settle_timeout_s", "backup_time_margin_fraction", "poll_period_s", "isotropy_tolerance_fraction",
    "straightness_tolerance_mm", "centering_tolerance_mm", "calibration_max_validity_days",
    "require_signature_for_treatment")


class QaPolicy(BaseModel):
    """QA limits, read from the site file's [qa] section by `from_site` (orconsole/config.py holds the safe
    defaults, ranges and cross-checks). Constructed directly only by tests, with overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    k_out_warning_fraction: float = Field(0.02, gt=0, le=0.05)
    k_out_window_fraction: float = Field(0.03, gt=0, le=0.05)
    reference_temperature_c: float = Field(20.0, ge=15.0, le=25.0)
    reference_pressure_kpa: float = Field(P0_KPA, gt=90.0, lt=110.0)
    readings_per_series: int = Field(3, ge=2, le=20)
    spread_limit_fraction: float = Field(0.005, gt=0, le=0.02, description="(max - min) / mean of a series")
    max_series: int = Field(2, ge=1, le=5, description="a too-wide spread repeats the series up to this count")
    temperature_min_c: float = Field(10.0, ge=0.0)
    temperature_max_c: float = Field(40.0, le=50.0)
    pressure_min_kpa: float = Field(70.0, ge=50.0)
    pressure_max_kpa: float = Field(110.0, le=120.0)
    chamber_hv_v: float = Field(300.0, ge=-400.0, le=400.0, description="the chamber's nominal polarising voltage")
    chamber_hv_tolerance_v: float = Field(2.0, gt=0, le=20.0)
    hv_settle_timeout_s: float = Field(15.0, gt=0, le=120.0, description="time for the measured HV to reach the setpoint")
    measurement_range: str = Field("LOW", pattern="^(VERY_LOW|LOW|MEDIUM|HIGH)$")
    zero_timeout_s: float = Field(900.0, gt=0, description="warm-up plus zero correction must finish within this")
    xrs_ready_timeout_s: float = Field(600.0, gt=0, description="the X-ray unit's warm-up must finish within this")
    beam_settle_timeout_s: float = Field(30.0, gt=0, description="ramp up / ramp down must finish within this")
    backup_time_margin_fraction: float = Field(0.10, gt=0, le=0.5)
    poll_period_s: float = Field(0.05, gt=0, le=0.2)
    isotropy_tolerance_fraction: float = Field(0.03, gt=0, le=0.10)
    straightness_tolerance_mm: float = Field(0.2, gt=0, le=1.0)
    centering_tolerance_mm: float = Field(0.2, gt=0, le=1.0)
    calibration_max_validity_days: int = Field(366, ge=1, le=366)
    require_signature_for_treatment: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> "QaPolicy":
        if self.k_out_warning_fraction > self.k_out_window_fraction:
            raise ValueError(f"k_out_warning_fraction {self.k_out_warning_fraction} is wider than "
                             f"k_out_window_fraction {self.k_out_window_fraction}: the warning must come first")
        if self.temperature_min_c >= self.temperature_max_c or self.pressure_min_kpa >= self.pressure_max_kpa:
            raise ValueError("plausibility limits must have min below max")
        return self

    @classmethod
    def from_site(cls, site: SiteConfig | None = None, **overrides) -> "QaPolicy":
        """Every limit from the site file's [qa] section (its safe defaults where the file is silent)."""
        site = site or SiteConfig()
        values = {name: getattr(site.qa, name) for name in _QA_FIELDS_SAME_NAME}
        values.update(reference_temperature_c=site.qa.k_tp_reference_temperature_c,
                      reference_pressure_kpa=site.qa.k_tp_reference_pressure_kpa)
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Entered conditions: temperature and pressure with their units
# --------------------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+))\s*([^\d\s].*?)?\s*$")
_TEMPERATURE_UNITS = {"c": "C", "°c": "C", "degc": "C", "celsius": "C", "f": "F", "°f": "F", "degf": "F",
                      "fahrenheit": "F"}
_PRESSURE_UNITS_TO_KPA = {"kpa": 1.0, "hpa": 0.1, "mbar": 0.1, "mmhg": 0.133322387415, "torr": 0.133322387415}


def _split_quantity(text: str | float, what: str) -> tuple[float, str | None]:
    if isinstance(text, bool):
        raise QaInputError(f"{what} {text!r} is not a number")
    if isinstance(text, (int, float)):
        value, unit = float(text), None
    else:
        m = _QUANTITY.match(str(text))
        if not m:
            raise QaInputError(f"{what} {text!r} is not a number with an optional unit: enter e.g. "
                               f"{'22.5 C' if what == 'temperature' else '101.3 kPa'}")
        value = float(m.group(1).replace(",", "."))
        unit = m.group(2).strip().lower().replace(" ", "") if m.group(2) else None
    if not math.isfinite(value):
        raise QaInputError(f"{what} {text!r} is not a finite number")
    return value, unit


def parse_temperature_c(text: str | float, policy: QaPolicy | None = None) -> float:
    """Room temperature in °C from '22.5', '22.5 C', '72.5 °F'. Refused (never clipped) when the unit is
    unknown or the value is outside the plausibility limits."""
    policy = policy or QaPolicy()
    value, unit = _split_quantity(text, "temperature")
    if unit is None:
        unit_code = "C"
    elif unit in _TEMPERATURE_UNITS:
        unit_code = _TEMPERATURE_UNITS[unit]
    else:
        raise QaInputError(f"temperature unit {unit!r} in {text!r} is not known: use C or F")
    celsius = value if unit_code == "C" else (value - 32.0) * 5.0 / 9.0
    if not policy.temperature_min_c <= celsius <= policy.temperature_max_c:
        hint = " (a Fahrenheit value? mark it with F)" if unit is None and celsius > policy.temperature_max_c else ""
        raise QaInputError(
            f"temperature {text!r} = {celsius:.2f} °C is outside the plausible {policy.temperature_min_c:g}–"
            f"{policy.temperature_max_c:g} °C{hint}: read the thermometer at the chamber again and enter the value")
    return celsius


def parse_pressure_kpa(text: str | float, policy: QaPolicy | None = None) -> float:
    """Air pressure in kPa from '101.3', '101.3 kPa', '1013 hPa', '1013 mbar', '760 mmHg'. Refused (never
    clipped) when the unit is unknown or the value is outside the plausibility limits."""
    policy = policy or QaPolicy()
    value, unit = _split_quantity(text, "pressure")
    if unit is None:
        factor = 1.0
    elif unit in _PRESSURE_UNITS_TO_KPA:
        factor = _PRESSURE_UNITS_TO_KPA[unit]
    else:
        raise QaInputError(f"pressure unit {unit!r} in {text!r} is not known: use kPa, hPa, mbar or mmHg")
    kpa = value * factor
    if not policy.pressure_min_kpa <= kpa <= policy.pressure_max_kpa:
        hint = ""
        if unit is None and 500 <= value <= 1100:
            hint = " (an hPa, mbar or mmHg value? mark the unit, e.g. '1013 hPa' or '760 mmHg')"
        raise QaInputError(
            f"pressure {text!r} = {kpa:.2f} kPa is outside the plausible {policy.pressure_min_kpa:g}–"
            f"{policy.pressure_max_kpa:g} kPa{hint}: read the barometer again and enter the value with its unit")
    return kpa


# --------------------------------------------------------------------------------------------
# Formulas
# --------------------------------------------------------------------------------------------


def k_tp(temperature_c: float, pressure_kpa: float, *, reference_temperature_c: float = 20.0,
         reference_pressure_kpa: float = P0_KPA) -> float:
    """Air-density correction of a vented chamber: ((273.15 + T) / (273.15 + T0)) × (P0 / P)."""
    for name, value in (("temperature_c", temperature_c), ("pressure_kpa", pressure_kpa),
                        ("reference_temperature_c", reference_temperature_c),
                        ("reference_pressure_kpa", reference_pressure_kpa)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise QaInputError(f"{name} {value!r} is not a finite number")
    if pressure_kpa <= 0 or reference_pressure_kpa <= 0:
        raise QaInputError(f"pressure must be positive (got {pressure_kpa} kPa, reference {reference_pressure_kpa} kPa)")
    if temperature_c <= -KELVIN_OFFSET or reference_temperature_c <= -KELVIN_OFFSET:
        raise QaInputError(f"temperature {temperature_c} °C is below absolute zero")
    return ((KELVIN_OFFSET + temperature_c) / (KELVIN_OFFSET + reference_temperature_c)) * (
        reference_pressure_kpa / pressure_kpa)


def k_out(corrected_mean_c: float, reference_reading_c: float) -> float:
    """Output factor: today's corrected mean reading / the source's reference reading."""
    if not (math.isfinite(corrected_mean_c) and math.isfinite(reference_reading_c)):
        raise QaInputError("k_out needs finite readings")
    if reference_reading_c <= 0:
        raise QaInputError(f"reference reading {reference_reading_c} C is not positive: check the calibration")
    if corrected_mean_c <= 0:
        raise QaInputError(f"corrected reading {corrected_mean_c} C is not positive: no charge was collected")
    return corrected_mean_c / reference_reading_c


# The calibration format states its reference reading at 20 °C / 101.325 kPa (docs/calibration-format.md).
CALIBRATION_REFERENCE_TEMPERATURE_C = 20.0
CALIBRATION_REFERENCE_PRESSURE_KPA = P0_KPA


def reference_reading_at(reference_reading_c: float, *, reference_temperature_c: float,
                         reference_pressure_kpa: float = P0_KPA) -> float:
    """The calibration's reference reading (stated at 20 °C / 101.325 kPa) expressed at the site's T0/P0,
    so that k_out does not depend on the T0 convention the site chose (20 °C or 22 °C)."""
    return (reference_reading_c * (KELVIN_OFFSET + CALIBRATION_REFERENCE_TEMPERATURE_C)
            / (KELVIN_OFFSET + reference_temperature_c) * (reference_pressure_kpa / CALIBRATION_REFERENCE_PRESSURE_KPA))


def classify_k_out(k_out_value: float, policy: QaPolicy | None = None) -> QaOutcome:
    """pass if |k_out − 1| ≤ warning, warning if ≤ window, fail beyond (and for anything not finite)."""
    policy = policy or QaPolicy()
    if not math.isfinite(k_out_value) or k_out_value <= 0:
        return QaOutcome.FAIL
    deviation = abs(k_out_value - 1.0)
    if deviation <= policy.k_out_warning_fraction + _LIMIT_EPSILON:
        return QaOutcome.PASS
    if deviation <= policy.k_out_window_fraction + _LIMIT_EPSILON:
        return QaOutcome.WARNING
    return QaOutcome.FAIL


def spread_fraction(values: Iterable[float]) -> float:
    """(max − min) / mean of a series of readings."""
    values = list(values)
    if len(values) < 2:
        raise QaInputError("a spread needs at least two readings")
    mean = sum(values) / len(values)
    if mean <= 0:
        raise QaInputError(f"mean reading {mean} is not positive: no charge was collected")
    return (max(values) - min(values)) / mean


def outcome_message(outcome: QaOutcome, k_out_value: float, policy: QaPolicy, source_serial: str) -> str:
    pct = (k_out_value - 1.0) * 100.0
    if outcome is QaOutcome.PASS:
        return (f"PASS: k_out = {k_out_value:.4f} ({pct:+.2f} %), within ±{policy.k_out_warning_fraction * 100:.1f} %. "
                f"Sign the result; it is valid for source {source_serial} today only.")
    if outcome is QaOutcome.WARNING:
        return (f"WARNING: k_out = {k_out_value:.4f} ({pct:+.2f} %) is beyond ±{policy.k_out_warning_fraction * 100:.1f} % "
                f"but within ±{policy.k_out_window_fraction * 100:.1f} %. A physicist must acknowledge it before "
                f"treatment on source {source_serial}; check the setup (source fully inserted, T and P) first.")
    return (f"FAIL: k_out = {k_out_value:.4f} ({pct:+.2f} %) is outside ±{policy.k_out_window_fraction * 100:.1f} %. "
            f"No treatment on source {source_serial} until a new output check passes: check that the source is fully "
            f"inserted in the QA holder, the chamber, T and P, then repeat the check; if it fails again, call service.")


# --------------------------------------------------------------------------------------------
# The guided output check
# --------------------------------------------------------------------------------------------

StepListener = Callable[[str], None]

_BAD_FLAGS = {
    ReadoutFlag.OVERLOAD_CURRENT: "the electrometer overloaded (current)",
    ReadoutFlag.OVERLOAD_CHARGE: "the electrometer overloaded (charge)",
    ReadoutFlag.HV_ERROR_CURRENT: "the chamber voltage failed during the reading",
    ReadoutFlag.HV_ERROR_CHARGE: "the chamber voltage failed during the reading",
    ReadoutFlag.LOW_SIGNAL_CHARGE: "the charge was too low to be read reliably",
    ReadoutFlag.INTERNAL: "the electrometer reported an internal error",
}
_FLAG_ACTIONS = {
    ReadoutFlag.OVERLOAD_CURRENT: "select a less sensitive range (site configuration measurement_range) and repeat",
    ReadoutFlag.OVERLOAD_CHARGE: "select a less sensitive range (site configuration measurement_range) and repeat",
    ReadoutFlag.HV_ERROR_CURRENT: "check the chamber cable and the electrometer's HV, then repeat",
    ReadoutFlag.HV_ERROR_CHARGE: "check the chamber cable and the electrometer's HV, then repeat",
    ReadoutFlag.LOW_SIGNAL_CHARGE: "check that the chamber sits in the QA holder and the source is inserted, then repeat",
    ReadoutFlag.INTERNAL: "restart the electrometer; if it persists, call service",
}


@dataclass(frozen=True)
class QaProgress:
    """A snapshot for a progress display: the step in words and the readings taken so far (nC)."""

    message: str
    readings_nc: tuple[float, ...]
    beam_may_be_on: bool


@dataclass
class OutputCheckRequest:
    """What the physicist enters before the check starts. Leave temperature/pressure as None to read them
    from the OutputCheck's `environment` sensor (where a device provides them)."""

    temperature_entered: str | None
    pressure_entered: str | None
    performed_by: str = "headless"
    chamber_serial: str | None = None


def _strip_source(text: str | float) -> str | float:
    return text[: -len(" (sensor)")] if isinstance(text, str) and text.endswith(" (sensor)") else text


def qa_plan_hash(qa_id: str, attempt: int, index: int) -> bytes:
    """The 'plan hash' the unit is armed with for one QA exposure (so the unit's log names the check)."""
    return hashlib.sha256(f"orconsole-qa-output:{qa_id}:{attempt}:{index}".encode()).digest()


@dataclass
class OutputCheck:
    """Runs the output check of the source in the QA holder. Call `run()` from one thread.

    xrs, readout: connected or unconnected HAL devices (run() connects them). calibration: the active
    calibration of the source (its reference reading, QA exposure, kV, µA). sleep/monotonic: injectable
    for tests. on_step: progress text for a UI or the terminal.
    """

    xrs: XraySource
    readout: DoseReadout
    calibration: CalibrationRecord
    policy: QaPolicy = field(default_factory=QaPolicy)
    on_step: StepListener | None = None
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    today: Callable[[], date] = date.today
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc).astimezone()
    connect: bool = True
    # where a device provides room conditions: returns (temperature_c, pressure_kpa); same plausibility limits
    environment: Callable[[], tuple[float, float]] | None = None
    xrs_identity: XrsIdentity | None = None          # given when the caller connected already
    readout_identity: ReadoutIdentity | None = None
    on_progress: Callable[["QaProgress"], None] | None = None
    _beam_may_be_on: bool = field(default=False, init=False)
    _cancel: threading.Event = field(default_factory=threading.Event, init=False)
    _readings_so_far: list = field(default_factory=list, init=False)

    def cancel(self) -> None:
        """Abort the check from any thread (a UI's Abort button): the beam is switched off at once
        (reason OPERATOR_STOP) and no result is produced. Only sets a flag; run() does the rest."""
        self._cancel.set()

    def _step(self, text: str) -> None:
        if self.on_step is not None:
            self.on_step(text)
        if self.on_progress is not None:
            self.on_progress(QaProgress(message=text, readings_nc=tuple(r.charge_nc for r in self._readings_so_far),
                                        beam_may_be_on=self._beam_may_be_on))

    def _wait(self, seconds: float) -> None:
        self._check_cancel()
        self.sleep(seconds)
        self._check_cancel()

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise QaIncomplete("the output check was cancelled by the physicist: the beam was switched off and no "
                               "result was produced; repeat the check when ready")

    # ---------------------------------------------------------------- run
    def run(self, request: OutputCheckRequest) -> OutputCheckRecord:
        """The whole guided procedure. Returns the record (pass, warning or fail) or raises QaIncomplete."""
        policy = self.policy
        temperature_text, pressure_text = request.temperature_entered, request.pressure_entered
        if temperature_text is None or pressure_text is None:
            if self.environment is None:
                raise QaIncomplete("enter the temperature and the pressure at the chamber: no sensor provides them")
            try:
                sensed_c, sensed_kpa = self.environment()
            except Exception as exc:  # noqa: BLE001 - a sensor failure must stop the check, with its reason
                raise QaIncomplete(f"the room sensor could not be read ({exc}): enter T and P by hand") from exc
            if temperature_text is None:
                temperature_text = f"{sensed_c} C (sensor)"
            if pressure_text is None:
                pressure_text = f"{sensed_kpa} kPa (sensor)"
        try:
            temperature_c = parse_temperature_c(_strip_source(temperature_text), policy)
            pressure_kpa = parse_pressure_kpa(_strip_source(pressure_text), policy)
        except QaInputError as exc:
            raise QaIncomplete(str(exc)) from exc
        correction = k_tp(temperature_c, pressure_kpa, reference_temperature_c=policy.reference_temperature_c,
                          reference_pressure_kpa=policy.reference_pressure_kpa)
        qa_id = f"qa-output-{uuid.uuid4()}"
        readings: list[ChargeReading] = []
        have_token = False
        try:
            try:
                xrs_id, ro_id = self._connect()
                self._check_source(xrs_id.serial_number)
                self._step("taking write permission on the electrometer")
                self.readout.acquire_write_permission()
                have_token = True
                self._check_chamber_voltage()
                self._zero()
                self._step(f"selecting range {policy.measurement_range}")
                self.readout.set_range(policy.measurement_range)
                self._prepare_xrs()
                used_attempt, series = 0, []
                spread = math.inf
                for attempt in range(1, policy.max_series + 1):
                    series = []
                    for i in range(1, policy.readings_per_series + 1):
                        series.append(self._one_reading(qa_id, attempt, i))
                        readings.append(series[-1])
                        self._readings_so_far = list(readings)
                    spread = spread_fraction(r.charge_c for r in series)
                    if spread <= policy.spread_limit_fraction + _LIMIT_EPSILON:
                        used_attempt = attempt
                        break
                    self._step(f"series {attempt}: spread {spread * 100:.2f} % exceeds "
                               f"{policy.spread_limit_fraction * 100:.2f} %; repeating")
                if not used_attempt:
                    raise QaIncomplete(
                        f"the readings scatter: spread {spread * 100:.2f} % in series {policy.max_series} of "
                        f"{policy.max_series} (limit {policy.spread_limit_fraction * 100:.2f} %). No result was "
                        "produced. Check that the source and chamber are seated firmly in the QA holder, that the "
                        "chamber cable is not moving and the electrometer has warmed up, then repeat the check.")
            except DeviceError as exc:
                raise QaIncomplete(f"the output check stopped: {exc.message}") from exc
        except QaIncomplete as exc:
            exc.readings = tuple(readings)
            raise
        finally:
            self._beam_off_safely()
            if have_token:
                try:
                    self.readout.release_write_permission()
                except DeviceError:
                    pass  # the token lapses with the link; nothing unsafe is left
        raw_mean_c = sum(r.charge_c for r in series) / len(series)
        corrected_mean_c = raw_mean_c * correction
        reference_c = reference_reading_at(self.calibration.reference_reading_c,
                                           reference_temperature_c=policy.reference_temperature_c,
                                           reference_pressure_kpa=policy.reference_pressure_kpa)
        try:
            k = k_out(corrected_mean_c, reference_c)
        except QaInputError as exc:
            raise QaIncomplete(f"{exc}: check the chamber connection and repeat",
                               readings=tuple(readings)) from exc
        outcome = classify_k_out(k, policy)
        return OutputCheckRecord(
            qa_id=qa_id, source_serial=self.calibration.source_serial, performed_on=self.today(),
            performed_at=self.now(), performed_by=request.performed_by,
            instruments=Instruments(xrs_serial=xrs_id.serial_number, xrs_model=xrs_id.model,
                                    xrs_firmware=xrs_id.firmware, electrometer_serial=ro_id.serial_number,
                                    electrometer_model=f"{ro_id.name} {ro_id.type_number}".strip(),
                                    electrometer_firmware=ro_id.firmware, chamber_serial=request.chamber_serial),
            calibration_sha256=self.calibration.file_sha256,
            calibration_date=self.calibration.calibration_date,
            reference_reading_nc=reference_c * 1e9, calibration_reference_reading_nc=self.calibration.reference_reading_nc,
            qa_exposure_s=self.calibration.qa_exposure_s,
            kv=self.calibration.nominal_kv, ua=self.calibration.nominal_ua,
            measurement_range=policy.measurement_range, chamber_hv_v=policy.chamber_hv_v,
            readings=tuple(readings), used_attempt=used_attempt, spread_fraction=spread,
            spread_limit_fraction=policy.spread_limit_fraction, temperature_c=temperature_c,
            pressure_kpa=pressure_kpa, temperature_entered=str(temperature_text),
            pressure_entered=str(pressure_text),
            reference_temperature_c=policy.reference_temperature_c,
            reference_pressure_kpa=policy.reference_pressure_kpa, k_tp=correction, raw_mean_nc=raw_mean_c * 1e9,
            corrected_mean_nc=corrected_mean_c * 1e9, k_out=k, deviation_fraction=k - 1.0,
            warning_fraction=policy.k_out_warning_fraction, window_fraction=policy.k_out_window_fraction,
            result=outcome, message=outcome_message(outcome, k, policy, self.calibration.source_serial))

    # ---------------------------------------------------------------- steps
    def _connect(self):
        if self.connect:
            self._step("connecting to the X-ray unit and the electrometer")
            return self.xrs.connect(), self.readout.connect()
        if self.xrs_identity is None or self.readout_identity is None:
            raise QaIncomplete("OutputCheck(connect=False) needs the identities of both devices: connect them first")
        return self.xrs_identity, self.readout_identity

    def _check_source(self, serial: str) -> None:
        if serial != self.calibration.source_serial:
            raise QaIncomplete(
                f"the X-ray unit reports source {serial}, but the calibration is for source "
                f"{self.calibration.source_serial}: check the source serial or activate this source's calibration")

    def _check_chamber_voltage(self) -> None:
        """The HV setpoint must be the chamber's, and the measured HV must reach it (it may still ramp)."""
        policy = self.policy
        hv = self.readout.get_hv()
        self._step(f"chamber voltage set to {hv} V")
        if abs(hv - policy.chamber_hv_v) > policy.chamber_hv_tolerance_v:
            raise QaIncomplete(
                f"the chamber voltage is {hv} V but the chamber needs {policy.chamber_hv_v:g} V "
                f"(±{policy.chamber_hv_tolerance_v:g} V): set the electrometer's HV for this chamber, "
                "wait for it to settle, then repeat the check. No exposure was made.")
        deadline = self.monotonic() + policy.hv_settle_timeout_s
        hv_errors = ReadoutFlag.HV_ERROR_CURRENT | ReadoutFlag.HV_ERROR_CHARGE
        while True:
            values = self.readout.measured_values()
            if abs(values.hv_v - policy.chamber_hv_v) <= policy.chamber_hv_tolerance_v and not (
                    ReadoutFlag(values.flags) & hv_errors):
                return
            if self.monotonic() > deadline:
                raise QaIncomplete(
                    f"the chamber voltage is set to {hv} V but measures {values.hv_v:g} V (flags "
                    f"{int(values.flags):#x}) after {policy.hv_settle_timeout_s:g} s: check the chamber cable and "
                    "the electrometer's HV supply, then repeat the check. No exposure was made.")
            self._wait(max(policy.poll_period_s, 0.2))

    def _zero(self) -> None:
        policy = self.policy
        deadline = self.monotonic() + policy.zero_timeout_s
        self._step("starting zero correction")
        announced = False
        while True:
            try:
                self.readout.start_zero_correction()
                break
            except DeviceRefused as exc:
                if exc.code != "E03":
                    raise
                if self.monotonic() > deadline:
                    raise QaIncomplete(
                        f"the electrometer still refuses zero correction after {policy.zero_timeout_s:g} s "
                        f"(warm-up): {exc.message}. Wait for warm-up to finish and repeat.") from exc
                if not announced:
                    self._step("electrometer warming up; waiting to zero")
                    announced = True
                self._wait(min(1.0, max(policy.poll_period_s, 0.2)))
        while True:
            status = self.readout.zero_status()
            result = status.result.strip().lower()
            if result == "passed" and status.remaining_s <= 0:
                self._step("zero correction passed")
                return
            if result in ("failed", "error", "aborted"):
                raise QaIncomplete(f"the electrometer's zero correction {status.result}: check the chamber "
                                   "connection (no radiation during zeroing) and repeat the check")
            if self.monotonic() > deadline:
                raise QaIncomplete(f"zero correction did not finish within {policy.zero_timeout_s:g} s "
                                   f"(status {status.result}, {status.remaining_s:.0f} s remaining): repeat the check")
            self._wait(min(0.5, max(policy.poll_period_s, status.remaining_s / 4 if status.remaining_s > 0 else 0.05)))

    def _prepare_xrs(self) -> None:
        policy = self.policy
        status = self.xrs.status()
        if status.state is XrsState.FAULT:
            raise QaIncomplete(f"the X-ray unit is in fault ({status.faults!r}): clear the fault, then repeat")
        if status.interlocks:
            raise QaIncomplete(f"the X-ray unit's interlocks are open ({status.interlocks!r}): close the door chain, "
                               "release the e-stop, turn the key and seat the source in the QA holder, then repeat")
        if status.state is XrsState.STANDBY:
            self._step("warming up the X-ray unit")
            self.xrs.warm_up()
        deadline = self.monotonic() + policy.xrs_ready_timeout_s
        while status.state not in (XrsState.READY, XrsState.ARMED):
            if status.state is XrsState.FAULT:
                raise QaIncomplete(f"the X-ray unit went to fault during warm-up ({status.faults!r}): "
                                   "clear the fault and repeat")
            if self.monotonic() > deadline:
                raise QaIncomplete(f"the X-ray unit is not ready after {policy.xrs_ready_timeout_s:g} s "
                                   f"(state {status.state.value}): repeat the warm-up")
            self._wait(policy.poll_period_s)
            status = self.xrs.status()
        self._step(f"technique {self.calibration.nominal_kv:g} kV / {self.calibration.nominal_ua:g} µA")
        self.xrs.set_technique(self.calibration.nominal_kv, self.calibration.nominal_ua)

    def _one_reading(self, qa_id: str, attempt: int, index: int) -> ChargeReading:
        policy = self.policy
        exposure_s = self.calibration.qa_exposure_s
        plan_hash = qa_plan_hash(qa_id, attempt, index)
        self._check_cancel()
        self._step(f"reading {index} of series {attempt}: reset, arm, expose {exposure_s:g} s")
        self.readout.reset()
        self._beam_may_be_on = True      # from arming on, every error path sends beam off (also disarms)
        # the fixed QA exposure is timed by the unit's own timer (exact to its tick, whatever the load
        # on this computer); the console's beam off at the end is the second, independent stop
        self.xrs.arm(backup_time_s=exposure_s, irm_limit_gy=self._irm_limit_gy(exposure_s), plan_hash=plan_hash)
        self.readout.start()
        self._check_cancel()
        self.xrs.beam_on(plan_hash=plan_hash)
        started_s = self.monotonic()
        self._step(f"beam on: reading {index} of series {attempt}")
        grace_s = max(0.25, 4 * policy.poll_period_s)
        while True:
            # poll the unit: it must be irradiating until its timer ends the exposure by itself
            status = self.xrs.status()
            if status.state not in (XrsState.RAMP_UP, XrsState.BEAM_ON, XrsState.ARMED):
                if (status.last_beam_off_cause == BeamOffCause.BACKUP_TIMER
                        and abs(status.beam_on_time_s - exposure_s) <= 0.01 * exposure_s):
                    break   # the fixed exposure ended on the unit's timer, as planned
                raise QaIncomplete(
                    f"the beam ended early during reading {index} (unit state {status.state.value}, "
                    f"cause {status.last_beam_off_cause.value}, faults {status.faults!r}): "
                    "find the cause, clear it and repeat the check")
            if self.monotonic() - started_s > exposure_s + grace_s:
                break       # the unit's timer did not end it: the console's stop below does
            self._wait(policy.poll_period_s)
        self.xrs.beam_off(BeamOffReason.QA_EXPOSURE_END)
        deadline = self.monotonic() + policy.beam_settle_timeout_s
        status = self.xrs.status()
        while status.hv_on or status.state in (XrsState.RAMP_UP, XrsState.BEAM_ON, XrsState.RAMP_DOWN):
            if self.monotonic() > deadline:
                raise QaIncomplete(f"the X-ray unit did not report HV off within {policy.beam_settle_timeout_s:g} s "
                                   "after beam off: press the emergency stop and call service")
            self._wait(policy.poll_period_s)
            status = self.xrs.status()
        self._beam_may_be_on = False
        hold_refused: DeviceRefused | None = None
        try:
            self.readout.hold()
        except DeviceRefused as exc:
            if exc.code != "E02":
                raise
            hold_refused = exc   # e.g. the instrument stopped itself on an overload: read why below
        values = self.readout.measured_values()
        if values.integrated_unit != "C":
            raise QaIncomplete(f"the electrometer reports {values.integrated_unit}, not charge in C: switch it to "
                               "electrical units (the reference reading is a charge) and repeat")
        flags = ReadoutFlag(values.flags)
        for flag, text in _BAD_FLAGS.items():
            if flags & flag:
                raise QaIncomplete(f"reading {index} of series {attempt}: {text} (flags {int(flags):#x}) on range "
                                   f"{policy.measurement_range}: {_FLAG_ACTIONS[flag]}. No result was produced.")
        if hold_refused is not None:
            raise QaIncomplete(f"reading {index} of series {attempt}: the electrometer refused to hold the reading "
                               f"(status {values.status}): {hold_refused.message} No result was produced.")
        if not math.isfinite(values.integrated) or values.integrated <= 0:
            raise QaIncomplete(f"reading {index} of series {attempt} collected no charge ({values.integrated} C): "
                               "check that the chamber is connected and sits in the QA holder, then repeat")
        self._step(f"reading {index}: {values.integrated:.6e} C")
        return ChargeReading(attempt=attempt, index=index, charge_nc=values.integrated * 1e9,
                             measuring_time_s=values.measuring_time_s, hv_v=values.hv_v, flags=int(flags),
                             beam_on_time_s=status.beam_on_time_s)

    def _irm_limit_gy(self, exposure_s: float) -> float:
        # The unit's own dose stop for a QA exposure: the highest calibrated surface dose rate over the
        # exposure plus the backup margin, so the IRM never ends a QA reading before the console does.
        rate = max(a.surface_dose_rate_gy_per_min for a in self.calibration.applicators)
        return rate * exposure_s / 60.0 * (1.0 + self.policy.backup_time_margin_fraction) * 2.0 + 0.1

    def _beam_off_safely(self) -> None:
        if not self._beam_may_be_on:
            return
        try:
            self.xrs.beam_off(BeamOffReason.OPERATOR_STOP if self._cancel.is_set() else BeamOffReason.CONSOLE_FAULT)
        except DeviceError:
            pass  # the device's own backup timer and IRM limit end the exposure
        self._beam_may_be_on = False


# --------------------------------------------------------------------------------------------
# Isotropy and mechanics
# --------------------------------------------------------------------------------------------

ISOTROPY_DIRECTIONS = ("plus_x", "minus_x", "plus_y", "minus_y", "plus_z")
DEFAULT_ISOTROPY_BASELINE = {d: 1.0 for d in ISOTROPY_DIRECTIONS}


def evaluate_isotropy(reading: IsotropyReading | dict[str, float], *, source_serial: str,
                      baseline: dict[str, float] | None = None, policy: QaPolicy | None = None,
                      performed_by: str = "headless", today: date | None = None,
                      now: datetime | None = None) -> IsotropyRecord:
    """Per-direction deviation reading / baseline − 1; pass when every |deviation| ≤ tolerance."""
    policy = policy or QaPolicy()
    against = "the recorded baseline" if baseline else "nominal 1.0 (no baseline recorded for this source)"
    baseline = dict(baseline or DEFAULT_ISOTROPY_BASELINE)
    values = reading if isinstance(reading, dict) else {d: getattr(reading, d) for d in ISOTROPY_DIRECTIONS}
    deviations: dict[str, float] = {}
    for d in ISOTROPY_DIRECTIONS:
        if d not in values or d not in baseline:
            raise QaInputError(f"isotropy direction {d} is missing from the {'reading' if d not in values else 'baseline'}")
        value, base = values[d], baseline[d]
        if not (math.isfinite(value) and math.isfinite(base)) or base <= 0 or value < 0:
            raise QaInputError(f"isotropy {d}: reading {value!r} / baseline {base!r} is not usable")
        deviations[d] = value / base - 1.0
    bad = {d: v for d, v in deviations.items() if abs(v) > policy.isotropy_tolerance_fraction + _LIMIT_EPSILON}
    tol = policy.isotropy_tolerance_fraction * 100
    if bad:
        listed = ", ".join(f"{d} {v * 100:+.2f} %" for d, v in bad.items())
        message = (f"FAIL: isotropy outside ±{tol:.1f} % in {listed}: check the probe for damage and the "
                   f"photodiode array, repeat; if it persists, take source {source_serial} out of use and call service")
    else:
        worst = max(deviations.values(), key=abs)
        message = f"PASS: every direction within ±{tol:.1f} % (largest {worst * 100:+.2f} %)"
    message += f"; compared with {against}"
    return IsotropyRecord(qa_id=f"qa-isotropy-{uuid.uuid4()}", source_serial=source_serial,
                          performed_on=today or date.today(),
                          performed_at=now or datetime.now(timezone.utc).astimezone(), performed_by=performed_by,
                          readings={d: float(values[d]) for d in ISOTROPY_DIRECTIONS},
                          baseline={d: float(baseline[d]) for d in ISOTROPY_DIRECTIONS}, deviations=deviations,
                          tolerance_fraction=policy.isotropy_tolerance_fraction, passed=not bad, message=message)


def make_isotropy_baseline(reading: IsotropyReading | dict[str, float], *, source_serial: str, recorded_by: str,
                           note: str = "", today: date | None = None,
                           now: datetime | None = None) -> IsotropyBaseline:
    """A new baseline from one photodiode reading; refused when a direction is missing or not plausible."""
    values = reading if isinstance(reading, dict) else {d: getattr(reading, d) for d in ISOTROPY_DIRECTIONS}
    for d in ISOTROPY_DIRECTIONS:
        v = values.get(d)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not 0.5 <= v <= 1.5:
            raise QaInputError(f"isotropy baseline {d} = {v!r} is not plausible (expected about 1.0 relative to the "
                               "acceptance reading): check the photodiode array before recording a baseline")
    return IsotropyBaseline(baseline_id=f"qa-baseline-{uuid.uuid4()}", source_serial=source_serial,
                            readings={d: float(values[d]) for d in ISOTROPY_DIRECTIONS},
                            recorded_on=today or date.today(),
                            recorded_at=now or datetime.now(timezone.utc).astimezone(), recorded_by=recorded_by,
                            note=note)


def read_isotropy_with_beam(xrs: XraySource, calibration: CalibrationRecord, *, policy: QaPolicy | None = None,
                            connect: bool = True, sleep: Callable[[float], None] = time.sleep,
                            monotonic: Callable[[], float] = time.monotonic) -> IsotropyReading:
    """The photodiode reading of a short QA exposure at full HV (the beam is always switched off after)."""
    return _isotropy_reading(xrs, calibration, policy=policy or QaPolicy(), connect=connect, sleep=sleep,
                             monotonic=monotonic)


def run_isotropy_check(xrs: XraySource, calibration: CalibrationRecord, *, baseline: dict[str, float] | None = None,
                       policy: QaPolicy | None = None, performed_by: str = "headless", connect: bool = True,
                       sleep: Callable[[float], None] = time.sleep,
                       monotonic: Callable[[], float] = time.monotonic) -> IsotropyRecord:
    """Switch the beam on for a short QA exposure, read the photodiode array at full HV, switch the beam
    off (always), and evaluate the reading against the baseline (None: nominal 1.0 in every direction)."""
    policy = policy or QaPolicy()
    reading = _isotropy_reading(xrs, calibration, policy=policy, connect=connect, sleep=sleep, monotonic=monotonic)
    return evaluate_isotropy(reading, source_serial=calibration.source_serial, baseline=baseline, policy=policy,
                             performed_by=performed_by)


def _isotropy_reading(xrs: XraySource, calibration: CalibrationRecord, *, policy: QaPolicy, connect: bool,
                      sleep: Callable[[float], None], monotonic: Callable[[], float]) -> IsotropyReading:
    beam_may_be_on = False
    try:
        if connect:
            identity = xrs.connect()
            if identity.serial_number != calibration.source_serial:
                raise QaIncomplete(f"the X-ray unit reports source {identity.serial_number}, but the calibration is "
                                   f"for source {calibration.source_serial}: activate this source's calibration")
        status = xrs.status()
        if status.state is XrsState.FAULT or status.interlocks:
            raise QaIncomplete(f"the X-ray unit is not ready for a QA exposure (state {status.state.value}, "
                               f"interlocks {status.interlocks!r}, faults {status.faults!r}): clear it and repeat")
        if status.state is XrsState.STANDBY:
            xrs.warm_up()
        deadline = monotonic() + policy.xrs_ready_timeout_s
        while status.state not in (XrsState.READY, XrsState.ARMED):
            if monotonic() > deadline or status.state is XrsState.FAULT:
                raise QaIncomplete(f"the X-ray unit is not ready (state {status.state.value}): repeat the warm-up")
            sleep(policy.poll_period_s)
            status = xrs.status()
        xrs.set_technique(calibration.nominal_kv, calibration.nominal_ua)
        plan_hash = hashlib.sha256(f"orconsole-qa-isotropy:{uuid.uuid4()}".encode()).digest()
        exposure_s = calibration.qa_exposure_s
        xrs.arm(backup_time_s=exposure_s * (1.0 + policy.backup_time_margin_fraction) + 1.0,
                irm_limit_gy=max(a.surface_dose_rate_gy_per_min for a in calibration.applicators) * exposure_s / 30.0
                + 0.1, plan_hash=plan_hash)
        beam_may_be_on = True
        xrs.beam_on(plan_hash=plan_hash)
        deadline = monotonic() + policy.beam_settle_timeout_s
        status = xrs.status()
        while status.state is not XrsState.BEAM_ON:
            if status.state not in (XrsState.ARMED, XrsState.RAMP_UP) or monotonic() > deadline:
                raise QaIncomplete(f"the beam did not reach full HV for the isotropy reading (state "
                                   f"{status.state.value}, faults {status.faults!r}): clear the cause and repeat")
            sleep(policy.poll_period_s)
            status = xrs.status()
        reading = xrs.read_isotropy()
    except DeviceError as exc:
        raise QaIncomplete(f"the isotropy check stopped: {exc.message}") from exc
    finally:
        if beam_may_be_on:
            try:
                xrs.beam_off(BeamOffReason.QA_EXPOSURE_END)
            except DeviceError:
                pass  # the unit's backup timer ends the exposure
    return reading


def evaluate_mechanics(*, source_serial: str, probe_straightness_mm: float, beam_centering_mm: float,
                       policy: QaPolicy | None = None, performed_by: str = "headless",
                       today: date | None = None, now: datetime | None = None) -> MechanicsRecord:
    """Entered probe straightness and beam centering deviations (mm) against their tolerances."""
    policy = policy or QaPolicy()
    for name, value in (("probe straightness", probe_straightness_mm), ("beam centering", beam_centering_mm)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise QaInputError(f"{name} deviation {value!r} mm is not a non-negative number: measure and enter it")
        if value > 5.0:
            raise QaInputError(f"{name} deviation {value} mm is implausible (> 5 mm): was it entered in µm?")
    problems = []
    if probe_straightness_mm > policy.straightness_tolerance_mm + _LIMIT_EPSILON:
        problems.append(f"probe straightness {probe_straightness_mm:.2f} mm > {policy.straightness_tolerance_mm:.2f} mm")
    if beam_centering_mm > policy.centering_tolerance_mm + _LIMIT_EPSILON:
        problems.append(f"beam centering {beam_centering_mm:.2f} mm > {policy.centering_tolerance_mm:.2f} mm")
    message = ("FAIL: " + "; ".join(problems) + f": do not use source {source_serial}; check the probe and call service"
               if problems else "PASS: probe straightness and beam centering within tolerance")
    return MechanicsRecord(qa_id=f"qa-mechanics-{uuid.uuid4()}", source_serial=source_serial,
                           performed_on=today or date.today(),
                           performed_at=now or datetime.now(timezone.utc).astimezone(), performed_by=performed_by,
                           probe_straightness_mm=float(probe_straightness_mm),
                           beam_centering_mm=float(beam_centering_mm),
                           straightness_tolerance_mm=policy.straightness_tolerance_mm,
                           centering_tolerance_mm=policy.centering_tolerance_mm, passed=not problems,
                           message=message)


# --------------------------------------------------------------------------------------------
# A device-owning worker for screens: one thread, the only caller of the two drivers it was given
# --------------------------------------------------------------------------------------------


class OutputCheckWorker:
    """Runs output checks off the caller's thread, on ONE thread of its own that is the only caller of the
    two drivers handed to it (the drivers accept one caller only). Give it drivers no other thread uses:
    e.g. built by the composition root for a QA session while no TreatmentService/Supervisor owns them.
    While a console's Supervisor owns the devices, the output check has to run on the Supervisor's device
    thread instead (docs/qa.md, "Output check in the console").

    `submit()` returns a Future resolving to the OutputCheckRecord or raising QaIncomplete; `cancel()` may
    be called from any thread (beam off, no result). One check at a time; `close()` closes the drivers on
    the worker thread."""

    def __init__(self, xrs: XraySource, readout: DoseReadout, *, policy: QaPolicy | None = None,
                 environment: Callable[[], tuple[float, float]] | None = None,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.xrs, self.readout = xrs, readout
        self.policy = policy or QaPolicy()
        self.environment = environment
        self._sleep, self._monotonic = sleep, monotonic
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-device-owner")
        self._lock = threading.Lock()
        self._current: OutputCheck | None = None
        self._busy = False
        self._identities: tuple[XrsIdentity, ReadoutIdentity] | None = None
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._busy

    def connect(self):
        """Future → (XrsIdentity, ReadoutIdentity), connecting on the worker thread (once)."""
        return self._executor.submit(self._connect)

    def _connect(self) -> tuple[XrsIdentity, ReadoutIdentity]:
        if self._identities is None:
            try:
                self._identities = (self.xrs.connect(), self.readout.connect())
            except DeviceError as exc:
                raise QaIncomplete(f"cannot connect to the devices: {exc.message}: check the cables and power, "
                                   "then try again") from exc
        return self._identities

    def submit(self, request: OutputCheckRequest, calibration: CalibrationRecord, *,
               on_progress: Callable[[QaProgress], None] | None = None):
        """Start one output check; refused (RuntimeError with the reason) while another one runs."""
        with self._lock:
            if self._busy:
                raise RuntimeError("an output check is already running: wait for it to end or cancel it")
            self._busy = True
        check = OutputCheck(xrs=self.xrs, readout=self.readout, calibration=calibration, policy=self.policy,
                            on_progress=on_progress, environment=self.environment, connect=False,
                            sleep=self._sleep, monotonic=self._monotonic)
        self._current = check

        def run() -> OutputCheckRecord:
            try:
                check.xrs_identity, check.readout_identity = self._connect()
                return check.run(request)
            finally:
                with self._lock:
                    self._busy = False
        return self._executor.submit(run)

    def cancel(self) -> None:
        check = self._current
        if check is not None:
            check.cancel()

    def close(self) -> None:
        """Cancel a running check (beam off), close both drivers on the worker thread, end the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.cancel()

        def close_devices() -> None:
            for device in (self.xrs, self.readout):
                try:
                    device.close()
                except Exception:  # noqa: BLE001 - closing is best effort; the link is gone either way
                    pass
        self._executor.submit(close_devices)
        self._executor.shutdown(wait=True)


# --------------------------------------------------------------------------------------------
# Repository: where QA records, acknowledgements and signatures live
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredQa:
    record: QaRecord
    doc_id: str
    acknowledgement: Acknowledgement | None = None
    signed_by: tuple[str, ...] = ()        # printed names of the physicists who signed "performed QA"


class QaRepository(Protocol):
    def save(self, record: QaRecord) -> str: ...
    def acknowledge(self, ack: Acknowledgement) -> str: ...
    def mark_signed(self, qa_id: str, printed_name: str) -> None: ...
    def records(self, *, source_serial: str | None = None, kind: str | None = None) -> list[StoredQa]: ...
    def save_baseline(self, baseline: IsotropyBaseline) -> str: ...
    def baseline(self, source_serial: str) -> IsotropyBaseline | None: ...


def _parse_record(data: dict) -> QaRecord:
    kind = data.get("kind")
    if kind == "output":
        return OutputCheckRecord.model_validate(data)
    if kind == "isotropy":
        return IsotropyRecord.model_validate(data)
    if kind == "mechanics":
        return MechanicsRecord.model_validate(data)
    raise ValueError(f"unknown QA record kind {kind!r}")


class InMemoryQaRepository:
    """For tests and dry runs; nothing survives the process."""

    def __init__(self) -> None:
        self._items: list[StoredQa] = []
        self._baselines: list[IsotropyBaseline] = []

    def save_baseline(self, baseline: IsotropyBaseline) -> str:
        self._baselines.append(baseline)
        return baseline.baseline_id

    def baseline(self, source_serial: str) -> IsotropyBaseline | None:
        matching = [b for b in self._baselines if b.source_serial == source_serial]
        return matching[-1] if matching else None

    def save(self, record: QaRecord) -> str:
        if any(s.record.qa_id == record.qa_id for s in self._items):
            raise ValueError(f"QA record {record.qa_id} is already stored: a stored record never changes")
        self._items.append(StoredQa(record=record, doc_id=record.qa_id))
        return record.qa_id

    def _replace(self, qa_id: str, **changes) -> None:
        for i, s in enumerate(self._items):
            if s.record.qa_id == qa_id:
                self._items[i] = StoredQa(**{**s.__dict__, **changes})
                return
        raise KeyError(f"no QA record {qa_id}")

    def acknowledge(self, ack: Acknowledgement) -> str:
        self._replace(ack.qa_id, acknowledgement=ack)
        return f"ack-{ack.qa_id}"

    def mark_signed(self, qa_id: str, printed_name: str) -> None:
        current = next(s for s in self._items if s.record.qa_id == qa_id)
        self._replace(qa_id, signed_by=current.signed_by + (printed_name,))

    def records(self, *, source_serial: str | None = None, kind: str | None = None) -> list[StoredQa]:
        return [s for s in self._items if (source_serial is None or s.record.source_serial == source_serial)
                and (kind is None or s.record.kind == kind)]


QA_DOC_KIND = "qa_result"
QA_ACK_DOC_KIND = "qa_acknowledgement"
QA_BASELINE_DOC_KIND = "qa_baseline"
ACK_MEANING = "acknowledged QA warning"     # logs.signing.Meaning.ACKNOWLEDGED_QA_WARNING


class StoreQaRepository:
    """QA records as final documents of kind 'qa_result' in logs.Store (subject = source serial);
    an acknowledgement is a final 'qa_acknowledgement' document referencing it; signatures are the
    store's 'performed QA' signatures on the QA document."""

    def __init__(self, store) -> None:
        self.store = store

    def save(self, record: QaRecord) -> str:
        doc = self.store.create_document(QA_DOC_KIND, record.model_dump(mode="json"), actor=record.performed_by,
                                         subject=record.source_serial, doc_id=record.qa_id, final=True)
        return doc.doc_id

    def acknowledge(self, ack: Acknowledgement) -> str:
        qa_doc = self.store.get_document(ack.qa_id)
        doc = self.store.create_document(QA_ACK_DOC_KIND, ack.model_dump(mode="json"), actor=ack.acknowledged_by,
                                         subject=qa_doc.subject, references=qa_doc, final=True)
        return doc.doc_id

    def mark_signed(self, qa_id: str, printed_name: str) -> None:
        """Signatures are rows in the store (logs.signing); nothing to do here."""

    def save_baseline(self, baseline: IsotropyBaseline) -> str:
        doc = self.store.create_document(QA_BASELINE_DOC_KIND, baseline.model_dump(mode="json"),
                                         actor=baseline.recorded_by, subject=baseline.source_serial,
                                         doc_id=baseline.baseline_id, final=True)
        return doc.doc_id

    def baseline(self, source_serial: str) -> IsotropyBaseline | None:
        """The latest baseline of the source that a physicist signed ('approved calibration')."""
        for doc in reversed(self.store.find_documents(kind=QA_BASELINE_DOC_KIND, subject=source_serial,
                                                      status="final")):
            if any(s.meaning == "approved calibration" for s in self.store.signatures_for(doc.doc_id)):
                return IsotropyBaseline.model_validate(doc.data)
        return None

    def records(self, *, source_serial: str | None = None, kind: str | None = None) -> list[StoredQa]:
        out = []
        acks = {}
        for doc in self.store.find_documents(kind=QA_ACK_DOC_KIND, subject=source_serial, status="final"):
            # an acknowledgement counts only once signed "acknowledged QA warning" (password re-entered)
            if not any(s.meaning == ACK_MEANING for s in self.store.signatures_for(doc.doc_id)):
                continue
            ack = Acknowledgement.model_validate(doc.data)
            acks[doc.references_doc_id] = ack
        for doc in self.store.find_documents(kind=QA_DOC_KIND, subject=source_serial, status="final"):
            record = _parse_record(doc.data)
            if kind is not None and record.kind != kind:
                continue
            signed = tuple(s.printed_name for s in self.store.signatures_for(doc.doc_id)
                           if s.meaning == "performed QA")
            out.append(StoredQa(record=record, doc_id=doc.doc_id, acknowledgement=acks.get(doc.doc_id),
                                signed_by=signed))
        return out


# --------------------------------------------------------------------------------------------
# Acknowledgement and the treatment gate
# --------------------------------------------------------------------------------------------


def acknowledge_warning(repo: QaRepository, qa_id: str, *, physicist: str, comment: str,
                        now: datetime | None = None, sign: Callable[[str], object] | None = None) -> Acknowledgement:
    """A physicist acknowledges an output check in the warning band. Refused for pass/fail results.

    `sign(doc_id)` signs the stored acknowledgement "acknowledged QA warning" with the physicist's password
    re-entered (e.g. `lambda d: identity.sign(session, password, d, Meaning.ACKNOWLEDGED_QA_WARNING)`). In the
    record store an acknowledgement counts for treatment only once signed; if signing fails (wrong password)
    the unsigned acknowledgement stays on file, does not count, and may be repeated."""
    matches = [s for s in repo.records(kind="output") if s.record.qa_id == qa_id]
    if not matches:
        raise QaInputError(f"there is no output check {qa_id}")
    stored = matches[0]
    if stored.record.result is not QaOutcome.WARNING:
        raise QaInputError(f"output check {qa_id} is a {stored.record.result.value}, not a warning: only a warning "
                           "is acknowledged (a fail needs a new check that passes)")
    if stored.acknowledgement is not None:
        raise QaInputError(f"output check {qa_id} was already acknowledged by {stored.acknowledgement.acknowledged_by}")
    if not comment or not comment.strip():
        raise QaInputError("say why the warning is acceptable (e.g. setup checked, T and P re-read): "
                           "the comment is kept with the record")
    ack = Acknowledgement(qa_id=qa_id, acknowledged_by=physicist, acknowledged_at=now or datetime.now(timezone.utc),
                          comment=comment.strip())
    doc_id = repo.acknowledge(ack)
    if sign is not None:
        sign(doc_id)
    return ack


def qa_results_for_planning(repo: QaRepository, *, source_serial: str, day: date,
                            policy: QaPolicy | None = None) -> list[QaResult]:
    """Today's output checks of the source as the core's QaResult list, oldest first (the calculation
    uses the latest). A fail always counts, signed or not; a pass or warning counts only once signed
    by a physicist (when the policy requires signatures)."""
    policy = policy or QaPolicy()
    counted = []
    for stored in repo.records(source_serial=source_serial, kind="output"):
        record = stored.record
        if record.performed_on != day:
            continue
        if record.result is not QaOutcome.FAIL and policy.require_signature_for_treatment and not stored.signed_by:
            continue
        counted.append((record.performed_at, record.to_qa_result(acknowledged=stored.acknowledgement is not None)))
    counted.sort(key=lambda pair: pair[0])
    return [result for _, result in counted]


@dataclass(frozen=True)
class QaGate:
    allowed: bool
    reason: str
    qa_result: QaResult | None = None


def output_check_gate(repo: QaRepository, *, source_serial: str, day: date,
                      policy: QaPolicy | None = None) -> QaGate:
    """May the source treat today? The latest counted output check of that day decides."""
    policy = policy or QaPolicy()
    everything = [s for s in repo.records(source_serial=source_serial, kind="output") if s.record.performed_on == day]
    results = qa_results_for_planning(repo, source_serial=source_serial, day=day, policy=policy)
    if not results:
        unsigned = [s for s in everything if not s.signed_by]
        if unsigned:
            return QaGate(False, f"today's output check of source {source_serial} ({unsigned[-1].record.qa_id}) is "
                                 "not signed yet: the physicist must sign it before treatment")
        return QaGate(False, f"no output check of source {source_serial} today ({day.isoformat()}): the physicist "
                             "must run and sign the daily output check before treatment")
    latest = results[-1]
    window = policy.k_out_window_fraction
    if latest.result is QaOutcome.FAIL or not math.isfinite(latest.k_out) or abs(latest.k_out - 1) > window + _LIMIT_EPSILON:
        return QaGate(False, f"today's output check {latest.qa_id} of source {source_serial} FAILED (k_out "
                             f"{latest.k_out:.4f}): no treatment until a new output check passes", latest)
    if latest.result is QaOutcome.WARNING and not latest.acknowledged:
        return QaGate(False, f"today's output check {latest.qa_id} is in the warning band (k_out {latest.k_out:.4f}): "
                             "a physicist must acknowledge it before treatment", latest)
    return QaGate(True, f"output check {latest.qa_id}: {latest.result.value}, k_out {latest.k_out:.4f}", latest)
