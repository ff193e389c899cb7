"""The simulated X-ray unit's serial side: speaks the XRS link protocol (docs/protocol/xrs-link.md).

A runner ByteDevice: frames in, replies out, unsolicited DEVICE_HEARTBEAT every 0.25 s. Frames with
a bad CRC are dropped silently; a retransmitted request is answered from the reply cache and never
executed twice. It never decides physics (that is XrsModel) and never imports the console's code.
"""
from __future__ import annotations

import threading

from protocol import xrs
from protocol.xrs import ErrorCode, MessageType
from simulators.xrs_model import XrsModel, XrsRefusal


def _ascii(text: str, limit: int = xrs.NAK_DETAIL_MAX_BYTES) -> str:
    text = text.replace("µ", "u")
    text = "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Connection:
    """Per-host-connection state: each runner thread has its own decoder and outbox."""

    def __init__(self) -> None:
        self.decoder = xrs.StreamDecoder()
        self.outbox = bytearray()


class XrsDevice:
    """Implements runner.ByteDevice for XrsModel. Safe when a reconnect briefly leaves two runners."""

    def __init__(self, model: XrsModel, *, heartbeat_period_s: float = 0.25) -> None:
        self.model = model
        self.heartbeat_period_s = heartbeat_period_s
        self._lock = threading.RLock()
        self._connections: dict[int, _Connection] = {}
        self._active: threading.Thread | None = None   # runner whose host last sent a valid frame
        self._last_key: tuple[int, int, bytes] | None = None
        self._last_reply = b""
        self._heartbeat_seq = 0
        self._last_heartbeat_s = model.clock.now_s()
        # counters (for tests and the spy)
        self.requests_executed = 0
        self.duplicates = 0
        self.naks = 0

    # ----------------------------------------------------------------------------- ByteDevice

    def _conn(self) -> _Connection:
        runner = threading.current_thread()  # one runner thread per connection; idents are reused, threads not
        conn = self._connections.get(runner)
        if conn is None:
            for old in [t for t in self._connections if not t.is_alive()]:
                del self._connections[old]   # connections of ended runners
            conn = self._connections[runner] = _Connection()
        return conn

    @property
    def crc_errors(self) -> int:
        with self._lock:
            return sum(c.decoder.crc_errors for c in self._connections.values())

    @property
    def framing_errors(self) -> int:
        with self._lock:
            return sum(c.decoder.framing_errors for c in self._connections.values())

    def receive(self, data: bytes) -> None:
        with self._lock:
            conn = self._conn()
            for frame in conn.decoder.feed(data):
                self._active = threading.current_thread()
                conn.outbox += self._handle(frame)

    def transmit(self) -> bytes:
        with self._lock:
            conn = self._conn()
            out, conn.outbox = bytes(conn.outbox), bytearray()
            return out

    def tick(self) -> None:
        self.model.tick()
        if self.heartbeat_period_s <= 0:
            return
        now = self.model.clock.now_s()
        with self._lock:
            active = self._connections.get(self._active) if self._active is not None else None
            if now - self._last_heartbeat_s < self.heartbeat_period_s or active is None:
                return
            self._last_heartbeat_s = now
            device_time_s, state, hv_on, faults = self.model.heartbeat_snapshot()
            message = xrs.DeviceHeartbeat(device_time_us=round(device_time_s * 1e6), state=state, hv_on=hv_on,
                                          faults=faults)
            active.outbox += xrs.encode_frame(self._heartbeat_seq, message)
            self._heartbeat_seq = (self._heartbeat_seq + 1) & 0xFF

    # ----------------------------------------------------------------------------- requests

    def _handle(self, frame: xrs.Frame) -> bytes:
        self.model.heard_from_console()            # any CRC-valid frame feeds the watchdog
        try:
            message = xrs.parse_message(frame)
        except xrs.VersionError as exc:
            return self._nak(frame, ErrorCode.VERSION, f"{exc.reason}; this unit speaks XRS protocol "
                             f"{xrs.PROTOCOL_VERSION}")
        except xrs.UnknownMessageType as exc:
            return self._nak(frame, ErrorCode.UNKNOWN_TYPE, exc.reason)
        except xrs.PayloadError as exc:
            return self._nak(frame, ErrorCode.BAD_PAYLOAD, exc.reason)
        if message.TYPE not in xrs.REQUEST_TYPES:
            return self._nak(frame, ErrorCode.UNKNOWN_TYPE,
                             f"{message.TYPE.name} is a reply, the unit only accepts requests")
        key = (frame.seq, frame.msg_type, frame.payload)
        if message.TYPE == MessageType.IDENTIFY:
            self._last_key = None                  # a new session: forget the reply cache
        elif key == self._last_key:
            self.duplicates += 1
            return self._last_reply
        try:
            reply = self._execute(message)
        except XrsRefusal as refusal:
            reply = xrs.Nak(int(frame.msg_type), refusal.code, _ascii(refusal.detail))
        if isinstance(reply, xrs.Nak):
            self.naks += 1
        self.requests_executed += 1
        wire = xrs.encode_frame(frame.seq, reply)
        self._last_key, self._last_reply = key, wire
        return wire

    def _nak(self, frame: xrs.Frame, code: ErrorCode, detail: str) -> bytes:
        self.naks += 1
        return xrs.encode_frame(frame.seq, xrs.Nak(frame.msg_type, code, _ascii(detail)))

    def _execute(self, message: xrs.Message) -> xrs.Message:
        model = self.model
        ack = xrs.Ack(message.TYPE)
        if isinstance(message, xrs.Identify):
            if message.protocol_version != xrs.PROTOCOL_VERSION or message.schema_hash != xrs.SCHEMA_HASH:
                raise XrsRefusal(ErrorCode.PROTOCOL_MISMATCH,
                                 f"console speaks XRS protocol {message.protocol_version} schema "
                                 f"{message.schema_hash.hex()}, unit speaks {xrs.PROTOCOL_VERSION} schema "
                                 f"{xrs.SCHEMA_HASH.hex()}")
            serial, model_name, firmware = model.identity()
            return xrs.IdentifyReply(xrs.PROTOCOL_VERSION, xrs.SCHEMA_HASH, serial, model_name, firmware)
        if isinstance(message, xrs.GetStatus):
            return self.status_reply()
        if isinstance(message, xrs.SetTechnique):
            model.set_technique(message.voltage_v / 1000.0, message.current_na / 1000.0)
            return ack
        if isinstance(message, xrs.WarmUp):
            model.warm_up()
            return ack
        if isinstance(message, xrs.Arm):
            model.arm(message.backup_time_ms / 1000.0, message.irm_limit_ugy / 1e6, message.plan_hash)
            return ack
        if isinstance(message, xrs.BeamOn):
            model.beam_on(message.plan_hash)
            return ack
        if isinstance(message, xrs.BeamOff):
            model.beam_off(message.reason)
            return ack
        if isinstance(message, xrs.ResetFault):
            model.reset_fault(message.operator_acknowledgement)
            return ack
        if isinstance(message, xrs.Heartbeat):
            return xrs.HeartbeatReply(message.host_time_ms, round(model.device_time_s() * 1e6))
        if isinstance(message, xrs.ReadIsotropy):
            readings = model.read_isotropy()
            ppm = {k: min(xrs.ISOTROPY_MAX_PPM, round(v * 1e6)) for k, v in readings.items()}
            return xrs.IsotropyReply(ppm["plus_x"], ppm["minus_x"], ppm["plus_y"], ppm["minus_y"], ppm["plus_z"])
        raise XrsRefusal(ErrorCode.UNKNOWN_TYPE, f"{message.TYPE.name} not handled")  # pragma: no cover

    def status_reply(self) -> xrs.StatusReply:
        s = self.model.status()
        applicator_id = 0 if s.applicator_cm is None else xrs.APPLICATOR_DIAMETERS_CM.index(s.applicator_cm) + 1
        return xrs.StatusReply(
            state=s.state,
            voltage_v=min(60_000, round(s.kv * 1000)),
            current_na=min(60_000, round(s.ua * 1000)),
            hv_on=s.hv_on,
            irm_counts=s.irm_counts & 0xFFFFFFFF,
            irm_dose_ugy=min(0xFFFFFFFF, round(s.irm_dose_gy * 1e6)),
            applicator_id=applicator_id,
            interlocks=s.interlocks,
            faults=s.faults,
            device_time_us=round(s.device_time_s * 1e6),
            beam_on_time_ms=round(s.beam_on_time_s * 1000),
            last_beam_off_cause=s.last_beam_off_cause,
            last_beam_off_reason=s.last_beam_off_reason,
            armed=s.armed,
            armed_plan_hash=s.armed_plan_hash if s.armed and s.armed_plan_hash else bytes(xrs.PLAN_HASH_SIZE),
        )
