"""Static data of the simulated X-ray sources ("fast" for tests, "clinical" for real-time runs).

Loads simulators/data/xrs_sources.json and produces the source-calibration document a physicist
would import (docs/calibration-format.md). Every assumed number is flagged as such; this module
never invents a value that is not in the data file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from importlib import resources

CALIBRATION_FORMAT = "orconsole-source-calibration/1"
SOURCE_NAMES = ("fast", "clinical")


@dataclass(frozen=True)
class ApplicatorRate:
    diameter_cm: float
    surface_dose_rate_gy_per_min: float   # at full output, nominal technique, reference air density
    provenance: str                       # "published", "interpolated" or "assumed"
    note: str

    @property
    def assumption(self) -> bool:
        return self.provenance != "published"


@dataclass(frozen=True)
class SourceData:
    name: str
    serial: str
    model: str
    firmware: str
    speed_factor: float                   # 60 for the fast test source: rates ×60, durations ÷60
    nominal_kv: float
    nominal_ua: float
    kv_range: tuple[float, float]
    ua_range: tuple[float, float]
    applicators: tuple[ApplicatorRate, ...]
    qa_chamber_current_a: float           # ion chamber in the QA holder, full output, reference air
    qa_exposure_s: float
    warm_up_s: float
    hv_ramp_s: float
    output_drift_fraction: float          # relative output change over output_drift_over_beam_s
    output_drift_over_beam_s: float
    irm_counts_per_s: float               # IRM counts per second at full output
    kv_noise_kv: float
    ua_noise_ua: float
    isotropy_baseline: dict[str, float]
    assumptions: tuple[str, ...]

    @property
    def surface_dose_rate_gy_per_min(self) -> dict[float, float]:
        return {a.diameter_cm: a.surface_dose_rate_gy_per_min for a in self.applicators}

    @property
    def assumed_diameters_cm(self) -> tuple[float, ...]:
        return tuple(a.diameter_cm for a in self.applicators if a.assumption)

    @property
    def reference_reading_c(self) -> float:
        """Charge of one QA exposure at full output and reference air density."""
        return self.qa_chamber_current_a * self.qa_exposure_s

    def rate_for(self, diameter_cm: float) -> float:
        for a in self.applicators:
            if abs(a.diameter_cm - diameter_cm) < 1e-9:
                return a.surface_dose_rate_gy_per_min
        raise KeyError(f"no surface dose rate for a {diameter_cm} cm applicator in source {self.name!r}; "
                       f"known: {', '.join(str(a.diameter_cm) for a in self.applicators)} cm")


def _raw() -> dict:
    text = resources.files("simulators").joinpath("data/xrs_sources.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_source(name: str) -> SourceData:
    """The simulated source called `name` ("fast" or "clinical"). Raises KeyError with the choices."""
    raw = _raw()
    if name not in raw["sources"]:
        raise KeyError(f"unknown simulated source {name!r}: choose one of {', '.join(sorted(raw['sources']))}")
    s = raw["sources"][name]
    factor = float(s["speed_factor"])
    applicators = tuple(
        ApplicatorRate(float(r["diameter_cm"]), round(float(r["gy_per_min"]) * factor, 6), r["provenance"],
                       r["note"] + (f" (x{factor:g} for the fast test source)" if factor != 1 else ""))
        for r in raw["surface_dose_rates"])
    return SourceData(
        name=name, serial=s["serial"], model=s["model"], firmware=s["firmware"], speed_factor=factor,
        nominal_kv=float(s["nominal_kv"]), nominal_ua=float(s["nominal_ua"]),
        kv_range=tuple(s["kv_range"]), ua_range=tuple(s["ua_range"]), applicators=applicators,
        qa_chamber_current_a=float(s["qa_chamber_current_a"]), qa_exposure_s=float(s["qa_exposure_s"]),
        warm_up_s=float(s["warm_up_s"]), hv_ramp_s=float(s["hv_ramp_s"]),
        output_drift_fraction=float(s["output_drift_fraction"]),
        output_drift_over_beam_s=float(s["output_drift_over_beam_s"]),
        irm_counts_per_s=float(s["irm_counts_per_s"]), kv_noise_kv=float(s["kv_noise_kv"]),
        ua_noise_ua=float(s["ua_noise_ua"]), isotropy_baseline=dict(s["isotropy_baseline"]),
        assumptions=tuple(s["assumptions"]))


def _one_year_later(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


def calibration_document(name: str, calibrated_on: date) -> dict:
    """The source-calibration JSON document for simulated source `name` (docs/calibration-format.md)."""
    source = load_source(name)
    return {
        "format": CALIBRATION_FORMAT,
        "source_serial": source.serial,
        "source_model": source.model,
        "calibration_date": calibrated_on.isoformat(),
        "valid_until": _one_year_later(calibrated_on).isoformat(),
        "calibrated_by": "ORConsole simulator data (not a physicist's measurement)",
        "nominal_kv": source.nominal_kv,
        "nominal_ua": source.nominal_ua,
        "qa_exposure_s": source.qa_exposure_s,
        "reference_reading_nc": round(source.reference_reading_c * 1e9, 6),
        "applicators": [
            {"diameter_cm": a.diameter_cm, "surface_dose_rate_gy_per_min": a.surface_dose_rate_gy_per_min,
             "assumption": a.assumption, "note": a.note}
            for a in source.applicators
        ],
    }
