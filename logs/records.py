"""The delivery record: one per patient treatment (continuations included), its schema and its
life cycle: a draft that beam sessions are appended to, then finalised (frozen, hashed) and signed.

Plain pydantic v2 models; the treatment engine fills them. Never edits a final record: corrections
are addenda that reference the original's content hash. Field-by-field documentation: docs/records.md.
"""
from __future__ import annotations

import re
import uuid
from datetime import date, datetime, timezone
from enum import StrEnum
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from logs.canonical import canonical_json, utc_now_iso
from logs.store import Document, Store, StoreError

RECORD_SCHEMA = "orconsole.delivery_record/1"
ADDENDUM_SCHEMA = "orconsole.record_addendum/1"
RECORD_KIND = "delivery_record"
ADDENDUM_KIND = "addendum"


_UTC_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def _utc_text(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a timestamp without time zone cannot be recorded: give UTC")
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, str):
        if _UTC_TEXT.fullmatch(value):
            try:
                datetime.fromisoformat(value[:-1])  # a real date and time, not just the right shape
                return value
            except ValueError:
                pass
        raise ValueError(f"timestamp {value!r} is not UTC 'YYYY-MM-DDTHH:MM:SS.ffffffZ'")
    raise ValueError(f"{value!r} is not a timestamp")


def _date_text(value: Any) -> str:
    if isinstance(value, datetime):
        raise ValueError("give a date, not a date and time")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return date.fromisoformat(value).isoformat()
    raise ValueError(f"{value!r} is not a date")


UtcTimestamp = Annotated[str, BeforeValidator(_utc_text)]
"""UTC time as text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (a tz-aware datetime is accepted and converted)."""
IsoDate = Annotated[str, BeforeValidator(_date_text)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


class TerminationCause(StrEnum):
    """Why irradiation stopped in a beam session."""

    PRESET_TIME_REACHED = "preset time reached"
    MONITOR_PRESET_REACHED = "monitor preset reached"
    OPERATOR_STOP = "operator stop"
    INTERLOCK = "interlock"
    DEVICE_FAULT = "device fault"
    CONSOLE_FAULT = "console fault"
    UNKNOWN = "unknown"

    @property
    def dicom_status(self) -> str:
        """DICOM Treatment Termination Status (3008,002A)."""
        return {
            "preset time reached": "NORMAL", "monitor preset reached": "NORMAL", "operator stop": "OPERATOR",
            "interlock": "MACHINE", "device fault": "MACHINE", "console fault": "MACHINE", "unknown": "UNKNOWN",
        }[self.value]


class PatientIdentity(_Model):
    medical_record_number: str = Field(min_length=1)
    full_name: str = Field(min_length=1)
    date_of_birth: IsoDate
    trial_subject_id: str = Field(min_length=1)
    identity_verified_by: list[str] = Field(default_factory=list,
                                            description="the two methods used, e.g. ['wristband', 'stated name and date of birth']")


class PlanSummary(_Model):
    plan_id: str
    plan_version: int = Field(1, ge=1)
    plan_hash: Sha256Hex
    plan_document_id: str | None = None
    site: str
    lesion_label: str = ""
    prescription_gy: float = Field(gt=0)
    prescription_point: str = "applicator surface"
    fractions: int = Field(1, ge=1)
    dose_per_fraction_gy: float = Field(gt=0)
    applicator_diameter_cm: float = Field(gt=0, le=6.0)
    applicator_id: str = ""
    source_serial: str
    surface_dose_rate_gy_per_min: float = Field(gt=0)
    planned_time_s: float = Field(gt=0)
    irm_preset_counts: int | None = Field(None, ge=0)


class CalibrationUsed(_Model):
    calibration_digest: str
    calibration_document_id: str | None = None
    source_serial: str
    calibration_date: IsoDate | None = None
    calibrated_by: str = ""


class QaUsed(_Model):
    qa_id: str
    qa_document_id: str | None = None
    qa_hash: str | None = None
    performed_on: IsoDate
    k_out: float = Field(gt=0)
    result: str = "pass"


class ApprovalRef(_Model):
    """A copy of a signature given on the plan (the plan document holds the signature itself)."""

    meaning: str
    printed_name: str
    role: str
    signer_user_id: str
    signed_utc: UtcTimestamp
    signature_id: str
    signed_document_id: str
    signed_content_hash: Sha256Hex


class DoseByChannel(_Model):
    primary_timer_gy: float = Field(ge=0, description="dose from beam-on time x calibrated dose rate x k_out")
    secondary_irm_gy: float = Field(ge=0, description="dose from the internal radiation monitor counts")


class BeamSession(_Model):
    index: int = Field(ge=1)
    delivery_type: Literal["TREATMENT", "CONTINUATION"]
    preset_time_s: float = Field(gt=0)
    beam_on_utc: UtcTimestamp
    beam_off_utc: UtcTimestamp
    monotonic_start_s: float
    monotonic_stop_s: float
    console_beam_on_s: float = Field(ge=0)
    device_beam_on_s: float = Field(ge=0)
    dose_gy: DoseByChannel
    irm_counts: int | None = Field(None, ge=0)
    termination_cause: TerminationCause
    termination_detail: str = ""
    raw_device_log_sha256: Sha256Hex


class Interruption(_Model):
    session_index: int = Field(ge=1)
    utc: UtcTimestamp
    monotonic_s: float
    reason: str = Field(min_length=1)
    initiated_by: Literal["operator", "interlock", "device", "console"]
    delivered_so_far_gy: float | None = Field(None, ge=0)


class InterlockEvent(_Model):
    utc: UtcTimestamp
    monotonic_s: float
    session_index: int | None = None
    interlock: str
    state: Literal["raised", "cleared"]
    detail: str = ""


class DeviceIdentity(_Model):
    role: str = Field(description="'x-ray source', 'control unit', 'electrometer', ...")
    manufacturer: str = ""
    model: str = ""
    serial_number: str
    firmware_version: str = ""


class ConsoleIdentity(_Model):
    installation_key_id: str
    hostname: str = ""
    room: str = ""


class Totals(_Model):
    console_beam_on_s: float
    device_beam_on_s: float
    dose_gy: DoseByChannel
    sessions: int


class DeliveryRecord(_Model):
    """Everything about one patient's treatment (all beam sessions, continuations included)."""

    schema_: Literal["orconsole.delivery_record/1"] = Field(RECORD_SCHEMA, alias="schema")
    record_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    created_utc: UtcTimestamp = Field(default_factory=utc_now_iso)
    treatment_date: IsoDate
    patient: PatientIdentity
    plan: PlanSummary
    calibration: CalibrationUsed
    qa: QaUsed
    approvals: list[ApprovalRef] = Field(default_factory=list)
    sessions: list[BeamSession] = Field(default_factory=list)
    interruptions: list[Interruption] = Field(default_factory=list)
    interlock_events: list[InterlockEvent] = Field(default_factory=list)
    devices: list[DeviceIdentity] = Field(default_factory=list)
    software_version: str
    console: ConsoleIdentity
    completion: Literal["in progress", "complete", "incomplete"] = "in progress"
    comments: str = ""
    totals: Totals | None = None

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True, populate_by_name=True)

    @field_validator("sessions")
    @classmethod
    def _sessions_numbered(cls, sessions: list[BeamSession]) -> list[BeamSession]:
        for i, s in enumerate(sessions, start=1):
            if s.index != i:
                raise ValueError(f"beam session {s.index} is in position {i}: sessions are numbered 1, 2, 3, ...")
            if i > 1 and s.delivery_type != "CONTINUATION":
                raise ValueError(f"beam session {i} follows an earlier session: its delivery type must be CONTINUATION")
        return sessions

    def to_json_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_json_data())

    def computed_totals(self) -> Totals:
        return Totals(
            console_beam_on_s=sum(s.console_beam_on_s for s in self.sessions),
            device_beam_on_s=sum(s.device_beam_on_s for s in self.sessions),
            dose_gy=DoseByChannel(primary_timer_gy=sum(s.dose_gy.primary_timer_gy for s in self.sessions),
                                  secondary_irm_gy=sum(s.dose_gy.secondary_irm_gy for s in self.sessions)),
            sessions=len(self.sessions))


class Correction(_Model):
    field_path: str = Field(description="dotted path in the original record, e.g. 'sessions.1.termination_detail'")
    recorded_value: Any = None
    corrected_value: Any = None


class RecordAddendum(_Model):
    """A signed correction. The original stays as it was; this references its content hash."""

    schema_: Literal["orconsole.record_addendum/1"] = Field(ADDENDUM_SCHEMA, alias="schema")
    addendum_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    amends_record_id: str
    amends_content_hash: Sha256Hex
    created_utc: UtcTimestamp = Field(default_factory=utc_now_iso)
    author: str
    reason: str = Field(min_length=1)
    corrections: list[Correction] = Field(default_factory=list)
    note: str = ""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class RecordBook:
    """Delivery-record life cycle on a Store: start a draft, append to it, finalise, amend.

    Signing is done through orconsole.identity.IdentityService.sign(session, password, record_id,
    Meaning.PERFORMED_DELIVERY / REVIEWED_RECORD) so that permissions and password re-entry apply.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def start(self, record: DeliveryRecord, *, actor: str) -> str:
        """Store a new draft; returns its record_id (also the document id)."""
        self.store.create_document(RECORD_KIND, record.to_json_data(), actor=actor, doc_id=record.record_id,
                                   subject=record.patient.medical_record_number)
        return record.record_id

    def load(self, record_id: str) -> DeliveryRecord:
        doc = self.store.get_document(record_id)
        if doc.kind != RECORD_KIND:
            raise StoreError(f"document {record_id} is a {doc.kind}, not a delivery record")
        return DeliveryRecord.model_validate(doc.data)

    def update(self, record_id: str, change: Callable[[DeliveryRecord], None]) -> DeliveryRecord:
        """Apply change(record) to the draft and store it durably (refused once final)."""
        record = self.load(record_id)
        change(record)
        record = DeliveryRecord.model_validate(record.to_json_data())  # full validation, not just per field
        self.store.update_draft(record_id, record.to_json_data())
        return record

    def append_session(self, record_id: str, session: BeamSession) -> DeliveryRecord:
        return self.update(record_id, lambda r: r.sessions.append(session))

    def add_interruption(self, record_id: str, interruption: Interruption) -> DeliveryRecord:
        return self.update(record_id, lambda r: r.interruptions.append(interruption))

    def add_interlock_event(self, record_id: str, event: InterlockEvent) -> DeliveryRecord:
        return self.update(record_id, lambda r: r.interlock_events.append(event))

    def finalise(self, record_id: str, *, actor: str, completion: Literal["complete", "incomplete"],
                 comments: str = "") -> Document:
        """Compute totals, set completion, and freeze the record (content hash fixed)."""
        def _close(r: DeliveryRecord) -> None:
            r.completion = completion
            r.comments = comments
            r.totals = r.computed_totals()
        self.update(record_id, _close)
        return self.store.finalise_document(record_id, actor=actor)

    def add_addendum(self, record_id: str, *, author: str, reason: str, corrections: list[Correction],
                     note: str = "") -> Document:
        """Create a final addendum referencing the final record's content hash (to be signed 'authored addendum')."""
        original = self.store.get_document(record_id)
        if not original.is_final:
            raise StoreError(f"record {record_id} is still a draft: change the draft instead of writing an addendum")
        add = RecordAddendum(amends_record_id=record_id, amends_content_hash=original.content_hash, author=author,
                             reason=reason, corrections=corrections, note=note)
        doc = self.store.create_document(ADDENDUM_KIND, add.model_dump(mode="json", by_alias=True), actor=author,
                                         doc_id=add.addendum_id, subject=original.subject, references=original,
                                         final=True)
        return doc

    def addenda(self, record_id: str) -> list[Document]:
        return self.store.find_documents(kind=ADDENDUM_KIND, references_doc_id=record_id)

    def records_for_patient(self, medical_record_number: str) -> list[Document]:
        return self.store.find_documents(kind=RECORD_KIND, subject=medical_record_number)
