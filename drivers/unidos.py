"""Driver for the PTW UNIDOS electrometer (current ASCII dialect) behind drivers.hal.DoseReadout.

Strict ping-pong over any pyserial URL: one request in flight, deadlines from time.monotonic, bounded
retries for queries only, late or stray replies discarded (never matched to the next request), link
loss reported to subscribers. It never clips a value, never repeats a state-changing command, and
never runs on the Qt thread (callers use it from the supervisor's or a worker thread).
"""
from __future__ import annotations

import collections
import math
import numbers
import threading
import time
from typing import Any, Callable

import serial
import structlog

from drivers.errors import DeviceError, DeviceRefused, InvalidRequest, LinkLost
from drivers.hal import (LinkEvent, LinkEventKind, LinkListener, LinkStats, MeasuredValues, ReadoutFlag,
                         ReadoutIdentity, ZeroStatus)
from drivers.transport import UNIDOS_BAUDRATE, open_port
from protocol import unidos as u
from protocol.unidos import Range, Request

DEVICE = "readout"
HV_LIMIT_V = 400
INTEGRATION_TIME_MIN_S = 1
INTEGRATION_TIME_MAX_S = 3_599_999
RANGE_NAMES = tuple(r.value for r in Range)

# Commands that change nothing on the instrument: the only ones ever retried.
QUERY_MNEMONICS = frozenset({"PTW", "SER", "MAC", "S", "NUS", "ASS", "MV", "MVM", "MVR", "TFI", "RDA", "RDR",
                             "RMR", "RIR", "RSR", "REC", "RHR"})
SETTING_MNEMONICS = frozenset({"IT", "RGE", "HV", "UEL", "ASE", "ASR", "ASL"})   # queries without a parameter
SYNC_MNEMONICS = ("SER", "PTW", "MAC", "S", "RGE", "HV", "IT")

_log = structlog.get_logger("orconsole.drivers.unidos")

# What each error reply means for the person at the console, and what to do about it.
ERROR_ACTIONS: dict[str, str] = {
    "E01": "the electrometer did not understand the command: check that it runs firmware with the current "
           "UNIDOS dialect; if it does, report this console fault to service",
    "E02": "the electrometer's current state does not allow it: hold or reset the measurement first (or wait "
           "for it to finish), then retry",
    "E03": "the electrometer is busy (warming up, zero correction, self test, or its setup menu is open): "
           "wait, close the menu on the instrument, then retry",
    "E08": "the value is outside what the electrometer or the chamber accepts: check the value and retry",
    "E12": "it was aborted at the instrument's front panel: repeat it if that was not intended",
    "E16": "the command was too long for the instrument: report this console fault to service",
    "E17": "the command had too many parameters: report this console fault to service",
    "E18": "the command had an empty parameter: report this console fault to service",
    "E19": "the command had the wrong number of parameters: report this console fault to service",
    "E20": "the console does not hold write permission: take it (acquire write permission) and retry; if "
           "another program or the front panel holds it, release it there first",
    "E21": "a required item is missing (e.g. no detector selected): select the chamber in the instrument's "
           "detector list and retry",
    "E24": "the instrument could not store the data (memory error): retry; if it persists, have the "
           "electrometer serviced",
    "E28": "the instrument did not know the parameter: report this console fault to service",
    "E29": "the parameter had the wrong type: report this console fault to service",
    "E33": "the measurement module is defective: stop using this electrometer and call service",
    "E96": "the instrument timed out internally: retry; if it persists, power-cycle the electrometer",
}


class UnidosLinkError(DeviceError):
    """The link delivered no usable reply to one request (base of the specific kinds below)."""


class ReplyTimeout(UnidosLinkError):
    """No reply at all before the deadline."""


class ReplyTruncated(UnidosLinkError):
    """Part of a reply arrived (no CR LF before the deadline), or a reply with fields missing."""


class ReplyGarbled(UnidosLinkError):
    """A reply line that is not valid UNIDOS text (bit errors, noise, wrong baud rate)."""


class ReplyMismatch(UnidosLinkError):
    """A well-formed reply to some other command or parameter than the one sent."""


class RequestDamaged(UnidosLinkError):
    """A syntax-error reply (E01, E16…) to a query the console sent well-formed: line noise."""


# Error replies that, to a well-formed query, can only mean the request was damaged in transit.
LINE_DAMAGE_CODES = frozenset({"E01", "E16", "E17", "E18", "E19", "E28", "E29"})


def refusal_message(req: Request, code: str) -> str:
    """The message a person reads when the instrument answers `code` to `req`."""
    meaning = u.ERROR_MEANINGS.get(code, "an error code the UNIDOS reference does not list")
    action = ERROR_ACTIONS.get(code, "note the code, retry once, and call service if it repeats")
    what = req.spec.meaning or req.mnemonic
    return f"The electrometer refused {req} ({what}) with {code}, {meaning}: {action}."


class UnidosDriver:
    """drivers.hal.DoseReadout for a UNIDOS on `url` (/dev/ttyUSB1, socket://host:8123, sim://unidos).

    Every call blocks until the reply (or its deadline) and holds a lock, so only one request is ever
    in flight. `reply_timeout_s` bounds each attempt; queries get up to `query_attempts` attempts;
    after a failure the link is resynchronised with a query of another mnemonic before anything else
    is sent, so a late reply is read and discarded instead of being taken for the next one. After
    `lost_after_failures` failed attempts in a row (default: query_attempts) the link is declared lost
    (LinkEvent LOST); every call then raises LinkLost without sending until reconnect()."""

    def __init__(self, url: str, *, baudrate: int = UNIDOS_BAUDRATE, reply_timeout_s: float = 1.0,
                 query_attempts: int = 3, lost_after_failures: int | None = None,
                 port_opener: Callable[[str, int], Any] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not (isinstance(reply_timeout_s, (int, float)) and math.isfinite(reply_timeout_s) and reply_timeout_s > 0):
            raise ValueError(f"reply_timeout_s must be a finite number > 0, got {reply_timeout_s!r}")
        if not (isinstance(query_attempts, int) and 1 <= query_attempts <= 10):
            raise ValueError(f"query_attempts must be 1…10, got {query_attempts!r}")
        if lost_after_failures is None:
            lost_after_failures = query_attempts
        if not (isinstance(lost_after_failures, int) and lost_after_failures >= 1):
            raise ValueError(f"lost_after_failures must be ≥ 1, got {lost_after_failures!r}")
        self.url = url
        self.baudrate = baudrate
        self.reply_timeout_s = float(reply_timeout_s)
        self.query_attempts = query_attempts
        self.lost_after_failures = lost_after_failures
        self._open = port_opener or (lambda url_, baud: open_port(url_, baudrate=baud))
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._listeners: list[LinkListener] = []
        self._port = None
        self._splitter = u.LineSplitter(u.MAX_REPLY_LINE_BYTES)
        self._lines: collections.deque = collections.deque()
        self._dirty = False                    # a reply may still be on its way: resync before sending
        self._outstanding: set[str] = set()    # mnemonics sent whose replies never arrived
        self._lost = False
        self._degraded = False
        self._consecutive_failures = 0
        self._identity: ReadoutIdentity | None = None
        # statistics
        self._sent = 0
        self._received = 0
        self._framing_errors = 0
        self._retries = 0
        self._timeouts = 0
        self._discarded = 0
        self._mismatches = 0
        self._refusals = 0
        self._rtt_ms: collections.deque[float] = collections.deque(maxlen=2000)

    # ------------------------------------------------------------------ connection

    def connect(self) -> ReadoutIdentity:
        """Open the port (if needed) and read the identity (PTW, SER)."""
        with self._lock:
            if self._port is None:
                self._open_port()
            self._identity = self._read_identity()
            return self._identity

    def reconnect(self) -> ReadoutIdentity:
        """Close and reopen the link after a loss; reports RESTORED to subscribers on success."""
        with self._lock:
            was_lost = self._lost
            self._close_port()
            self._open_port()
            identity = self._read_identity()
            if self._identity is not None and identity.serial_number != self._identity.serial_number:
                _log.warning("unidos_serial_changed", old=self._identity.serial_number, new=identity.serial_number)
            self._identity = identity
        if was_lost:
            self._notify(LinkEventKind.RESTORED, f"link to the electrometer on {self.url} restored "
                         f"(serial {identity.serial_number}); re-check its state before measuring")
        return identity

    def close(self) -> None:
        with self._lock:
            self._close_port()

    @property
    def is_lost(self) -> bool:
        return self._lost

    def subscribe(self, listener: LinkListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    # ------------------------------------------------------------------ DoseReadout

    def acquire_write_permission(self) -> None:
        if self._transact(u.request("TOK")) is not True:
            raise DeviceRefused("The electrometer did not grant write permission: another program or its front "
                                "panel holds it. Release it there, then retry.", code="TOK", device=DEVICE)

    def release_write_permission(self) -> None:
        self._transact(u.request("TOK", 0))

    def holds_write_permission(self) -> bool:
        return bool(self._transact(u.request("TOK", 1)))

    def status(self) -> str:
        return self._transact(u.request("S")).value

    def start(self) -> None:
        self._transact(u.request("STA"))

    def hold(self) -> None:
        self._transact(u.request("HLD"))

    def reset(self) -> None:
        self._transact(u.request("RES"))

    def set_integration_time(self, seconds: int) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Integral):
            raise InvalidRequest(f"integration time {seconds!r} refused: it must be a whole number of seconds "
                                 f"({INTEGRATION_TIME_MIN_S}…{INTEGRATION_TIME_MAX_S} s)", device=DEVICE)
        if not INTEGRATION_TIME_MIN_S <= seconds <= INTEGRATION_TIME_MAX_S:
            raise InvalidRequest(f"integration time {seconds} s refused: the electrometer accepts "
                                 f"{INTEGRATION_TIME_MIN_S}…{INTEGRATION_TIME_MAX_S} s; enter a time in that "
                                 "range", device=DEVICE)
        self._transact(u.request("IT", int(seconds)))

    def get_integration_time(self) -> int:
        return self._transact(u.request("IT"))

    def start_interval(self) -> None:
        self._transact(u.request("INT"))

    def start_zero_correction(self) -> None:
        self._transact(u.request("NUL"))

    def zero_status(self) -> ZeroStatus:
        nus = self._transact(u.request("NUS"))
        return ZeroStatus(result=nus.result, remaining_s=nus.remaining_ms / 1000.0, total_s=nus.total_ms / 1000.0)

    def start_self_test(self) -> None:
        self._transact(u.request("AST"))

    def self_test_status(self) -> u.SelfTestStatus:
        return self._transact(u.request("ASS"))

    def set_range(self, range_name: str) -> None:
        name = range_name.value if isinstance(range_name, Range) else range_name
        if not isinstance(name, str) or name not in RANGE_NAMES:
            raise InvalidRequest(f"range {range_name!r} refused: the electrometer's ranges are "
                                 f"{', '.join(RANGE_NAMES)}; choose one of them", device=DEVICE)
        self._transact(u.request("RGE", Range(name)))

    def get_range(self) -> str:
        return self._transact(u.request("RGE")).value

    def set_hv(self, volts: int) -> None:
        if isinstance(volts, bool) or not isinstance(volts, numbers.Integral):
            raise InvalidRequest(f"chamber voltage {volts!r} refused: it must be a whole number of volts within "
                                 f"−{HV_LIMIT_V}…{HV_LIMIT_V} V", device=DEVICE)
        if not -HV_LIMIT_V <= volts <= HV_LIMIT_V:
            raise InvalidRequest(f"chamber voltage {volts} V refused: the electrometer accepts −{HV_LIMIT_V}…"
                                 f"{HV_LIMIT_V} V (and the chamber may accept less); enter the chamber's "
                                 "operating voltage, e.g. 300 V", device=DEVICE)
        self._transact(u.request("HV", int(volts)))

    def get_hv(self) -> int:
        return self._transact(u.request("HV"))

    def set_electrical_units(self, electrical: bool) -> None:
        if not isinstance(electrical, bool):
            raise InvalidRequest(f"electrical units must be True or False, got {electrical!r}", device=DEVICE)
        self._transact(u.request("UEL", electrical))

    def measured_values(self) -> MeasuredValues:
        mv, host_time_s = self._transact(u.request("MV"), with_time=True)
        return MeasuredValues(status=mv.status.value, integrated=mv.integrated.value,
                              integrated_unit=mv.integrated.unit, rate=mv.rate.value, rate_unit=mv.rate.unit,
                              timebase=mv.timebase, measuring_time_s=mv.time_ms / 1000.0, hv_v=mv.hv_v,
                              flags=ReadoutFlag(int(mv.flags)), host_time_s=host_time_s)

    def range_maximum(self) -> u.RangeMaximum:
        return self._transact(u.request("MVM"))

    def range_resolution(self) -> u.RangeResolution:
        return self._transact(u.request("MVR"))

    def last_failed_telegram(self) -> tuple[str, ...]:
        return self._transact(u.request("TFI"))

    def system_info(self) -> dict:
        return self._transact(u.request("RIR"))

    def link_stats(self) -> LinkStats:
        with self._lock:
            rtts = sorted(self._rtt_ms)
        p50 = rtts[len(rtts) // 2] if rtts else None
        p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else None
        return LinkStats(frames_sent=self._sent, frames_received=self._received, crc_errors=0,
                         framing_errors=self._framing_errors, retries=self._retries, timeouts=self._timeouts,
                         duplicates=self._discarded, rtt_p50_ms=p50, rtt_p99_ms=p99)

    def link_counters(self) -> dict[str, int]:
        """Counters the HAL's LinkStats has no field for (LinkStats.duplicates = discarded late replies)."""
        return {"discarded_late_replies": self._discarded, "mismatched_replies": self._mismatches,
                "refusals": self._refusals, "framing_errors": self._framing_errors,
                "consecutive_failures": self._consecutive_failures}

    # ------------------------------------------------------------------ transactions

    def _transact(self, req: Request, *, with_time: bool = False):
        idempotent = req.mnemonic in QUERY_MNEMONICS or (req.mnemonic in SETTING_MNEMONICS and not req.params) \
            or (req.mnemonic == "TOK" and req.params == (1,))
        with self._lock:
            if self._port is None:
                raise LinkLost(f"the link to the electrometer on {self.url} is not open: connect first",
                               device=DEVICE)
            if self._lost:
                raise LinkLost(f"the link to the electrometer on {self.url} was lost; no command was sent. "
                               "Check the cable and the instrument's power, then reconnect.", device=DEVICE)
            attempts = self.query_attempts if idempotent else 1
            first: UnidosLinkError | None = None
            last: UnidosLinkError | None = None
            for attempt in range(attempts):
                if attempt:
                    self._retries += 1
                try:
                    if self._dirty:
                        self._resync(avoid=req.mnemonic)
                    value, host_time_s = self._once(req)
                    if isinstance(value, u.ErrorReply) and idempotent and value.code in LINE_DAMAGE_CODES:
                        # the console never sends a malformed query: the request was damaged on the line
                        self._framing_errors += 1
                        raise RequestDamaged(
                            f"the electrometer answered {value.code} ({value.meaning}) to {req}, which the "
                            "console sent well-formed: the request was damaged on the line", device=DEVICE)
                except UnidosLinkError as exc:
                    first = first or exc
                    last = exc
                    self._consecutive_failures += 1
                    self._dirty = True
                    _log.warning("unidos_link_error", request=str(req), attempt=attempt + 1, error=exc.message)
                    if not self._degraded:
                        self._degraded = True
                        self._notify(LinkEventKind.DEGRADED, f"the electrometer link on {self.url} had an error "
                                     f"({exc.message}); retrying queries, state-changing commands are not repeated")
                    continue
                self._consecutive_failures = 0
                self._degraded = False
                self._dirty = False
                if isinstance(value, u.ErrorReply):
                    self._refusals += 1
                    raise DeviceRefused(refusal_message(req, value.code), code=value.code, device=DEVICE)
                return (value, host_time_s) if with_time else value
            assert first is not None and last is not None
            # the first failure says most about the cause (later attempts mostly time out resynchronising)
            if last is not first and last.message != first.message:
                first.message += f" (then, on retry: {last.message})"
            if not idempotent:
                first.message += (f" {req.mnemonic} changes the instrument's state and was not repeated: read "
                                  "the status before continuing.")
            if self._consecutive_failures >= self.lost_after_failures:
                self._declare_lost(first, self._consecutive_failures)
            first.args = (first.message,)
            raise first

    def _declare_lost(self, cause: UnidosLinkError, failures: int) -> None:
        self._lost = True
        cause.message += (f" The link is considered lost after {failures} failed attempts in a row: check the "
                          "cable and the instrument's power, then reconnect.")
        self._notify(LinkEventKind.LOST, f"link to the electrometer on {self.url} lost: {cause.message}")

    def _once(self, req: Request):
        """Send one request and read its reply. Returns (value or ErrorReply, host receive time)."""
        data = u.encode_request(req)
        self._discard_stray()
        self._write(data)
        self._outstanding.add(req.mnemonic)
        sent_s = self._monotonic()
        deadline = sent_s + self.reply_timeout_s
        item = self._next_line(deadline, req)
        received_s = self._monotonic()
        self._outstanding.discard(req.mnemonic)
        if isinstance(item, u.BadLine):
            self._framing_errors += 1
            raise ReplyGarbled(f"the electrometer's reply to {req} was garbled ({item.reason}); "
                               "the line may be noisy or set to the wrong baud rate", device=DEVICE)
        try:
            value = u.decode_reply(req, item)
        except (u.MnemonicMismatch, u.EchoMismatch) as exc:
            self._mismatches += 1
            raise ReplyMismatch(f"the electrometer answered {item[:60]!r} to {req}: {exc.reason}; "
                                "the reply was discarded", device=DEVICE) from None
        except u.WrongFieldCount as exc:
            self._framing_errors += 1
            raise ReplyTruncated(f"the electrometer's reply to {req} was incomplete ({exc.reason}): "
                                 f"{item[:60]!r}", device=DEVICE) from None
        except u.UnidosDecodeError as exc:
            self._framing_errors += 1
            raise ReplyGarbled(f"the electrometer's reply to {req} was malformed ({exc.reason})",
                               device=DEVICE) from None
        self._received += 1
        self._rtt_ms.append((received_s - sent_s) * 1000.0)
        return value, received_s

    def _resync(self, avoid: str) -> None:
        """After a failure: send a query whose mnemonic no unanswered request used, discard every line
        before its reply. Only then is the link known to carry no stale reply."""
        candidates = [m for m in SYNC_MNEMONICS if m not in self._outstanding and m != avoid]
        if not candidates:
            raise ReplyTimeout("the electrometer has left too many requests unanswered to resynchronise",
                               device=DEVICE)
        req = u.request(candidates[0])
        self._discard_stray()
        self._write(u.encode_request(req))
        self._outstanding.add(req.mnemonic)
        deadline = self._monotonic() + self.reply_timeout_s
        while True:
            item = self._next_line(deadline, req, resync=True)
            if isinstance(item, str):
                try:
                    value = u.decode_reply(req, item)
                except u.UnidosDecodeError:
                    value = None
                if value is not None and not isinstance(value, u.ErrorReply):
                    self._outstanding.clear()
                    self._dirty = False
                    self._received += 1
                    return
            else:
                self._framing_errors += 1
            self._discarded += 1
            _log.info("unidos_stale_reply_discarded", line=repr(item)[:80])

    def _next_line(self, deadline: float, req: Request, *, resync: bool = False):
        while not self._lines:
            if self._monotonic() >= deadline:
                pending = self._splitter.pending
                self._splitter.reset()
                if pending:
                    self._framing_errors += 1
                    raise ReplyTruncated(f"the electrometer's reply to {req} stopped after {len(pending)} bytes "
                                         f"({pending[:40]!r}) without CR LF within {self.reply_timeout_s:g} s",
                                         device=DEVICE)
                self._timeouts += 1
                what = " while resynchronising the link" if resync else ""
                raise ReplyTimeout(f"the electrometer did not answer {req}{what} within {self.reply_timeout_s:g} s",
                                   device=DEVICE)
            self._lines.extend(self._splitter.feed(self._read()))
        return self._lines.popleft()

    def _discard_stray(self) -> None:
        """Lines nobody asked for (a late reply after a timeout): read, count, drop."""
        self._lines.extend(self._splitter.feed(self._read()))
        while self._lines:
            item = self._lines.popleft()
            self._discarded += 1
            _log.info("unidos_stray_line_discarded", line=repr(item)[:80])

    # ------------------------------------------------------------------ port

    def _open_port(self) -> None:
        try:
            self._port = self._open(self.url, self.baudrate)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkLost(f"cannot open the electrometer's port {self.url}: {exc}. Check the cable or USB "
                           "adapter and the port name in the settings.", device=DEVICE) from exc
        self._splitter.reset()
        self._lines.clear()
        self._outstanding.clear()
        self._dirty = False
        self._lost = False
        self._degraded = False
        self._consecutive_failures = 0
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError, AttributeError):
            pass

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _read_identity(self) -> ReadoutIdentity:
        ptw = self._transact(u.request("PTW"))
        ser = self._transact(u.request("SER"))
        return ReadoutIdentity(name=ptw.name, type_number=ptw.type_number, firmware=ptw.firmware,
                               hardware_revision=ptw.hardware_revision, serial_number=str(ser))

    def _write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            self._port_failed(f"writing to {self.url} failed: {exc}")
        self._sent += 1

    def _read(self) -> bytes:
        try:
            return self._port.read_available()
        except (serial.SerialException, OSError) as exc:
            self._port_failed(f"reading from {self.url} failed: {exc}")
        return b""  # pragma: no cover

    def _port_failed(self, detail: str) -> None:
        self._lost = True
        message = (f"the electrometer's link is gone ({detail}): check the cable, the USB adapter and the "
                   "instrument's power, then reconnect")
        self._notify(LinkEventKind.LOST, message)
        raise LinkLost(message, device=DEVICE)

    def _notify(self, kind: LinkEventKind, message: str) -> None:
        event = LinkEvent(device=DEVICE, kind=kind, message=message, host_time_s=self._monotonic())
        _log.info("unidos_link_event", kind=kind.value, message=message)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a listener's bug must not break the link
                _log.exception("unidos_link_listener_failed")
