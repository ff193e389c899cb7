"""The treatment service: the one Qt-free facade the bedside UI and the CLI use for a whole treatment
(patient, plan, approvals, checklist, device preparation, delivery through the Supervisor, delivery
record, crash recovery). Permissions are enforced here and every operation is audited.

It never calls a device from the caller's thread once the Supervisor runs, never switches the beam on
without a stored record draft, never restarts a beam by itself, and never clips or defaults a value.
"""
from __future__ import annotations

import enum
import hashlib
import logging
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from drivers.errors import DeviceError
from drivers.hal import DoseReadout, ReadoutIdentity, XraySource, XrsIdentity, XrsState
from logs.canonical import utc_now_iso
from logs.records import (ApprovalRef, BeamSession, CalibrationUsed, ConsoleIdentity, DeliveryRecord, DeviceIdentity,
                          DoseByChannel, InterlockEvent, Interruption, PatientIdentity, PlanSummary, QaUsed,
                          RecordBook, TerminationCause)
from logs.signing import Meaning
from logs.store import Store, StoreError
from orconsole import __version__
from orconsole.calibration import (CalibrationInterlock, StoreCalibrationRepository,
                                   active_calibration_or_interlock)
from orconsole.config import SiteConfig
from orconsole.dosecalc import compute_treatment_time, make_plan, parse_prescription_gy
from orconsole.dosecheck import check_plan
from orconsole.identity import IdentityService, Permission, PermissionDenied, Role, Session
from orconsole.journal import read_journal
from orconsole.models import (Approval, ApprovedPlan, ApproverRole, Cavity, DeliveryType, Patient, Plan, QaResult,
                              Refused, TrialProtocol)
from orconsole.qa import QaPolicy, StoreQaRepository, qa_results_for_planning
from orconsole.statemachine import State
from orconsole.supervisor import (CommandResult, Snapshot, SnapshotMailbox, Supervisor,
                                  TerminationStatus)

log = logging.getLogger(__name__)

PATIENT_KIND = "patient"
PLAN_KIND = "plan"
JOURNAL_FILE = "treatment-journal.jsonl"


class WorkflowRefused(Exception):
    """An operation the service will not do now. `message` says what happened and what to do."""

    def __init__(self, message: str, *, code: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------------------
# What the screens read: checklist, device info, recovery, workflow status
# --------------------------------------------------------------------------------------------


class WorkflowStep(str, enum.Enum):
    """Where the treatment workflow stands (the UI shows the matching screen)."""

    DEVICES_DISCONNECTED = "devices_disconnected"
    NO_PATIENT = "no_patient"
    PATIENT_SELECTED = "patient_selected"
    PLAN_CREATED = "plan_created"              # prescribed, awaiting approvals
    PLAN_APPROVED = "plan_approved"            # both approvals given
    READY_TO_TREAT = "ready_to_treat"          # checklist passed, record draft stored, supervisor armed/ready
    TREATING = "treating"                      # armed, beam on or paused
    DELIVERY_ENDED = "delivery_ended"          # completed/terminated/fault: record awaits finalisation
    RECORD_SIGNED = "record_signed"
    INTERRUPTED = "interrupted"                # console restarted during a treatment: a decision is needed


@dataclass(frozen=True)
class ChecklistItem:
    """One pre-treatment check. `message` says what was found and, when not ok, what to do."""

    key: str          # patient_identity | plan_approved | applicator | source | output_check |
                      # calibration | devices_connected | record_store
    label: str
    ok: bool
    message: str


@dataclass(frozen=True)
class Checklist:
    items: tuple[ChecklistItem, ...]
    checked_utc: str

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(i.ok for i in self.items)

    def failures(self) -> tuple[ChecklistItem, ...]:
        return tuple(i for i in self.items if not i.ok)

    def item(self, key: str) -> ChecklistItem:
        return next(i for i in self.items if i.key == key)


@dataclass(frozen=True)
class DeviceInfo:
    """Identities of the connected devices (for the record and the status bar)."""

    xrs: XrsIdentity | None
    readout: ReadoutIdentity | None


@dataclass(frozen=True)
class RecoveryInfo:
    """An unfinished treatment found in the journal at start-up, with the dose read back from the unit."""

    treatment_id: str
    plan_id: str
    plan_hash: str
    preset_s: float
    journal_elapsed_s: float                  # last journalled timer reading
    journal_irm_dose_gy: float                # last journalled secondary dose
    device_irm_dose_gy: float | None          # read back from the unit (earlier segments + since last arm)
    device_beam_on_time_s: float | None       # unit's beam-on time since its last arm
    device_state: str | None
    delivered_dose_gy: float | None           # the figure the decision uses (device read-back), None if unknown
    record_id: str | None                     # the draft record of this treatment, if found
    message: str


@dataclass(frozen=True)
class ApprovalInfo:
    role: str
    printed_name: str
    signed_utc: str
    independent_time_s: float | None = None
    deviation_fraction: float | None = None


@dataclass(frozen=True)
class WorkflowStatus:
    """Everything the screens show besides the Supervisor's Snapshot. Immutable; published on change."""

    seq: int
    step: WorkflowStep
    patient: Patient | None
    plan: Plan | None
    approvals: tuple[ApprovalInfo, ...]
    missing_approvals: tuple[str, ...]
    checklist: Checklist | None
    devices: DeviceInfo
    record_id: str | None
    record_sessions: int
    delivered_primary_gy: float               # all recorded sessions of this record (continuations included)
    delivered_secondary_gy: float
    recovery: RecoveryInfo | None
    last_message: str


class StatusMailbox:
    """Latest-value hand-off of WorkflowStatus to one subscriber; writing never blocks or queues."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._status: WorkflowStatus | None = None

    def put(self, status: WorkflowStatus) -> None:
        with self._cond:
            self._status = status
            self._cond.notify_all()

    def latest(self) -> WorkflowStatus | None:
        with self._cond:
            return self._status

    def wait_for(self, predicate: Callable[[WorkflowStatus], bool], timeout_s: float) -> WorkflowStatus | None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self._status is not None and predicate(self._status), timeout=timeout_s)
            return self._status if ok else None


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one delivery (one plan version) produced, as recorded."""

    record_id: str
    session_index: int
    termination: TerminationStatus
    termination_cause: str
    planned_time_s: float
    console_beam_on_s: float
    device_beam_on_s: float
    primary_dose_gy: float
    secondary_dose_gy: float
    interlocks: tuple[str, ...]
    interruptions: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------


class TreatmentService:
    """The treatment workflow over one store, one identity service, one site configuration and one pair
    of devices. Built by the composition root (orconsole/cli.py or the UI's app wiring); nothing else
    constructs drivers or stores.

    Threading: call the operations from one thread (the UI's or the CLI's). Beam commands go through the
    Supervisor's queue and return its CommandResult; device I/O after `start()` happens only on the
    Supervisor's thread. Screens subscribe to `subscribe_treatment()` (Supervisor Snapshot, 20 Hz) and
    `subscribe_status()` (WorkflowStatus, on every change); they never call drivers.

    Every operation taking a `Session` checks its permission here (PermissionDenied, audited by the
    identity service) and writes an audit entry. Refusals raise WorkflowRefused / Refused with the reason.
    """

    def __init__(self, *, store: Store, identity: IdentityService, config: SiteConfig, xrs: XraySource,
                 readout: DoseReadout | None, journal_dir: str | Path, clock,
                 protocol: TrialProtocol | None = None, today: Callable[[], date] = date.today,
                 utc_now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 qa_policy: QaPolicy | None = None, software_version: str = __version__,
                 room: str = "", warm_up_timeout_s: float = 120.0) -> None:
        raise NotImplementedError

    # -- snapshots -------------------------------------------------------------------------------
    def subscribe_status(self) -> StatusMailbox:
        """WorkflowStatus mailbox (latest value only)."""
        raise NotImplementedError

    def subscribe_treatment(self) -> SnapshotMailbox:
        """The Supervisor's Snapshot mailbox (valid after `start()`)."""
        raise NotImplementedError

    def status(self) -> WorkflowStatus:
        raise NotImplementedError

    # -- devices and supervisor ---------------------------------------------------------------------
    def connect_devices(self) -> DeviceInfo:
        """Connect the X-ray unit (and the electrometer when given). Before `start()` only."""
        raise NotImplementedError

    def start(self) -> RecoveryInfo | None:
        """Start the Supervisor (journal opened; an unfinished treatment → INTERRUPTED, returned here)."""
        raise NotImplementedError

    def prepare_devices(self, *, on_progress: Callable[[str], None] | None = None) -> DeviceInfo:
        """Technique 50 kV / 40 µA and warm-up through the Supervisor; waits until the unit is READY."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the Supervisor (beam off) and close the devices."""
        raise NotImplementedError

    # -- patient ------------------------------------------------------------------------------------
    def register_patient(self, session: Session, patient: Patient) -> Patient:
        raise NotImplementedError

    def select_patient(self, session: Session, *, medical_record_number: str, date_of_birth: date) -> Patient:
        """Select a registered patient by two identifiers (MRN and date of birth); both must match."""
        raise NotImplementedError

    # -- plan ---------------------------------------------------------------------------------------
    def create_plan(self, session: Session, password: str, *, prescription_text: str, applicator_cm: float,
                    cavity: Cavity) -> Plan:
        """The physician prescribes (typed text, parse_prescription_gy) and the time is calculated from the
        active calibration and today's output check; stored as a final plan document signed 'prescribed'."""
        raise NotImplementedError

    def approve_plan(self, session: Session, password: str, *, physicist_time_s: float | None = None) -> ApprovedPlan:
        """Physician (radiation oncologist) or physicist approval of the current plan version, signed
        'approved plan'. The physicist's approval needs the independent check (dosecheck, or the
        physicist's own figure) to agree within the configured fraction. A therapist is refused."""
        raise NotImplementedError

    # -- checklist and delivery -----------------------------------------------------------------------
    def run_checklist(self, session: Session, *, medical_record_number: str, date_of_birth: date,
                      identity_methods: tuple[str, str] = ("medical record number", "date of birth")) -> Checklist:
        """Structured pre-treatment checks (each ok + message). The identity is confirmed at the Supervisor."""
        raise NotImplementedError

    def start_treatment(self, session: Session) -> CommandResult:
        """Checklist passed → record draft stored → plan loaded, approved, ready, armed (beam still off)."""
        raise NotImplementedError

    def beam_on(self, session: Session) -> CommandResult: raise NotImplementedError
    def pause(self, session: Session, reason: str = "paused by the operator") -> CommandResult: raise NotImplementedError
    def resume(self, session: Session) -> CommandResult: raise NotImplementedError
    def stop(self, session: Session, reason: str = "stopped by the operator") -> CommandResult: raise NotImplementedError
    def emergency_stop(self) -> CommandResult:
        """No permission check: anyone at the console may stop the beam."""
        raise NotImplementedError

    def wait_for_end(self, timeout_s: float) -> DeliveryOutcome:
        """Block the caller until the delivery ended and its session is in the record."""
        raise NotImplementedError

    def finish_record(self, session: Session, password: str, *, comments: str = "") -> str:
        """Finalise the record (totals, completion) and sign 'performed delivery' (countersigned by the
        installation key). Returns the record id."""
        raise NotImplementedError

    # -- continuation and recovery ----------------------------------------------------------------------
    def plan_continuation(self, session: Session, password: str) -> Plan:
        """After a stop/interlock/fault/recovery: a new plan version (CONTINUATION) for the remainder,
        delivered into the same record; needs both approvals again."""
        raise NotImplementedError

    def recovery(self) -> RecoveryInfo | None:
        raise NotImplementedError

    def decide_recovery(self, session: Session, password: str, *, decision: str, acknowledgement: str) -> RecoveryInfo:
        """Authorised decision after a crash (physicist or physician): 'continue' (the remainder will be a
        continuation plan) or 'close' (the record is finalised incomplete). Never switches the beam on."""
        raise NotImplementedError
