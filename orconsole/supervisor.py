"""The treatment supervisor: one thread that owns the state machine, the interlock bank, the journal and
the X-ray source, runs commands to completion from one queue and polls the source on monotonic deadlines.

Safety logic lives here and only here. Never block this thread on a person (no dialogs, no waiting on
subscribers: snapshots are overwrite-only mailboxes, never a backlog to replay), never call the device
from another thread, never start a beam that is not journalled first.
"""
from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from drivers.errors import DeviceError, LinkLost
from drivers.hal import BeamOffCause, BeamOffReason, XraySource, XrsState, XrsStatus
from orconsole.config import SiteConfig
from orconsole.dosecalc import todays_output_check
from orconsole.interlocks import (REGISTRY, ClearRole, Effect, InterlockBank, InterlockId, InterlockStatus,
                                  beam_conditions, cumulative_dose_condition, device_conditions)
from orconsole.journal import (BEAM_OFF, BEAM_ON, IRM_RECONCILED, RECOVERY_ACKNOWLEDGED, Journal, JournalReadout, JournalWriteError,
                               read_journal)
from orconsole.models import ApprovedPlan, QaResult, Refused
from orconsole.statemachine import Event, State, TransitionResult, TreatmentStateMachine

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Results and snapshots
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """What a command did. `reason` is what the user reads, whether it succeeded or was refused."""

    ok: bool
    reason: str
    state: State


class TerminationStatus(str, enum.Enum):
    NORMAL = "NORMAL"          # preset time or dose monitor reached
    OPERATOR = "OPERATOR"      # stop / emergency stop
    MACHINE = "MACHINE"        # interlock, fault, lost link
    UNKNOWN = "UNKNOWN"        # recovered after a console restart


@dataclass(frozen=True)
class Snapshot:
    """An immutable picture of the treatment for the UI. Published at every poll and state change."""

    seq: int
    host_time_s: float
    state: State
    plan_id: str | None
    plan_version: int | None
    preset_s: float
    elapsed_s: float
    remaining_s: float
    primary_dose_gy: float          # this delivery, from the console timer × planned rate
    secondary_dose_gy: float        # this delivery, from the unit's IRM
    prescription_dose_gy: float | None
    dose_to_deliver_gy: float | None
    dose_rate_gy_per_min: float | None
    kv: float | None
    ua: float | None
    device_state: str | None
    link_ok: bool
    interlocks: tuple[InterlockStatus, ...]   # active ones, each with message and remediation
    last_message: str
    termination: TerminationStatus | None
    overruns: int                   # polls that missed their deadline by more than a period
    applicator_cm: float | None = None        # what the unit senses, live
    device_beam_on_time_s: float | None = None   # the unit's beam-on time since its last arm
    treatment_id: str | None = None
    closing_segment: bool = False   # beam off sent, waiting for HV to ramp down before the final IRM read
    # a QA exposure (run_exclusive, e.g. the daily output check) owns the unit now: the beam may be on, STOP ends it
    qa_exposure_running: bool = False


# Record vocabulary of why irradiation stopped (the values of logs.records.TerminationCause).
CAUSE_PRESET_TIME = "preset time reached"
CAUSE_MONITOR = "monitor preset reached"
CAUSE_OPERATOR = "operator stop"
CAUSE_INTERLOCK = "interlock"
CAUSE_DEVICE_FAULT = "device fault"
CAUSE_CONSOLE_FAULT = "console fault"
CAUSE_UNKNOWN = "unknown"


@dataclass(frozen=True)
class BeamSegment:
    """One stretch of beam between an arm and the next beam off (a pause ends a segment)."""

    start_mono_s: float
    stop_mono_s: float
    start_utc: datetime
    stop_utc: datetime
    console_beam_on_s: float        # console timer over this segment
    device_beam_on_s: float         # the unit's own counter at the end of the segment
    irm_dose_gy: float              # the unit's IRM dose of this segment, read after HV was fully off
    irm_counts: int
    ended_by: str                   # why this segment ended (pause, preset time, interlock text, ...)
    final_read: bool                # False when the IRM could not be read after ramp-down (link lost)


@dataclass(frozen=True)
class InterlockChange:
    mono_s: float
    utc: datetime
    interlock: str
    state: str                      # "raised" | "cleared"
    detail: str


@dataclass(frozen=True)
class DeliveryReport:
    """Everything about one plan version's delivery, published once it ended and the last IRM was read.
    The treatment service turns it into a beam session of the delivery record."""

    treatment_id: str
    plan_id: str
    plan_version: int
    plan_hash: str
    delivery_type: str
    preset_s: float
    termination: TerminationStatus
    termination_cause: str          # one of the CAUSE_* values
    termination_detail: str
    segments: tuple[BeamSegment, ...]
    primary_dose_gy: float          # timer x planned rate, this delivery
    secondary_dose_gy: float        # IRM over all segments, this delivery
    console_beam_on_s: float
    device_beam_on_s: float
    pauses: tuple[tuple[float, datetime, str, float], ...]   # (mono_s, utc, reason, delivered so far Gy)
    interlock_changes: tuple[InterlockChange, ...]
    device_log_path: str | None
    device_log_sha256: str

    @property
    def irm_read_after_beam_off(self) -> bool:
        """False when the last segment's IRM could not be read once HV was off (the link was lost): the
        secondary dose is then the last reading before the loss, a lower bound until an IrmReconciliation."""
        return all(s.final_read for s in self.segments)


@dataclass(frozen=True)
class IrmReconciliation:
    """The IRM dose of a delivery whose final IRM could not be read after beam off (link lost), settled later:
    from the unit's counter once the link is back, or as a physicist read it at the unit. Published to the
    report subscribers after the DeliveryReport it corrects (same treatment id and device log digest)."""

    treatment_id: str
    plan_id: str
    device_log_sha256: str
    recorded_gy: float              # the report's secondary dose: last IRM reading before the link was lost
    reconciled_gy: float            # the delivery's IRM dose now (earlier segments + the last one settled)
    unit_counter_gy: float | None   # the last segment's IRM as the unit's counter reports it (None: not read)
    basis: str                      # where reconciled_gy comes from, in words
    utc: datetime


@dataclass(frozen=True)
class RecoveredReading:
    """The unit's counters read once after a console restart found an unfinished treatment."""

    irm_since_last_arm_gy: float | None
    beam_on_time_since_last_arm_s: float | None
    irm_before_last_arm_gy: float   # from the journal's last beam_on entry
    device_state: str | None
    detail: str
    elapsed_before_last_arm_s: float = 0.0   # console timer reading at the last beam on (journal)
    journal_irm_gy: float = 0.0              # the journal's last progress entry (IRM dose)
    unjournalled_bound_gy: float = 0.0       # the most the beam can have given after that entry

    @property
    def beam_on_time_s(self) -> float | None:
        if self.beam_on_time_since_last_arm_s is None:
            return None
        return self.elapsed_before_last_arm_s + self.beam_on_time_since_last_arm_s

    @property
    def unit_counter_gy(self) -> float | None:
        """What the unit's counters say was delivered (before the last arm, from the journal, plus since)."""
        if self.irm_since_last_arm_gy is None:
            return None
        return self.irm_before_last_arm_gy + self.irm_since_last_arm_gy

    @property
    def counters_reset(self) -> bool:
        """The unit reports less than the journal already held: it lost its counters (power loss, reboot)."""
        counter = self.unit_counter_gy
        return counter is not None and counter < self.journal_irm_gy

    @property
    def delivered_gy(self) -> float | None:
        """The figure a continuation may be planned on. Never below the journal: with reset counters it is the
        journal's dose plus the most the beam could have given unjournalled (an under-dose, never an over-dose)."""
        counter = self.unit_counter_gy
        if counter is None:
            return None
        if self.counters_reset:
            return self.journal_irm_gy + self.unjournalled_bound_gy
        return counter


@dataclass(frozen=True)
class ExclusiveResult(CommandResult):
    """The end of a run_exclusive command: `value` is what the job returned, `error` what it raised (None
    when it was refused before it started: `reason` says why)."""

    value: Any = None
    error: BaseException | None = None


class _ExclusiveJob:
    """One run_exclusive request: `fn(xrs)` to run on the supervisor's thread, and how to cancel it from any
    thread (`cancel` is the job's own thread-safe stop, e.g. OutputCheck.cancel)."""

    def __init__(self, fn: Callable[[XraySource], Any], what: str, cancel: Callable[[], None] | None) -> None:
        self.fn, self.what, self._cancel = fn, what, cancel
        self.job_id = f"QA-{uuid.uuid4().hex[:12]}"
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()
        if self._cancel is not None:
            try:
                self._cancel()
            except Exception:  # noqa: BLE001 - the supervisor still switches the beam off after the job
                log.exception("cancelling %s failed", self.what)


class _ExclusiveXrs:
    """The X-ray unit as a run_exclusive job sees it: the supervisor's own driver, callable only from the
    supervisor's thread and only while the job runs; every status read is published as a snapshot (the
    job's polls are the unit's heartbeat and the banner's news). Link management stays with the supervisor."""

    _FORBIDDEN = ("connect", "reconnect", "close", "subscribe", "unsubscribe")

    def __init__(self, supervisor: "Supervisor", what: str, cancelled: threading.Event | None = None) -> None:
        self._sup, self._what = supervisor, what
        self._cancelled = cancelled or threading.Event()
        self._thread = threading.current_thread()
        self._revoked = False
        self._last_publish_s = -math.inf
        self._last_status_s = -math.inf

    def revoke(self) -> None:
        self._revoked = True

    def _check(self, name: str) -> None:
        if self._revoked:
            raise DeviceError(f"{self._what} ended: its access to the X-ray unit was withdrawn ({name} not sent)",
                              device="xrs")
        if threading.current_thread() is not self._thread:
            raise DeviceError(f"{name} called from thread {threading.current_thread().name}: during {self._what} "
                              "only the treatment supervisor's thread may call the X-ray unit", device="xrs")
        if name in self._FORBIDDEN:
            raise DeviceError(f"{self._what} may not {name} the X-ray unit: the treatment supervisor owns the link",
                              device="xrs")

    def status(self) -> XrsStatus:
        self._check("status")
        sup = self._sup
        status = sup._xrs.status()
        now_s = sup._clock.now_s()
        sup._status, sup._last_good_status_s = status, now_s
        self._last_status_s = now_s
        if now_s - self._last_publish_s >= sup.config.link.status_poll_period_s * 0.9:
            self._last_publish_s = now_s
            sup._publish()
        return status

    def sleep(self, seconds: float) -> None:
        """The job's wait (e.g. OutputCheck(sleep=...)): in slices of the supervisor's poll period, reading the
        unit whenever no status was read for a period (heartbeat, snapshots at the usual rate, also while the
        job only talks to the electrometer); returns early once the job was cancelled."""
        self._check("sleep")
        sup = self._sup
        period_s = sup.config.link.status_poll_period_s
        end_s = sup._clock.now_s() + max(0.0, seconds)
        while not self._cancelled.is_set():
            now_s = sup._clock.now_s()
            if now_s - self._last_status_s >= period_s:
                self.status()
                now_s = sup._clock.now_s()
            if now_s >= end_s:
                return
            self._cancelled.wait(min(end_s - now_s, max(0.0, self._last_status_s + period_s - now_s)) or 0.001)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._sup._xrs, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._check(name)
            return attr(*args, **kwargs)
        return call


class SnapshotMailbox:
    """Latest-value hand-off to one subscriber (UI thread). Writing never blocks and never queues."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._snapshot: Snapshot | None = None

    def put(self, snapshot: Snapshot) -> None:
        with self._cond:
            self._snapshot = snapshot
            self._cond.notify_all()

    def latest(self) -> Snapshot | None:
        with self._cond:
            return self._snapshot

    def wait_for(self, predicate: Callable[[Snapshot], bool], timeout_s: float) -> Snapshot | None:
        """Block the *caller* (never the supervisor) until a snapshot satisfies `predicate`."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._snapshot is not None and predicate(self._snapshot),
                                     timeout=timeout_s)
            return self._snapshot if ok else None


@dataclass
class _Command:
    name: str
    kwargs: dict[str, Any]
    future: Future = field(default_factory=Future)


class _Clock:
    def now_s(self) -> float:  # pragma: no cover - protocol
        raise NotImplementedError


class _UnopenedJournal:
    """Stands in for a journal that could not be opened: every write fails, so the journal-write-failure
    interlock holds any beam (the supervisor starts anyway, so that the screens can say why)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def _fail(self, *args: Any, **kwargs: Any) -> None:
        raise JournalWriteError(self.message)

    append = treatment_opened = progress = treatment_closed = _fail

    def close(self) -> None:
        pass


_BEAM_DEVICE_STATES = (XrsState.RAMP_UP, XrsState.BEAM_ON, XrsState.RAMP_DOWN)
PRESET_END_QUIET_MAX_S = 0.25   # at most this long before the primary timer's end no regular status poll starts
# run_exclusive: the states with no treatment armed, running, paused or awaiting a decision
_EXCLUSIVE_STATES = (State.IDLE, State.PLAN_LOADED, State.APPROVED, State.COMPLETED, State.TERMINATED)
# commands that cancel a running exclusive job (and then run); every other one is refused meanwhile
_ENDS_EXCLUSIVE = frozenset({"stop", "emergency_stop", "shutdown"})


# --------------------------------------------------------------------------------------------
# The supervisor
# --------------------------------------------------------------------------------------------


class Supervisor:
    """Owns the treatment. Public methods are thread-safe: each enqueues a command and returns a Future
    resolving to a CommandResult. `start()` runs the loop on its own thread; `close()` stops it (beam off).
    """

    def __init__(self, xrs: XraySource, *, journal_path, clock, device_source_serial: str,
                 config: SiteConfig | None = None, today: Callable[[], date] = date.today,
                 qa_results: Callable[[], Iterable[QaResult]] = lambda: (),
                 calibration_problem: Callable[[], str | None] = lambda: None,
                 record_store_available: Callable[[], bool] = lambda: True,
                 journal_fsync: Callable[[int], None] | None = None,
                 utc_now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 device_log_dir: str | Path | None = None,
                 segment_close_timeout_s: float = 10.0, realtime_priority: bool = False) -> None:
        self.config = config or SiteConfig()
        self._xrs = xrs
        self._clock = clock
        self._today = today
        self._qa_results = qa_results
        self._calibration_problem = calibration_problem   # None, or why the source's calibration is not usable
        self._store_ok = record_store_available
        self._serial = device_source_serial
        self.interlocks = InterlockBank()
        self.sm = TreatmentStateMachine(clock, self.interlocks, resolution_s=self.config.planning.timer_resolution_s)
        self._utc_now = utc_now
        self._utc_offset_s: float | None = None    # UTC − monotonic at the start of the open delivery
        try:
            readout = read_journal(journal_path)
        except OSError as exc:     # unreadable: the journal cannot be trusted or appended; the interlock says so
            readout = JournalReadout(entries=(), torn_tail=False)
            self.interlocks.trip(InterlockId.JOURNAL_WRITE_FAILURE, now_s=clock.now_s(),
                                 detail=f"the treatment journal {journal_path} cannot be read ({exc.strerror or exc})")
        self.journal_report = readout.report
        kwargs = {} if journal_fsync is None else {"fsync": journal_fsync}
        try:
            self._journal = Journal(journal_path, clock=clock, **kwargs)
        except JournalWriteError as exc:
            # Start anyway with the interlock active: the screens must be able to say why no beam is possible.
            self._journal = _UnopenedJournal(exc.message)
            self.interlocks.trip(InterlockId.JOURNAL_WRITE_FAILURE, now_s=clock.now_s(), detail=exc.message)
            log.error("journal not opened: %s", exc.message)
        self._unfinished = readout.unfinished
        # dose already delivered per plan id (the patient's treatment), from the journal and this run: a plan
        # loaded again after a reset must carry at least this as previously delivered (a continuation)
        self._delivered_by_plan_id: dict[str, float] = _delivered_by_plan_id(readout.entries)
        self._unfinished_irm_before_gy = 0.0
        self._unfinished_elapsed_before_s = 0.0
        if self._unfinished:
            tid = self._unfinished[-1].treatment_id
            for entry in readout.entries:
                if entry.get("treatment_id") == tid and entry.get("kind") == BEAM_ON:
                    value = entry.get("data", {}).get("irm_before_gy", 0.0)
                    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
                        self._unfinished_irm_before_gy = float(value)
                    value = entry.get("data", {}).get("elapsed_s", 0.0)
                    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
                        self._unfinished_elapsed_before_s = float(value)
        self._device_log_dir = Path(device_log_dir) if device_log_dir is not None else Path(journal_path).parent
        self._segment_close_timeout_s = segment_close_timeout_s
        self._want_realtime = realtime_priority
        self.realtime_priority = "not requested"    # what the loop's thread got (for the benchmark and logs)
        self._reports: list[queue.Queue] = []
        # the delivery being recorded (one plan version), see DeliveryReport
        self._segments: list[BeamSegment] = []
        self._pauses: list[tuple[float, datetime, str, float]] = []
        self._interlock_changes: list[InterlockChange] = []
        self._last_active_ids: dict[str, str] = {}
        self._closing: dict[str, Any] | None = None    # the segment waiting for its final IRM read
        self._pending_report: dict[str, Any] | None = None
        self._segment_start_utc: datetime | None = None
        self._beam_end_s: float | None = None           # monotonic time the primary timer reaches the preset
        self._device_log = None
        self._device_log_path: Path | None = None
        self._device_log_hash = hashlib.sha256()
        self.recovered_reading: RecoveredReading | None = None
        # how late each poll ran after its deadline (s): the tick jitter the benchmark reports
        self.tick_lateness_s: deque[float] = deque(maxlen=200_000)
        self.end_wake_lateness_s: deque[float] = deque(maxlen=10_000)
        self._queue: queue.Queue[_Command] = queue.Queue()
        self._mailboxes: list[SnapshotMailbox] = []
        self._mail_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # delivery figures
        self._identity_verified = False
        self._treatment_id: str | None = None
        self._status: XrsStatus | None = None
        self._last_good_status_s: float | None = None
        self._segment_irm_before_gy = 0.0     # IRM dose of earlier segments (the unit resets it at each arm)
        self._arm_irm_limit_gy = 0.0          # the IRM limit the unit was armed with (its own hard stop)
        self._unreconciled: dict[str, Any] | None = None   # delivery whose final IRM read was lost with the link
        self._segment_start_s: float | None = None
        self._rate_window: list[tuple[float, float]] = []   # (unit time, total IRM dose) over ~1 s
        self._status_read_s: deque[float] = deque(maxlen=40)   # how long the last status reads took (~2 s)
        self._last_journal_s = -math.inf
        self._termination: TerminationStatus | None = None
        self._last_message = readout.report if readout.unfinished or readout.problems else "ready for a plan"
        self._seq = 0
        self.overruns = 0
        # run_exclusive: the job queued or running (set by submit, cleared on this thread when it ended)
        self._exclusive_lock = threading.Lock()
        self._exclusive: _ExclusiveJob | None = None
        self._exclusive_running = False
        self._reschedule_polls = False     # after a job that polled the unit itself: restart the poll schedule

    # -- public, thread-safe API --------------------------------------------------------------

    def subscribe(self) -> SnapshotMailbox:
        box = SnapshotMailbox()
        with self._mail_lock:
            self._mailboxes.append(box)
        return box

    def subscribe_reports(self) -> "queue.Queue[DeliveryReport]":
        """A queue receiving one DeliveryReport per ended delivery (rare events: nothing is dropped)."""
        q: queue.Queue[DeliveryReport] = queue.Queue()
        with self._mail_lock:
            self._reports.append(q)
        return q

    def submit(self, name: str, **kwargs: Any) -> Future:
        command = _Command(name, kwargs)
        with self._exclusive_lock:
            job = self._exclusive
            if job is not None and name == "run_exclusive":
                command.future.set_result(ExclusiveResult(
                    False, f"{job.what} is already running on the X-ray unit: wait for it to end or cancel it",
                    self.sm.state))
                return command.future
            if job is None and name == "run_exclusive" and not self._stopping:
                self._exclusive = kwargs["job"]
        if job is not None and name in _ENDS_EXCLUSIVE:
            job.cancel()                   # thread-safe: the job sees it at its next poll and switches the beam off
            command.kwargs = {**kwargs, "cancelled_exclusive": job.what} if name != "shutdown" else kwargs
        elif job is not None:
            command.future.set_result(CommandResult(
                False, f"{job.what} is running on the X-ray unit: wait for it to end (or cancel it), then repeat",
                self.sm.state))
            return command.future
        if self._stopping:
            command.future.set_result(CommandResult(False, "the supervisor is shut down", self.sm.state))
        else:
            self._queue.put(command)
        return command.future

    def load_plan(self, plan: ApprovedPlan) -> Future: return self.submit("load_plan", plan=plan)
    def revise_plan(self, plan: ApprovedPlan) -> Future: return self.submit("revise_plan", plan=plan)
    def approve(self, plan: ApprovedPlan) -> Future: return self.submit("approve", plan=plan)
    def unload_plan(self) -> Future: return self.submit("unload_plan")
    def verify_identity(self, *, medical_record_number: str, date_of_birth: date) -> Future:
        return self.submit("verify_identity", medical_record_number=medical_record_number,
                           date_of_birth=date_of_birth)
    def confirm_ready(self) -> Future: return self.submit("confirm_ready")
    def arm(self) -> Future: return self.submit("arm")
    def disarm(self) -> Future: return self.submit("disarm")
    def beam_on(self) -> Future: return self.submit("beam_on")
    def pause(self, reason: str = "paused by the operator") -> Future: return self.submit("pause", reason=reason)
    def prepare_device(self, *, kv: float | None = None, ua: float | None = None) -> Future:
        """Set the technique (default: the configured nominal 50 kV / 40 µA) and start the warm-up when the
        unit is not READY yet. Only while no plan is armed or delivered."""
        return self.submit("prepare_device", kv=kv, ua=ua)
    def reconnect(self) -> Future:
        """Re-open the link to the unit after a loss (never during beam); the link-lost interlock stays latched
        until a person clears it."""
        return self.submit("reconnect")
    def enter_unit_irm(self, *, unit_irm_gy: float, entered_by: str) -> Future:
        """Settle the IRM dose of a delivery that ended with the link lost, as read at the unit (when the
        link cannot be restored). Refused below the console's last reading or above the unit's IRM limit."""
        return self.submit("enter_unit_irm", unit_irm_gy=unit_irm_gy, entered_by=entered_by)
    @property
    def irm_unreconciled(self) -> bool:
        """A delivery's IRM dose waits for the unit's counter (thread-safe read of one reference)."""
        return self._unreconciled is not None
    def reset_device_fault(self, *, acknowledgement: str) -> Future:
        """Reset the unit's latched fault with a person's written acknowledgement (never automatic)."""
        return self.submit("reset_device_fault", acknowledgement=acknowledgement)
    def resume(self) -> Future: return self.submit("resume")
    def stop(self) -> Future: return self.submit("stop")
    def emergency_stop(self) -> Future: return self.submit("emergency_stop")
    def acknowledge_fault(self, *, beam_confirmed_off: bool) -> Future:
        return self.submit("acknowledge_fault", beam_confirmed_off=beam_confirmed_off)
    def acknowledge_interruption(self, *, delivered_dose_gy: float, acknowledgement: str) -> Future:
        return self.submit("acknowledge_interruption", delivered_dose_gy=delivered_dose_gy,
                           acknowledgement=acknowledgement)
    def reset(self) -> Future: return self.submit("reset")
    def clear_interlock(self, interlock: InterlockId, *, role: ClearRole, acknowledgement: str) -> Future:
        return self.submit("clear_interlock", interlock=interlock, role=role, acknowledgement=acknowledgement)

    def run_exclusive(self, fn: Callable[[XraySource], Any], *, what: str = "a QA exposure",
                      cancel: Callable[[], None] | None = None) -> Future:
        """Run `fn(xrs)` as ONE command on the supervisor's thread (the daily output check): refused unless no
        treatment is armed, running, paused or awaiting a decision (IDLE, PLAN_LOADED, APPROVED, COMPLETED,
        TERMINATED) and the unit's beam is off. While it runs `fn` alone calls the unit (through a proxy valid
        only on this thread and only until it returns) and must poll it itself (its status reads feed the
        unit's watchdog and are published, with `qa_exposure_running`); every other command is refused, except
        stop / emergency_stop / shutdown, which call `cancel` (thread-safe) and run once the job returned. The
        beam is switched off after the job whatever it did. Future → ExclusiveResult (value or error)."""
        return self.submit("run_exclusive", job=_ExclusiveJob(fn, what, cancel))

    def cancel_exclusive(self) -> bool:
        """Cancel a queued or running run_exclusive job from any thread (its beam goes off). False: none."""
        with self._exclusive_lock:
            job = self._exclusive
        if job is None:
            return False
        job.cancel()
        return True

    def start(self) -> "Supervisor":
        self._thread = threading.Thread(target=self._run, name="treatment-supervisor", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the loop (switching the beam off if it is on), close the journal."""
        done = self.submit("shutdown")
        if self._thread is not None:
            try:
                done.result(timeout=timeout_s)
            finally:
                self._thread.join(timeout=timeout_s)
        else:
            self._drain()
        self._journal.close()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        if self._want_realtime:
            self.realtime_priority = _try_realtime_priority()
        period_s = self.config.link.status_poll_period_s
        start_s = self._clock.now_s()
        k = 0
        self._recover_on_start()
        while not self._stopping:
            deadline_s = start_s + k * period_s
            # the primary timer's end falls between two polls: wake exactly then (timing accuracy)
            end_s = self._beam_end_s if self.sm.state is State.BEAM_ON else None
            wake_s = deadline_s if end_s is None or end_s >= deadline_s else end_s
            now_s = self._clock.now_s()
            # a command waiting is taken before the next poll even when polls run late back to back (status reads
            # slower than the poll period on a noisy line): STOP must never queue behind polls
            wait_s = max(0.0, wake_s - now_s)
            try:
                command = self._queue.get(timeout=wait_s) if wait_s > 0 else self._queue.get_nowait()
            except queue.Empty:
                command = None
            if command is not None:
                self._execute(command)
                if self._reschedule_polls:        # the job polled the unit itself: no poll was missed
                    self._reschedule_polls = False
                    start_s, k = self._clock.now_s(), 0
                continue
            if wake_s < deadline_s:
                spin_until = time.monotonic() + 0.002
                while self._clock.now_s() < wake_s and time.monotonic() < spin_until:
                    pass                                  # queue timeouts may return a hair early
                self.end_wake_lateness_s.append(self._clock.now_s() - wake_s)
                self._end_at_preset_safely()              # beam off first: a status read may be retried on a bad line
                self._poll_safely()
                if self.sm.state is State.BEAM_ON:
                    self._beam_end_s = None               # not ended (status unreadable?): regular polls decide
                continue
            if end_s is not None and end_s - max(deadline_s, self._clock.now_s()) < self._preset_end_quiet_s():
                # the primary timer ends within this poll's reach: a status read retried on a noisy line would hold
                # the beam-off at the preset end behind it; the unit heard from the console at the previous poll,
                # well inside its watchdog, and the end wake reads the status after the beam is off
                k += 1
                continue
            now_s = self._clock.now_s()
            self.tick_lateness_s.append(now_s - deadline_s)
            late_periods = int((now_s - deadline_s) // period_s)
            if late_periods >= 1:               # skip missed deadlines instead of bursting to catch up
                self.overruns += 1
                k += late_periods
            self._poll_safely()
            k += 1
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                command = self._queue.get_nowait()
            except queue.Empty:
                return
            self._execute(command)

    def _recover_on_start(self) -> None:
        if self._unfinished and self.sm.state is State.IDLE:
            result = self.sm.handle(Event.RECOVER, unfinished=self._unfinished[-1])
            self._treatment_id = self._unfinished[-1].treatment_id
            # read the unit's counters once: what it delivered since its last arm (it stopped by itself)
            last = self._unfinished[-1]
            rate_gy_per_s = last.primary_dose_gy / last.elapsed_s if last.elapsed_s > 0 else 0.0
            unjournalled_s = ((self.config.delivery.journal_progress_interval_s + self.config.link.device_watchdog_s)
                              if last.beam_was_on else 0.0)
            guard = {"journal_irm_gy": last.irm_dose_gy, "unjournalled_bound_gy": rate_gy_per_s * unjournalled_s}
            try:
                status = self._xrs.status()
                self._status = status
                self.recovered_reading = RecoveredReading(**guard,
                    irm_since_last_arm_gy=status.irm_dose_gy, beam_on_time_since_last_arm_s=status.beam_on_time_s,
                    irm_before_last_arm_gy=self._unfinished_irm_before_gy, device_state=status.state.value,
                    elapsed_before_last_arm_s=self._unfinished_elapsed_before_s,
                    detail=(f"the unit reports {status.irm_dose_gy:.4f} Gy (IRM) and {status.beam_on_time_s:.1f} s "
                            f"beam since its last arm, state {status.state.value}, last beam off by "
                            f"{status.last_beam_off_cause.value}"))
            except DeviceError as exc:
                self.recovered_reading = RecoveredReading(**guard,
                    irm_since_last_arm_gy=None, beam_on_time_since_last_arm_s=None,
                    irm_before_last_arm_gy=self._unfinished_irm_before_gy, device_state=None,
                    elapsed_before_last_arm_s=self._unfinished_elapsed_before_s,
                    detail=f"the unit's counters could not be read ({exc.message}): read them at the unit")
            self._last_message = (f"unfinished treatment {self._treatment_id} found in the journal "
                                  f"({self._unfinished[-1].elapsed_s:.1f} s of "
                                  f"{self._unfinished[-1].preset_s:.1f} s journalled): confirm the delivered dose "
                                  "from the unit and the record, then acknowledge" if result.ok else result.reason)
        self._publish()

    def _execute(self, command: _Command) -> None:
        if command.future.done():
            return
        try:
            handler = getattr(self, f"_cmd_{command.name}", None)
            if handler is None:
                result = self._result(False, f"unknown command {command.name!r}: nothing was done")
            else:
                result = handler(**command.kwargs)
        except Exception as exc:  # a bug must not kill the safety thread; the beam goes off
            self._internal_fault(f"command {command.name}", exc)
            result = self._result(False, f"internal error while executing {command.name}: {exc}; the beam was "
                                         "switched off and the treatment ended in FAULT; report this to service")
        self._last_message = result.reason
        self._publish()
        command.future.set_result(result)

    def _internal_fault(self, what: str, exc: BaseException) -> None:
        """A console bug: beam off, and a running treatment ends in FAULT (never left in beam_on)."""
        log.exception("supervisor %s failed", what)
        self._beam_off_quietly(BeamOffReason.CONSOLE_FAULT)
        if self.sm.state in (State.ARMED, State.BEAM_ON, State.PAUSED):
            try:
                self._end(Event.FAULT, TerminationStatus.MACHINE,
                          f"internal console error in {what} ({exc}): beam switched off; confirm HV is off at the "
                          "unit and report this to service", None)
            except Exception:  # the beam is already off; the state machine keeps what it had
                log.exception("supervisor could not record the internal fault")

    def _preset_end_quiet_s(self) -> float:
        """How long before the preset end no regular poll starts: as long as the slowest of the recent status
        reads (about 1 ms on a clean line, so the IRM stop keeps watching to the end; up to 0.25 s on a noisy
        line, where the unit's IRM limit bounds a hot beam in the last instants)."""
        return min(PRESET_END_QUIET_MAX_S, max(self._status_read_s, default=0.0))

    def _end_at_preset_safely(self) -> None:
        """At the primary timer's end: switch the beam off before anything else talks to the unit."""
        try:
            if self.sm.state is State.BEAM_ON and self.sm.timer.remaining_s <= 0:
                self._end(Event.COMPLETE, TerminationStatus.NORMAL, "preset time reached",
                          BeamOffReason.PRESET_TIME_REACHED)
                self._publish()
        except Exception as exc:  # a bug here must not keep the beam on: the fault path switches it off
            self._internal_fault("end at the preset time", exc)
            self._publish()

    def _poll_safely(self) -> None:
        try:
            self.poll_once()
        except Exception as exc:  # a bug in evaluation must not kill the thread that stops the beam
            self._internal_fault("status poll", exc)
            self._publish()

    def _result(self, ok: bool, reason: str) -> CommandResult:
        return CommandResult(ok, reason, self.sm.state)

    def _from_transition(self, t: TransitionResult) -> CommandResult:
        return CommandResult(t.ok, t.reason, self.sm.state)

    # -- polling --------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """One real-time step: read status (also the heartbeat the unit's watchdog sees), evaluate."""
        now_s = self._clock.now_s()
        try:
            status = self._xrs.status()
            self._status_read_s.append(self._clock.now_s() - now_s)
        except LinkLost as exc:
            self._link_lost(now_s, exc.message)
            self._try_finish_segment(None)
            self._publish()
            return
        except DeviceError as exc:
            if self._last_good_status_s is None or now_s - self._last_good_status_s > self.config.link.link_lost_after_s:
                self._link_lost(now_s, exc.message)
            self._try_finish_segment(None)
            self._publish()
            return
        self._status = status
        self._last_good_status_s = now_s
        if self._treatment_id is not None:
            self._log_device("status", **_status_fields(status))
        self._check_wall_clock(now_s)
        self._evaluate(status, now_s)
        self._try_finish_segment(status)
        self._publish()

    def _link_lost(self, now_s: float, detail: str) -> None:
        self.interlocks.update(InterlockId.LINK_LOST, True, now_s=now_s, detail=detail)
        if self.sm.state in (State.ARMED, State.BEAM_ON, State.PAUSED):
            self._end(Event.FAULT, TerminationStatus.MACHINE, f"link to the X-ray unit lost ({detail})",
                      BeamOffReason.CONSOLE_FAULT, cause=CAUSE_DEVICE_FAULT)

    def _evaluate(self, status: XrsStatus, now_s: float) -> None:
        self.interlocks.update(InterlockId.LINK_LOST, False, now_s=now_s)
        plan = self.sm.plan.plan if self.sm.plan else None
        for c in device_conditions(status, plan_applicator_cm=plan.applicator_cm if plan else None,
                                   plan_source_serial=plan.source_serial if plan else None,
                                   device_source_serial=self._serial):
            self.interlocks.update(c.interlock, c.present, now_s=now_s, detail=c.detail)
        self._update_preconditions(now_s, full=False)
        state = self.sm.state
        if state is not State.BEAM_ON and status.state in (XrsState.RAMP_UP, XrsState.BEAM_ON):
            # The unit irradiates while the console runs no beam (a beam off lost with the link, say): switch it
            # off again at every poll until it obeys, and latch a device fault for review.
            self._beam_off_quietly(BeamOffReason.CONSOLE_FAULT)
            if not self.interlocks.is_active(InterlockId.DEVICE_FAULT):
                self.interlocks.trip(InterlockId.DEVICE_FAULT, now_s=now_s,
                                     detail=f"the unit reported beam on while the console was {state.value}; "
                                            "beam off sent again")
            if state in (State.ARMED, State.PAUSED):
                self._end(Event.FAULT, TerminationStatus.MACHINE, "the unit irradiated while the console had no beam "
                          "running: beam off sent again", None, cause=CAUSE_DEVICE_FAULT)
            return
        if state is State.BEAM_ON:
            self._evaluate_beam(status, now_s)
        elif state in (State.READY, State.ARMED) and self.interlocks.start_blockers():
            if state is State.ARMED:
                self._beam_off_quietly(BeamOffReason.CONSOLE_INTERLOCK)
            t = self.sm.handle(Event.READINESS_LOST)
            self._last_message = f"{t.reason}: " + "; ".join(s.text for s in self.interlocks.start_blockers())
        elif state in (State.ARMED, State.PAUSED):
            if self.interlocks.is_active(InterlockId.EMERGENCY_STOP):
                self._end(Event.EMERGENCY_STOP, TerminationStatus.OPERATOR, "emergency stop at the unit",
                          BeamOffReason.CONSOLE_INTERLOCK)
            elif self.interlocks.is_active(InterlockId.DEVICE_FAULT):
                self._end(Event.FAULT, TerminationStatus.MACHINE, "the X-ray unit reports a fault",
                          BeamOffReason.CONSOLE_FAULT, cause=CAUSE_DEVICE_FAULT)

    def _segment_irm_gy(self, status: XrsStatus) -> float:
        return self._segment_irm_before_gy + status.irm_dose_gy

    def _evaluate_beam(self, status: XrsStatus, now_s: float) -> None:
        approved = self.sm.plan
        assert approved is not None
        plan = approved.plan
        expected_rate_gy_per_s = plan.dose_to_deliver_gy / plan.treatment_time_s
        elapsed_s = self.sm.timer.elapsed_s
        primary_gy = min(elapsed_s, self.sm.timer.preset_s) * expected_rate_gy_per_s
        # the timer when this status was requested (now_s): the unit sampled its IRM between then and now
        segment_start_s = self._segment_start_s if self._segment_start_s is not None else now_s
        waited_s = max(0.0, self._clock.now_s() - max(now_s, segment_start_s))
        primary_at_request_gy = min(max(0.0, elapsed_s - waited_s), self.sm.timer.preset_s) * expected_rate_gy_per_s
        secondary_gy = self._segment_irm_gy(status)
        # dose rate from the unit's own clock: a late poll on a busy console must not look like a rate change
        device_s = status.device_time_s
        self._rate_window.append((device_s, secondary_gy))
        while self._rate_window and device_s - self._rate_window[0][0] > 1.0:
            self._rate_window.pop(0)
        measured = None
        if len(self._rate_window) >= 2 and self._rate_window[-1][0] - self._rate_window[0][0] >= 0.5:
            (t0, d0), (t1, d1) = self._rate_window[0], self._rate_window[-1]
            measured = (d1 - d0) / (t1 - t0)
        since_start_s = now_s - (self._segment_start_s or now_s)
        for c in beam_conditions(status, config=self.config, since_beam_start_s=since_start_s,
                                 expected_rate_gy_per_s=expected_rate_gy_per_s, measured_rate_gy_per_s=measured,
                                 primary_dose_gy=primary_gy, secondary_dose_gy=secondary_gy,
                                 primary_dose_at_request_gy=primary_at_request_gy):
            self.interlocks.update(c.interlock, c.present, now_s=now_s, detail=c.detail)
        # during beam: has the delivered total already passed the prescription (the stops failed)?
        # The preset remainder is not projected here: the secondary stop ends a hot beam at the dose.
        cum = cumulative_dose_condition(prescription_dose_gy=plan.prescription_dose_gy,
                                        previously_delivered_gy=plan.previously_delivered_gy,
                                        delivered_now_gy=max(primary_gy, secondary_gy),
                                        still_preset_gy=0.0, config=self.config)
        self.interlocks.update(cum.interlock, cum.present, now_s=now_s, detail=cum.detail)

        # the device ended the beam on its own (backup timer, IRM limit, watchdog, fault, e-stop, chain)
        if not status.hv_on and status.state not in (XrsState.RAMP_UP, XrsState.BEAM_ON) \
                and status.last_beam_off_cause is not BeamOffCause.NONE \
                and status.last_beam_off_cause is not BeamOffCause.CONSOLE_COMMAND:
            cause = status.last_beam_off_cause
            if cause is BeamOffCause.EMERGENCY_STOP:
                self.interlocks.update(InterlockId.EMERGENCY_STOP, True, now_s=now_s, detail="e-stop at the unit")
                self._end(Event.EMERGENCY_STOP, TerminationStatus.OPERATOR, "emergency stop at the unit", None)
                return
            if cause is BeamOffCause.INTERLOCK:
                self._end(Event.INTERLOCK, TerminationStatus.MACHINE,
                          "the unit's interlock chain opened during beam: " + REGISTRY[
                              InterlockId.DEVICE_INTERLOCK_OPEN].remediation, None)
                return
            if not self.interlocks.is_active(InterlockId.DEVICE_FAULT):
                self.interlocks.trip(InterlockId.DEVICE_FAULT, now_s=now_s,
                                     detail=f"the unit ended the beam itself ({cause.value}); the console's own "
                                            "stops did not act first")
            self._end(Event.FAULT, TerminationStatus.MACHINE,
                      f"the unit ended the beam ({cause.value}): {self.interlocks.status(InterlockId.DEVICE_FAULT).detail}",
                      None, cause=CAUSE_DEVICE_FAULT)
            return

        # The normal stops come first: at the stop point the beam ends either way, and an interlock that
        # tripped at the same poll stays latched for review.
        # (a) primary: console timer at the preset time; (b) secondary: IRM dose reaches the dose to deliver
        if self.sm.timer.remaining_s <= 0:
            self._end(Event.COMPLETE, TerminationStatus.NORMAL, "preset time reached",
                      BeamOffReason.PRESET_TIME_REACHED)
            return
        if secondary_gy >= plan.dose_to_deliver_gy:
            self._end(Event.COMPLETE, TerminationStatus.NORMAL, "secondary dose channel (IRM) reached the dose",
                      BeamOffReason.DOSE_MONITOR_REACHED, cause=CAUSE_MONITOR)
            return
        terminating = self.interlocks.active(Effect.TERMINATES_BEAM)
        if terminating:
            ids = {s.id for s in terminating}
            text = "; ".join(s.text for s in terminating)
            if InterlockId.EMERGENCY_STOP in ids:
                self._end(Event.EMERGENCY_STOP, TerminationStatus.OPERATOR, text, BeamOffReason.CONSOLE_INTERLOCK)
            elif ids & {InterlockId.DEVICE_FAULT, InterlockId.LINK_LOST}:
                self._end(Event.FAULT, TerminationStatus.MACHINE, text, BeamOffReason.CONSOLE_FAULT,
                          cause=CAUSE_DEVICE_FAULT)
            else:
                self._end(Event.INTERLOCK, TerminationStatus.MACHINE, text, BeamOffReason.CONSOLE_INTERLOCK)
            return

        if now_s - self._last_journal_s >= self.config.delivery.journal_progress_interval_s:
            self._journal_or_trip(lambda: self._journal.progress(
                self._treatment_id or "", elapsed_s=elapsed_s, primary_dose_gy=primary_gy,
                irm_dose_gy=secondary_gy, beam_on=True, kv=status.kv, ua=status.ua))
            self._last_journal_s = now_s

    # -- preconditions ------------------------------------------------------------------------------

    def _update_preconditions(self, now_s: float, *, full: bool) -> None:
        approved = self.sm.plan
        has_plan = approved is not None
        self.interlocks.update(InterlockId.PLAN_NOT_APPROVED, has_plan and not approved.fully_approved,
                               now_s=now_s, detail=(f"missing: {', '.join(r.value for r in approved.missing_roles())}"
                                                    if has_plan and not approved.fully_approved else ""))
        self.interlocks.update(InterlockId.IDENTITY_NOT_VERIFIED, has_plan and not self._identity_verified,
                               now_s=now_s, detail="not yet confirmed at the console" if has_plan else "")
        if full:
            qa_problem = ""
            if has_plan:
                try:
                    qa = todays_output_check(self._qa_results(), source_serial=self._serial, today=self._today())
                    window = self.config.qa.k_out_window_fraction
                    if abs(qa.k_out - 1.0) > window + 1e-12:
                        qa_problem = f"k_out {qa.k_out:.4f} outside ±{window * 100:.1f} %"
                    elif qa.qa_id != approved.plan.qa_id and abs(qa.k_out - approved.plan.k_out) > 1e-9:
                        qa_problem = (f"the plan used k_out {approved.plan.k_out:.4f} from {approved.plan.qa_id}; "
                                      f"today's latest check {qa.qa_id} gives {qa.k_out:.4f}: re-plan")
                except Refused as exc:
                    qa_problem = exc.message
                except Exception as exc:  # noqa: BLE001 - a probe that fails cannot vouch for today's output check
                    qa_problem = f"today's output check could not be read ({exc})"
            self.interlocks.update(InterlockId.OUTPUT_CHECK_NOT_PASSED, bool(qa_problem), now_s=now_s,
                                   detail=qa_problem)
            calibration_problem = ""
            if has_plan:
                try:
                    calibration_problem = self._calibration_problem() or ""
                except Exception as exc:  # noqa: BLE001 - a probe that fails cannot vouch for the calibration
                    calibration_problem = f"the calibration could not be checked ({exc})"
            self.interlocks.update(InterlockId.CALIBRATION_NOT_VALID, bool(calibration_problem), now_s=now_s,
                                   detail=calibration_problem)
            try:
                store_ok = bool(self._store_ok())
            except Exception as exc:  # a failing probe means unavailable
                store_ok = False
                log.warning("record store probe failed: %s", exc)
            self.interlocks.update(InterlockId.RECORD_STORE_UNAVAILABLE, not store_ok, now_s=now_s,
                                   detail="" if store_ok else "the record store does not accept writes")

    # -- commands ------------------------------------------------------------------------------------

    @property
    def unfinished(self):
        """The unfinished treatment found in the journal at start-up (journal.UnfinishedTreatment) or None."""
        return self._unfinished[-1] if self._unfinished else None

    def _cmd_shutdown(self) -> CommandResult:
        if self.sm.state is State.BEAM_ON:
            self._end(Event.STOP, TerminationStatus.OPERATOR, "console shutdown", BeamOffReason.CONSOLE_SHUTDOWN,
                      cause=CAUSE_CONSOLE_FAULT)
        elif self.sm.state is State.ARMED:
            self._beam_off_quietly(BeamOffReason.CONSOLE_SHUTDOWN)
        # a segment still waiting for HV ramp-down: keep reading (the heartbeat) until its final IRM is read
        give_up = time.monotonic() + 3.0
        while self._closing is not None:
            before = self._closing
            status = self._read_status_quietly()
            self._try_finish_segment(status, force=status is None or time.monotonic() > give_up)
            if self._closing is before:
                time.sleep(self.config.link.status_poll_period_s)
        if self._device_log is not None:
            self._close_device_log()
        self._stopping = True
        return self._result(True, "supervisor stopped; beam off")

    def _cmd_prepare_device(self, kv: float | None = None, ua: float | None = None) -> CommandResult:
        if self.sm.state not in (State.IDLE, State.PLAN_LOADED, State.APPROVED, State.COMPLETED, State.TERMINATED,
                                 State.INTERRUPTED):
            return self._result(False, f"the unit cannot be prepared while the treatment is {self.sm.state.value}: "
                                       "finish or terminate the delivery first")
        d = self.config.delivery
        kv = d.nominal_kv if kv is None else kv
        ua = d.nominal_ua if ua is None else ua
        try:
            status = self._xrs.status()
            if status.state is XrsState.FAULT:
                return self._result(False, "the unit has a latched fault: find its cause and reset it with an "
                                           "acknowledgement before preparing it")
            self._xrs.set_technique(kv, ua)
            if status.state is XrsState.STANDBY:
                self._xrs.warm_up()
                return self._result(True, f"technique {kv:g} kV / {ua:g} µA set; warm-up started")
        except DeviceError as exc:
            return self._result(False, f"the X-ray unit refused the preparation: {exc.message}")
        return self._result(True, f"technique {kv:g} kV / {ua:g} µA set; the unit is {status.state.value}")

    def _cmd_reconnect(self) -> CommandResult:
        if self.sm.state is State.BEAM_ON:
            return self._result(False, "the beam is on: stop it before reconnecting")
        try:
            identity = self._xrs.reconnect()
        except DeviceError as exc:
            return self._result(False, f"the X-ray unit did not answer the reconnection: {exc.message}; check the "
                                       "cable and the unit's power")
        if identity.serial_number != self._serial:
            self.interlocks.trip(InterlockId.SOURCE_SERIAL_MISMATCH, now_s=self._clock.now_s(),
                                 detail=f"reconnected to {identity.serial_number}, expected {self._serial}")
            return self._result(False, f"reconnected to source {identity.serial_number}, not {self._serial}: connect "
                                       "the planned source")
        settled = self._reconcile_from_unit()
        return self._result(True, f"link to X-ray unit {identity.serial_number} restored: confirm at the unit that the "
                                  f"beam is off, then clear the link-lost interlock{settled}")

    def _cmd_reset_device_fault(self, acknowledgement: str) -> CommandResult:
        if not acknowledgement or not acknowledgement.strip():
            return self._result(False, "write what was checked at the unit before resetting its fault")
        if self.sm.state in (State.ARMED, State.BEAM_ON, State.PAUSED):
            return self._result(False, f"the unit's fault cannot be reset while the treatment is "
                                       f"{self.sm.state.value}: end the delivery first")
        try:
            self._xrs.reset_fault(operator_acknowledgement=acknowledgement.strip())
        except DeviceError as exc:
            return self._result(False, f"the X-ray unit did not reset its fault: {exc.message}")
        return self._result(True, "the unit's fault was reset; clear the console's device-fault interlock if it "
                                  "is latched")

    def _cmd_load_plan(self, plan: ApprovedPlan) -> CommandResult:
        reason = self._plan_refusal(plan)
        if reason:
            return self._result(False, f"cannot load plan: {reason}")
        t = self.sm.handle(Event.LOAD_PLAN, plan=plan)
        if t.ok:
            self._identity_verified = False
            self._update_preconditions(self._clock.now_s(), full=True)
        return self._from_transition(t)

    def _cmd_revise_plan(self, plan: ApprovedPlan) -> CommandResult:
        reason = self._plan_refusal(plan)
        if reason:
            return self._result(False, f"cannot load the revised plan: {reason}")
        if self.sm.state is State.READY:
            self._beam_off_quietly(BeamOffReason.OPERATOR_STOP)
        t = self.sm.handle(Event.REVISE_PLAN, plan=plan)
        if t.ok:
            self._update_preconditions(self._clock.now_s(), full=True)
        return self._from_transition(t)

    def _plan_refusal(self, plan: Any) -> str:
        if not isinstance(plan, ApprovedPlan):
            return "no plan given"
        p = plan.plan
        if p.source_serial != self._serial:
            return (f"the plan is for source {p.source_serial}, the connected source is {self._serial}: re-plan "
                    "for the connected source")
        if p.prescription_dose_gy > self.config.prescription.hard_ceiling_dose_gy:
            return f"the plan prescribes {p.prescription_dose_gy:g} Gy, above the hard ceiling"
        already_gy = self._delivered_by_plan_id.get(p.plan_id, 0.0)
        slack_gy = self.config.delivery.record_hardware_agreement_fraction * p.prescription_dose_gy
        if already_gy > p.previously_delivered_gy + slack_gy:
            return (f"{already_gy:.3f} Gy were already delivered under plan {p.plan_id}, but this version counts "
                    f"{p.previously_delivered_gy:.3f} Gy as previously delivered: deliver the remainder only, as a "
                    "continuation plan calculated from the record")
        return ""

    def _cmd_approve(self, plan: ApprovedPlan) -> CommandResult:
        t = self.sm.handle(Event.APPROVE, plan=plan)
        self._update_preconditions(self._clock.now_s(), full=True)
        return self._from_transition(t)

    def _cmd_unload_plan(self) -> CommandResult:
        if self.sm.state is State.READY:
            self._beam_off_quietly(BeamOffReason.OPERATOR_STOP)
        t = self.sm.handle(Event.UNLOAD_PLAN)
        if t.ok:
            self._identity_verified = False
            self._update_preconditions(self._clock.now_s(), full=True)
        return self._from_transition(t)

    def _cmd_verify_identity(self, medical_record_number: str, date_of_birth: date) -> CommandResult:
        if self.sm.plan is None:
            return self._result(False, "no plan is loaded: load the patient's plan, then verify the identity")
        patient = self.sm.plan.plan.patient
        mismatches = []
        if medical_record_number != patient.medical_record_number:
            mismatches.append("medical record number")
        if date_of_birth != patient.date_of_birth:
            mismatches.append("date of birth")
        if mismatches:
            self._identity_verified = False
            self._update_preconditions(self._clock.now_s(), full=False)
            return self._result(False, f"{' and '.join(mismatches)} do not match the plan's patient "
                                       f"{patient.full_name}: stop, check the patient and the plan")
        self._identity_verified = True
        self._update_preconditions(self._clock.now_s(), full=False)
        return self._result(True, f"identity of {patient.full_name} verified by medical record number and date "
                                  "of birth")

    def _cmd_confirm_ready(self) -> CommandResult:
        self._update_preconditions(self._clock.now_s(), full=True)
        return self._from_transition(self.sm.handle(Event.CONFIRM_READY))

    def _arm_device(self) -> str:
        """Arm the unit for the remaining time and dose, with the configured margins. Returns a refusal."""
        plan = self.sm.plan.plan
        remaining_s = self.sm.timer.remaining_s
        remaining_gy = remaining_s * plan.dose_to_deliver_gy / plan.treatment_time_s
        delivered_gy = max(self._segment_irm_before_gy,
                           min(self.sm.timer.elapsed_s, self.sm.timer.preset_s) * plan.dose_to_deliver_gy
                           / plan.treatment_time_s)
        cum = cumulative_dose_condition(prescription_dose_gy=plan.prescription_dose_gy,
                                        previously_delivered_gy=plan.previously_delivered_gy,
                                        delivered_now_gy=delivered_gy, still_preset_gy=remaining_gy,
                                        config=self.config)
        self.interlocks.update(cum.interlock, cum.present, now_s=self._clock.now_s(), detail=cum.detail)
        if cum.present:
            return self.interlocks.status(cum.interlock).text
        d = self.config.delivery
        irm_limit_gy = remaining_gy * (1 + d.irm_limit_margin_fraction)
        try:
            self._xrs.arm(backup_time_s=round(remaining_s * (1 + d.backup_timer_margin_fraction), 1),
                          irm_limit_gy=irm_limit_gy, plan_hash=bytes.fromhex(plan.content_hash))
        except DeviceError as exc:
            return f"the X-ray unit refused to arm: {exc.message}"
        self._arm_irm_limit_gy = irm_limit_gy
        return ""

    def _cmd_arm(self) -> CommandResult:
        if self._closing is not None:
            return self._result(False, "the unit is still ramping HV down: wait for READY, then arm")
        self._update_preconditions(self._clock.now_s(), full=True)
        reason = self._guard(Event.ARM)
        if reason:
            return self._result(False, reason)
        u = self._unreconciled
        if u is not None:    # arming resets the unit's IRM counter: the evidence of the last beam would be gone
            return self._result(False, (
                f"the IRM dose of treatment {u['treatment_id']} is not settled (the link was lost before its final "
                f"reading; last reading {u['recorded_gy']:.4f} Gy): reconnect the X-ray unit so the console reads "
                "its counter, or a physicist enters the dose the unit shows, before the next arm"))
        refusal = self._arm_device()
        if refusal:
            return self._result(False, refusal)
        return self._from_transition(self.sm.handle(Event.ARM))

    def _cmd_disarm(self) -> CommandResult:
        reason = self._guard(Event.DISARM)
        if reason:
            return self._result(False, reason)
        self._beam_off_quietly(BeamOffReason.OPERATOR_STOP)
        return self._from_transition(self.sm.handle(Event.DISARM))

    def _guard(self, event: Event, **ctx: Any) -> str:
        """Dry-run of a transition so that side effects happen only when it will be accepted."""
        return self.sm.check(event, **ctx) or ""

    def _start_beam(self, event: Event) -> CommandResult:
        self._update_preconditions(self._clock.now_s(), full=True)
        reason = self._guard(event)
        if reason:
            return self._result(False, reason)
        plan = self.sm.plan.plan
        if event is Event.RESUME and self._closing is not None:
            return self._result(False, "the unit is still ramping HV down after the pause: wait until it reports "
                                       "READY (its final dose reading is taken then), then resume")
        if event is Event.RESUME:
            status = self._status
            if status is not None and status.state not in (XrsState.READY, XrsState.ARMED):
                return self._result(False, f"the unit is still {status.state.value}: wait until HV has ramped "
                                           "down (READY), then resume")
            refusal = self._arm_device()
            if refusal:
                return self._result(False, refusal)
        # journal first: no beam that cannot be recorded
        if self._treatment_id is None:
            self._treatment_id = f"T-{uuid.uuid4().hex[:12]}"
            self._open_delivery(plan)
            if not self._journal_or_trip(lambda: self._journal.treatment_opened(
                    self._treatment_id, plan_id=plan.plan_id, plan_hash=plan.content_hash,
                    preset_s=self.sm.timer.preset_s, prescription_dose_gy=plan.prescription_dose_gy,
                    dose_to_deliver_gy=plan.dose_to_deliver_gy, applicator_cm=plan.applicator_cm,
                    source_serial=plan.source_serial, delivery_type=plan.delivery_type.value)):
                self._beam_off_quietly(BeamOffReason.CONSOLE_INTERLOCK)
                return self._result(False, self.interlocks.status(InterlockId.JOURNAL_WRITE_FAILURE).text)
        if not self._journal_or_trip(lambda: self._journal.append(
                BEAM_ON, self._treatment_id, elapsed_s=self.sm.timer.elapsed_s,
                remaining_s=self.sm.timer.remaining_s, irm_before_gy=self._segment_irm_before_gy)):
            self._beam_off_quietly(BeamOffReason.CONSOLE_INTERLOCK)
            return self._result(False, self.interlocks.status(InterlockId.JOURNAL_WRITE_FAILURE).text)
        sent_s = self._clock.now_s()     # the unit may switch on as soon as the first beam-on frame arrives
        try:
            self._xrs.beam_on(plan_hash=bytes.fromhex(plan.content_hash))
        except DeviceError as exc:
            self._beam_off_quietly(BeamOffReason.CONSOLE_FAULT)
            self._journal_or_trip(lambda: self._journal.append(BEAM_OFF, self._treatment_id,
                                                               reason=f"beam on refused: {exc.message}"))
            return self._result(False, f"the X-ray unit refused beam on: {exc.message}")
        t = self.sm.handle(event)
        if t.ok and self.sm.timer.running:
            self.sm.timer.start_earlier(sent_s)   # a retransmitted beam on must not make the timer end late
        now_s = sent_s
        self._segment_start_s = now_s
        self._segment_start_utc = self._utc_now()
        self._beam_end_s = self._clock.now_s() + self.sm.timer.remaining_s   # the timer counts from sent_s
        self._rate_window.clear()
        self._last_journal_s = now_s
        self._termination = None
        self._log_device("beam_on", event=event.value, elapsed_s=self.sm.timer.elapsed_s,
                         remaining_s=self.sm.timer.remaining_s)
        return self._from_transition(t)

    def _cmd_beam_on(self) -> CommandResult:
        return self._start_beam(Event.BEAM_ON)

    def _cmd_resume(self) -> CommandResult:
        return self._start_beam(Event.RESUME)

    def _cmd_pause(self, reason: str = "paused by the operator") -> CommandResult:
        why = self._guard(Event.PAUSE)
        if why:
            return self._result(False, why)
        reason = (reason or "").strip() or "paused by the operator"
        self._beam_off_quietly(BeamOffReason.OPERATOR_PAUSE)
        t = self.sm.handle(Event.PAUSE)
        plan = self.sm.plan.plan
        delivered = min(self.sm.timer.elapsed_s, self.sm.timer.preset_s) * plan.dose_to_deliver_gy / plan.treatment_time_s
        self._pauses.append((self._clock.now_s(), self._utc_now(), reason, delivered))
        self._close_segment(f"pause: {reason}")
        self._journal_or_trip(lambda: self._journal.append(BEAM_OFF, self._treatment_id or "", reason="pause",
                                                           elapsed_s=self.sm.timer.elapsed_s,
                                                           irm_dose_gy=self._segment_irm_before_gy))
        return self._from_transition(t)

    def _close_segment(self, ended_by: str) -> None:
        """Start closing the beam segment. Its IRM dose is read once HV is fully off (the unit keeps
        integrating while HV ramps down, and resets the IRM at the next arm): see _try_finish_segment."""
        if self._closing is not None or self._segment_start_s is None:
            return
        now_s = self._clock.now_s()
        self._closing = {"start_mono_s": self._segment_start_s, "start_utc": self._segment_start_utc or self._utc_now(),
                         "stop_mono_s": now_s, "stop_utc": self._utc_now(),
                         "console_s": max(0.0, now_s - self._segment_start_s), "ended_by": ended_by,
                         "deadline_s": now_s + self._segment_close_timeout_s}
        self._segment_start_s = None
        self._beam_end_s = None
        self._try_finish_segment(self._read_status_quietly())

    def _read_status_quietly(self) -> XrsStatus | None:
        try:
            status = self._xrs.status()
        except DeviceError:
            return None
        self._status = status
        self._log_device("status", **_status_fields(status))
        return status

    def _try_finish_segment(self, status: XrsStatus | None, *, force: bool = False) -> None:
        """Fold the closing segment's IRM dose once the unit has HV off and is out of its ramps."""
        c = self._closing
        if c is None:
            return
        settled = status is not None and not status.hv_on and status.state not in _BEAM_DEVICE_STATES
        timed_out = force or self._clock.now_s() >= c["deadline_s"]
        if not settled and not timed_out:
            return
        last = status if status is not None else self._status
        irm_gy = last.irm_dose_gy if last is not None else 0.0
        self._segment_irm_before_gy += irm_gy
        self._segments.append(BeamSegment(
            start_mono_s=c["start_mono_s"], stop_mono_s=c["stop_mono_s"], start_utc=c["start_utc"],
            stop_utc=c["stop_utc"], console_beam_on_s=c["console_s"],
            device_beam_on_s=last.beam_on_time_s if last is not None else 0.0, irm_dose_gy=irm_gy,
            irm_counts=last.irm_counts if last is not None else 0, ended_by=c["ended_by"], final_read=settled))
        self._closing = None
        if not settled:
            self._last_message = ("the unit's final IRM dose could not be read after beam off (HV not confirmed off "
                                  f"within {self._segment_close_timeout_s:.0f} s): the last reading is recorded; "
                                  "check the unit's counter")
        self._maybe_emit_report()

    def _cmd_stop(self, cancelled_exclusive: str | None = None) -> CommandResult:
        reason = self._guard(Event.STOP)
        if reason and cancelled_exclusive:
            self._beam_off_quietly(BeamOffReason.OPERATOR_STOP)
            return self._result(True, f"stopped: {cancelled_exclusive} was cancelled and the beam switched off "
                                      "(no QA result)")
        if reason:
            return self._result(False, reason)
        return self._end(Event.STOP, TerminationStatus.OPERATOR, "stopped by the operator",
                         BeamOffReason.OPERATOR_STOP)

    def _cmd_emergency_stop(self, cancelled_exclusive: str | None = None) -> CommandResult:
        # the beam goes off whatever the state: the interlock latches even when there is no treatment
        self._beam_off_quietly(BeamOffReason.OPERATOR_STOP)
        self.interlocks.trip(InterlockId.EMERGENCY_STOP, now_s=self._clock.now_s(), detail="console e-stop")
        if self._guard(Event.EMERGENCY_STOP):
            if cancelled_exclusive:
                return self._result(True, f"emergency stop: {cancelled_exclusive} was cancelled and the beam "
                                          "switched off (no QA result)")
            return self._result(True, "emergency stop: beam off; no treatment was armed or running")
        return self._end(Event.EMERGENCY_STOP, TerminationStatus.OPERATOR, "emergency stop at the console", None)

    def _cmd_acknowledge_fault(self, beam_confirmed_off: bool) -> CommandResult:
        return self._from_transition(self.sm.handle(Event.ACKNOWLEDGE_FAULT, beam_confirmed_off=beam_confirmed_off))

    def _cmd_acknowledge_interruption(self, delivered_dose_gy: float, acknowledgement: str) -> CommandResult:
        if not acknowledgement or not acknowledgement.strip():
            return self._result(False, "write what was checked (unit counters, record) before acknowledging")
        if not (isinstance(delivered_dose_gy, (int, float)) and math.isfinite(delivered_dose_gy)
                and delivered_dose_gy >= 0):
            return self._result(False, f"delivered dose {delivered_dose_gy!r} Gy is not a dose: enter it from the "
                                       "unit's IRM counter")
        reason = self._guard(Event.ACKNOWLEDGE_INTERRUPTION)
        if reason:
            return self._result(False, reason)
        if not self._journal_or_trip(lambda: self._journal.append(
                RECOVERY_ACKNOWLEDGED, self._treatment_id or "", delivered_dose_gy=delivered_dose_gy,
                acknowledgement=acknowledgement.strip())):
            return self._result(False, self.interlocks.status(InterlockId.JOURNAL_WRITE_FAILURE).text)
        self._termination = TerminationStatus.UNKNOWN
        if self._unfinished:
            u = self._unfinished[-1]
            try:
                previous = float(u.opened.get("prescription_dose_gy", 0.0)) - float(u.opened.get("dose_to_deliver_gy", 0.0))
            except (TypeError, ValueError):
                previous = 0.0
            self._delivered_by_plan_id[u.plan_id] = max(self._delivered_by_plan_id.get(u.plan_id, 0.0),
                                                        previous + float(delivered_dose_gy))
        return self._from_transition(self.sm.handle(Event.ACKNOWLEDGE_INTERRUPTION))

    def _cmd_reset(self) -> CommandResult:
        if self._closing is not None or self._pending_report is not None:
            return self._result(False, "the delivery is still being closed (waiting for the unit's final dose "
                                       "reading after HV off): reset in a moment")
        t = self.sm.handle(Event.RESET)
        if t.ok:
            self._treatment_id = None
            self._segment_irm_before_gy = 0.0
            self._identity_verified = False
            self._termination = None
            self._segments, self._pauses, self._interlock_changes = [], [], []
            self._last_active_ids = {}
            self.recovered_reading = None
            self._update_preconditions(self._clock.now_s(), full=True)
        return self._from_transition(t)

    def _cmd_clear_interlock(self, interlock: InterlockId, role: ClearRole, acknowledgement: str) -> CommandResult:
        try:
            interlock = InterlockId(interlock)
        except ValueError:
            return self._result(False, f"unknown interlock {interlock!r}")
        r = self.interlocks.clear(interlock, role=role, acknowledgement=acknowledgement)
        if r.ok and interlock is InterlockId.JOURNAL_WRITE_FAILURE:
            pass  # the next journal write is the test; failing again trips it again
        return self._result(r.ok, r.reason)

    # -- exclusive jobs (the daily output check) ------------------------------------------------------

    def _exclusive_refusal(self) -> str:
        """Why a QA exposure may not start now ('' = it may). Runs on this thread, reads the unit once."""
        state = self.sm.state
        if state not in _EXCLUSIVE_STATES:
            return (f"the treatment is {state.value}: a QA exposure is possible only while no treatment is armed, "
                    "running, paused or awaiting a decision; finish or resolve the treatment first")
        if self._closing is not None or self._pending_report is not None:
            return "the last delivery is still being closed (final dose reading after HV off): try again in a moment"
        blocking = [self.interlocks.status(i) for i in (InterlockId.EMERGENCY_STOP, InterlockId.LINK_LOST,
                                                        InterlockId.DEVICE_FAULT, InterlockId.JOURNAL_WRITE_FAILURE)
                    if self.interlocks.is_active(i)]
        if blocking:
            return "; ".join(s.text for s in blocking) + ": resolve and clear it first"
        try:
            status = self._xrs.status()
        except DeviceError as exc:
            return f"the X-ray unit does not answer ({exc.message}): check the cable and the unit's power"
        self._status = status
        if status.hv_on or status.state in _BEAM_DEVICE_STATES or status.state is XrsState.ARMED:
            return (f"the X-ray unit is {status.state.value}{' with HV on' if status.hv_on else ''}: wait until the "
                    "beam is off and the unit is not armed")
        return ""

    def _cmd_run_exclusive(self, job: _ExclusiveJob) -> CommandResult:
        try:
            refusal = "it was cancelled before it started" if job.cancelled.is_set() else self._exclusive_refusal()
            if refusal:
                return ExclusiveResult(False, f"{job.what} not started: {refusal}", self.sm.state)
            # journal first: no beam that is not recorded (a separate id; never a treatment to recover)
            if not self._journal_or_trip(lambda: self._journal.append("qa_exposure_started", job.job_id,
                                                                      what=job.what)):
                return ExclusiveResult(False, f"{job.what} not started: "
                                       + self.interlocks.status(InterlockId.JOURNAL_WRITE_FAILURE).text, self.sm.state)
            proxy = _ExclusiveXrs(self, job.what, job.cancelled)
            self._exclusive_running = True
            self._last_message = f"{job.what} running: the beam may be on; STOP ends it"
            self._publish()
            value, error = None, None
            try:
                value = job.fn(proxy)
            except Exception as exc:  # noqa: BLE001 - the job's failure is its result; the beam goes off below
                error = exc
            finally:
                proxy.revoke()
                self._exclusive_running = False
                self._reschedule_polls = True
                # whatever the job did: the beam is off when the unit is the supervisor's again
                self._beam_off_quietly(BeamOffReason.OPERATOR_STOP if job.cancelled.is_set()
                                       else BeamOffReason.QA_EXPOSURE_END)
            ended = ("cancelled" if job.cancelled.is_set() else "failed" if error is not None else "completed")
            self._journal_or_trip(lambda: self._journal.append("qa_exposure_ended", job.job_id, outcome=ended,
                                                               detail=str(error) if error is not None else ""))
            reason = (f"{job.what} {ended}: beam off" + (f" ({getattr(error, 'message', None) or error})"
                                                        if error is not None else ""))
            return ExclusiveResult(error is None, reason, self.sm.state, value=value, error=error)
        finally:
            with self._exclusive_lock:
                if self._exclusive is job:
                    self._exclusive = None

    # -- ending a delivery -------------------------------------------------------------------------

    def _beam_off_quietly(self, reason: BeamOffReason) -> None:
        try:
            self._xrs.beam_off(reason)
        except DeviceError as exc:
            log.error("beam off failed: %s", exc)
            self.interlocks.update(InterlockId.LINK_LOST, True, now_s=self._clock.now_s(),
                                   detail=f"beam off not confirmed: {exc.message}")

    def _end(self, event: Event, termination: TerminationStatus, why: str,
             beam_off_reason: BeamOffReason | None, *, cause: str | None = None) -> CommandResult:
        was_beam = self.sm.state is State.BEAM_ON
        if beam_off_reason is not None:
            self._beam_off_quietly(beam_off_reason)
        t = self.sm.handle(event)
        self._termination = termination
        if t.ok and self._treatment_id is not None:
            self._journal_or_trip(lambda: self._journal.append(BEAM_OFF, self._treatment_id, reason=why))
            if t.to_state in (State.COMPLETED, State.TERMINATED, State.FAULT):
                if cause is None:
                    cause = {TerminationStatus.NORMAL: CAUSE_PRESET_TIME, TerminationStatus.OPERATOR: CAUSE_OPERATOR,
                             TerminationStatus.MACHINE: CAUSE_INTERLOCK}.get(termination, CAUSE_UNKNOWN)
                self._pending_report = {"termination": termination, "cause": cause, "detail": why}
        if was_beam and t.ok:
            self._close_segment(why)          # the report follows once the final IRM is read
        self._maybe_emit_report()
        self._last_message = f"{why} — {t.reason}"
        return CommandResult(t.ok, self._last_message if t.ok else t.reason, self.sm.state)

    def _maybe_emit_report(self) -> None:
        """Once a delivery has ended and its last segment's IRM is folded: close the journal entry, the
        device log, and hand the DeliveryReport to the subscribers."""
        pending = self._pending_report
        if pending is None or self._closing is not None or self._treatment_id is None or self.sm.plan is None:
            return
        self._track_interlocks()   # the interlock that ended the beam is raised in this very step
        self._pending_report = None
        plan = self.sm.plan.plan
        self._delivered_by_plan_id[plan.plan_id] = max(self._delivered_by_plan_id.get(plan.plan_id, 0.0),
                                                       plan.previously_delivered_gy + self._segment_irm_before_gy)
        rate = plan.dose_to_deliver_gy / plan.treatment_time_s
        elapsed = self.sm.timer.elapsed_s
        primary = min(elapsed, self.sm.timer.preset_s) * rate
        tid = self._treatment_id
        self._journal_or_trip(lambda: self._journal.treatment_closed(
            tid, status=pending["termination"].value, elapsed_s=elapsed, primary_dose_gy=primary,
            irm_dose_gy=self._segment_irm_before_gy, reason=pending["detail"]))
        self._log_device("delivery_end", termination=pending["termination"].value, cause=pending["cause"])
        log_path, digest = self._close_device_log()
        report = DeliveryReport(
            treatment_id=tid, plan_id=plan.plan_id, plan_version=plan.version, plan_hash=plan.content_hash,
            delivery_type=plan.delivery_type.value, preset_s=self.sm.timer.preset_s,
            termination=pending["termination"], termination_cause=pending["cause"],
            termination_detail=pending["detail"], segments=tuple(self._segments), primary_dose_gy=primary,
            secondary_dose_gy=self._segment_irm_before_gy,
            console_beam_on_s=sum(x.console_beam_on_s for x in self._segments),
            device_beam_on_s=sum(x.device_beam_on_s for x in self._segments), pauses=tuple(self._pauses),
            interlock_changes=tuple(self._interlock_changes), device_log_path=log_path, device_log_sha256=digest)
        if not report.irm_read_after_beam_off:
            last = self._segments[-1]
            rate_max_gy_per_s = rate * (1 + self.config.delivery.dose_rate_tolerance_fraction)
            good_s = self._last_good_status_s if self._last_good_status_s is not None else last.start_mono_s
            # HV can have stayed on after the last good reading at most until the unit's watchdog expired, which
            # counts from the last valid frame it got: no later than the moment the link was declared lost
            unread_s = max(0.0, last.stop_mono_s - good_s) + self.config.link.device_watchdog_s
            self._unreconciled = {
                "treatment_id": tid, "plan_id": plan.plan_id, "digest": digest,
                "previous_gy": plan.previously_delivered_gy, "recorded_gy": self._segment_irm_before_gy,
                "before_gy": self._segment_irm_before_gy - last.irm_dose_gy, "last_gy": last.irm_dose_gy,
                "last_device_s": last.device_beam_on_s, "limit_gy": self._arm_irm_limit_gy,
                "bound_gy": min(last.irm_dose_gy + rate_max_gy_per_s * unread_s,
                                max(self._arm_irm_limit_gy, last.irm_dose_gy))}
        self._publish_report(report)

    def _publish_report(self, report: "DeliveryReport | IrmReconciliation") -> None:
        with self._mail_lock:
            queues = list(self._reports)
        for q in queues:
            q.put(report)

    # -- settling the IRM dose of a delivery whose final reading was lost with the link -----------------

    def _reconcile_from_unit(self) -> str:
        """After a reconnect: read the unit's counter for the delivery that ended with the link lost. The unit
        keeps its IRM dose until the next arm. Returns what happened (for the operator's message)."""
        u = self._unreconciled
        if u is None:
            return ""
        status = self._read_status_quietly()
        if status is None:
            return ("; the unit's IRM counter could not be read yet: it is read at the next reconnect, or a "
                    "physicist enters the value shown at the unit")
        if status.hv_on or status.state in _BEAM_DEVICE_STATES:
            return "; the unit reports HV on: its IRM counter is read once HV is off"
        counter_gy = status.irm_dose_gy
        if status.armed_plan_hash is not None or counter_gy < u["last_gy"] - 1e-6 or status.beam_on_time_s < u["last_device_s"] - 1e-3:
            # the unit lost or restarted its counters (reboot, power cycle, new arm): the most the beam can have
            # given is the honest figure, never the lower last reading (a continuation planned on it over-doses)
            return "; " + self._settle(u, u["bound_gy"], None, (
                f"upper bound: the unit's counter ({counter_gy:.4f} Gy) was reset after the link loss; the last "
                f"reading {u['last_gy']:.4f} Gy plus the most the beam could give until the unit's watchdog "
                "stopped it"))
        return "; " + self._settle(u, counter_gy, counter_gy, "the unit's IRM counter, read after the link was restored")

    def _settle(self, u: dict[str, Any], segment_gy: float, counter_gy: float | None, basis: str) -> str:
        reconciled_gy = u["before_gy"] + segment_gy
        tid = u["treatment_id"]
        if not self._journal_or_trip(lambda: self._journal.append(
                IRM_RECONCILED, tid, irm_dose_gy=reconciled_gy, recorded_irm_dose_gy=u["recorded_gy"], basis=basis)):
            return ("the reconciled IRM dose could not be journalled: "
                    + self.interlocks.status(InterlockId.JOURNAL_WRITE_FAILURE).text)
        self._delivered_by_plan_id[u["plan_id"]] = max(self._delivered_by_plan_id.get(u["plan_id"], 0.0),
                                                       u["previous_gy"] + reconciled_gy)
        self._unreconciled = None
        self._publish_report(IrmReconciliation(
            treatment_id=tid, plan_id=u["plan_id"], device_log_sha256=u["digest"], recorded_gy=u["recorded_gy"],
            reconciled_gy=reconciled_gy, unit_counter_gy=counter_gy, basis=basis, utc=self._utc_now()))
        return (f"the IRM dose of treatment {tid} is settled at {reconciled_gy:.4f} Gy ({basis}; the last reading "
                f"before the link loss was {u['recorded_gy']:.4f} Gy): the record is updated")

    def _cmd_enter_unit_irm(self, unit_irm_gy: float, entered_by: str) -> CommandResult:
        u = self._unreconciled
        if u is None:
            return self._result(False, "no delivery waits for its IRM dose: nothing to enter")
        if not (isinstance(unit_irm_gy, (int, float)) and not isinstance(unit_irm_gy, bool)
                and math.isfinite(unit_irm_gy)):
            return self._result(False, f"{unit_irm_gy!r} is not a dose in Gy: enter the IRM dose the unit shows")
        if unit_irm_gy < u["last_gy"] - 1e-6:
            return self._result(False, (
                f"{unit_irm_gy:.4f} Gy is below the console's last reading of this beam ({u['last_gy']:.4f} Gy): the "
                "unit's counter cannot be lower; enter the IRM dose of the interrupted beam as the unit shows it"))
        if unit_irm_gy > u["limit_gy"] + 1e-6:
            return self._result(False, (
                f"{unit_irm_gy:.4f} Gy is above the IRM limit the unit was armed with ({u['limit_gy']:.4f} Gy), "
                "which stops its beam: check the reading (the last beam's dose, not a total)"))
        who = (entered_by or "").strip() or "a physicist"
        return self._result(True, self._settle(u, float(unit_irm_gy), float(unit_irm_gy),
                                               f"read at the unit and entered by {who}"))

    # -- the delivery's bookkeeping and raw device log ------------------------------------------------

    WALL_CLOCK_JUMP_S = 2.0   # UTC moving this much against the monotonic clock is flagged in the record

    def _open_delivery(self, plan) -> None:
        self._segments, self._pauses, self._interlock_changes = [], [], []
        self._last_active_ids = {}
        self._track_interlocks()
        self._utc_offset_s = self._utc_now().timestamp() - self._clock.now_s()
        self._device_log_hash = hashlib.sha256()
        self._device_log_path = self._device_log_dir / f"device-log-{self._treatment_id}.jsonl"
        try:
            self._device_log_dir.mkdir(parents=True, exist_ok=True)
            self._device_log = open(self._device_log_path, "ab")
        except OSError as exc:           # the digest is still computed; the journal is the safety record
            log.error("device log %s cannot be written: %s", self._device_log_path, exc)
            self._device_log = None
        self._log_device("delivery_start", plan_id=plan.plan_id, plan_version=plan.version,
                         plan_hash=plan.content_hash, preset_s=self.sm.timer.preset_s)

    def _log_device(self, kind: str, **fields: Any) -> None:
        if self._treatment_id is None or self._device_log_path is None:
            return
        line = json.dumps({"mono_s": round(self._clock.now_s(), 6), "kind": kind, **fields}, sort_keys=True,
                          separators=(",", ":"), default=str).encode() + b"\n"
        self._device_log_hash.update(line)
        if self._device_log is not None:
            try:
                self._device_log.write(line)
            except OSError:
                self._device_log = None

    def _close_device_log(self) -> tuple[str | None, str]:
        digest = self._device_log_hash.hexdigest()
        path = str(self._device_log_path) if self._device_log is not None else None
        if self._device_log is not None:
            try:
                self._device_log.close()
            except OSError:
                path = None
        self._device_log = None
        self._device_log_path = None
        return path, digest

    def _check_wall_clock(self, now_s: float) -> None:
        """Timing never uses the wall clock, but the record's UTC stamps do: a jump of the wall clock
        against the monotonic clock during a delivery is flagged in the delivery report (and so in the
        record's events), with its size, so nobody trusts the shifted stamps blindly."""
        offset_s = self._utc_offset_s
        if offset_s is None or self._treatment_id is None:
            return
        utc = self._utc_now()
        jump_s = (utc.timestamp() - now_s) - offset_s
        if abs(jump_s) >= self.WALL_CLOCK_JUMP_S:
            self._interlock_changes.append(InterlockChange(
                now_s, utc, "wall_clock_jump", "raised",
                f"the wall clock moved {jump_s:+.1f} s against the monotonic clock: UTC stamps after this instant "
                "are shifted by that much; beam timing is unaffected (monotonic)"))
            log.warning("wall clock jumped %+.1f s during treatment %s", jump_s, self._treatment_id)
            self._utc_offset_s = offset_s + jump_s

    def _track_interlocks(self) -> None:
        """Record interlocks raised and cleared while a delivery is open (for the delivery record)."""
        if self._treatment_id is None:
            return
        active = {st.id.value: st.detail for st in self.interlocks.active()}
        now_s, utc = self._clock.now_s(), self._utc_now()
        for iid, detail in active.items():
            if iid not in self._last_active_ids:
                self._interlock_changes.append(InterlockChange(now_s, utc, iid, "raised", detail or ""))
        for iid in self._last_active_ids:
            if iid not in active:
                self._interlock_changes.append(InterlockChange(now_s, utc, iid, "cleared", ""))
        self._last_active_ids = active

    def _journal_or_trip(self, write: Callable[[], Any]) -> bool:
        try:
            write()
            return True
        except JournalWriteError as exc:
            self.interlocks.trip(InterlockId.JOURNAL_WRITE_FAILURE, now_s=self._clock.now_s(), detail=exc.message)
            if self.sm.state is State.BEAM_ON:
                # a beam that cannot be recorded is terminated; the closing entry will fail too, so skip it
                self._beam_off_quietly(BeamOffReason.CONSOLE_INTERLOCK)
                self.sm.handle(Event.INTERLOCK)
                self._termination = TerminationStatus.MACHINE
                self._last_message = REGISTRY[InterlockId.JOURNAL_WRITE_FAILURE].message
                if self._treatment_id is not None:
                    self._pending_report = {"termination": TerminationStatus.MACHINE, "cause": CAUSE_INTERLOCK,
                                            "detail": f"journal write failure: {exc.message}"}
                self._close_segment(self._last_message)
            return False

    # -- snapshots -------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        s, plan = self._status, (self.sm.plan.plan if self.sm.plan else None)
        timer = self.sm.timer
        rate_gy_per_s = plan.dose_to_deliver_gy / plan.treatment_time_s if plan else 0.0
        measured = None
        if len(self._rate_window) >= 2 and self._rate_window[-1][0] > self._rate_window[0][0]:
            (t0, d0), (t1, d1) = self._rate_window[0], self._rate_window[-1]
            measured = (d1 - d0) / (t1 - t0) * 60.0
        in_segment = self.sm.state is State.BEAM_ON or self._closing is not None
        secondary = self._segment_irm_before_gy + (s.irm_dose_gy if s is not None and in_segment else 0.0)
        self._seq += 1
        return Snapshot(
            seq=self._seq, host_time_s=self._clock.now_s(), state=self.sm.state,
            plan_id=plan.plan_id if plan else None, plan_version=plan.version if plan else None,
            preset_s=timer.preset_s, elapsed_s=timer.shown(timer.elapsed_s), remaining_s=timer.remaining_shown_s,
            primary_dose_gy=min(timer.elapsed_s, timer.preset_s) * rate_gy_per_s, secondary_dose_gy=secondary,
            prescription_dose_gy=plan.prescription_dose_gy if plan else None,
            dose_to_deliver_gy=plan.dose_to_deliver_gy if plan else None,
            dose_rate_gy_per_min=measured, kv=s.kv if s else None, ua=s.ua if s else None,
            device_state=s.state.value if s else None,
            link_ok=not self.interlocks.is_active(InterlockId.LINK_LOST),
            interlocks=self.interlocks.active(), last_message=self._last_message,
            termination=self._termination, overruns=self.overruns,
            applicator_cm=s.applicator_diameter_cm if s else None,
            device_beam_on_time_s=s.beam_on_time_s if s else None, treatment_id=self._treatment_id,
            closing_segment=self._closing is not None, qa_exposure_running=self._exclusive_running)

    def _publish(self) -> None:
        self._track_interlocks()
        snap = self.snapshot()
        with self._mail_lock:
            boxes = list(self._mailboxes)
        for box in boxes:
            box.put(snap)


def _status_fields(status: XrsStatus) -> dict[str, Any]:
    """One status reply as plain fields for the raw device log."""
    return {"state": status.state.value, "kv": status.kv, "ua": status.ua, "hv_on": status.hv_on,
            "irm_counts": status.irm_counts, "irm_dose_gy": status.irm_dose_gy,
            "applicator_cm": status.applicator_diameter_cm, "interlocks": int(status.interlocks),
            "faults": int(status.faults), "device_time_s": status.device_time_s,
            "beam_on_time_s": status.beam_on_time_s, "cause": status.last_beam_off_cause.value,
            "reason": status.last_beam_off_reason.name if status.last_beam_off_reason is not None else None,
            "host_time_s": status.host_time_s}


def _delivered_by_plan_id(entries) -> dict[str, float]:
    """Dose delivered per plan id according to the journal (closed treatments and acknowledged recoveries)."""
    opened: dict[str, dict[str, Any]] = {}
    delivered: dict[str, float] = {}
    for e in entries:
        data = e.get("data", {}) if isinstance(e.get("data"), dict) else {}
        tid = e.get("treatment_id")
        if e.get("kind") == "treatment_opened":
            opened[tid] = data
            continue
        op = opened.get(tid)
        if op is None:
            continue
        try:
            previous = float(op.get("prescription_dose_gy", 0.0)) - float(op.get("dose_to_deliver_gy", 0.0))
            if e.get("kind") == "treatment_closed":
                total = previous + float(data.get("irm_dose_gy", 0.0))
            elif e.get("kind") == RECOVERY_ACKNOWLEDGED:      # the dose of the interrupted delivery
                total = previous + float(data.get("delivered_dose_gy", 0.0))
            elif e.get("kind") == IRM_RECONCILED:             # settled after a link loss
                total = previous + float(data.get("irm_dose_gy", 0.0))
            else:
                continue
        except (TypeError, ValueError):
            continue
        if math.isfinite(total):
            pid = str(op.get("plan_id", ""))
            delivered[pid] = max(delivered.get(pid, 0.0), total)
    return delivered


def _try_realtime_priority() -> str:
    """Ask the OS for a real-time (SCHED_FIFO) priority for the calling thread; needs CAP_SYS_NICE. Never fails:
    returns what happened."""
    import os

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "SCHED_FIFO 10"
    except (AttributeError, OSError) as exc:
        log.warning("real-time priority not granted (%s): the loop runs at normal priority", exc)
        return f"normal (real-time refused: {exc})"
