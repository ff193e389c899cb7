"""XRS link protocol v1 (docs/protocol/xrs-link.md): messages, frame codec and a resynchronising stream decoder.

Pure byte <-> message translation shared by the console driver and the simulated device. Strict:
every malformed input raises a specific XrsDecodeError subclass with a readable reason; nothing is
guessed, clipped or silently repaired. Semantic ranges (kV limits, states) are the endpoints' job.
"""
from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, fields as dc_fields
from typing import ClassVar

from protocol.cobs import CobsError, cobs_decode, cobs_encode
from protocol.crc import CRC32_SIZE, crc32

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBBB")           # version, seq, type, payload length
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 255
MIN_FRAME = HEADER_SIZE + CRC32_SIZE      # unencoded
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC32_SIZE
MAX_ENCODED = 270                         # longer runs without 0x00 are discarded (overrun)
DELIMITER = b"\x00"
PLAN_HASH_SIZE = 32
SCHEMA_HASH_SIZE = 8

# Ranges of the request fields (spec §6). The codec does not enforce them (a value outside is a
# well-formed request that the device refuses with OUT_OF_RANGE); the driver and device check them.
VOLTAGE_RANGE_V = (40_000, 50_000)
CURRENT_RANGE_NA = (5_000, 40_000)
BACKUP_TIME_RANGE_MS = (100, 3_600_000)
IRM_LIMIT_RANGE_UGY = (1, 30_000_000)
ACKNOWLEDGEMENT_MAX_BYTES = 64
NAK_DETAIL_MAX_BYTES = 200
APPLICATOR_DIAMETERS_CM: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)  # id = index + 1


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

class XrsDecodeError(ValueError):
    """Bytes that are not a valid XRS frame or message. `reason` says what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FramingError(XrsDecodeError):
    """The COBS layer is broken (bad code byte, empty frame)."""


class OverrunError(FramingError):
    """More bytes than any valid frame without a 0x00 delimiter."""


class LengthError(XrsDecodeError):
    """Frame too short/long, or the header's length field disagrees with the bytes present."""


class CrcError(XrsDecodeError):
    """The CRC-32 over header and payload does not match: the frame was corrupted."""


class VersionError(XrsDecodeError):
    """The frame's protocol version is not the one this side speaks."""


class UnknownMessageType(XrsDecodeError):
    """The message type byte is not in the message table."""


class PayloadError(XrsDecodeError):
    """The payload does not match the message's field layout (length, enum, bool, flags, text)."""


class EncodeError(ValueError):
    """A message field cannot be represented on the wire (wrong type, width or text)."""


# ------------------------------------------------------------------------------------------------
# Enumerations on the wire
# ------------------------------------------------------------------------------------------------

class MessageType(enum.IntEnum):
    IDENTIFY = 0x01
    GET_STATUS = 0x02
    SET_TECHNIQUE = 0x03
    WARM_UP = 0x04
    ARM = 0x05
    BEAM_ON = 0x06
    BEAM_OFF = 0x07
    RESET_FAULT = 0x08
    HEARTBEAT = 0x09
    READ_ISOTROPY = 0x0A
    ACK = 0x80
    IDENTIFY_REPLY = 0x81
    STATUS_REPLY = 0x82
    HEARTBEAT_REPLY = 0x89
    ISOTROPY_REPLY = 0x8A
    DEVICE_HEARTBEAT = 0xC0
    NAK = 0xFF


class DeviceState(enum.IntEnum):
    STANDBY = 0
    WARMING_UP = 1
    READY = 2
    ARMED = 3
    RAMP_UP = 4
    BEAM_ON = 5
    RAMP_DOWN = 6
    FAULT = 7


class BeamOffCauseCode(enum.IntEnum):
    NONE = 0
    CONSOLE_COMMAND = 1
    BACKUP_TIMER = 2
    IRM_LIMIT = 3
    WATCHDOG = 4
    FAULT = 5
    EMERGENCY_STOP = 6
    INTERLOCK = 7


class BeamOffReasonCode(enum.IntEnum):
    NONE = 0  # only in STATUS_REPLY.last_beam_off_reason; BEAM_OFF requires 1..8
    PRESET_TIME_REACHED = 1
    DOSE_MONITOR_REACHED = 2
    OPERATOR_PAUSE = 3
    OPERATOR_STOP = 4
    CONSOLE_INTERLOCK = 5
    QA_EXPOSURE_END = 6
    CONSOLE_SHUTDOWN = 7
    CONSOLE_FAULT = 8


class ErrorCode(enum.IntEnum):
    UNKNOWN_TYPE = 1
    BAD_PAYLOAD = 2
    OUT_OF_RANGE = 3
    WRONG_STATE = 4
    PLAN_HASH_MISMATCH = 5
    NOT_ARMED = 6
    INTERLOCK_OPEN = 7
    FAULT_LATCHED = 8
    NOT_WARMED_UP = 9
    PROTOCOL_MISMATCH = 10
    NO_APPLICATOR = 11
    ACK_REQUIRED = 12
    FAULT_PERSISTS = 13
    VERSION = 14


class InterlockBit(enum.IntFlag):
    EXTERNAL_INTERLOCK_OPEN = 1 << 0
    EMERGENCY_STOP = 1 << 1
    NO_APPLICATOR = 1 << 2
    KEY_SWITCH_OFF = 1 << 3


class FaultBit(enum.IntFlag):
    HV_ARC = 1 << 0
    HV_FAILURE = 1 << 1
    WATCHDOG_EXPIRED = 1 << 2
    EMERGENCY_STOP = 1 << 3
    INTERLOCK_OPENED = 1 << 4
    APPLICATOR_REMOVED = 1 << 5
    IRM_FAILURE = 1 << 6
    LINK_ERRORS = 1 << 7
    OVER_TEMPERATURE = 1 << 8


INTERLOCK_MASK = 0x000F
FAULT_MASK = 0x01FF


# ------------------------------------------------------------------------------------------------
# Field kinds
# ------------------------------------------------------------------------------------------------

class _Field:
    kind = ""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, value) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, buf: bytes, offset: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}:{self.kind}"

    def _need(self, buf: bytes, offset: int, size: int) -> None:
        if offset + size > len(buf):
            raise PayloadError(f"field {self.name!r} needs {size} byte(s) at offset {offset}, "
                               f"payload has {len(buf)}")


class _UInt(_Field):
    _FORMATS = {1: ("<B", "u8"), 2: ("<H", "u16"), 4: ("<I", "u32"), 8: ("<Q", "u64")}

    def __init__(self, name: str, size: int, hi: int | None = None) -> None:
        super().__init__(name)
        fmt, self.kind = self._FORMATS[size]
        self.struct = struct.Struct(fmt)
        self.size = size
        self.hi = (1 << (8 * size)) - 1 if hi is None else hi
        if hi is not None:
            self.kind += f"<={hi}"

    def encode(self, value) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodeError(f"field {self.name!r} must be an int, got {value!r}")
        if not 0 <= value <= self.hi:
            raise EncodeError(f"field {self.name!r} = {value} outside 0..{self.hi}")
        return self.struct.pack(value)

    def decode(self, buf: bytes, offset: int):
        self._need(buf, offset, self.size)
        (value,) = self.struct.unpack_from(buf, offset)
        if value > self.hi:
            raise PayloadError(f"field {self.name!r} = {value} above its maximum {self.hi}")
        return value, offset + self.size


class _Enum(_Field):
    def __init__(self, name: str, enum_cls: type[enum.IntEnum], exclude: tuple = ()) -> None:
        super().__init__(name)
        self.enum_cls = enum_cls
        self.allowed = tuple(m for m in enum_cls if m not in exclude)
        self.kind = f"u8 enum {enum_cls.__name__}(" + ",".join(f"{m.name}={m.value}" for m in self.allowed) + ")"

    def encode(self, value) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int) or value not in self.allowed:
            raise EncodeError(f"field {self.name!r}: {value!r} is not an allowed {self.enum_cls.__name__}")
        return bytes([int(value)])

    def decode(self, buf: bytes, offset: int):
        self._need(buf, offset, 1)
        raw = buf[offset]
        if raw not in self.allowed:
            raise PayloadError(f"field {self.name!r}: {raw} is not an allowed {self.enum_cls.__name__}")
        return self.enum_cls(raw), offset + 1


class _Flags(_Field):
    def __init__(self, name: str, enum_cls: type[enum.IntFlag], mask: int) -> None:
        super().__init__(name)
        self.enum_cls = enum_cls
        self.mask = mask
        self.kind = f"u16 flags {enum_cls.__name__}(mask=0x{mask:04x})"

    def encode(self, value) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= int(value) <= 0xFFFF:
            raise EncodeError(f"field {self.name!r} must be a 16-bit flag set, got {value!r}")
        if int(value) & ~self.mask:
            raise EncodeError(f"field {self.name!r} has undefined bits 0x{int(value) & ~self.mask:04x}")
        return struct.pack("<H", int(value))

    def decode(self, buf: bytes, offset: int):
        self._need(buf, offset, 2)
        (raw,) = struct.unpack_from("<H", buf, offset)
        if raw & ~self.mask:
            raise PayloadError(f"field {self.name!r} has undefined bits set: 0x{raw & ~self.mask:04x}")
        return self.enum_cls(raw), offset + 2


class _Bool(_Field):
    kind = "bool"

    def encode(self, value) -> bytes:
        if not isinstance(value, bool):
            raise EncodeError(f"field {self.name!r} must be a bool, got {value!r}")
        return b"\x01" if value else b"\x00"

    def decode(self, buf: bytes, offset: int):
        self._need(buf, offset, 1)
        raw = buf[offset]
        if raw not in (0, 1):
            raise PayloadError(f"field {self.name!r}: a bool must be 0 or 1, got {raw}")
        return raw == 1, offset + 1


class _Bytes(_Field):
    def __init__(self, name: str, size: int) -> None:
        super().__init__(name)
        self.size = size
        self.kind = f"bytes[{size}]"

    def encode(self, value) -> bytes:
        if not isinstance(value, (bytes, bytearray)) or len(value) != self.size:
            raise EncodeError(f"field {self.name!r} must be exactly {self.size} bytes, got {value!r}")
        return bytes(value)

    def decode(self, buf: bytes, offset: int):
        self._need(buf, offset, self.size)
        return bytes(buf[offset:offset + self.size]), offset + self.size


class _Text(_Field):
    """u8 length + text. ASCII printable, or UTF-8 without control characters."""

    def __init__(self, name: str, min_len: int, max_len: int, *, utf8: bool = False) -> None:
        super().__init__(name)
        self.min_len, self.max_len, self.utf8 = min_len, max_len, utf8
        self.kind = f"{'utf8' if utf8 else 'ascii'}[{min_len}..{max_len}]"

    def _check_text(self, text: str, error: type[Exception]) -> None:
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0x80 <= ord(ch) < 0xA0 for ch in text):
            raise error(f"field {self.name!r} contains control characters: {text!r}")

    def encode(self, value) -> bytes:
        if not isinstance(value, str):
            raise EncodeError(f"field {self.name!r} must be text, got {value!r}")
        try:
            raw = value.encode("utf-8" if self.utf8 else "ascii")
        except UnicodeEncodeError:
            raise EncodeError(f"field {self.name!r} must be {'UTF-8' if self.utf8 else 'ASCII'} text: {value!r}") from None
        if not self.min_len <= len(raw) <= self.max_len:
            raise EncodeError(f"field {self.name!r} must be {self.min_len}..{self.max_len} bytes, got {len(raw)}")
        self._check_text(value, EncodeError)
        return bytes([len(raw)]) + raw

    def decode(self, buf: bytes, offset: int):
        self._need(buf, offset, 1)
        length = buf[offset]
        if not self.min_len <= length <= self.max_len:
            raise PayloadError(f"field {self.name!r}: length {length} outside {self.min_len}..{self.max_len}")
        self._need(buf, offset + 1, length)
        raw = bytes(buf[offset + 1:offset + 1 + length])
        try:
            text = raw.decode("utf-8" if self.utf8 else "ascii")
        except UnicodeDecodeError:
            raise PayloadError(f"field {self.name!r} is not valid {'UTF-8' if self.utf8 else 'ASCII'}: {raw!r}") from None
        self._check_text(text, PayloadError)
        return text, offset + 1 + length


# ------------------------------------------------------------------------------------------------
# Messages
# ------------------------------------------------------------------------------------------------

MESSAGES: dict[int, type["Message"]] = {}


class Message:
    """Base of all messages: a frozen dataclass with TYPE and FIELDS (wire order)."""

    TYPE: ClassVar[MessageType]
    FIELDS: ClassVar[tuple[_Field, ...]] = ()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.TYPE in MESSAGES:
            raise TypeError(f"message type {cls.TYPE!r} defined twice")
        MESSAGES[cls.TYPE] = cls

    def encode_payload(self) -> bytes:
        payload = b"".join(f.encode(getattr(self, f.name)) for f in self.FIELDS)
        if len(payload) > MAX_PAYLOAD:
            raise EncodeError(f"{type(self).__name__} payload is {len(payload)} bytes, maximum {MAX_PAYLOAD}")
        return payload

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Message":
        values, offset = {}, 0
        for f in cls.FIELDS:
            values[f.name], offset = f.decode(payload, offset)
        if offset != len(payload):
            raise PayloadError(f"{cls.__name__}: {len(payload) - offset} unexpected trailing byte(s) "
                               f"after {offset} bytes of fields")
        return cls(**values)


@dataclass(frozen=True)
class Identify(Message):
    TYPE = MessageType.IDENTIFY
    FIELDS = (_UInt("protocol_version", 1), _Bytes("schema_hash", SCHEMA_HASH_SIZE))
    protocol_version: int
    schema_hash: bytes


@dataclass(frozen=True)
class GetStatus(Message):
    TYPE = MessageType.GET_STATUS


@dataclass(frozen=True)
class SetTechnique(Message):
    TYPE = MessageType.SET_TECHNIQUE
    FIELDS = (_UInt("voltage_v", 2), _UInt("current_na", 2))
    voltage_v: int
    current_na: int


@dataclass(frozen=True)
class WarmUp(Message):
    TYPE = MessageType.WARM_UP


@dataclass(frozen=True)
class Arm(Message):
    TYPE = MessageType.ARM
    FIELDS = (_UInt("backup_time_ms", 4), _UInt("irm_limit_ugy", 4), _Bytes("plan_hash", PLAN_HASH_SIZE))
    backup_time_ms: int
    irm_limit_ugy: int
    plan_hash: bytes


@dataclass(frozen=True)
class BeamOn(Message):
    TYPE = MessageType.BEAM_ON
    FIELDS = (_Bytes("plan_hash", PLAN_HASH_SIZE),)
    plan_hash: bytes


@dataclass(frozen=True)
class BeamOff(Message):
    TYPE = MessageType.BEAM_OFF
    FIELDS = (_Enum("reason", BeamOffReasonCode, exclude=(BeamOffReasonCode.NONE,)),)
    reason: BeamOffReasonCode


@dataclass(frozen=True)
class ResetFault(Message):
    TYPE = MessageType.RESET_FAULT
    FIELDS = (_Text("operator_acknowledgement", 1, ACKNOWLEDGEMENT_MAX_BYTES, utf8=True),)
    operator_acknowledgement: str


@dataclass(frozen=True)
class Heartbeat(Message):
    TYPE = MessageType.HEARTBEAT
    FIELDS = (_UInt("host_time_ms", 4),)
    host_time_ms: int


@dataclass(frozen=True)
class ReadIsotropy(Message):
    TYPE = MessageType.READ_ISOTROPY


@dataclass(frozen=True)
class Ack(Message):
    TYPE = MessageType.ACK
    FIELDS = (_Enum("request_type", MessageType, exclude=tuple(t for t in MessageType if t >= 0x80)),)
    request_type: MessageType


@dataclass(frozen=True)
class IdentifyReply(Message):
    TYPE = MessageType.IDENTIFY_REPLY
    FIELDS = (_UInt("protocol_version", 1), _Bytes("schema_hash", SCHEMA_HASH_SIZE),
              _Text("serial_number", 1, 32), _Text("model", 1, 32), _Text("firmware", 1, 32))
    protocol_version: int
    schema_hash: bytes
    serial_number: str
    model: str
    firmware: str


@dataclass(frozen=True)
class StatusReply(Message):
    TYPE = MessageType.STATUS_REPLY
    FIELDS = (
        _Enum("state", DeviceState),
        _UInt("voltage_v", 2, hi=60_000),
        _UInt("current_na", 2, hi=60_000),
        _Bool("hv_on"),
        _UInt("irm_counts", 4),
        _UInt("irm_dose_ugy", 4),
        _UInt("applicator_id", 1, hi=len(APPLICATOR_DIAMETERS_CM)),
        _Flags("interlocks", InterlockBit, INTERLOCK_MASK),
        _Flags("faults", FaultBit, FAULT_MASK),
        _UInt("device_time_us", 8),
        _UInt("beam_on_time_ms", 4),
        _Enum("last_beam_off_cause", BeamOffCauseCode),
        _Enum("last_beam_off_reason", BeamOffReasonCode),
        _Bool("armed"),
        _Bytes("armed_plan_hash", PLAN_HASH_SIZE),
    )
    state: DeviceState
    voltage_v: int
    current_na: int
    hv_on: bool
    irm_counts: int
    irm_dose_ugy: int
    applicator_id: int
    interlocks: InterlockBit
    faults: FaultBit
    device_time_us: int
    beam_on_time_ms: int
    last_beam_off_cause: BeamOffCauseCode
    last_beam_off_reason: BeamOffReasonCode
    armed: bool
    armed_plan_hash: bytes

    @classmethod
    def decode_payload(cls, payload: bytes) -> "StatusReply":
        msg = super().decode_payload(payload)
        if not msg.armed and msg.armed_plan_hash != bytes(PLAN_HASH_SIZE):
            raise PayloadError("STATUS_REPLY: armed_plan_hash must be all zero when armed is 0")
        return msg


@dataclass(frozen=True)
class HeartbeatReply(Message):
    TYPE = MessageType.HEARTBEAT_REPLY
    FIELDS = (_UInt("host_time_ms", 4), _UInt("device_time_us", 8))
    host_time_ms: int
    device_time_us: int


ISOTROPY_MAX_PPM = 2_000_000


@dataclass(frozen=True)
class IsotropyReply(Message):
    TYPE = MessageType.ISOTROPY_REPLY
    FIELDS = tuple(_UInt(name, 4, hi=ISOTROPY_MAX_PPM) for name in
                   ("plus_x_ppm", "minus_x_ppm", "plus_y_ppm", "minus_y_ppm", "plus_z_ppm"))
    plus_x_ppm: int
    minus_x_ppm: int
    plus_y_ppm: int
    minus_y_ppm: int
    plus_z_ppm: int


@dataclass(frozen=True)
class DeviceHeartbeat(Message):
    TYPE = MessageType.DEVICE_HEARTBEAT
    FIELDS = (_UInt("device_time_us", 8), _Enum("state", DeviceState), _Bool("hv_on"),
              _Flags("faults", FaultBit, FAULT_MASK))
    device_time_us: int
    state: DeviceState
    hv_on: bool
    faults: FaultBit


@dataclass(frozen=True)
class Nak(Message):
    TYPE = MessageType.NAK
    FIELDS = (_UInt("request_type", 1), _Enum("error_code", ErrorCode), _Text("detail", 0, NAK_DETAIL_MAX_BYTES))
    request_type: int          # raw: a NAK may answer a type this side does not know
    error_code: ErrorCode
    detail: str


REQUEST_TYPES = frozenset(t for t in MessageType if t < 0x80)
REPLY_TO: dict[MessageType, MessageType] = {
    MessageType.IDENTIFY: MessageType.IDENTIFY_REPLY,
    MessageType.GET_STATUS: MessageType.STATUS_REPLY,
    MessageType.HEARTBEAT: MessageType.HEARTBEAT_REPLY,
    MessageType.READ_ISOTROPY: MessageType.ISOTROPY_REPLY,
}


def expected_reply(request_type: MessageType) -> MessageType:
    """The reply type that means success for `request_type` (ACK when there is no data)."""
    return REPLY_TO.get(request_type, MessageType.ACK)


def _schema_text() -> str:
    lines = [f"xrs-link protocol {PROTOCOL_VERSION}; header <BBBB version,seq,type,length; crc32 zlib LE; cobs 0x00"]
    for type_, cls in sorted(MESSAGES.items()):
        lines.append(f"0x{type_:02x} {cls.__name__}: " + ", ".join(f.describe() for f in cls.FIELDS))
    return "\n".join(lines) + "\n"


SCHEMA_TEXT = _schema_text()
SCHEMA_HASH = hashlib.sha256(SCHEMA_TEXT.encode()).digest()[:SCHEMA_HASH_SIZE]


# ------------------------------------------------------------------------------------------------
# Frames
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """A CRC-valid frame; `payload` not yet interpreted (see parse_message)."""

    version: int
    seq: int
    msg_type: int
    payload: bytes


def encode_raw_frame(version: int, seq: int, msg_type: int, payload: bytes) -> bytes:
    """Wire bytes (COBS + delimiter) of an arbitrary frame; for tests and NAKs of unknown types."""
    for name, value in (("version", version), ("seq", seq), ("msg_type", msg_type)):
        if not 0 <= value <= 255:
            raise EncodeError(f"frame {name} {value} outside 0..255")
    if len(payload) > MAX_PAYLOAD:
        raise EncodeError(f"payload is {len(payload)} bytes, maximum {MAX_PAYLOAD}")
    body = HEADER.pack(version, seq, msg_type, len(payload)) + payload
    return cobs_encode(body + crc32(body).to_bytes(CRC32_SIZE, "little")) + DELIMITER


def encode_frame(seq: int, message: Message, *, version: int = PROTOCOL_VERSION) -> bytes:
    """Wire bytes of `message` with sequence number `seq`, ending in the 0x00 delimiter."""
    return encode_raw_frame(version, seq, int(message.TYPE), message.encode_payload())


def decode_frame(encoded: bytes) -> Frame:
    """Check one encoded frame (without its delimiter): COBS, length, CRC. Version/type not checked."""
    if len(encoded) > MAX_ENCODED:
        raise OverrunError(f"frame of {len(encoded)} encoded bytes, maximum {MAX_ENCODED}")
    try:
        raw = cobs_decode(encoded)
    except CobsError as exc:
        raise FramingError(f"COBS: {exc}") from None
    if len(raw) < MIN_FRAME:
        raise LengthError(f"frame of {len(raw)} bytes is shorter than the minimum {MIN_FRAME}")
    body, crc_bytes = raw[:-CRC32_SIZE], raw[-CRC32_SIZE:]
    received_crc = int.from_bytes(crc_bytes, "little")
    computed_crc = crc32(body)
    version, seq, msg_type, length = HEADER.unpack_from(body)
    if received_crc != computed_crc:
        raise CrcError(f"CRC-32 mismatch: frame says 0x{received_crc:08x}, bytes give 0x{computed_crc:08x}")
    if length != len(body) - HEADER_SIZE:
        raise LengthError(f"header says {length} payload bytes, frame carries {len(body) - HEADER_SIZE}")
    return Frame(version, seq, msg_type, bytes(body[HEADER_SIZE:]))


def parse_message(frame: Frame, *, expected_version: int = PROTOCOL_VERSION) -> Message:
    """Interpret a CRC-valid frame strictly. Raises VersionError, UnknownMessageType or PayloadError."""
    if frame.version != expected_version:
        raise VersionError(f"frame speaks XRS protocol version {frame.version}, expected {expected_version}")
    cls = MESSAGES.get(frame.msg_type)
    if cls is None:
        raise UnknownMessageType(f"message type 0x{frame.msg_type:02x} is not in the XRS message table")
    return cls.decode_payload(frame.payload)


def decode(encoded: bytes) -> tuple[int, Message]:
    """Encoded frame (with or without the trailing 0x00) -> (seq, message). Raises XrsDecodeError."""
    if encoded.endswith(DELIMITER):
        encoded = encoded[:-1]
    frame = decode_frame(encoded)
    return frame.seq, parse_message(frame)


class StreamDecoder:
    """Splits a byte stream at 0x00, returns CRC-valid frames, counts and skips everything else.

    Never raises on input: garbage is discarded up to the next delimiter and counted, so a decoder
    fed noise resynchronises on the first good frame after it.
    """

    def __init__(self, max_encoded: int = MAX_ENCODED) -> None:
        self.max_encoded = max_encoded
        self._buffer = bytearray()
        self._discarding = False
        self.frames_ok = 0
        self.crc_errors = 0
        self.framing_errors = 0      # COBS, length and overrun errors
        self.bytes_discarded = 0
        self.last_error: XrsDecodeError | None = None

    @property
    def bad_frames(self) -> int:
        return self.crc_errors + self.framing_errors

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        buf = self._buffer
        buf += data
        start = 0
        while True:
            end = buf.find(0, start)
            if end < 0:
                break
            chunk = bytes(buf[start:end])
            start = end + 1
            if self._discarding:           # tail of an overrun: its end is the resync point
                self._discarding = False
                self.bytes_discarded += len(chunk) + 1
                continue
            if not chunk:                  # idle delimiters between frames are legal fill
                continue
            try:
                frames.append(decode_frame(chunk))
                self.frames_ok += 1
            except CrcError as exc:
                self._reject(exc, len(chunk) + 1)
                self.crc_errors += 1
            except XrsDecodeError as exc:
                self._reject(exc, len(chunk) + 1)
                self.framing_errors += 1
        del buf[:start]
        if len(buf) > self.max_encoded:
            self._reject(OverrunError(f"{len(buf)} bytes without a 0x00 delimiter (maximum frame "
                                      f"{self.max_encoded}): discarding up to the next delimiter"), len(buf))
            self.framing_errors += 1
            buf.clear()
            self._discarding = True
        elif self._discarding and buf:
            self.bytes_discarded += len(buf)
            buf.clear()
        return frames

    def _reject(self, exc: XrsDecodeError, nbytes: int) -> None:
        self.last_error = exc
        self.bytes_discarded += nbytes
