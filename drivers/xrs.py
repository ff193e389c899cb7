"""Console-side driver of the X-ray unit over the XRS link (docs/protocol/xrs-link.md).

Validates every request strictly (refuses, never clips), sends it, waits for the matching reply with
bounded retransmission on time.monotonic deadlines (on timeout, or at once when a damaged frame shows the
reply was destroyed), and reports link loss to subscribers once a call's time budget is spent. It never
originates traffic on its own — no automatic heartbeats — so the unit's watchdog sees a frozen caller.

Threading: one I/O thread per link reads and decodes every byte and calls the LinkEvent listeners
(keep them non-blocking and never call the driver from them). The public calls block until the
reply and must come from one thread at a time (the treatment supervisor's); a second concurrent
caller gets a DeviceError, not a race. On a lost link every call raises LinkLost without sending,
except beam_off, which still puts one unconfirmed frame on the wire before raising.
The caller's thread writes its request frame itself (under a lock) so beam-off never waits for the
I/O thread's 2 ms read timeout.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import serial
import structlog

from drivers.errors import DeviceError, DeviceRefused, InvalidRequest, LinkLost, ProtocolMismatch
from drivers.hal import (BeamOffCause, BeamOffReason, IsotropyReading, LinkEvent, LinkEventKind, LinkListener,
                         LinkStats, XrsFault, XrsIdentity, XrsInterlock, XrsState, XrsStatus)
from drivers.transport import XRS_BAUDRATE, open_port
from protocol import xrs
from protocol.xrs import ErrorCode, MessageType

_log = structlog.get_logger("orconsole.drivers.xrs")

DEVICE = "xrs"
KV_RANGE = (40.0, 50.0)              # allowed technique (spec §6): nominal 50 kV / 40 µA
UA_RANGE = (5.0, 40.0)
BACKUP_TIME_RANGE_S = (0.1, 3600.0)
IRM_LIMIT_RANGE_GY = (1e-6, 30.0)
DEGRADED_EVENT_INTERVAL_S = 10.0
MIN_ATTEMPTS_BEFORE_LOSS = 3         # a link is lost only after at least this many attempts, each heard out in full
RTT_WINDOW = 1000
MAX_ATTEMPTS_RANGE = (1, 50)
# Early retransmission (docs/protocol/xrs-link.md §5): a damaged frame decoded while a request waits for its
# reply makes the caller resend at once, but at most one early resend per this interval and at most
# EARLY_RETRANSMISSIONS_PER_ATTEMPT x max_attempts per call, so a stream of garbage cannot make the driver spin.
EARLY_RETRANSMIT_MIN_INTERVAL_S = 0.005
EARLY_RETRANSMISSIONS_PER_ATTEMPT = 2
BEAM_OFF_REPLY_TIMEOUT_S = 0.010    # a lost beam-off frame is resent after 10 ms (0.009 Gy at 0.87 Gy/s)
RESYNC = b"\x00"   # an empty frame: sent before a retransmission so the unit drops any half-received frame

_CAUSE = {
    xrs.BeamOffCauseCode.NONE: BeamOffCause.NONE,
    xrs.BeamOffCauseCode.CONSOLE_COMMAND: BeamOffCause.CONSOLE_COMMAND,
    xrs.BeamOffCauseCode.BACKUP_TIMER: BeamOffCause.BACKUP_TIMER,
    xrs.BeamOffCauseCode.IRM_LIMIT: BeamOffCause.IRM_LIMIT,
    xrs.BeamOffCauseCode.WATCHDOG: BeamOffCause.WATCHDOG,
    xrs.BeamOffCauseCode.FAULT: BeamOffCause.FAULT,
    xrs.BeamOffCauseCode.EMERGENCY_STOP: BeamOffCause.EMERGENCY_STOP,
    xrs.BeamOffCauseCode.INTERLOCK: BeamOffCause.INTERLOCK,
}
_WHAT = {
    MessageType.IDENTIFY: "identify", MessageType.GET_STATUS: "status", MessageType.SET_TECHNIQUE: "set technique",
    MessageType.WARM_UP: "warm-up", MessageType.ARM: "arm", MessageType.BEAM_ON: "beam on",
    MessageType.BEAM_OFF: "beam off", MessageType.RESET_FAULT: "reset fault", MessageType.HEARTBEAT: "heartbeat",
    MessageType.READ_ISOTROPY: "read isotropy",
}
_REFUSAL_HINT = {
    ErrorCode.OUT_OF_RANGE: "correct the value",
    ErrorCode.WRONG_STATE: "check the unit's state and retry when it allows the command",
    ErrorCode.PLAN_HASH_MISMATCH: "re-arm with the approved plan",
    ErrorCode.NOT_ARMED: "arm with the remaining time and dose first",
    ErrorCode.INTERLOCK_OPEN: "close the interlock named above",
    ErrorCode.FAULT_LATCHED: "find the cause, then reset the fault with an operator acknowledgement",
    ErrorCode.NOT_WARMED_UP: "run warm-up and wait until the unit is READY",
    ErrorCode.NO_APPLICATOR: "mount the planned applicator",
    ErrorCode.ACK_REQUIRED: "enter an operator acknowledgement",
    ErrorCode.FAULT_PERSISTS: "remove the cause named above first",
}


@dataclass
class _Pending:
    seq: int
    reply: xrs.Message | None = None
    reply_time_s: float = 0.0
    error: DeviceError | None = None
    damaged_frames: int = 0          # damaged frames the I/O thread decoded while this request waited


class XrsDriver:
    """drivers.hal.XraySource over the XRS link protocol v1. See the module docstring for threading."""

    def __init__(self, url: str, *, reply_timeout_s: float = 0.03, max_attempts: int = 10,
                 beam_off_reply_timeout_s: float | None = None, device_silence_s: float | None = 1.0,
                 baudrate: int = XRS_BAUDRATE) -> None:
        """Each call may wait reply_timeout_s x max_attempts (default 0.30 s) for a valid reply, then the link
        is lost. Within that budget a request is resent reply_timeout_s after its last transmission (beam off:
        beam_off_reply_timeout_s, default the smaller of 0.01 s and reply_timeout_s), or early when a damaged
        frame arrives (docs/protocol/xrs-link.md §5)."""
        if beam_off_reply_timeout_s is None and isinstance(reply_timeout_s, (int, float)):
            beam_off_reply_timeout_s = min(BEAM_OFF_REPLY_TIMEOUT_S, reply_timeout_s)
        if not (isinstance(reply_timeout_s, (int, float)) and math.isfinite(reply_timeout_s) and reply_timeout_s > 0):
            raise ValueError(f"reply_timeout_s must be a finite number > 0, got {reply_timeout_s!r}")
        lo, hi = MAX_ATTEMPTS_RANGE
        if not (isinstance(max_attempts, int) and not isinstance(max_attempts, bool) and lo <= max_attempts <= hi):
            raise ValueError(f"max_attempts must be an int within {lo}..{hi}, got {max_attempts!r}")
        if not (isinstance(beam_off_reply_timeout_s, (int, float)) and math.isfinite(beam_off_reply_timeout_s)
                and 0 < beam_off_reply_timeout_s <= reply_timeout_s):
            raise ValueError(f"beam_off_reply_timeout_s must be a finite number > 0 and at most reply_timeout_s "
                             f"({reply_timeout_s!r}), got {beam_off_reply_timeout_s!r}")
        if device_silence_s is not None and not (math.isfinite(device_silence_s) and device_silence_s > 0):
            raise ValueError(f"device_silence_s must be a finite number > 0 or None, got {device_silence_s!r}")
        self.url = url
        self.reply_timeout_s = float(reply_timeout_s)
        self.max_attempts = max_attempts
        self.beam_off_reply_timeout_s = float(beam_off_reply_timeout_s)
        self.device_silence_s = device_silence_s
        self.baudrate = baudrate
        self.identity: XrsIdentity | None = None

        self._port = None
        self._io_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._call_lock = threading.Lock()
        self._listeners: list[LinkListener] = []
        self._events: deque[LinkEvent] = deque()
        self._pending: _Pending | None = None
        self._lost = False
        self._lost_reason = ""
        self._seq = 0
        self._decoder = xrs.StreamDecoder()
        self._last_rx_s = 0.0
        self._device_heartbeats = 0
        self._last_degraded_s = -math.inf
        self._last_reply_time_s = 0.0
        # statistics (cumulative over reconnects)
        self._frames_sent = 0
        self._frames_received = 0
        self._crc_errors_before = 0
        self._framing_errors_before = 0
        self._malformed = 0
        self._retries = 0
        self._early_retransmissions = 0     # part of retries; LinkStats has no field of its own for them
        self._timeouts = 0
        self._stale = 0
        self._rtts_ms: deque[float] = deque(maxlen=RTT_WINDOW)

    # ------------------------------------------------------------------------------ lifecycle

    def connect(self) -> XrsIdentity:
        """Open the link, start the I/O thread, and run the handshake. Raises ProtocolMismatch loudly."""
        if self._port is not None:
            raise DeviceError("the X-ray unit link is already open: use reconnect() to reopen it", device=DEVICE)
        with self._cond:                 # opening the link is the explicit act that ends a lost state
            self._lost = False
            self._lost_reason = ""
        self._open()
        try:
            self.identity = self._handshake()
        except BaseException:
            self._shutdown_link()
            raise
        _log.info("xrs_connected", url=self.url, serial=self.identity.serial_number,
                  firmware=self.identity.firmware)
        return self.identity

    def reconnect(self) -> XrsIdentity:
        """The only way back after a lost link: close, reopen, handshake, and report RESTORED."""
        self._shutdown_link()
        identity = self.connect()
        self._queue_event(LinkEventKind.RESTORED, f"link to X-ray unit {identity.serial_number} restored "
                          "by reconnect(); read its status before any beam command")
        return identity

    def close(self) -> None:
        """Stop the I/O thread and close the port. Idempotent. Sends nothing (beam off is the caller's job)."""
        self._shutdown_link()

    def __enter__(self) -> "XrsDriver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def subscribe(self, listener: LinkListener) -> None:
        """Call `listener(LinkEvent)` from the I/O thread on LOST / DEGRADED / RESTORED. Keep it non-blocking."""
        with self._cond:
            self._listeners.append(listener)

    def unsubscribe(self, listener: LinkListener) -> None:
        with self._cond:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _open(self) -> None:
        try:
            port = open_port(self.url, baudrate=self.baudrate)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkLost(f"cannot open the X-ray unit link {self.url}: {exc}. Check the cable, the port "
                           "name and that no other program holds it, then reconnect.", device=DEVICE) from None
        self._port = port
        self._decoder = xrs.StreamDecoder()
        self._device_heartbeats = 0
        self._last_rx_s = time.monotonic()
        self._stop.clear()
        self._io_thread = threading.Thread(target=self._io_loop, name="xrs-io", daemon=True)
        self._io_thread.start()

    def _shutdown_link(self) -> None:
        self._stop.set()
        thread, self._io_thread = self._io_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(2.0)
        port, self._port = self._port, None
        if port is not None:
            self._crc_errors_before += self._decoder.crc_errors
            self._framing_errors_before += self._decoder.framing_errors
            self._decoder = xrs.StreamDecoder()
            try:
                port.close()
            except Exception:  # closing a dead port must not hide the original problem
                pass
        self._deliver_events()

    # ------------------------------------------------------------------------------ I/O thread

    def _io_loop(self) -> None:
        port = self._port
        try:
            while not self._stop.is_set():
                try:
                    data = port.read_available()
                except Exception as exc:  # the port died under us (unplugged, peer closed)
                    if not self._stop.is_set():
                        self._declare_lost(f"the X-ray unit link {self.url} failed: {exc}")
                    break
                now = time.monotonic()
                if data:
                    damaged_before = self._decoder.bad_frames
                    for frame in self._decoder.feed(data):
                        self._dispatch(frame, now)
                    if self._decoder.bad_frames != damaged_before:
                        self._note_damaged_frame()
                elif (self.device_silence_s is not None and self._device_heartbeats and not self._lost
                      and now - self._last_rx_s > self.device_silence_s):
                    self._declare_lost(f"the X-ray unit has sent nothing for {now - self._last_rx_s:.2f} s "
                                       f"(it sends a heartbeat every 0.25 s)")
                self._deliver_events()
        finally:
            self._deliver_events()

    def _dispatch(self, frame: xrs.Frame, now: float) -> None:
        self._last_rx_s = now
        self._frames_received += 1
        try:
            message = xrs.parse_message(frame)
        except xrs.VersionError as exc:
            self._fail_pending(frame.seq, ProtocolMismatch(
                f"the X-ray unit answered in another protocol version: {exc.reason}. This console speaks XRS "
                f"protocol {xrs.PROTOCOL_VERSION}: update the console or the unit's firmware.", device=DEVICE))
            return
        except xrs.XrsDecodeError as exc:
            self._malformed += 1
            _log.warning("xrs_malformed_frame", reason=exc.reason, seq=frame.seq)
            return
        if isinstance(message, xrs.DeviceHeartbeat):
            self._device_heartbeats += 1
            return
        with self._cond:
            pending = self._pending
            if pending is not None and pending.seq == frame.seq and pending.reply is None:
                pending.reply = message
                pending.reply_time_s = now
                self._cond.notify_all()
            else:
                self._stale += 1

    def _note_damaged_frame(self) -> None:
        """A frame failed COBS/length/CRC: if a request still waits, its reply was most probably destroyed."""
        with self._cond:
            pending = self._pending
            if pending is not None and pending.reply is None and pending.error is None:
                pending.damaged_frames += 1
                self._cond.notify_all()

    def _fail_pending(self, seq: int, error: DeviceError) -> None:
        with self._cond:
            if self._pending is not None and self._pending.seq == seq:
                self._pending.error = error
                self._cond.notify_all()

    def _declare_lost(self, what: str) -> None:
        with self._cond:
            if self._lost:
                return
            self._lost = True
            self._lost_reason = what
            self._cond.notify_all()
        message = (f"{what}. Link to the X-ray unit LOST: treat the beam state as unknown (the unit's "
                   "watchdog switches HV off after 0.5 s without console frames); check the cable and "
                   "power, then reconnect().")
        _log.error("xrs_link_lost", reason=what)
        self._queue_event(LinkEventKind.LOST, message)

    def _queue_event(self, kind: LinkEventKind, message: str) -> None:
        with self._cond:
            self._events.append(LinkEvent(DEVICE, kind, message, time.monotonic()))
        thread = self._io_thread
        if thread is None or not thread.is_alive():
            self._deliver_events()    # no I/O thread to do it (link closed or died)

    def _deliver_events(self) -> None:
        while True:
            with self._cond:
                if not self._events:
                    return
                event = self._events.popleft()
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(event)
                except Exception:  # a listener's bug must not kill the link
                    _log.exception("xrs_listener_failed", listener=repr(listener))

    # ------------------------------------------------------------------------------ transactions

    def _transact(self, request: xrs.Message) -> xrs.Message:
        if threading.current_thread() is self._io_thread:
            raise DeviceError("XrsDriver called from a LinkEvent listener (the I/O thread): it would wait for "
                              "a reply only that thread can read; hand the event to the supervisor's queue "
                              "instead (this is a console bug)", device=DEVICE)
        if not self._call_lock.acquire(blocking=False):
            raise DeviceError("XrsDriver called from two threads at once: only the supervisor's thread may "
                              "call it (this is a console bug)", device=DEVICE)
        try:
            return self._transact_locked(request)
        finally:
            self._call_lock.release()

    def _transact_locked(self, request: xrs.Message) -> xrs.Message:
        what = _WHAT[request.TYPE]
        port = self._port                # a concurrent close() must not swap it under us
        if port is None:
            raise DeviceError(f"{what}: the X-ray unit link is not open; call connect() first", device=DEVICE)
        with self._cond:
            if self._lost:
                lost_reason = self._lost_reason
            else:
                lost_reason = None
        if lost_reason is not None:
            if isinstance(request, xrs.BeamOff):
                self._best_effort_beam_off(request)
                raise LinkLost(f"beam off sent once without confirmation: the link to the X-ray unit is lost "
                               f"({lost_reason}); the unit's watchdog switches HV off after 0.5 s of console "
                               "silence — verify HV is off at the unit and call reconnect()", device=DEVICE)
            raise LinkLost(f"{what} not sent: the link to the X-ray unit is lost ({lost_reason}); "
                           "treat the beam state as unknown and call reconnect()", device=DEVICE)
        with self._cond:
            self._seq = (self._seq + 1) & 0xFF
            pending = self._pending = _Pending(self._seq)
        wire = xrs.encode_frame(pending.seq, request)
        # Time budget of the whole call, from its first transmission: reply_timeout_s x max_attempts. Within it
        # the identical frame is resent when the attempt's timer runs out (beam off: a shorter timer, it is the
        # frame that matters most) or early when a damaged frame arrived; the unit answers a resent request from
        # its reply cache without executing it again (§5), and a late reply to any earlier attempt still counts.
        attempt_timeout_s = (self.beam_off_reply_timeout_s if isinstance(request, xrs.BeamOff)
                             else self.reply_timeout_s)
        budget_s = self.reply_timeout_s * self.max_attempts
        max_early = EARLY_RETRANSMISSIONS_PER_ATTEMPT * self.max_attempts
        min_attempts = min(MIN_ATTEMPTS_BEFORE_LOSS, self.max_attempts)
        sent = early = 0
        first_sent_s = 0.0
        last_early_s = -math.inf
        next_is_early = False
        try:
            while True:
                with self._cond:
                    damaged_before = pending.damaged_frames
                sent_s = time.monotonic()
                if not sent:
                    first_sent_s = sent_s
                if next_is_early:          # the spacing of early resends is measured between their sends
                    last_early_s, next_is_early = sent_s, False
                try:
                    # a resent frame starts with an empty frame (0x00): the unit then drops whatever half frame
                    # the damaged attempt left in its decoder instead of gluing it to this one
                    port.write(RESYNC + wire if sent else wire)
                except Exception as exc:
                    self._declare_lost(f"writing {what} to {self.url} failed: {exc}")
                    raise LinkLost(f"{what} not delivered: {exc}; the link to the X-ray unit is lost, "
                                   "treat the beam state as unknown and call reconnect()", device=DEVICE) from None
                self._frames_sent += 1
                if sent:
                    self._retries += 1
                sent += 1
                # the first MIN_ATTEMPTS_BEFORE_LOSS attempts each get their full window even past the budget: a
                # host stall (GC, load) longer than the budget must not declare a good link lost unheard
                attempt_deadline_s = (sent_s + attempt_timeout_s if sent <= min_attempts
                                      else min(sent_s + attempt_timeout_s, first_sent_s + budget_s))
                resend_early = False
                with self._cond:
                    while pending.reply is None and pending.error is None and not self._lost:
                        now_s = time.monotonic()
                        if now_s >= attempt_deadline_s:
                            break
                        wake_s = attempt_deadline_s
                        if pending.damaged_frames != damaged_before and early < max_early:
                            early_s = last_early_s + EARLY_RETRANSMIT_MIN_INTERVAL_S
                            if now_s >= early_s:
                                resend_early = True
                                break
                            wake_s = min(wake_s, early_s)
                        self._cond.wait(wake_s - now_s)
                    reply, error, lost = pending.reply, pending.error, self._lost
                if error is not None:
                    raise error
                if reply is not None:
                    self._rtts_ms.append(max(0.0, pending.reply_time_s - sent_s) * 1000.0)
                    self._last_reply_time_s = pending.reply_time_s
                    if sent > 1:
                        self._maybe_degraded(f"{what} needed {sent - 1} retransmission(s), {early} of them "
                                             "early after a damaged frame")
                    return self._check_reply(request, reply)
                if lost:
                    raise LinkLost(f"{what}: the link to the X-ray unit was lost while waiting for the reply "
                                   f"({self._lost_reason}); treat the beam state as unknown and call reconnect()",
                                   device=DEVICE)
                if resend_early:
                    early += 1
                    self._early_retransmissions += 1
                    _log.debug("xrs_early_retransmission", what=what, seq=pending.seq, attempt=sent + 1,
                               after_ms=round((time.monotonic() - sent_s) * 1000.0, 3))
                    next_is_early = True
                    continue
                self._timeouts += 1
                if time.monotonic() >= first_sent_s + budget_s and sent >= min_attempts:
                    break
            elapsed_s = time.monotonic() - first_sent_s
            last = self._decoder.last_error
            detail = f" last bad frame: {last.reason}." if last is not None else ""
            self._declare_lost(f"no valid answer to {what} within {elapsed_s:.2f} s ({sent} attempts, {early} of "
                               f"them resent early after a damaged frame).{detail}")
            raise LinkLost(f"no valid answer from the X-ray unit to {what} within {elapsed_s:.2f} s ({sent} "
                           "attempts): the link is lost, treat the beam state as unknown, check the cable and "
                           "call reconnect()", device=DEVICE)
        finally:
            with self._cond:
                if self._pending is pending:
                    self._pending = None

    def _best_effort_beam_off(self, request: xrs.Message) -> None:
        """On a lost link, still put one beam-off frame on the wire: it can only make things safer."""
        with self._cond:
            self._seq = (self._seq + 1) & 0xFF
            seq = self._seq
        port = self._port
        try:
            if port is None:
                raise DeviceError("link closed")
            port.write(RESYNC + xrs.encode_frame(seq, request))   # the unit may hold a half frame: drop it
            self._frames_sent += 1
        except Exception as exc:
            _log.warning("xrs_best_effort_beam_off_failed", error=str(exc))

    def _maybe_degraded(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_degraded_s >= DEGRADED_EVENT_INTERVAL_S:
            self._last_degraded_s = now
            stats = self.link_stats()
            self._queue_event(LinkEventKind.DEGRADED,
                              f"X-ray unit link degraded: {what} (total {stats.retries} retries, "
                              f"{stats.crc_errors} CRC errors); check the cable and connectors")

    def _check_reply(self, request: xrs.Message, reply: xrs.Message) -> xrs.Message:
        what = _WHAT[request.TYPE]
        if isinstance(reply, xrs.Nak):
            if reply.request_type != request.TYPE:
                raise DeviceError(f"{what}: the unit refused a different request type "
                                  f"(0x{reply.request_type:02x}): protocol error, reconnect", device=DEVICE)
            if reply.error_code in (ErrorCode.PROTOCOL_MISMATCH, ErrorCode.VERSION):
                raise ProtocolMismatch(f"the X-ray unit does not speak this console's protocol: {reply.detail}. "
                                       "Update the console or the unit's firmware.", device=DEVICE)
            hint = _REFUSAL_HINT.get(reply.error_code, "")
            raise DeviceRefused(f"the X-ray unit refused {what}: {reply.detail}" + (f" — {hint}" if hint else ""),
                                code=reply.error_code.name, device=DEVICE)
        expected = xrs.expected_reply(request.TYPE)
        if reply.TYPE != expected or (isinstance(reply, xrs.Ack) and reply.request_type != request.TYPE):
            raise DeviceError(f"{what}: the unit answered {reply.TYPE.name} where {expected.name} was expected: "
                              "protocol error, reconnect", device=DEVICE)
        return reply

    # ------------------------------------------------------------------------------ handshake

    def _handshake(self) -> XrsIdentity:
        try:
            reply = self._transact(xrs.Identify(xrs.PROTOCOL_VERSION, xrs.SCHEMA_HASH))
        except DeviceRefused as exc:  # pragma: no cover - mismatches arrive as ProtocolMismatch
            raise ProtocolMismatch(exc.message, device=DEVICE) from None
        assert isinstance(reply, xrs.IdentifyReply)
        if reply.protocol_version != xrs.PROTOCOL_VERSION or reply.schema_hash != xrs.SCHEMA_HASH:
            raise ProtocolMismatch(
                f"the X-ray unit {reply.serial_number} speaks XRS protocol {reply.protocol_version} schema "
                f"{reply.schema_hash.hex()}; this console speaks {xrs.PROTOCOL_VERSION} schema "
                f"{xrs.SCHEMA_HASH.hex()}: update the console or the unit's firmware", device=DEVICE)
        return XrsIdentity(serial_number=reply.serial_number, model=reply.model, firmware=reply.firmware,
                           protocol_version=reply.protocol_version, schema_hash=reply.schema_hash.hex())

    # ------------------------------------------------------------------------------ commands

    def status(self) -> XrsStatus:
        reply = self._transact(xrs.GetStatus())
        assert isinstance(reply, xrs.StatusReply)
        return XrsStatus(
            state=XrsState[reply.state.name],
            kv=reply.voltage_v / 1000.0,
            ua=reply.current_na / 1000.0,
            hv_on=reply.hv_on,
            irm_counts=reply.irm_counts,
            irm_dose_gy=reply.irm_dose_ugy / 1e6,
            applicator_diameter_cm=(None if reply.applicator_id == 0
                                    else xrs.APPLICATOR_DIAMETERS_CM[reply.applicator_id - 1]),
            interlocks=XrsInterlock(int(reply.interlocks)),
            faults=XrsFault(int(reply.faults)),
            device_time_s=reply.device_time_us / 1e6,
            beam_on_time_s=reply.beam_on_time_ms / 1000.0,
            last_beam_off_cause=_CAUSE[reply.last_beam_off_cause],
            last_beam_off_reason=(None if reply.last_beam_off_reason == xrs.BeamOffReasonCode.NONE
                                  else BeamOffReason(int(reply.last_beam_off_reason))),
            armed_plan_hash=reply.armed_plan_hash if reply.armed else None,
            host_time_s=self._last_reply_time_s,      # when the reply arrived (I/O thread, monotonic)
        )

    def heartbeat(self) -> float:
        """One HEARTBEAT exchange; returns the unit's monotonic time in s."""
        reply = self._transact(xrs.Heartbeat(int(time.monotonic() * 1000) & 0xFFFFFFFF))
        assert isinstance(reply, xrs.HeartbeatReply)
        return reply.device_time_us / 1e6

    def set_technique(self, kv: float, ua: float) -> None:
        _check_number("tube voltage", kv, KV_RANGE, "kV")
        _check_number("tube current", ua, UA_RANGE, "µA")
        self._transact(xrs.SetTechnique(voltage_v=round(kv * 1000), current_na=round(ua * 1000)))

    def warm_up(self) -> None:
        self._transact(xrs.WarmUp())

    def arm(self, *, backup_time_s: float, irm_limit_gy: float, plan_hash: bytes) -> None:
        _check_number("backup time", backup_time_s, BACKUP_TIME_RANGE_S, "s")
        _check_number("IRM dose limit", irm_limit_gy, IRM_LIMIT_RANGE_GY, "Gy")
        _check_plan_hash(plan_hash)
        self._transact(xrs.Arm(backup_time_ms=round(backup_time_s * 1000), irm_limit_ugy=round(irm_limit_gy * 1e6),
                               plan_hash=bytes(plan_hash)))

    def beam_on(self, *, plan_hash: bytes) -> None:
        _check_plan_hash(plan_hash)
        self._transact(xrs.BeamOn(plan_hash=bytes(plan_hash)))

    def beam_off(self, reason: BeamOffReason) -> None:
        if not isinstance(reason, BeamOffReason):
            raise InvalidRequest(f"beam off needs a BeamOffReason, got {reason!r}: pass e.g. "
                                 "BeamOffReason.OPERATOR_STOP", device=DEVICE)
        self._transact(xrs.BeamOff(reason=xrs.BeamOffReasonCode(int(reason))))

    def reset_fault(self, *, operator_acknowledgement: str) -> None:
        if not isinstance(operator_acknowledgement, str) or not operator_acknowledgement.strip():
            raise InvalidRequest("resetting a fault needs an operator acknowledgement: type what was checked",
                                 device=DEVICE)
        text = operator_acknowledgement.strip()
        if len(text.encode("utf-8")) > xrs.ACKNOWLEDGEMENT_MAX_BYTES:
            raise InvalidRequest(f"the acknowledgement is {len(text.encode('utf-8'))} bytes, at most "
                                 f"{xrs.ACKNOWLEDGEMENT_MAX_BYTES}: shorten it", device=DEVICE)
        if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
            raise InvalidRequest("the acknowledgement contains control characters: use plain text", device=DEVICE)
        self._transact(xrs.ResetFault(operator_acknowledgement=text))

    def read_isotropy(self) -> IsotropyReading:
        reply = self._transact(xrs.ReadIsotropy())
        assert isinstance(reply, xrs.IsotropyReply)
        return IsotropyReading(plus_x=reply.plus_x_ppm / 1e6, minus_x=reply.minus_x_ppm / 1e6,
                               plus_y=reply.plus_y_ppm / 1e6, minus_y=reply.minus_y_ppm / 1e6,
                               plus_z=reply.plus_z_ppm / 1e6)

    # ------------------------------------------------------------------------------ statistics

    def link_stats(self) -> LinkStats:
        rtts = sorted(self._rtts_ms)
        return LinkStats(
            frames_sent=self._frames_sent,
            frames_received=self._frames_received,
            crc_errors=self._crc_errors_before + self._decoder.crc_errors,
            framing_errors=self._framing_errors_before + self._decoder.framing_errors + self._malformed,
            retries=self._retries,
            timeouts=self._timeouts,
            duplicates=self._stale,
            rtt_p50_ms=_percentile(rtts, 0.50),
            rtt_p99_ms=_percentile(rtts, 0.99),
        )

    @property
    def early_retransmissions(self) -> int:
        """Retransmissions sent at once after a damaged frame (already counted in link_stats().retries)."""
        return self._early_retransmissions

    @property
    def link_lost(self) -> bool:
        return self._lost


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return round(sorted_values[index], 3)


def _check_number(name: str, value, allowed: tuple[float, float], unit: str) -> None:
    lo, hi = allowed
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{name} must be a number in {unit}, got {value!r}", device=DEVICE)
    if not math.isfinite(value):
        raise InvalidRequest(f"{name} is {value!r}, not a finite number: refused (nothing was sent)", device=DEVICE)
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} {value:g} {unit} is outside the allowed {lo:g}–{hi:g} {unit}: refused, "
                             f"not clipped (nothing was sent); correct the value", device=DEVICE)


def _check_plan_hash(plan_hash) -> None:
    if not isinstance(plan_hash, (bytes, bytearray)) or len(plan_hash) != xrs.PLAN_HASH_SIZE:
        raise InvalidRequest(f"plan hash must be {xrs.PLAN_HASH_SIZE} bytes (SHA-256 of the approved plan), "
                             f"got {plan_hash!r:.60}", device=DEVICE)
    if not any(plan_hash):
        raise InvalidRequest("plan hash is all zero: it must be the SHA-256 of the approved plan", device=DEVICE)

