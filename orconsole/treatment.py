"""The treatment service: the one Qt-free facade the bedside UI and the CLI use for a whole treatment
(patient, plan, approvals, checklist, device preparation, delivery through the Supervisor, delivery
record, crash recovery). Permissions are enforced here and every operation is audited.

It never calls a device from the caller's thread once the Supervisor runs, never switches the beam on
without a stored record draft, never restarts a beam by itself, and never clips or defaults a value.
"""
from __future__ import annotations

import dataclasses

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
                                   active_calibration_or_interlock, calibration_interlock_reason)
from orconsole.config import SiteConfig
from orconsole.dosecalc import compute_treatment_time, make_plan, parse_prescription_gy
from orconsole.dosecheck import check_plan
from orconsole.identity import IdentityService, Permission, PermissionDenied, Role, Session
from orconsole.journal import read_journal
from orconsole.models import (Approval, ApprovedPlan, ApproverRole, Cavity, DeliveryType, Patient, Plan, QaResult,
                              Refused, TrialProtocol)
from orconsole.qa import (OutputCheck, OutputCheckRequest, QaIncomplete, QaPolicy, QaProgress, StoreQaRepository,
                          qa_results_for_planning)
from orconsole.qa_models import CalibrationRecord
from orconsole.statemachine import State
from orconsole.interlocks import ClearRole, InterlockId
from orconsole.qa import output_check_gate
from orconsole.supervisor import (CAUSE_UNKNOWN, CommandResult, DeliveryReport, IrmReconciliation, Snapshot,
                                  SnapshotMailbox, Supervisor, TerminationStatus)

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
    irm_unsettled: str | None = None          # why the last session's IRM dose is only a lower bound (link lost)


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

    Who calls which driver when: before `start()` the caller's thread connects both (`connect_devices`). From
    `start()` on, the X-ray unit belongs to the Supervisor's thread (its polls and commands), and the
    electrometer is used only by the daily output check, which `output_check_runner()` runs as one Supervisor
    command (`run_exclusive`) on that same thread; the Supervisor itself never polls the electrometer. After
    `close()` stopped the Supervisor, the caller's thread closes both.
    """

    def __init__(self, *, store: Store, identity: IdentityService, config: SiteConfig, xrs: XraySource,
                 readout: DoseReadout | None, journal_dir: str | Path, clock,
                 protocol: TrialProtocol | None = None, today: Callable[[], date] = date.today,
                 utc_now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 qa_policy: QaPolicy | None = None, software_version: str = __version__,
                 room: str = "", warm_up_timeout_s: float = 120.0, command_timeout_s: float = 10.0,
                 realtime_priority: bool = False) -> None:
        self.store = store
        self.identity = identity
        self.config = config
        self.protocol = protocol or TrialProtocol(name="IORT brain-metastasis cavity, 20 Gy single fraction",
                                                  prescription_dose_gy=config.prescription.protocol_dose_gy)
        self.qa_policy = qa_policy or QaPolicy.from_site(config)
        self._xrs = xrs
        self._readout = readout
        self.journal_dir = Path(journal_dir)
        self.journal_path = self.journal_dir / JOURNAL_FILE
        self._clock = clock
        self._today = today
        self._utc_now = utc_now
        self.software_version = software_version
        self.room = room
        self.warm_up_timeout_s = warm_up_timeout_s
        self.command_timeout_s = command_timeout_s
        self.realtime_priority = realtime_priority   # ask the OS for SCHED_FIFO for the supervisor thread
        self._book = RecordBook(store)
        self._qa_repo = StoreQaRepository(store)
        self._cal_repo = StoreCalibrationRepository(store)
        self._xrs_identity: XrsIdentity | None = None
        self._readout_identity: ReadoutIdentity | None = None
        self.supervisor: Supervisor | None = None
        self._treat_box: SnapshotMailbox | None = None
        self._status_boxes: list[StatusMailbox] = []
        self._lock = threading.RLock()
        self._seq = 0
        self._patient: Patient | None = None
        self._plan: Plan | None = None
        self._plan_doc_id: str | None = None
        self._plan_doc_hash: str | None = None     # the store's content hash of the plan document (signed)
        self._approved: ApprovedPlan | None = None
        self._approval_refs: list[ApprovalRef] = []
        self._continuation_notes: list[str] = []
        self._approval_infos: list[ApprovalInfo] = []
        self._checklist: Checklist | None = None
        self._identity_methods: tuple[str, ...] = ()
        self._verified_identifiers: tuple[str, date] | None = None
        self._record_id: str | None = None
        self._record_signed = False
        self._outcomes: list[DeliveryOutcome] = []
        self._outcome_cond = threading.Condition()
        self._delivering = False
        self._irm_unsettled: str | None = None   # why the last session's IRM dose is only a lower bound (link lost)
        self._reason_notes: list[tuple[float, str, str]] = []   # (monotonic s, user, text) not yet in the record
        self._recovery: RecoveryInfo | None = None
        self._last_message = "connect the devices"
        self._reports: queue.Queue | None = None
        self._writer: threading.Thread | None = None
        self._closing = False

    # -- snapshots -------------------------------------------------------------------------------
    def subscribe_status(self) -> StatusMailbox:
        """WorkflowStatus mailbox (latest value only)."""
        box = StatusMailbox()
        with self._lock:
            self._status_boxes.append(box)
            box.put(self._build_status())
        return box

    def subscribe_treatment(self) -> SnapshotMailbox:
        """The Supervisor's Snapshot mailbox (valid after `start()`)."""
        sup = self._require_supervisor()
        return sup.subscribe()

    def status(self) -> WorkflowStatus:
        with self._lock:
            return self._build_status()

    def _step(self) -> WorkflowStep:
        if self._recovery is not None:
            return WorkflowStep.INTERRUPTED
        if self._xrs_identity is None:
            return WorkflowStep.DEVICES_DISCONNECTED
        if self._record_signed:
            return WorkflowStep.RECORD_SIGNED
        snap = self._treat_box.latest() if self._treat_box is not None else None
        if snap is not None and snap.state in (State.ARMED, State.BEAM_ON, State.PAUSED):
            return WorkflowStep.TREATING
        if self._outcomes and not self._delivering:
            return WorkflowStep.DELIVERY_ENDED
        if snap is not None and snap.state is State.READY:
            return WorkflowStep.READY_TO_TREAT
        if self._approved is not None and self._approved.fully_approved:
            return WorkflowStep.PLAN_APPROVED
        if self._plan is not None:
            return WorkflowStep.PLAN_CREATED
        if self._patient is not None:
            return WorkflowStep.PATIENT_SELECTED
        return WorkflowStep.NO_PATIENT

    def _build_status(self) -> WorkflowStatus:
        self._seq += 1
        missing = tuple(r.value for r in self._approved.missing_roles()) if self._approved is not None else (
            tuple(r.value for r in ApproverRole) if self._plan is not None else ())
        sessions, primary, secondary = self._recorded_totals()
        return WorkflowStatus(
            seq=self._seq, step=self._step(), patient=self._patient, plan=self._plan,
            approvals=tuple(self._approval_infos), missing_approvals=missing, checklist=self._checklist,
            devices=DeviceInfo(self._xrs_identity, self._readout_identity), record_id=self._record_id,
            record_sessions=sessions, delivered_primary_gy=primary, delivered_secondary_gy=secondary,
            recovery=self._recovery, last_message=self._last_message, irm_unsettled=self._irm_unsettled)

    def _recorded_totals(self) -> tuple[int, float, float]:
        if self._record_id is None:
            return 0, 0.0, 0.0
        try:
            record = self._book.load(self._record_id)
        except StoreError:
            return 0, 0.0, 0.0
        return (len(record.sessions), sum(x.dose_gy.primary_timer_gy for x in record.sessions),
                sum(x.dose_gy.secondary_irm_gy for x in record.sessions))

    def _changed(self, message: str | None = None) -> None:
        with self._lock:
            if message is not None:
                self._last_message = message
            status = self._build_status()
            boxes = list(self._status_boxes)
        for box in boxes:
            box.put(status)

    # -- devices and supervisor ---------------------------------------------------------------------
    def connect_devices(self) -> DeviceInfo:
        """Connect the X-ray unit (and the electrometer when given). Before `start()` only."""
        if self.supervisor is not None:
            raise WorkflowRefused("the devices are already in use by the running treatment supervisor")
        try:
            self._xrs_identity = self._xrs.connect()
        except DeviceError as exc:
            raise WorkflowRefused(f"cannot connect to the X-ray unit: {exc.message}") from exc
        if self._readout is not None:
            try:
                self._readout_identity = self._readout.connect()
            except DeviceError as exc:
                raise WorkflowRefused(f"cannot connect to the electrometer: {exc.message}") from exc
        self.store.audit("console", "devices connected", {
            "xrs_serial": self._xrs_identity.serial_number, "xrs_firmware": self._xrs_identity.firmware,
            "readout_serial": self._readout_identity.serial_number if self._readout_identity else None})
        self._changed(f"connected to X-ray unit {self._xrs_identity.serial_number}")
        return DeviceInfo(self._xrs_identity, self._readout_identity)

    @property
    def xrs_identity(self) -> XrsIdentity | None:
        return self._xrs_identity

    @property
    def readout_identity(self) -> ReadoutIdentity | None:
        return self._readout_identity

    def start(self) -> RecoveryInfo | None:
        """Start the Supervisor (journal opened; an unfinished treatment → INTERRUPTED, returned here)."""
        if self.supervisor is not None:
            return self._recovery
        if self._xrs_identity is None:
            self.connect_devices()
        serial = self._xrs_identity.serial_number
        self.supervisor = Supervisor(
            self._xrs, journal_path=self.journal_path, clock=self._clock, device_source_serial=serial,
            config=self.config, today=self._today,
            qa_results=lambda: self._qa_results_for_supervisor(serial),
            calibration_problem=lambda: self._calibration_problem(serial),
            record_store_available=self.store.writable, utc_now=self._utc_now, device_log_dir=self.journal_dir,
            realtime_priority=self.realtime_priority)
        self._treat_box = self.supervisor.subscribe()
        self._reports = self.supervisor.subscribe_reports()
        self.supervisor.start()
        self._writer = threading.Thread(target=self._write_reports, name="record-writer", daemon=True)
        self._writer.start()
        snap = self._treat_box.wait_for(lambda s: True, self.command_timeout_s)
        if snap is not None and snap.state is State.INTERRUPTED:
            self._recovery = self._build_recovery()
            self.store.audit("console", "unfinished treatment found", {
                "treatment_id": self._recovery.treatment_id, "plan_id": self._recovery.plan_id,
                "journal_elapsed_s": self._recovery.journal_elapsed_s,
                "device_irm_dose_gy": self._recovery.device_irm_dose_gy})
            self._changed(self._recovery.message)
        else:
            self._changed("ready: select a patient")
        return self._recovery

    def _qa_results_for_supervisor(self, serial: str) -> list[QaResult]:
        """The Supervisor's QA probe. A store that cannot be read is a refusal with its reason (the output-check
        interlock holds the start), never an exception inside a Supervisor command, which ends it in FAULT."""
        try:
            return qa_results_for_planning(self._qa_repo, source_serial=serial, day=self._today(),
                                           policy=self.qa_policy)
        except StoreError as exc:
            raise Refused("qa_unreadable", f"today's output check cannot be read: {exc}") from exc

    def prepare_devices(self, *, on_progress: Callable[[str], None] | None = None) -> DeviceInfo:
        """Technique 50 kV / 40 µA and warm-up through the Supervisor; waits until the unit is READY."""
        sup = self._require_supervisor()
        result = sup.prepare_device().result(timeout=self.command_timeout_s)
        if not result.ok:
            raise WorkflowRefused(result.reason)
        if on_progress:
            on_progress(result.reason)
        snap = self._treat_box.wait_for(lambda s: s.device_state == XrsState.READY.value, self.warm_up_timeout_s)
        if snap is None:
            latest = self._treat_box.latest()
            raise WorkflowRefused(f"the X-ray unit did not become READY within {self.warm_up_timeout_s:.0f} s (it "
                                  f"is {latest.device_state if latest else 'unknown'}): check the unit")
        self._changed("X-ray unit warmed up and READY")
        return DeviceInfo(self._xrs_identity, self._readout_identity)

    def reconnect_devices(self, session: Session) -> CommandResult:
        """After a lost link: re-open the link to the unit through the Supervisor (never during beam). The
        link-lost interlock stays latched until cleared with `clear_interlock`."""
        self.identity.require(session, Permission.OPERATE_BEAM, "reconnect the X-ray unit")
        return self._beam_command(session, "reconnect", self._require_supervisor().reconnect)

    def clear_interlock(self, session: Session, interlock: InterlockId, *, acknowledgement: str) -> CommandResult:
        """A person clears a latched interlock with a written acknowledgement (roles per docs/interlocks.md)."""
        self.identity.require(session, Permission.OPERATE_BEAM, f"clear the {interlock.value} interlock")
        role = {Role.RADIATION_THERAPIST: ClearRole.THERAPIST, Role.MEDICAL_PHYSICIST: ClearRole.PHYSICIST,
                Role.RADIATION_ONCOLOGIST: ClearRole.PHYSICIAN}.get(Role(session.role))
        if role is None:
            raise PermissionDenied(f"{session.full_name} ({session.role}) cannot clear interlocks")
        sup = self._require_supervisor()
        return self._beam_command(session, f"clear interlock {interlock.value}",
                                  lambda: sup.clear_interlock(interlock, role=role, acknowledgement=acknowledgement))

    def close(self) -> None:
        """Stop the Supervisor (beam off) and close the devices."""
        self._closing = True
        if self.supervisor is not None:
            self.supervisor.close()
        if self._writer is not None and self._reports is not None:
            self._reports.put(None)
            self._writer.join(5.0)
        for device in (self._xrs, self._readout):
            if device is not None:
                try:
                    device.close()
                except Exception:  # noqa: BLE001 - closing is best effort; the link is gone either way
                    pass

    def _require_supervisor(self) -> Supervisor:
        if self.supervisor is None:
            raise WorkflowRefused("the treatment supervisor is not running: connect the devices and start the "
                                  "console first")
        return self.supervisor

    # -- patient ------------------------------------------------------------------------------------
    def register_patient(self, session: Session, patient: Patient) -> Patient:
        self.identity.require(session, Permission.SELECT_PATIENT, "register a patient")
        for doc in self.store.find_documents(kind=PATIENT_KIND, subject=patient.medical_record_number):
            existing = Patient.model_validate(doc.data)
            if existing != patient:
                raise WorkflowRefused(f"medical record number {patient.medical_record_number} is already registered "
                                      f"for {existing.full_name} (born {existing.date_of_birth}): check the entry")
            self._changed(f"patient {patient.full_name} already registered")
            return existing
        self.store.create_document(PATIENT_KIND, patient.model_dump(mode="json"), actor=session.username,
                                   subject=patient.medical_record_number, final=True)
        self._changed(f"patient {patient.full_name} registered")
        return patient

    def select_patient(self, session: Session, *, medical_record_number: str, date_of_birth: date) -> Patient:
        """Select a registered patient by two identifiers (MRN and date of birth); both must match."""
        self.identity.require(session, Permission.SELECT_PATIENT, "select a patient")
        docs = self.store.find_documents(kind=PATIENT_KIND, subject=medical_record_number)
        if not docs:
            raise WorkflowRefused(f"no patient with medical record number {medical_record_number!r} is registered: "
                                  "check the number or register the patient")
        patient = Patient.model_validate(docs[-1].data)
        if patient.date_of_birth != date_of_birth:
            self.store.audit(session.username, "patient selection refused",
                             {"medical_record_number": medical_record_number, "reason": "date of birth differs"})
            raise WorkflowRefused(f"the date of birth {date_of_birth} does not match the patient registered under "
                                  f"{medical_record_number}: stop and check the patient's identity")
        with self._lock:
            if self._patient is not None and self._patient != patient and self._delivering:
                raise WorkflowRefused("a delivery is in progress: finish it before selecting another patient")
            if self._patient != patient:
                self._reset_patient_state()
            self._patient = patient
        self.store.audit(session.username, "patient selected", {"medical_record_number": medical_record_number,
                                                                "identifiers": ["medical record number", "date of birth"]})
        self._changed(f"patient {patient.full_name} selected")
        return patient

    def _reset_patient_state(self) -> None:
        self._plan = self._plan_doc_id = self._approved = None
        self._approval_refs, self._approval_infos = [], []
        self._checklist = None
        self._record_id = None
        self._record_signed = False
        self._outcomes = []

    # -- plan ---------------------------------------------------------------------------------------
    def _active_calibration(self):
        serial = self._xrs_identity.serial_number
        try:
            record = active_calibration_or_interlock(self._cal_repo, serial, today=self._today(),
                                                     max_validity_days=self.qa_policy.calibration_max_validity_days)
        except CalibrationInterlock as exc:
            raise WorkflowRefused(str(exc), code="calibration") from exc
        stored = self._cal_repo.active(serial)
        return record, stored.doc_id if stored is not None else None

    def _calibration_problem(self, serial: str) -> str | None:
        """For the CALIBRATION_NOT_VALID interlock (Supervisor thread): None when the connected source has a
        usable active calibration and it is the one the loaded plan was calculated with."""
        reason = calibration_interlock_reason(self._cal_repo, serial, today=self._today(),
                                              max_validity_days=self.qa_policy.calibration_max_validity_days)
        if reason is not None:
            return reason
        plan = self._plan
        if plan is not None and plan.source_serial != serial:
            return f"the plan is for source {plan.source_serial}, the connected source is {serial}: re-plan"
        return None

    def _qa_results(self) -> list[QaResult]:
        return qa_results_for_planning(self._qa_repo, source_serial=self._xrs_identity.serial_number,
                                       day=self._today(), policy=self.qa_policy)

    def create_plan(self, session: Session, password: str, *, prescription_text: str, applicator_cm: float,
                    cavity: Cavity) -> Plan:
        """The physician prescribes (typed text, parse_prescription_gy) and the time is calculated from the
        active calibration and today's output check; stored as a final plan document signed 'prescribed'."""
        self.identity.require(session, Permission.PRESCRIBE, "prescribe and create a plan")
        if self._patient is None:
            raise WorkflowRefused("no patient is selected: select the patient by two identifiers first")
        if self._xrs_identity is None:
            raise WorkflowRefused("the X-ray unit is not connected: the plan is calculated for the connected source")
        if self._delivering:
            raise WorkflowRefused("a delivery is in progress: a new plan can be made after it ended")
        prescription_gy = parse_prescription_gy(prescription_text, self.protocol, self.config)
        calibration, _ = self._active_calibration()
        time_ = compute_treatment_time(prescription_dose_gy=prescription_gy, applicator_cm=applicator_cm,
                                       protocol=self.protocol, calibration=calibration.to_source_calibration(),
                                       qa_results=self._qa_results(),
                                       device_source_serial=self._xrs_identity.serial_number, today=self._today(),
                                       config=self.config)
        plan = make_plan(time_, plan_id=f"PLAN-{uuid.uuid4().hex[:10]}", patient=self._patient, cavity=cavity,
                         protocol=self.protocol, created_at=self._utc_now(), created_by=session.username)
        self._store_plan(session, password, plan, new_record=True)
        self._changed(f"plan {plan.plan_id} v{plan.version}: {plan.preset_time_s:.1f} s for "
                      f"{plan.dose_to_deliver_gy:g} Gy with the {plan.applicator_cm:.1f} cm applicator; awaiting "
                      "physician and physicist approval")
        return plan

    def _store_plan(self, session: Session, password: str, plan: Plan, *, new_record: bool) -> None:
        doc = self.store.create_document(PLAN_KIND, _plan_document(plan), actor=session.username,
                                         subject=plan.patient.medical_record_number, final=True)
        row = self.identity.sign(session, password, doc.doc_id, Meaning.PRESCRIBED)
        with self._lock:
            self._plan, self._plan_doc_id, self._plan_doc_hash = plan, doc.doc_id, doc.content_hash
            self._approved = ApprovedPlan(plan=plan)
            self._approval_infos = []
            self._approval_refs = [_approval_ref(row)]
            if new_record:
                self._continuation_notes = []
                self._reason_notes = []
            self._checklist = None
            if new_record:
                self._record_id = None
                self._record_signed = False
                self._outcomes = []

    def approve_plan(self, session: Session, password: str, *, physicist_time_s: float | None = None) -> ApprovedPlan:
        """Physician (radiation oncologist) or physicist approval of the current plan version, signed
        'approved plan'. The physicist's approval needs the independent check (dosecheck, or the
        physicist's own figure) to agree within the configured fraction. A therapist is refused."""
        self.identity.require(session, Permission.APPROVE_PLAN, "approve a treatment plan")
        if self._plan is None or self._approved is None:
            raise WorkflowRefused("there is no plan to approve: the physician creates the plan first")
        role = {Role.RADIATION_ONCOLOGIST: ApproverRole.PHYSICIAN,
                Role.MEDICAL_PHYSICIST: ApproverRole.PHYSICIST}.get(Role(session.role))
        if role is None:
            raise PermissionDenied(f"{session.full_name} is a {session.role}: only a radiation oncologist or a "
                                   "medical physicist approves a plan")
        if role in {a.role for a in self._approved.approvals}:
            raise WorkflowRefused(f"plan version {self._plan.version} already carries the {role.value} approval")
        check = None
        if role is ApproverRole.PHYSICIST:
            calibration, _ = self._active_calibration()
            check = check_plan(self._plan, calibration.to_source_calibration(),
                               agreement_fraction=self.config.planning.independent_check_agreement_fraction,
                               physicist_time_s=physicist_time_s)
            self.store.audit(session.username, "independent check", {
                "plan_id": self._plan.plan_id, "plan_version": self._plan.version, "method": check.method,
                "plan_time_s": check.plan_time_s, "independent_time_s": check.independent_time_s,
                "deviation_fraction": check.deviation_fraction, "agrees": check.agrees})
            if not check.agrees:
                raise WorkflowRefused(
                    f"independent time {check.independent_time_s:.1f} s differs from the plan's {check.plan_time_s:.1f} s "
                    f"by {check.deviation_fraction * 100:.2f} % (limit {check.agreement_fraction * 100:.1f} %): find "
                    "the discrepancy before approving", code="check_disagrees")
        row = self.identity.sign(session, password, self._plan_doc_id, Meaning.APPROVED_PLAN)
        approval = Approval(plan_content_hash=self._plan.content_hash, role=role, approver_id=session.user_id,
                            approver_name=session.full_name, approved_at=datetime.fromisoformat(
                                row.signed_utc.replace("Z", "+00:00")),
                            signature_ref=row.sig_id, independent_check=check)
        with self._lock:
            self._approved = self._approved.with_approval(approval)
            self._approval_refs.append(_approval_ref(row))
            self._approval_infos.append(ApprovalInfo(
                role=role.value, printed_name=row.printed_name, signed_utc=row.signed_utc,
                independent_time_s=check.independent_time_s if check else None,
                deviation_fraction=check.deviation_fraction if check else None))
        missing = self._approved.missing_roles()
        self._changed(f"{role.value} approval by {row.printed_name}" + (
            f"; awaiting the {missing[0].value}" if missing else "; the plan is approved"))
        return self._approved

    # -- checklist and delivery -----------------------------------------------------------------------
    def run_checklist(self, session: Session, *, medical_record_number: str, date_of_birth: date,
                      identity_methods: tuple[str, str] = ("medical record number", "date of birth")) -> Checklist:
        """Structured pre-treatment checks (each ok + message). The identity is confirmed at the Supervisor."""
        self.identity.require(session, Permission.OPERATE_BEAM, "run the pre-treatment checklist")
        items: list[ChecklistItem] = []
        plan, patient = self._plan, self._patient
        # 1. patient identity by two identifiers
        if patient is None or plan is None:
            items.append(ChecklistItem("patient_identity", "Patient identity (two identifiers)", False,
                                       "no patient and plan selected: select the patient and the plan"))
        else:
            wrong = [n for n, ok in (("medical record number", medical_record_number == plan.patient.medical_record_number),
                                     ("date of birth", date_of_birth == plan.patient.date_of_birth)) if not ok]
            items.append(ChecklistItem(
                "patient_identity", "Patient identity (two identifiers)", not wrong,
                f"{plan.patient.full_name}: medical record number and date of birth match the plan" if not wrong else
                f"{' and '.join(wrong)} do not match the plan's patient {plan.patient.full_name}: stop and check the "
                "patient and the plan"))
        # 2. plan approved
        approved = self._approved is not None and self._approved.fully_approved
        items.append(ChecklistItem(
            "plan_approved", "Plan approved by physician and physicist", approved,
            f"plan {plan.plan_id} version {plan.version} approved by both" if approved else
            (f"missing: {', '.join(r.value for r in self._approved.missing_roles())} approval"
             if self._approved is not None else "no plan")))
        snap = self._treat_box.latest() if self._treat_box is not None else None
        fresh = snap is not None and snap.link_ok and (self._clock.now_s() - snap.host_time_s) < 2.0
        # 3. applicator reported live by the unit
        if plan is None:
            items.append(ChecklistItem("applicator", "Applicator mounted = plan", False, "no plan"))
        elif not fresh:
            items.append(ChecklistItem("applicator", "Applicator mounted = plan", False,
                                       "no current status from the X-ray unit: check the link"))
        else:
            mounted = snap.applicator_cm
            ok = mounted == plan.applicator_cm
            items.append(ChecklistItem(
                "applicator", "Applicator mounted = plan", ok,
                f"the unit senses the {mounted:.1f} cm applicator, as planned" if ok else
                (f"the unit senses {'no applicator' if mounted is None else f'the {mounted:.1f} cm applicator'}, the "
                 f"plan requires {plan.applicator_cm:.1f} cm: mount the {plan.applicator_cm:.1f} cm applicator or "
                 "re-plan")))
        # 4. source
        serial = self._xrs_identity.serial_number if self._xrs_identity else None
        ok = plan is not None and serial == plan.source_serial
        items.append(ChecklistItem("source", "Connected source = plan's source", ok,
                                   f"source {serial}" if ok else f"connected source {serial}, plan for "
                                   f"{plan.source_serial if plan else '—'}: connect the planned source or re-plan"))
        # 5. output check today
        if serial is None:
            items.append(ChecklistItem("output_check", "Output check passed today", False, "no source connected"))
        else:
            gate = output_check_gate(self._qa_repo, source_serial=serial, day=self._today(), policy=self.qa_policy)
            ok = gate.allowed and (plan is None or gate.qa_result is None or gate.qa_result.k_out == plan.k_out)
            msg = gate.reason if gate.allowed == ok else (
                f"{gate.reason}; but the plan used k_out {plan.k_out:.4f} ({plan.qa_id}): re-plan with today's check")
            items.append(ChecklistItem("output_check", "Output check passed today", ok, msg))
        # 6. calibration active and the plan's
        try:
            calibration, _ = self._active_calibration() if serial else (None, None)
            digest = calibration.to_source_calibration().content_digest if calibration else None
            ok = plan is not None and digest == plan.calibration_digest
            items.append(ChecklistItem("calibration", "Active calibration = plan's", ok,
                                       f"calibration of {calibration.calibration_date} active" if ok else
                                       "the active calibration is not the one the plan was calculated with: re-plan"))
        except WorkflowRefused as exc:
            items.append(ChecklistItem("calibration", "Active calibration = plan's", False, exc.message))
        # 7. devices connected
        ok = fresh and self._xrs_identity is not None and (self._readout is None or self._readout_identity is not None)
        ready = ok and snap.device_state in (XrsState.READY.value, XrsState.ARMED.value)
        items.append(ChecklistItem(
            "devices_connected", "Devices connected and ready", ready,
            (f"X-ray unit {serial} {snap.device_state}" + (f", electrometer {self._readout_identity.serial_number}"
                                                           if self._readout_identity else "")) if ready else
            ("the X-ray unit is " + (snap.device_state if snap else "not answering") +
             ": connect it and run the warm-up until it is READY" if not ok or snap is None else
             f"the X-ray unit is {snap.device_state}: wait until it is READY (warm-up)")))
        # 8. record store writable
        health = self.store.healthcheck()
        items.append(ChecklistItem("record_store", "Record store writable", health.ok,
                                   health.reason))
        checklist = Checklist(tuple(items), utc_now_iso())
        with self._lock:
            self._checklist = checklist
            self._identity_methods = tuple(identity_methods)
            self._verified_identifiers = (medical_record_number, date_of_birth) if checklist.item(
                "patient_identity").ok else None
        self.store.audit(session.username, "pre-treatment checklist",
                         {"ok": checklist.ok, "items": {i.key: i.ok for i in items}})
        self._changed("checklist passed" if checklist.ok else
                      "checklist: " + "; ".join(i.message for i in checklist.failures()))
        return checklist

    def start_treatment(self, session: Session) -> CommandResult:
        """Checklist passed → record draft stored → plan loaded, approved, ready, armed (beam still off)."""
        self.identity.require(session, Permission.OPERATE_BEAM, "start a treatment")
        sup = self._require_supervisor()
        if self._checklist is None or not self._checklist.ok or self._verified_identifiers is None:
            raise WorkflowRefused("the pre-treatment checklist has not passed: run it and resolve every item")
        if self._approved is None or not self._approved.fully_approved:
            raise WorkflowRefused("the plan is not approved by physician and physicist")
        # no beam that cannot be recorded: the draft exists before anything is armed
        try:
            self._ensure_record_draft(session)
        except (StoreError, OSError, ValueError) as exc:
            raise WorkflowRefused(f"the delivery record could not be stored ({exc}): no beam without a record; "
                                  "check the record store") from exc
        state = self._treat_box.latest().state if self._treat_box.latest() else State.IDLE
        steps: list[Callable[[], Future]] = []
        if state in (State.COMPLETED, State.TERMINATED):
            steps.append(sup.reset)
        elif state not in (State.IDLE,):
            if state in (State.PLAN_LOADED, State.APPROVED, State.READY):
                steps.append(sup.unload_plan)
            else:
                raise WorkflowRefused(f"the treatment is {state.value}: finish or resolve it first")
        mrn, dob = self._verified_identifiers
        steps += [lambda: sup.load_plan(ApprovedPlan(plan=self._plan)), lambda: sup.approve(self._approved),
                  lambda: sup.verify_identity(medical_record_number=mrn, date_of_birth=dob),
                  sup.confirm_ready, sup.arm]
        result = None
        for step in steps:
            result = step().result(timeout=self.command_timeout_s)
            if not result.ok:
                break
        self.store.audit(session.username, "treatment armed" if result.ok else "treatment start refused",
                         {"record_id": self._record_id, "plan_id": self._plan.plan_id,
                          "plan_version": self._plan.version, "reason": result.reason})
        self._changed(result.reason)
        return result

    def _ensure_record_draft(self, session: Session) -> None:
        plan = self._plan
        if self._record_id is not None:
            # A continuation: record.plan stays the first plan version; the continuation's approvals join
            # record.approvals (each names the plan document it signs, and logs.verify checks it there), and
            # its plan document is named in the record's comments at finalisation and in the audit trail.
            refs = list(self._approval_refs)

            def add_continuation_approvals(record: DeliveryRecord) -> None:
                known = {a.signature_id for a in record.approvals}
                record.approvals.extend(a for a in refs if a.signature_id not in known)

            record = self._book.update(self._record_id, add_continuation_approvals)
            if record.plan.plan_document_id == self._plan_doc_id:
                return    # the record's own plan armed again (after a disarm or a refused beam on): no continuation
            note = (f"continuation plan {plan.plan_id} v{plan.version} (document {self._plan_doc_id}, hash "
                    f"{self._plan_doc_hash}) approved by " + ", ".join(
                        f"{a.printed_name} ({a.meaning})" for a in self._approval_refs))
            if note not in self._continuation_notes:
                self._continuation_notes.append(note)
            self.store.audit(session.username, "continuation delivered into record",
                             {"record_id": self._record_id, "plan_document_id": self._plan_doc_id,
                              "approvals": [a.signature_id for a in self._approval_refs]})
            return
        calibration, cal_doc = self._active_calibration()
        qa = next(q for q in reversed(self._qa_results()) if q.qa_id == plan.qa_id) \
            if any(q.qa_id == plan.qa_id for q in self._qa_results()) else None
        devices = [DeviceIdentity(role="x-ray source", model=self._xrs_identity.model,
                                  serial_number=self._xrs_identity.serial_number,
                                  firmware_version=self._xrs_identity.firmware)]
        if self._readout_identity is not None:
            r = self._readout_identity
            devices.append(DeviceIdentity(role="electrometer", manufacturer="PTW", model=f"{r.name} {r.type_number}".strip(),
                                          serial_number=r.serial_number, firmware_version=r.firmware))
        record = DeliveryRecord(
            treatment_date=self._today(),
            patient=PatientIdentity(medical_record_number=plan.patient.medical_record_number,
                                    full_name=plan.patient.full_name, date_of_birth=plan.patient.date_of_birth,
                                    trial_subject_id=plan.patient.trial_subject_id,
                                    identity_verified_by=list(self._identity_methods)),
            plan=PlanSummary(plan_id=plan.plan_id, plan_version=plan.version, plan_hash=self._plan_doc_hash,
                             plan_document_id=self._plan_doc_id, site=plan.cavity.site,
                             lesion_label=plan.cavity.lesion_label, prescription_gy=plan.prescription_dose_gy,
                             dose_per_fraction_gy=plan.prescription_dose_gy, applicator_diameter_cm=plan.applicator_cm,
                             source_serial=plan.source_serial,
                             surface_dose_rate_gy_per_min=plan.surface_dose_rate_gy_per_min,
                             planned_time_s=plan.preset_time_s),
            calibration=CalibrationUsed(calibration_digest=plan.calibration_digest, calibration_document_id=cal_doc,
                                        source_serial=calibration.source_serial,
                                        calibration_date=calibration.calibration_date,
                                        calibrated_by=calibration.calibrated_by),
            qa=QaUsed(qa_id=plan.qa_id, qa_document_id=plan.qa_id, performed_on=self._today(), k_out=plan.k_out,
                      result=qa.result.value if qa else "pass"),
            approvals=list(self._approval_refs), devices=devices, software_version=self.software_version,
            console=ConsoleIdentity(installation_key_id=self.identity.installation_key.key_id,
                                    hostname=socket.gethostname(), room=self.room))
        self._record_id = self._book.start(record, actor=session.username)
        self._record_signed = False

    def _beam_command(self, session: Session, what: str, call: Callable[[], Future], *,
                      stops_beam: bool = False) -> CommandResult:
        try:
            self.identity.require(session, Permission.OPERATE_BEAM, what)
        except StoreError:
            # the account check needs the store; stopping a beam never waits for it (the role check needs
            # nothing stored). Anything that could start a beam stays refused until the store answers.
            if not stops_beam:
                raise
            if not self.identity.can(session, Permission.OPERATE_BEAM):
                raise PermissionDenied(f"{session.full_name} ({session.role}) cannot {what}: press STOP") from None
        self._require_supervisor()
        result = call().result(timeout=self.command_timeout_s)
        reason = result.reason
        try:
            self.store.audit(session.username, what, {"ok": result.ok, "reason": result.reason,
                                                      "state": result.state.value, "record_id": self._record_id})
        except StoreError as exc:      # the command was carried out: report it, never turn it into an error
            log.error("%s (%s) not in the audit trail: %s", what, result.reason, exc)
            reason += " (not in the audit trail: the record store is unavailable; the journal holds the beam events)"
        self._changed(reason)
        return result

    def beam_on(self, session: Session) -> CommandResult:
        if self._record_id is None:
            raise WorkflowRefused("no delivery record draft exists: start the treatment (checklist) first")
        with self._outcome_cond:
            self._delivering = True
        try:
            result = self._beam_command(session, "beam on", self.supervisor.beam_on)
        except BaseException:       # refused by raising (store unavailable, account locked): no delivery
            with self._outcome_cond:
                self._delivering = self.supervisor.sm.state in (State.BEAM_ON, State.PAUSED)
            raise
        if not result.ok:
            with self._outcome_cond:
                self._delivering = self.supervisor.sm.state in (State.BEAM_ON, State.PAUSED)
        return result

    def pause(self, session: Session, reason: str = "paused by the operator") -> CommandResult:
        return self._beam_command(session, "pause", lambda: self.supervisor.pause(reason), stops_beam=True)

    def resume(self, session: Session) -> CommandResult:
        return self._beam_command(session, "resume", self.supervisor.resume)

    def stop(self, session: Session, reason: str = "stopped by the operator") -> CommandResult:
        return self._beam_command(session, f"stop ({reason})", self.supervisor.stop, stops_beam=True)

    def disarm(self, session: Session) -> CommandResult:
        """Take back an arm before beam on: the unit drops its preset, the plan stays approved and ready.
        (Anyone may instead press STOP / the emergency stop, which ends the treatment.)"""
        return self._beam_command(session, "disarm", self._require_supervisor().disarm, stops_beam=True)

    def annotate_interruption(self, session: Session, reason: str) -> None:
        """The reason a person typed after a pause, stop or machine stop (the beam was already off — asking
        first would have delayed the stop). Written to the hash-chained audit trail with the record id, the
        plan and the time, so the record's verification covers it. Never changes the beam state."""
        text = (reason or "").strip()
        if not text:
            raise WorkflowRefused("write the reason for the interruption (what happened, who decided)")
        snap = self._treat_box.latest() if self._treat_box is not None else None   # the published picture
        self.store.audit(session.username, "interruption reason", {
            "record_id": self._record_id, "plan_id": self._plan.plan_id if self._plan else None,
            "treatment_id": snap.treatment_id if snap else None, "state": snap.state.value if snap else None,
            "reason": text, "given_by": session.username})
        with self._lock:
            self._reason_notes.append((self._clock.now_s(), session.username, text))
        if not self._delivering:       # else the record writer adds it once the session is written
            self._apply_reason_notes()
        self._changed(f"interruption reason noted: {text}")

    def _apply_reason_notes(self) -> None:
        """Put the reasons typed after interruptions into the record's Interruption entries: each reason goes to
        the latest interruption that happened before it was typed. Reasons whose interruption is not recorded
        yet stay pending (the audit trail has them already)."""
        record_id = self._record_id
        with self._lock:
            notes = list(self._reason_notes)
        if record_id is None or not notes:
            return
        placed: list[tuple[float, str, str]] = []

        def change(record: DeliveryRecord) -> None:
            for note in notes:
                typed_s, user, text = note
                before = [i for i in record.interruptions if i.monotonic_s <= typed_s]
                if not before:
                    continue
                target = max(before, key=lambda i: i.monotonic_s)
                addition = f"reason given by {user}: {text}"
                if addition not in target.reason:
                    target.reason = f"{target.reason} — {addition}"
                placed.append(note)
        try:
            self._book.update(record_id, change)
        except StoreError as exc:      # the audit trail holds the reason; retried with the next write
            log.warning("interruption reason not yet in the record: %s", exc)
            return
        with self._lock:
            self._reason_notes = [n for n in self._reason_notes if n not in placed]

    def emergency_stop(self) -> CommandResult:
        """No permission check: anyone at the console may stop the beam."""
        sup = self._require_supervisor()
        result = sup.emergency_stop().result(timeout=self.command_timeout_s)
        reason = result.reason
        try:
            self.store.audit("console", "emergency stop", {"reason": result.reason})
        except StoreError as exc:      # the beam is off either way: say so, do not raise
            log.error("emergency stop (%s) not in the audit trail: %s", result.reason, exc)
            reason += " (not in the audit trail: the record store is unavailable; the journal holds the beam events)"
        self._changed(reason)
        return result

    def output_check_runner(self, session_of: Callable[[], Session | None] | None = None) -> "OutputCheckRunner":
        """The daily output check for screen 8 inside the console (docs/qa.md §9): an object with the
        OutputCheckWorker interface whose checks run as ONE Supervisor command on its device thread.
        `session_of()` gives the signed-in session at the moment a check is submitted (PERFORM_QA required)."""
        return OutputCheckRunner(self, session_of)

    def wait_for_end(self, timeout_s: float) -> DeliveryOutcome:
        """Block the caller until the delivery ended and its session is in the record."""
        deadline = time.monotonic() + timeout_s
        with self._outcome_cond:
            ok = self._outcome_cond.wait_for(lambda: not self._delivering, timeout=max(0.0, deadline - time.monotonic()))
            if not ok or not self._outcomes:
                raise WorkflowRefused(f"the delivery did not end within {timeout_s:.0f} s")
            return self._outcomes[-1]

    def _write_reports(self) -> None:
        """The record writer: one beam session per DeliveryReport, off the supervisor's thread."""
        while True:
            report = self._reports.get()
            if report is None:
                return
            outcome, delay_s = None, 0.5
            while True:
                try:
                    if isinstance(report, IrmReconciliation):
                        self._record_reconciliation(report)
                    else:
                        outcome = self._record_report(report)
                    break
                except Exception as exc:  # noqa: BLE001 - the report must not be lost: retried until written
                    log.exception("delivery report could not be recorded; retrying")
                    self._changed(f"the record store is unavailable ({exc}): this delivery is safe in the journal and "
                                  f"the device log {report.device_log_path}, and it is written to the record as soon "
                                  "as the store answers again — do not close the record before that")
                    if self._closing:
                        break
                    end_s = time.monotonic() + delay_s
                    while time.monotonic() < end_s and not self._closing:
                        time.sleep(0.1)
                    delay_s = min(delay_s * 2, 5.0)
            if isinstance(report, IrmReconciliation):
                self._changed()
                continue
            if outcome is not None:
                self._apply_reason_notes()
            with self._outcome_cond:
                if outcome is not None:
                    self._outcomes.append(outcome)
                self._delivering = False
                self._outcome_cond.notify_all()
            self._changed()

    def _record_report(self, report: DeliveryReport) -> DeliveryOutcome:
        record_id = self._record_id
        if record_id is None:
            raise WorkflowRefused("no record draft for this delivery")
        segs = report.segments
        now = self._utc_now()
        start_utc = segs[0].start_utc if segs else now
        stop_utc = segs[-1].stop_utc if segs else now
        cause = TerminationCause(report.termination_cause)
        holder: dict[str, int] = {}

        def change(record: DeliveryRecord) -> None:
            written = next((x for x in record.sessions if report.device_log_sha256
                            and x.raw_device_log_sha256 == report.device_log_sha256), None)
            if written is not None:        # a retry after a store failure that came after the write itself
                holder["index"] = written.index
                return
            index = len(record.sessions) + 1
            holder["index"] = index
            record.sessions.append(BeamSession(
                index=index, delivery_type="CONTINUATION" if index > 1 else report.delivery_type,
                preset_time_s=report.preset_s, beam_on_utc=start_utc, beam_off_utc=stop_utc,
                monotonic_start_s=segs[0].start_mono_s if segs else 0.0,
                monotonic_stop_s=segs[-1].stop_mono_s if segs else 0.0,
                console_beam_on_s=report.console_beam_on_s, device_beam_on_s=report.device_beam_on_s,
                dose_gy=DoseByChannel(primary_timer_gy=report.primary_dose_gy,
                                      secondary_irm_gy=report.secondary_dose_gy),
                irm_counts=sum(x.irm_counts for x in segs), termination_cause=cause,
                termination_detail=report.termination_detail, raw_device_log_sha256=report.device_log_sha256))
            for mono_s, utc, reason, delivered in report.pauses:
                record.interruptions.append(Interruption(session_index=index, utc=utc, monotonic_s=mono_s,
                                                         reason=reason, initiated_by="operator",
                                                         delivered_so_far_gy=delivered))
            if report.termination is not TerminationStatus.NORMAL:
                by = {"operator stop": "operator", "interlock": "interlock", "device fault": "device"}.get(
                    cause.value, "console")
                record.interruptions.append(Interruption(
                    session_index=index, utc=stop_utc, monotonic_s=segs[-1].stop_mono_s if segs else 0.0,
                    reason=report.termination_detail or cause.value, initiated_by=by,
                    delivered_so_far_gy=report.secondary_dose_gy))
            for ch in report.interlock_changes:
                record.interlock_events.append(InterlockEvent(utc=ch.utc, monotonic_s=ch.mono_s, session_index=index,
                                                              interlock=ch.interlock, state=ch.state,
                                                              detail=ch.detail))
        self._book.update(record_id, change)
        if not report.irm_read_after_beam_off:
            with self._lock:
                self._irm_unsettled = (
                    f"session {holder['index']} records {report.secondary_dose_gy:.4f} Gy on the IRM channel, the last "
                    "reading before the link to the X-ray unit was lost: the unit's own counter is higher")
        self.store.audit("console", "beam session recorded", {
            "record_id": record_id, "session": holder["index"], "termination": report.termination.value,
            "cause": cause.value, "primary_gy": report.primary_dose_gy, "secondary_gy": report.secondary_dose_gy,
            "device_log_sha256": report.device_log_sha256})
        return DeliveryOutcome(
            record_id=record_id, session_index=holder["index"], termination=report.termination,
            termination_cause=cause.value, planned_time_s=report.preset_s,
            console_beam_on_s=report.console_beam_on_s, device_beam_on_s=report.device_beam_on_s,
            primary_dose_gy=report.primary_dose_gy, secondary_dose_gy=report.secondary_dose_gy,
            interlocks=tuple(sorted({c.interlock for c in report.interlock_changes if c.state == "raised"})),
            interruptions=tuple(p[2] for p in report.pauses))

    def _record_reconciliation(self, settled: IrmReconciliation) -> None:
        """The IRM dose of a session that ended with the link lost, settled by the Supervisor: the session's
        secondary dose becomes the settled figure, and its termination detail says what it was and why."""
        record_id = self._record_id
        if record_id is None:
            raise WorkflowRefused("no record draft for the settled delivery")
        holder: dict[str, int] = {}

        def change(record: DeliveryRecord) -> None:
            target = next((x for x in record.sessions if x.raw_device_log_sha256 == settled.device_log_sha256), None)
            if target is None:
                raise WorkflowRefused(f"no session with device log {settled.device_log_sha256[:12]}… in record "
                                      f"{record_id}: the settled IRM dose has no session to go to")
            holder["index"] = target.index
            note = (f"IRM dose settled at {settled.reconciled_gy:.4f} Gy on {settled.utc.isoformat()} "
                    f"({settled.basis}); {settled.recorded_gy:.4f} Gy was the last reading before the link was lost")
            if note in target.termination_detail:
                return                      # a retry after a store failure that came after the write itself
            target.dose_gy = DoseByChannel(primary_timer_gy=target.dose_gy.primary_timer_gy,
                                           secondary_irm_gy=settled.reconciled_gy)
            target.termination_detail = f"{target.termination_detail}; {note}" if target.termination_detail else note
        self._book.update(record_id, change)
        self.store.audit("console", "session IRM dose settled", {
            "record_id": record_id, "session": holder.get("index"), "treatment_id": settled.treatment_id,
            "recorded_irm_gy": settled.recorded_gy, "settled_irm_gy": settled.reconciled_gy,
            "unit_counter_gy": settled.unit_counter_gy, "basis": settled.basis,
            "device_log_sha256": settled.device_log_sha256})
        with self._lock:
            self._irm_unsettled = None
        self._changed(f"session {holder.get('index')}: IRM dose settled at {settled.reconciled_gy:.4f} Gy "
                      f"({settled.basis})")

    def enter_unit_irm_reading(self, session: Session, password: str, *, unit_irm_gy: float) -> CommandResult:
        """When the link to the unit cannot be restored: a physicist enters the IRM dose the unit shows for the
        interrupted beam (signed by password). Refused below the console's last reading or above the unit's limit."""
        self.identity.require(session, Permission.APPROVE_PLAN, "enter the dose read at the X-ray unit")
        self.identity.verify_password(session, password)
        result = self._require_supervisor().enter_unit_irm(
            unit_irm_gy=unit_irm_gy, entered_by=session.username).result(timeout=self.command_timeout_s)
        self.store.audit(session.username, "unit IRM reading entered", {
            "record_id": self._record_id, "unit_irm_gy": unit_irm_gy if isinstance(unit_irm_gy, (int, float)) else
            repr(unit_irm_gy), "accepted": result.ok, "reason": result.reason})
        self._changed(result.reason)
        return result

    def _require_irm_settled(self, what: str) -> None:
        why = self._irm_unsettled
        if why is not None:
            raise WorkflowRefused(f"cannot {what}: {why}. Reconnect the X-ray unit so the console reads its counter "
                                  "(the unit keeps it until the next arm), or a physicist enters the dose the unit "
                                  "shows")

    def finish_record(self, session: Session, password: str, *, comments: str = "") -> str:
        """Finalise the record (totals, completion) and sign 'performed delivery' (countersigned by the
        installation key). Returns the record id."""
        self.identity.require(session, Permission.PERFORM_DELIVERY, "sign the delivery record")
        if self._record_id is None:
            raise WorkflowRefused("there is no delivery record to finish")
        if self._delivering:
            snap = self._treat_box.latest() if self._treat_box is not None else None
            if snap is not None and snap.state not in (State.ARMED, State.BEAM_ON, State.PAUSED):
                raise WorkflowRefused("the beam is off, but this delivery is not yet written to the record (the record "
                                      "store has not answered; the delivery is safe in the journal): sign the record "
                                      "once the console says the session is written")
            raise WorkflowRefused("the delivery is still running: the record is finished after the beam is off")
        self._require_irm_settled("finish the record")
        self.identity.verify_password(session, password)
        record = self._book.load(self._record_id)
        delivered = sum(x.dose_gy.secondary_irm_gy for x in record.sessions)
        tolerance = self.config.delivery.record_hardware_agreement_fraction
        complete = record.sessions and abs(delivered - record.plan.prescription_gy) <= \
            tolerance * record.plan.prescription_gy
        comments = "\n".join([c for c in (comments, *self._continuation_notes) if c])
        self._book.finalise(self._record_id, actor=session.username,
                            completion="complete" if complete else "incomplete", comments=comments)
        self.identity.sign(session, password, self._record_id, Meaning.PERFORMED_DELIVERY)
        with self._lock:
            self._record_signed = True
            self._recovery = None
        self._changed(f"record {self._record_id} finalised ({'complete' if complete else 'incomplete'}) and signed by "
                      f"{session.full_name}")
        return self._record_id

    @property
    def record_id(self) -> str | None:
        return self._record_id

    # -- continuation and recovery ----------------------------------------------------------------------
    def plan_continuation(self, session: Session, password: str) -> Plan:
        """After a stop/interlock/fault/recovery: a new plan version (CONTINUATION) for the remainder,
        delivered into the same record; needs both approvals again."""
        self.identity.require(session, Permission.PRESCRIBE, "prescribe a continuation")
        if self._plan is None or self._record_id is None:
            raise WorkflowRefused("there is no interrupted delivery to continue")
        if self._delivering or self._recovery is not None:
            raise WorkflowRefused("decide the interruption first (the beam must be off and the delivery recorded)")
        self._require_irm_settled("plan a continuation")
        record = self._book.load(self._record_id)
        delivered_gy = sum(x.dose_gy.secondary_irm_gy for x in record.sessions)
        prescription = record.plan.prescription_gy
        if delivered_gy >= prescription * (1 - self.config.delivery.record_hardware_agreement_fraction):
            raise WorkflowRefused(f"{delivered_gy:.3f} Gy of {prescription:g} Gy are recorded: nothing remains to "
                                  "deliver; finish the record")
        calibration, _ = self._active_calibration()
        time_ = compute_treatment_time(prescription_dose_gy=prescription, applicator_cm=self._plan.applicator_cm,
                                       protocol=self.protocol, calibration=calibration.to_source_calibration(),
                                       qa_results=self._qa_results(),
                                       device_source_serial=self._xrs_identity.serial_number, today=self._today(),
                                       config=self.config, previously_delivered_gy=round(delivered_gy, 6))
        plan = self._plan.revised(
            created_at=self._utc_now(), created_by=session.username, delivery_type=DeliveryType.CONTINUATION,
            previously_delivered_gy=time_.prescription_dose_gy - time_.dose_to_deliver_gy,
            treatment_time_s=time_.treatment_time_s, preset_time_s=time_.preset_time_s, k_out=time_.k_out,
            qa_id=time_.qa_id, surface_dose_rate_gy_per_min=time_.surface_dose_rate_gy_per_min,
            calibration_digest=time_.calibration_digest)
        self._store_plan(session, password, plan, new_record=False)
        self.store.audit(session.username, "continuation planned", {
            "record_id": self._record_id, "plan_id": plan.plan_id, "plan_version": plan.version,
            "previously_delivered_gy": plan.previously_delivered_gy, "preset_s": plan.preset_time_s})
        self._changed(f"continuation v{plan.version}: {plan.dose_to_deliver_gy:.3f} Gy in {plan.preset_time_s:.1f} s; "
                      "awaiting physician and physicist approval")
        return plan

    def recovery(self) -> RecoveryInfo | None:
        return self._recovery

    def _build_recovery(self) -> RecoveryInfo:
        sup = self.supervisor
        unfinished = sup.unfinished
        reading = sup.recovered_reading
        record_id, plan, plan_doc = None, None, None
        for doc in self.store.find_documents(kind=PLAN_KIND, subject=None):
            candidate = plan_from_document(doc.data)
            if candidate is not None and candidate.content_hash == unfinished.plan_hash:
                plan, plan_doc = candidate, doc

        for doc in self.store.find_documents(kind="delivery_record", status="draft"):
            if plan is not None and doc.data.get("plan", {}).get("plan_id") == plan.plan_id:
                record_id = doc.doc_id
        with self._lock:
            if plan is not None:
                self._patient, self._plan = plan.patient, plan
                self._plan_doc_id, self._plan_doc_hash = plan_doc.doc_id, plan_doc.content_hash
                self._approved = None
            self._record_id = record_id
        delivered = reading.delivered_gy if reading is not None else None   # never below the journal
        device_gy = reading.unit_counter_gy if reading is not None else None
        if reading is not None and reading.counters_reset:
            reading = dataclasses.replace(reading, detail=(
                f"{reading.detail}; the unit's counter ({device_gy:.3f} Gy) is below the journal's "
                f"{reading.journal_irm_gy:.3f} Gy, so the unit lost its counters (power loss or reboot): the "
                f"delivered dose is taken as the journal's plus the most the beam could have given unjournalled, "
                f"{delivered:.3f} Gy (the remainder may be slightly under-dosed, never over-dosed)"))
        message = (f"the console restarted during treatment {unfinished.treatment_id} (plan {unfinished.plan_id}): "
                   f"journal {unfinished.elapsed_s:.1f} s of {unfinished.preset_s:.1f} s, "
                   f"{unfinished.irm_dose_gy:.3f} Gy; "
                   + (f"the unit reports {delivered:.3f} Gy delivered ({reading.detail}). " if delivered is not None
                      else f"{reading.detail if reading else 'the unit was not read'}. ")
                   + "The beam is off and will not restart by itself: a physicist or physician decides to deliver "
                     "the remainder as a continuation or to close the record.")
        return RecoveryInfo(
            treatment_id=unfinished.treatment_id, plan_id=unfinished.plan_id, plan_hash=unfinished.plan_hash,
            preset_s=unfinished.preset_s, journal_elapsed_s=unfinished.elapsed_s,
            journal_irm_dose_gy=unfinished.irm_dose_gy,
            device_irm_dose_gy=device_gy, device_beam_on_time_s=reading.beam_on_time_s if reading else None,
            device_state=reading.device_state if reading else None, delivered_dose_gy=delivered,
            record_id=record_id, message=message)

    def decide_recovery(self, session: Session, password: str, *, decision: str, acknowledgement: str) -> RecoveryInfo:
        """Authorised decision after a crash (physicist or physician): 'continue' (the remainder will be a
        continuation plan) or 'close' (the record is finalised incomplete). Never switches the beam on."""
        self.identity.require(session, Permission.APPROVE_PLAN, "decide how an interrupted treatment goes on")
        info = self._recovery
        if info is None:
            raise WorkflowRefused("there is no interrupted treatment to decide on")
        if decision not in ("continue", "close"):
            raise WorkflowRefused(f"decision {decision!r} is not one of 'continue' or 'close'")
        if not acknowledgement or not acknowledgement.strip():
            raise WorkflowRefused("write what was checked (unit counters, patient, record) before deciding")
        if info.delivered_dose_gy is None:
            raise WorkflowRefused("the unit's dose counter could not be read: read it at the unit and reconnect "
                                  "before deciding")
        self.identity.verify_password(session, password)
        sup = self._require_supervisor()
        result = sup.acknowledge_interruption(delivered_dose_gy=info.delivered_dose_gy,
                                              acknowledgement=acknowledgement).result(timeout=self.command_timeout_s)
        if not result.ok:
            raise WorkflowRefused(result.reason)
        if info.record_id is not None and self._plan is not None:
            self._record_recovered_session(info)
        if info.device_state == XrsState.FAULT.value:
            # the unit keeps a short acknowledgement (64 bytes); the full text is in the audit trail
            device_ack = f"recovery {info.treatment_id} by {session.username}"[:64]
            r = sup.reset_device_fault(acknowledgement=device_ack).result(timeout=self.command_timeout_s)
            if not r.ok:
                raise WorkflowRefused(r.reason)
        deadline = time.monotonic() + 2.0
        role = ClearRole.PHYSICIST if Role(session.role) is Role.MEDICAL_PHYSICIST else ClearRole.PHYSICIAN
        for iid in (InterlockId.DEVICE_FAULT, InterlockId.LINK_LOST):
            while time.monotonic() < deadline:
                snap = self._treat_box.latest()
                if snap is None or iid not in {x.id for x in snap.interlocks}:
                    break
                r = sup.clear_interlock(iid, role=role if iid is InterlockId.LINK_LOST else ClearRole.PHYSICIST,
                                        acknowledgement=acknowledgement).result(timeout=self.command_timeout_s)
                if r.ok:
                    break
                time.sleep(0.1)
        sup.reset().result(timeout=self.command_timeout_s)
        self.store.audit(session.username, "interrupted treatment decided", {
            "treatment_id": info.treatment_id, "decision": decision, "delivered_dose_gy": info.delivered_dose_gy,
            "acknowledgement": acknowledgement.strip(), "record_id": info.record_id})
        with self._lock:
            self._recovery = None
        self._changed("interruption acknowledged: " + ("plan the continuation for the remainder" if decision == "continue"
                                                       else "finish and sign the record (incomplete)"))
        return info

    def _record_recovered_session(self, info: RecoveryInfo) -> None:
        plan = self._plan
        rate_gy_per_s = plan.dose_to_deliver_gy / plan.treatment_time_s
        beam_s = info.device_beam_on_time_s or 0.0
        log_path = self.journal_dir / f"device-log-{info.treatment_id}.jsonl"
        digest = hashlib.sha256(log_path.read_bytes() if log_path.exists() else info.message.encode()).hexdigest()
        now = self._utc_now()
        mono = self._clock.now_s()

        def change(record: DeliveryRecord) -> None:
            index = len(record.sessions) + 1
            record.sessions.append(BeamSession(
                index=index, delivery_type="CONTINUATION" if index > 1 else plan.delivery_type.value,
                preset_time_s=info.preset_s, beam_on_utc=now, beam_off_utc=now, monotonic_start_s=mono,
                monotonic_stop_s=mono, console_beam_on_s=info.journal_elapsed_s, device_beam_on_s=beam_s,
                dose_gy=DoseByChannel(primary_timer_gy=min(beam_s, info.preset_s) * rate_gy_per_s,
                                      secondary_irm_gy=info.delivered_dose_gy or 0.0),
                termination_cause=TerminationCause(CAUSE_UNKNOWN),
                termination_detail=("console stopped during the delivery; beam times are not known to the console "
                                    "(recorded at recovery); " + info.message)[:2000],
                raw_device_log_sha256=digest))
            record.interruptions.append(Interruption(
                session_index=index, utc=now, monotonic_s=mono, initiated_by="console",
                reason="console restarted during the treatment; the unit stopped the beam by itself",
                delivered_so_far_gy=info.delivered_dose_gy))
        self._book.update(info.record_id, change)


def _plan_document(plan: Plan) -> dict[str, Any]:
    """The stored plan document: readable fields (the store keeps floats to 6 decimals) plus the exact plan as
    JSON text and its content hash, so the plan the approvals and the journal name can be rebuilt exactly."""
    import json

    return {**plan.model_dump(mode="json"), "plan_json": json.dumps(plan.model_dump(mode="json"), sort_keys=True),
            "plan_content_hash": plan.content_hash, "dose_to_deliver_gy": plan.dose_to_deliver_gy}


def plan_from_document(data: dict[str, Any]) -> Plan | None:
    """The exact Plan of a stored plan document, or None when it is not one (or its hash does not match)."""
    import json

    try:
        plan = Plan.model_validate(json.loads(data["plan_json"]))
    except (KeyError, TypeError, ValueError):
        return None
    return plan if plan.content_hash == data.get("plan_content_hash") else None


def _approval_ref(row) -> ApprovalRef:
    return ApprovalRef(meaning=row.meaning, printed_name=row.printed_name, role=row.role,
                       signer_user_id=row.signer_user_id, signed_utc=row.signed_utc, signature_id=row.sig_id,
                       signed_document_id=row.doc_id, signed_content_hash=row.content_hash)


# --------------------------------------------------------------------------------------------
# The daily output check inside the console: on the Supervisor's device thread
# --------------------------------------------------------------------------------------------


class OutputCheckRunner:
    """`connect()` / `submit(request, calibration, on_progress=)` / `cancel()` as orconsole.qa.OutputCheckWorker,
    for a console whose Supervisor owns the X-ray unit. Each check is one `Supervisor.run_exclusive` command:
    refused while a treatment is armed, running, paused or awaiting a decision, or while the beam is on; it
    calls the unit only through the Supervisor's proxy and the electrometer only from that thread. STOP
    (`stop` / `emergency_stop`) and `cancel()` end it with the beam off and no result.

    Never calls a driver from the caller's thread (connect() returns the identities read at start-up)."""

    WHAT = "the daily output check"

    def __init__(self, service: TreatmentService, session_of: Callable[[], Session | None] | None) -> None:
        self._service = service
        self._session_of = session_of
        self._lock = threading.Lock()
        self._check: OutputCheck | None = None
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy

    def connect(self) -> Future:
        """Future → (XrsIdentity, ReadoutIdentity) as connected at start-up; fails with the reason when the
        console has no electrometer. Sends nothing."""
        future: Future = Future()
        service = self._service
        if service._xrs_identity is None:
            future.set_exception(WorkflowRefused("the X-ray unit is not connected: check its cable and power, then "
                                                 "restart the console"))
        elif service._readout is None or service._readout_identity is None:
            future.set_exception(WorkflowRefused(
                "no electrometer is connected to this console: connect the electrometer, start the console with "
                "it (--readout) and repeat; the output check needs its charge readings"))
        else:
            future.set_result((service._xrs_identity, service._readout_identity))
        return future

    def submit(self, request: OutputCheckRequest, calibration: CalibrationRecord, *,
               on_progress: Callable[[QaProgress], None] | None = None) -> Future:
        """Start one output check (Future → OutputCheckRecord, or QaIncomplete with the reason). Refused at once
        (WorkflowRefused / PermissionDenied) without a physicist's session, without an electrometer, or while
        a treatment holds the unit; the Supervisor checks the state again on its thread."""
        service = self._service
        session = self._session_of() if self._session_of is not None else None
        if session is None:
            raise WorkflowRefused("sign in as a medical physicist to run the output check")
        service.identity.require(session, Permission.PERFORM_QA, "perform the daily output check")
        if request.performed_by != session.username:
            raise WorkflowRefused(f"the check would be recorded as performed by {request.performed_by!r}, but "
                                  f"{session.username!r} is signed in: start it again from your own session")
        xrs_id, readout_id = self.connect().result()
        sup = service._require_supervisor()
        snap = service._treat_box.latest() if service._treat_box is not None else None
        if snap is not None and snap.state in (State.READY, State.ARMED, State.BEAM_ON, State.PAUSED, State.FAULT,
                                               State.INTERRUPTED):
            raise WorkflowRefused(f"the treatment is {snap.state.value}: the output check runs only while no "
                                  "treatment is armed, running, paused or awaiting a decision")
        service.store.audit(session.username, "qa output check requested", {
            "source_serial": calibration.source_serial, "on": "treatment supervisor thread"})
        with self._lock:
            if self._busy:
                raise WorkflowRefused("an output check is already running: wait for it to end or cancel it")
            self._busy = True
        readout = service._readout
        # waits poll the unit at the Supervisor's rate (heartbeat, live snapshots) through its proxy
        check = OutputCheck(xrs=None, readout=readout, calibration=calibration, policy=service.qa_policy,
                            on_progress=on_progress, connect=False, xrs_identity=xrs_id,
                            readout_identity=readout_id, today=service._today, sleep=lambda s: check.xrs.sleep(s))
        self._check = check

        def run_on_supervisor_thread(xrs):
            check.xrs = xrs           # the Supervisor's proxy: this thread only, until the check returns
            return check.run(request)

        result: Future = Future()

        def finished(done: Future) -> None:     # on the Supervisor's thread: cheap, no store or device I/O
            with self._lock:
                self._busy = False
            try:
                r = done.result()
            except BaseException as exc:  # noqa: BLE001 - handed to the screen as the check's failure
                result.set_exception(exc)
                return
            if r.ok:
                result.set_result(getattr(r, "value", None))
            elif getattr(r, "error", None) is not None:
                result.set_exception(r.error)
            else:
                result.set_exception(QaIncomplete(r.reason))
        sup.run_exclusive(run_on_supervisor_thread, what=self.WHAT, cancel=check.cancel).add_done_callback(finished)
        return result

    def cancel(self) -> None:
        """From any thread: the check switches the beam off at its next poll (OPERATOR_STOP); no result."""
        check = self._check
        if check is not None:
            check.cancel()
        sup = self._service.supervisor
        if sup is not None and self._busy:
            sup.cancel_exclusive()
