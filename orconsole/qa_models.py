"""Records of the physicist's daily QA (output check, isotropy, mechanics) and of imported source
calibrations, as stored: every raw reading, the conditions, the limits used and the instruments.

Frozen once made; an acknowledgement or a signature is a separate record that refers to it. Never
edit a stored QA record: repeat the check instead.
"""
from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from orconsole.models import ApplicatorCm, ApplicatorDoseRate, QaOutcome, QaResult, SourceCalibration

CALIBRATION_FORMAT = "orconsole-source-calibration/1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ChargeReading(_Frozen):
    """One held electrometer reading of one fixed QA exposure."""

    attempt: int = Field(ge=1)             # 1 = first series, 2 = the repeat after a too-wide spread
    index: int = Field(ge=1)               # reading number within the series
    charge_nc: float                       # integrated charge as read (raw, not corrected), nC
    measuring_time_s: float
    hv_v: float
    flags: int                             # UNIDOS MV error flags (0 = none)
    beam_on_time_s: float                  # as counted by the X-ray unit

    # Stored in nC: the record store writes floats with 6 decimals, which would erase a value in C.
    @property
    def charge_c(self) -> float:
        return self.charge_nc * 1e-9


class Instruments(_Frozen):
    xrs_serial: str
    xrs_model: str
    xrs_firmware: str = ""
    electrometer_serial: str
    electrometer_model: str
    electrometer_firmware: str = ""
    chamber_serial: Optional[str] = None   # entered by the physicist (the electrometer cannot tell)


class OutputCheckRecord(_Frozen):
    """The complete daily output check of one source on one calendar day of use."""

    kind: Literal["output"] = "output"
    qa_id: str
    source_serial: str
    performed_on: date                     # the calendar day of use it is valid for (local date)
    performed_at: datetime                 # with time zone
    performed_by: str                      # user name of the physicist (or "headless")
    instruments: Instruments
    calibration_sha256: str               # hash of the imported calibration file
    calibration_date: date
    reference_reading_nc: float = Field(gt=0)   # at the site's T0/P0 (what k_out divides by)
    calibration_reference_reading_nc: float = Field(gt=0)   # as the calibration states it (20 °C, 101.325 kPa)
    qa_exposure_s: float = Field(gt=0)
    kv: float
    ua: float
    measurement_range: str
    chamber_hv_v: float
    readings: tuple[ChargeReading, ...]    # every reading taken, all attempts
    used_attempt: int                      # the series whose mean is used
    spread_fraction: float                 # (max - min) / mean of the used series
    spread_limit_fraction: float
    temperature_c: float
    pressure_kpa: float
    temperature_entered: str               # what the physicist typed, with its unit
    pressure_entered: str
    reference_temperature_c: float
    reference_pressure_kpa: float
    k_tp: float
    raw_mean_nc: float
    corrected_mean_nc: float
    k_out: float
    deviation_fraction: float              # k_out - 1
    warning_fraction: float
    window_fraction: float
    result: QaOutcome
    message: str                           # what the result means and what to do

    @property
    def reference_reading_c(self) -> float:
        return self.reference_reading_nc * 1e-9

    @property
    def raw_mean_c(self) -> float:
        return self.raw_mean_nc * 1e-9

    @property
    def corrected_mean_c(self) -> float:
        return self.corrected_mean_nc * 1e-9

    def to_qa_result(self, *, acknowledged: bool = False) -> QaResult:
        return QaResult(qa_id=self.qa_id, source_serial=self.source_serial, performed_on=self.performed_on,
                        k_out=self.k_out, result=self.result, acknowledged=acknowledged)


class IsotropyDirection(str, enum.Enum):
    PLUS_X = "plus_x"
    MINUS_X = "minus_x"
    PLUS_Y = "plus_y"
    MINUS_Y = "minus_y"
    PLUS_Z = "plus_z"


class IsotropyRecord(_Frozen):
    kind: Literal["isotropy"] = "isotropy"
    qa_id: str
    source_serial: str
    performed_on: date
    performed_at: datetime
    performed_by: str
    readings: dict[str, float]             # direction -> photodiode reading (relative)
    baseline: dict[str, float]             # direction -> the source's baseline reading
    deviations: dict[str, float]           # direction -> reading / baseline - 1
    tolerance_fraction: float
    passed: bool
    message: str


class IsotropyBaseline(_Frozen):
    """The photodiode readings a physicist accepted as the source's isotropy baseline (one version)."""

    baseline_id: str
    source_serial: str
    readings: dict[str, float]             # direction -> photodiode reading at acceptance
    recorded_on: date
    recorded_at: datetime
    recorded_by: str
    note: str = ""


class MechanicsRecord(_Frozen):
    kind: Literal["mechanics"] = "mechanics"
    qa_id: str
    source_serial: str
    performed_on: date
    performed_at: datetime
    performed_by: str
    probe_straightness_mm: float = Field(ge=0)
    beam_centering_mm: float = Field(ge=0)
    straightness_tolerance_mm: float
    centering_tolerance_mm: float
    passed: bool
    message: str


QaRecord = OutputCheckRecord | IsotropyRecord | MechanicsRecord


class Acknowledgement(_Frozen):
    """A physicist's acknowledgement of an output check in the warning band."""

    qa_id: str
    acknowledged_by: str
    acknowledged_at: datetime
    comment: str


class CalibrationApplicator(_Frozen):
    diameter_cm: ApplicatorCm
    surface_dose_rate_gy_per_min: float = Field(gt=0, le=1000.0)  # the import limit is the real check
    assumption: bool = False
    note: str = ""


class CalibrationRecord(_Frozen):
    """One imported calibration file of one source (one version). Everything the file said, plus
    where it came from; `to_source_calibration()` gives the core's model."""

    format: Literal["orconsole-source-calibration/1"] = CALIBRATION_FORMAT
    source_serial: str
    source_model: str
    calibration_date: date
    valid_until: date
    calibrated_by: str
    nominal_kv: float = Field(gt=0, le=50.0)
    nominal_ua: float = Field(gt=0, le=40.0)
    qa_exposure_s: float = Field(gt=0, le=600.0)
    reference_reading_nc: float = Field(gt=0)
    applicators: tuple[CalibrationApplicator, ...]
    imported_from: str                     # file name as given
    file_sha256: str                       # hash of the imported bytes

    @property
    def reference_reading_c(self) -> float:
        return self.reference_reading_nc * 1e-9

    def to_source_calibration(self) -> SourceCalibration:
        return SourceCalibration(
            source_serial=self.source_serial,
            dose_rates=tuple(ApplicatorDoseRate(diameter_cm=a.diameter_cm,
                                                surface_dose_rate_gy_per_min=a.surface_dose_rate_gy_per_min,
                                                assumption=a.assumption) for a in self.applicators),
            qa_reference_reading_c=self.reference_reading_c, calibration_date=self.calibration_date,
            valid_until=self.valid_until, calibrated_by=self.calibrated_by)
