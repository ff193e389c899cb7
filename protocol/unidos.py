"""Codec of the PTW UNIDOS current ASCII dialect (Tango / Romeo / webline): requests, replies, `MV`.

Both ends use it: the console's driver builds requests and decodes replies, the simulator decodes
requests and formats replies. Pure wire format only — no I/O, no clocks, no device behaviour, no
imports of ours. Every malformed input raises a subclass of UnidosDecodeError with a reason.
"""
from __future__ import annotations

import decimal
import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Union

ENCODING = "utf-8"
CRLF = b"\r\n"
SEPARATOR = ";"

MAX_REQUEST_LINE_BYTES = 128      # without CR LF; longer requests are refused with E16
MAX_REPLY_LINE_BYTES = 8192       # without CR LF; JSON documents are the longest replies

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


class Status(str, enum.Enum):
    """Measurement status (`S` reply and first field of `MV`)."""

    RES = "RES"
    MEAS = "MEAS"
    HOLD = "HOLD"
    INT = "INT"
    INTHLD = "INTHLD"
    ZERO = "ZERO"
    AUTO = "AUTO"
    AUTO_MEAS = "AUTO_MEAS"
    AUTO_HOLD = "AUTO_HOLD"
    EOM = "EOM"
    WAIT = "WAIT"
    INIT = "INIT"
    ERROR = "ERROR"
    SELF_TEST = "SELF_TEST"
    TST = "TST"


class Range(str, enum.Enum):
    """Measuring range (`RGE`)."""

    VERY_LOW = "VERY_LOW"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class AutostartLevel(str, enum.Enum):
    """Autostart threshold (`ASL`)."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class Flag(enum.IntFlag):
    """Error flags of the `MV` reply (hexadecimal bit field)."""

    NONE = 0
    OVERLOAD_CURRENT = 1 << 0
    OVERLOAD_CHARGE = 1 << 1
    HV_ERROR_CURRENT = 1 << 2
    HV_ERROR_CHARGE = 1 << 3
    LOW_SIGNAL_CURRENT = 1 << 4
    LOW_SIGNAL_CHARGE = 1 << 5
    LOW_AUTOSTART_SIGNAL = 1 << 6
    RADIATION_SAFETY_CURRENT = 1 << 8
    RADIATION_SAFETY_CHARGE = 1 << 9
    INTERNAL = 1 << 10
    UNCALIBRATED = 1 << 11


ERROR_MEANINGS: dict[str, str] = {
    "E01": "syntax error, unknown command",
    "E02": "command not allowed in this context",
    "E03": "command not allowed at this moment",
    "E08": "parameter invalid, out of range or wrongly formatted",
    "E12": "aborted by the user",
    "E16": "command too long",
    "E17": "too many parameters",
    "E18": "empty parameter field",
    "E19": "wrong number of parameters",
    "E20": "no write permission",
    "E21": "required item not found",
    "E24": "memory error, data not stored",
    "E28": "unknown parameter",
    "E29": "wrong parameter type",
    "E33": "measurement module defect",
    "E96": "timeout",
}

# SI prefix of each decimal exponent, as the instrument pairs them in a value (`2.6;E-3;m;Gy`).
PREFIX_OF_EXPONENT: dict[int, str] = {-15: "f", -12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k"}
EXPONENT_OF_PREFIX: dict[str, int] = {**{p: e for e, p in PREFIX_OF_EXPONENT.items()}, "μ": -6, "u": -6}
UNITS = ("C", "A", "Gy", "Sv", "R")
TIMEBASES = ("", "s", "min", "h")

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class UnidosDecodeError(ValueError):
    """Bytes that are not a valid UNIDOS message. `reason` is readable; `device_code` is the error
    reply a device gives to such a request."""

    device_code = "E01"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LineTooLong(UnidosDecodeError):
    device_code = "E16"


class MissingTerminator(UnidosDecodeError):
    """A line that does not end with exactly one CR LF."""


class BadEncoding(UnidosDecodeError):
    """Not UTF-8 (replies) or not printable ASCII (requests)."""


class ForbiddenCharacter(UnidosDecodeError):
    """A control character (bare CR, LF, NUL, …) inside a line."""


class UnknownCommand(UnidosDecodeError):
    """The mnemonic is not in the command table (device: E01)."""


class EmptyParameter(UnidosDecodeError):
    device_code = "E18"


class TooManyParameters(UnidosDecodeError):
    device_code = "E17"


class WrongParameterCount(UnidosDecodeError):
    device_code = "E19"


class WrongParameterType(UnidosDecodeError):
    device_code = "E29"


class UnknownParameter(UnidosDecodeError):
    device_code = "E28"


class ParameterOutOfRange(UnidosDecodeError):
    device_code = "E08"


class MnemonicMismatch(UnidosDecodeError):
    """A reply that echoes another command's mnemonic: it answers some other request."""


class EchoMismatch(UnidosDecodeError):
    """A reply whose echoed parameter or set value differs from the request."""


class WrongFieldCount(UnidosDecodeError):
    """A reply with too few (truncated) or too many fields."""


class BadField(UnidosDecodeError):
    """A reply field that is not in the format the dialect defines."""


class UnidosEncodeError(ValueError):
    """The caller asked to build a message the dialect cannot carry (never sent half-built)."""


# --------------------------------------------------------------------------------------------
# Command table
# --------------------------------------------------------------------------------------------


class ParamKind(enum.Enum):
    INT = "int"                  # signed decimal integer
    BOOL = "bool"                # true / false
    RANGE = "range"              # VERY_LOW LOW MEDIUM HIGH
    LEVEL = "level"              # LOW MEDIUM HIGH
    TOKEN_ARG = "token_arg"      # 0 (release) / 1 (query)
    GUID = "guid"                # detector id


class ReplyKind(enum.Enum):
    IDENTITY = "identity"
    SERIAL = "serial"
    MAC = "mac"
    TOKEN = "token"
    STATUS = "status"
    ACK = "ack"
    INT = "int"
    RANGE = "range"
    BOOL = "bool"
    LEVEL = "level"
    ZERO = "zero"
    SELF_TEST = "self_test"
    MV = "mv"
    RANGE_MAXIMUM = "range_maximum"
    RANGE_RESOLUTION = "range_resolution"
    FAILED_TELEGRAM = "failed_telegram"
    JSON = "json"


@dataclass(frozen=True)
class CommandSpec:
    mnemonic: str
    param: ParamKind | None      # the one optional/required parameter, if the command takes one
    param_required: bool
    reply: ReplyKind
    echoes_param: bool = False   # reply repeats the parameter before its own fields (TOK;1, RDR;guid)
    setter: bool = False         # with a parameter: the reply's value must equal it (RGE;LOW → RGE;LOW)
    meaning: str = ""


def _spec(mnemonic, param, required, reply, meaning, *, echoes=False, setter=False) -> CommandSpec:
    return CommandSpec(mnemonic, param, required, reply, echoes, setter, meaning)


COMMANDS: dict[str, CommandSpec] = {s.mnemonic: s for s in (
    _spec("PTW", None, False, ReplyKind.IDENTITY, "identity"),
    _spec("SER", None, False, ReplyKind.SERIAL, "serial number"),
    _spec("MAC", None, False, ReplyKind.MAC, "network MAC address"),
    _spec("TOK", ParamKind.TOKEN_ARG, False, ReplyKind.TOKEN, "write permission", echoes=True),
    _spec("S", None, False, ReplyKind.STATUS, "measurement status"),
    _spec("STA", None, False, ReplyKind.ACK, "start measuring"),
    _spec("HLD", None, False, ReplyKind.ACK, "hold"),
    _spec("RES", None, False, ReplyKind.ACK, "reset"),
    _spec("INT", None, False, ReplyKind.ACK, "start interval measurement"),
    _spec("IT", ParamKind.INT, False, ReplyKind.INT, "integration time", setter=True),
    _spec("CHR", None, False, ReplyKind.ACK, "clear measurement history"),
    _spec("NUL", None, False, ReplyKind.ACK, "start zero correction"),
    _spec("NUS", None, False, ReplyKind.ZERO, "zero-correction status"),
    _spec("AST", None, False, ReplyKind.ACK, "start self test"),
    _spec("ASS", None, False, ReplyKind.SELF_TEST, "self-test status"),
    _spec("RGE", ParamKind.RANGE, False, ReplyKind.RANGE, "measuring range", setter=True),
    _spec("HV", ParamKind.INT, False, ReplyKind.INT, "chamber voltage", setter=True),
    _spec("UEL", ParamKind.BOOL, False, ReplyKind.BOOL, "electrical units", setter=True),
    _spec("ASE", ParamKind.BOOL, False, ReplyKind.BOOL, "autostart enabled", setter=True),
    _spec("ASR", ParamKind.BOOL, False, ReplyKind.BOOL, "autoreset enabled", setter=True),
    _spec("ASL", ParamKind.LEVEL, False, ReplyKind.LEVEL, "autostart threshold", setter=True),
    _spec("MV", None, False, ReplyKind.MV, "measured values"),
    _spec("MVM", None, False, ReplyKind.RANGE_MAXIMUM, "maximum of the current range"),
    _spec("MVR", None, False, ReplyKind.RANGE_RESOLUTION, "resolution of the current range"),
    _spec("TFI", None, False, ReplyKind.FAILED_TELEGRAM, "last failed telegram"),
    _spec("RDA", None, False, ReplyKind.JSON, "detector database"),
    _spec("RDR", ParamKind.GUID, True, ReplyKind.JSON, "one detector", echoes=True),
    _spec("RMR", None, False, ReplyKind.JSON, "measurement parameters"),
    _spec("RIR", None, False, ReplyKind.JSON, "system information"),
    _spec("RSR", None, False, ReplyKind.JSON, "settings"),
    _spec("REC", None, False, ReplyKind.JSON, "LAN settings"),
    _spec("RHR", None, False, ReplyKind.JSON, "measurement history"),
)}

# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

Param = Union[int, bool, Range, AutostartLevel, str]


@dataclass(frozen=True)
class Request:
    """One request: mnemonic plus at most one typed parameter (int, bool, Range, AutostartLevel, str)."""

    mnemonic: str
    params: tuple = ()

    @property
    def spec(self) -> CommandSpec:
        return COMMANDS[self.mnemonic]

    @property
    def param(self) -> Param | None:
        return self.params[0] if self.params else None

    def __str__(self) -> str:
        return encode_request(self)[:-2].decode(ENCODING)


def request(mnemonic: str, *params: Param) -> Request:
    """Build and validate a request: `request("HV", 300)`. Raises UnidosEncodeError."""
    req = Request(mnemonic, tuple(params))
    encode_request(req)
    return req


@dataclass(frozen=True)
class ErrorReply:
    """`E` + two digits instead of the echo: the device refused the request."""

    code: str

    @property
    def meaning(self) -> str:
        return ERROR_MEANINGS.get(self.code, "error code not in the UNIDOS reference table")


@dataclass(frozen=True)
class Quantity:
    """A value as the instrument writes it: mantissa, decimal exponent, SI prefix, unit.

    `value` = mantissa × 10^exponent, in the unit (C, A, Gy …)."""

    mantissa: float
    exponent: int
    prefix: str
    unit: str

    @property
    def value(self) -> float:
        return float(decimal.Decimal(repr(float(self.mantissa))).scaleb(self.exponent))

    @classmethod
    def from_value(cls, value: float, unit: str, *, significant_digits: int = 5,
                   zero_exponent: int = -12) -> "Quantity":
        """Engineering notation (mantissa 1 ≤ |m| < 1000, prefix f … k), rounded for display."""
        if not math.isfinite(value):
            raise UnidosEncodeError(f"cannot write a non-finite value ({value!r}) as a UNIDOS quantity")
        if value == 0:
            return cls(0.0, zero_exponent, PREFIX_OF_EXPONENT[zero_exponent], unit)
        exponent = int(math.floor(math.log10(abs(value)) / 3.0)) * 3
        exponent = max(-15, min(3, exponent))
        mantissa = value / 10.0 ** exponent
        int_digits = len(str(int(abs(mantissa)))) if abs(mantissa) >= 1 else 1
        mantissa = round(mantissa, max(0, significant_digits - int_digits))
        return cls(mantissa, exponent, PREFIX_OF_EXPONENT[exponent], unit)


@dataclass(frozen=True)
class Identity:
    name: str                 # e.g. "UNIDOS Tango"
    type_number: str          # 7 characters, e.g. "TM10052"
    firmware: str             # e.g. "1.2.4"
    hardware_revision: str    # 3 characters, e.g. "A16"


@dataclass(frozen=True)
class ZeroCorrectionStatus:
    result: str               # "Passed", "Failed", "Running", "None" …
    remaining_ms: int
    total_ms: int


@dataclass(frozen=True)
class SelfTestCharge:
    range_label: str          # "Low", "Med", "High" as the instrument writes them
    charge: Quantity


@dataclass(frozen=True)
class SelfTestStatus:
    result: str
    remaining_ms: int
    total_ms: int
    charges: tuple[SelfTestCharge, ...] = ()


@dataclass(frozen=True)
class MeasuredValue:
    """The `MV` reply, typed."""

    status: Status
    integrated: Quantity       # charge (C) or dose (Gy)
    rate: Quantity             # current (A) or dose rate (Gy per timebase)
    timebase: str              # "" in electrical units, else e.g. "min"
    time_ms: float             # measuring time
    hv_v: float                # chamber voltage
    flags: Flag


@dataclass(frozen=True)
class RangeMaximum:
    range: Range
    maximum: Quantity
    timebase: str


@dataclass(frozen=True)
class RangeResolution:
    range: Range
    integrated: Quantity
    rate: Quantity
    timebase: str


# --------------------------------------------------------------------------------------------
# Field formats
# --------------------------------------------------------------------------------------------

_INT_RE = re.compile(r"-?[0-9]{1,9}")
_UINT_RE = re.compile(r"[0-9]{1,10}")
_MANTISSA_RE = re.compile(r" {0,3}-?[0-9]{1,17}(\.[0-9]{1,17})?")
_EXPONENT_RE = re.compile(r"E([+-]?[0-9]{1,3})")
_DECIMAL_RE = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,9})?")
_FLAGS_RE = re.compile(r"0x[0-9A-Fa-f]{1,4}")
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}")
_GUID_RE = re.compile(r"[0-9A-Za-z_.{}-]{1,64}")
_MNEMONIC_RE = re.compile(r"[A-Z]{1,3}")
_ERROR_RE = re.compile(r"E[0-9]{2}")
_ERROR_WITH_SEPARATOR_RE = re.compile(r"E;[0-9]{2}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_FORBIDDEN = re.compile(r"[;\x00-\x1f\x7f]")


def _format_mantissa(mantissa: float) -> str:
    if isinstance(mantissa, bool) or not isinstance(mantissa, (int, float)) or not math.isfinite(mantissa):
        raise UnidosEncodeError(f"mantissa must be a finite number, got {mantissa!r}")
    text = repr(float(mantissa))
    if not _MANTISSA_RE.fullmatch(text):
        raise UnidosEncodeError(
            f"mantissa {mantissa!r} cannot be written in plain decimal notation; choose another exponent")
    return text


def _format_exponent(exponent: int) -> str:
    if isinstance(exponent, bool) or not isinstance(exponent, int) or not -999 <= exponent <= 999:
        raise UnidosEncodeError(f"exponent must be an integer within ±999, got {exponent!r}")
    return f"E{exponent:+03d}"


def _format_text(value: str, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise UnidosEncodeError(f"{what} must be text, got {value!r}")
    if not value and not allow_empty:
        raise UnidosEncodeError(f"{what} must not be empty")
    if _TEXT_FORBIDDEN.search(value):
        raise UnidosEncodeError(f"{what} {value!r} contains ';' or a control character")
    return value


def _format_int(value: int, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnidosEncodeError(f"{what} must be an integer, got {value!r}")
    text = str(value)
    if not _INT_RE.fullmatch(text):
        raise UnidosEncodeError(f"{what} {value!r} has more digits than the dialect carries")
    return text


def _format_uint(value: int, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnidosEncodeError(f"{what} must be a non-negative integer, got {value!r}")
    text = str(value)
    if not _UINT_RE.fullmatch(text):
        raise UnidosEncodeError(f"{what} {value!r} has more digits than the dialect carries")
    return text


def _format_decimal(value: float, what: str, *, decimals: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UnidosEncodeError(f"{what} must be a finite number, got {value!r}")
    text = f"{value:.{decimals}f}"
    if not _DECIMAL_RE.fullmatch(text):
        raise UnidosEncodeError(f"{what} {value!r} is out of what the dialect carries")
    return text


def _format_bool(value: bool, what: str) -> str:
    if not isinstance(value, bool):
        raise UnidosEncodeError(f"{what} must be true or false, got {value!r}")
    return "true" if value else "false"


def _format_enum(value, enum_cls, what: str) -> str:
    try:
        return enum_cls(value).value
    except ValueError:
        raise UnidosEncodeError(
            f"{what} must be one of {', '.join(m.value for m in enum_cls)}, got {value!r}") from None


def _format_quantity(q: Quantity, what: str) -> list[str]:
    if not isinstance(q, Quantity):
        raise UnidosEncodeError(f"{what} must be a Quantity, got {q!r}")
    mantissa = _format_mantissa(q.mantissa)
    exponent = _format_exponent(q.exponent)
    if EXPONENT_OF_PREFIX.get(q.prefix, None) != q.exponent or q.exponent not in PREFIX_OF_EXPONENT:
        raise UnidosEncodeError(f"{what}: prefix {q.prefix!r} does not belong to exponent {q.exponent}")
    if q.unit not in UNITS:
        raise UnidosEncodeError(f"{what}: unit {q.unit!r} is not one of {', '.join(UNITS)}")
    return [mantissa, exponent, q.prefix, q.unit]


def _format_timebase(timebase: str) -> str:
    if timebase not in TIMEBASES:
        raise UnidosEncodeError(f"timebase must be one of {TIMEBASES}, got {timebase!r}")
    return timebase


# decoding helpers: each raises BadField naming the field


def _parse_int(text: str, what: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise BadField(f"{what}: expected an integer, got {text!r}")
    return int(text)


def _parse_uint(text: str, what: str) -> int:
    if not _UINT_RE.fullmatch(text):
        raise BadField(f"{what}: expected a non-negative integer, got {text!r}")
    return int(text)


def _parse_decimal(text: str, what: str) -> float:
    if not _DECIMAL_RE.fullmatch(text):
        raise BadField(f"{what}: expected a decimal number, got {text!r}")
    return float(text)


def _parse_bool(text: str, what: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise BadField(f"{what}: expected 'true' or 'false', got {text!r}")


def _parse_enum(text: str, enum_cls, what: str):
    try:
        return enum_cls(text)
    except ValueError:
        raise BadField(f"{what}: expected one of {', '.join(m.value for m in enum_cls)}, got {text!r}") from None


def _parse_text(text: str, what: str, *, allow_empty: bool = False) -> str:
    if not text and not allow_empty:
        raise BadField(f"{what} is empty")
    return text


def _parse_quantity(fields: list[str], what: str) -> Quantity:
    m_text, e_text, prefix, unit = fields
    if not _MANTISSA_RE.fullmatch(m_text):
        raise BadField(f"{what}: mantissa {m_text!r} is not a decimal number")
    match = _EXPONENT_RE.fullmatch(e_text)
    if not match:
        raise BadField(f"{what}: exponent {e_text!r} is not of the form E-12")
    exponent = int(match.group(1))
    if prefix not in EXPONENT_OF_PREFIX:
        raise BadField(f"{what}: unknown SI prefix {prefix!r}")
    if EXPONENT_OF_PREFIX[prefix] != exponent:
        raise BadField(f"{what}: prefix {prefix!r} does not belong to exponent {e_text}")
    if unit not in UNITS:
        raise BadField(f"{what}: unknown unit {unit!r} (expected one of {', '.join(UNITS)})")
    return Quantity(float(m_text), exponent, prefix, unit)


def _parse_timebase(text: str) -> str:
    if text not in TIMEBASES:
        raise BadField(f"timebase {text!r} is not one of {TIMEBASES}")
    return text


# --------------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------------


def _line_text(line: str | bytes, *, max_bytes: int, ascii_only: bool) -> str:
    """Validate one line (bytes with its CR LF, or text without) and return its text."""
    if isinstance(line, (bytes, bytearray, memoryview)):
        raw = bytes(line)
        if not raw.endswith(CRLF):
            raise MissingTerminator(f"line {raw[:40]!r} does not end with CR LF")
        raw = raw[:-2]
        if len(raw) > max_bytes:
            raise LineTooLong(f"line of {len(raw)} bytes exceeds the limit of {max_bytes}")
        try:
            text = raw.decode("ascii" if ascii_only else ENCODING)
        except UnicodeDecodeError as exc:
            raise BadEncoding(f"line is not {'ASCII' if ascii_only else 'UTF-8'} ({exc.reason} at byte "
                              f"{exc.start}): {raw[:40]!r}") from None
    elif isinstance(line, str):
        text = line
        size = len(text.encode(ENCODING, errors="surrogatepass"))
        if size > max_bytes:
            raise LineTooLong(f"line of {size} bytes exceeds the limit of {max_bytes}")
        if ascii_only and not text.isascii():
            raise BadEncoding(f"request {text[:40]!r} contains non-ASCII characters")
        try:
            text.encode(ENCODING)
        except UnicodeEncodeError:
            raise BadEncoding(f"line {text[:40]!r} cannot be encoded as UTF-8") from None
    else:
        raise TypeError(f"a line is bytes or str, got {type(line).__name__}")
    bad = _CONTROL_RE.search(text)
    if bad:
        raise ForbiddenCharacter(f"control character {bad.group()!r} at position {bad.start()} in {text[:40]!r}")
    return text


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def _encode_param(kind: ParamKind, value: Param, mnemonic: str) -> str:
    what = f"{mnemonic} parameter"
    if kind is ParamKind.INT:
        return _format_int(value, what)
    if kind is ParamKind.BOOL:
        return _format_bool(value, what)
    if kind is ParamKind.RANGE:
        return _format_enum(value, Range, what)
    if kind is ParamKind.LEVEL:
        return _format_enum(value, AutostartLevel, what)
    if kind is ParamKind.TOKEN_ARG:
        if isinstance(value, bool) or value not in (0, 1):
            raise UnidosEncodeError(f"{what} must be 0 (release) or 1 (query), got {value!r}")
        return str(value)
    if kind is ParamKind.GUID:
        if not isinstance(value, str) or not _GUID_RE.fullmatch(value):
            raise UnidosEncodeError(f"{what} must be a detector id of 1–64 characters [0-9A-Za-z_.{{}}-], "
                                    f"got {value!r}")
        return value
    raise AssertionError(kind)  # pragma: no cover


def _decode_param(kind: ParamKind, text: str, mnemonic: str) -> Param:
    what = f"{mnemonic} parameter {text!r}"
    if kind is ParamKind.INT:
        if not _INT_RE.fullmatch(text):
            raise WrongParameterType(f"{what} is not an integer")
        return int(text)
    if kind is ParamKind.BOOL:
        if text not in ("true", "false"):
            raise WrongParameterType(f"{what} is not 'true' or 'false'")
        return text == "true"
    if kind is ParamKind.RANGE:
        try:
            return Range(text)
        except ValueError:
            raise UnknownParameter(f"{what} is not a range ({', '.join(r.value for r in Range)})") from None
    if kind is ParamKind.LEVEL:
        try:
            return AutostartLevel(text)
        except ValueError:
            raise UnknownParameter(
                f"{what} is not an autostart level ({', '.join(r.value for r in AutostartLevel)})") from None
    if kind is ParamKind.TOKEN_ARG:
        if not _INT_RE.fullmatch(text):
            raise WrongParameterType(f"{what} is not an integer")
        if text not in ("0", "1"):
            raise ParameterOutOfRange(f"{what} must be 0 (release) or 1 (query)")
        return int(text)
    if kind is ParamKind.GUID:
        if not _GUID_RE.fullmatch(text):
            raise WrongParameterType(f"{what} is not a detector id")
        return text
    raise AssertionError(kind)  # pragma: no cover


def encode_request(req: Request) -> bytes:
    """`Request("HV", (300,))` → b"HV;300\\r\\n". Raises UnidosEncodeError for what cannot be sent."""
    spec = COMMANDS.get(req.mnemonic) if isinstance(req.mnemonic, str) else None
    if spec is None:
        raise UnidosEncodeError(f"unknown UNIDOS command {req.mnemonic!r}")
    if not isinstance(req.params, tuple):
        raise UnidosEncodeError(f"{req.mnemonic}: params must be a tuple, got {req.params!r}")
    if len(req.params) > (1 if spec.param else 0):
        raise UnidosEncodeError(f"{req.mnemonic} takes {'one parameter' if spec.param else 'no parameter'}, "
                                f"got {len(req.params)}")
    if spec.param_required and not req.params:
        raise UnidosEncodeError(f"{req.mnemonic} needs a parameter ({spec.param.value})")
    parts = [req.mnemonic] + [_encode_param(spec.param, p, req.mnemonic) for p in req.params]
    data = SEPARATOR.join(parts).encode("ascii")
    if len(data) > MAX_REQUEST_LINE_BYTES:
        raise UnidosEncodeError(f"request of {len(data)} bytes exceeds {MAX_REQUEST_LINE_BYTES}")
    return data + CRLF


def decode_request(line: str | bytes, *, max_bytes: int = MAX_REQUEST_LINE_BYTES) -> Request:
    """Device side: one request line (bytes with CR LF, or text without) → Request.

    Raises a UnidosDecodeError subclass whose `device_code` is the error reply to give."""
    text = _line_text(line, max_bytes=max_bytes, ascii_only=True)
    if not text:
        raise UnknownCommand("empty line: no command")
    parts = text.split(SEPARATOR)
    mnemonic, params = parts[0], parts[1:]
    spec = COMMANDS.get(mnemonic)
    if spec is None:
        raise UnknownCommand(f"unknown command {mnemonic[:20]!r}")
    if any(p == "" for p in params):
        raise EmptyParameter(f"{mnemonic}: empty parameter field in {text[:40]!r}")
    allowed = 1 if spec.param else 0
    if len(params) > allowed:
        raise TooManyParameters(f"{mnemonic} takes at most {allowed} parameter(s), got {len(params)}")
    if spec.param_required and not params:
        raise WrongParameterCount(f"{mnemonic} needs one parameter ({spec.param.value}), got none")
    return Request(mnemonic, tuple(_decode_param(spec.param, p, mnemonic) for p in params))


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------

_SELF_TEST_HEAD = 3
_MV_FIELDS = 15


def _encode_value(spec: CommandSpec, value: Any) -> list[str]:
    kind, m = spec.reply, spec.mnemonic
    if kind is ReplyKind.IDENTITY:
        if not isinstance(value, Identity):
            raise UnidosEncodeError(f"PTW reply needs an Identity, got {value!r}")
        if len(value.type_number) != 7 or len(value.hardware_revision) != 3:
            raise UnidosEncodeError("PTW: type number must have 7 characters and hardware revision 3")
        return [_format_text(value.name, "name"), _format_text(value.type_number, "type number"),
                _format_text(value.firmware, "firmware"), _format_text(value.hardware_revision, "hardware revision")]
    if kind is ReplyKind.SERIAL:
        return [_format_uint(value, "serial number")]
    if kind is ReplyKind.MAC:
        if not isinstance(value, str) or not _MAC_RE.fullmatch(value):
            raise UnidosEncodeError(f"MAC address must look like 00-1a-2b-3c-4d-5e, got {value!r}")
        return [value]
    if kind is ReplyKind.TOKEN:
        return [_format_bool(value, "TOK result")]
    if kind is ReplyKind.STATUS:
        return [_format_enum(value, Status, "status")]
    if kind is ReplyKind.ACK:
        if value is not None:
            raise UnidosEncodeError(f"{m} is a plain action: its reply carries no value, got {value!r}")
        return []
    if kind is ReplyKind.INT:
        return [_format_int(value, f"{m} value")]
    if kind is ReplyKind.RANGE:
        return [_format_enum(value, Range, "range")]
    if kind is ReplyKind.BOOL:
        return [_format_bool(value, f"{m} value")]
    if kind is ReplyKind.LEVEL:
        return [_format_enum(value, AutostartLevel, "autostart level")]
    if kind is ReplyKind.ZERO:
        if not isinstance(value, ZeroCorrectionStatus):
            raise UnidosEncodeError(f"NUS reply needs a ZeroCorrectionStatus, got {value!r}")
        return [_format_text(value.result, "zero result"), _format_uint(value.remaining_ms, "remaining ms"),
                _format_uint(value.total_ms, "total ms")]
    if kind is ReplyKind.SELF_TEST:
        if not isinstance(value, SelfTestStatus):
            raise UnidosEncodeError(f"ASS reply needs a SelfTestStatus, got {value!r}")
        fields = [_format_text(value.result, "self-test result"), _format_uint(value.remaining_ms, "remaining ms"),
                  _format_uint(value.total_ms, "total ms")]
        for charge in value.charges:
            fields.append(_format_text(charge.range_label, "self-test range label"))
            fields += _format_quantity(charge.charge, "self-test charge")
        return fields
    if kind is ReplyKind.MV:
        if not isinstance(value, MeasuredValue):
            raise UnidosEncodeError(f"MV reply needs a MeasuredValue, got {value!r}")
        flags = int(value.flags)
        if not 0 <= flags <= 0xFFFF:
            raise UnidosEncodeError(f"MV flags {flags!r} do not fit 16 bits")
        return ([_format_enum(value.status, Status, "status")]
                + _format_quantity(value.integrated, "integrated value")
                + _format_quantity(value.rate, "rate")
                + [_format_timebase(value.timebase), _format_decimal(value.time_ms, "measuring time"), "ms",
                   _format_decimal(value.hv_v, "chamber voltage"), "V", f"0x{flags:X}"])
    if kind is ReplyKind.RANGE_MAXIMUM:
        if not isinstance(value, RangeMaximum):
            raise UnidosEncodeError(f"MVM reply needs a RangeMaximum, got {value!r}")
        return ([_format_enum(value.range, Range, "range")] + _format_quantity(value.maximum, "range maximum")
                + [_format_timebase(value.timebase)])
    if kind is ReplyKind.RANGE_RESOLUTION:
        if not isinstance(value, RangeResolution):
            raise UnidosEncodeError(f"MVR reply needs a RangeResolution, got {value!r}")
        return ([_format_enum(value.range, Range, "range")]
                + _format_quantity(value.integrated, "integrated resolution")
                + _format_quantity(value.rate, "rate resolution") + [_format_timebase(value.timebase)])
    if kind is ReplyKind.FAILED_TELEGRAM:
        if not isinstance(value, tuple):
            raise UnidosEncodeError(f"TFI reply needs a tuple of fields (empty: none), got {value!r}")
        if not value:
            return ["-"]
        if value == ("-",):
            raise UnidosEncodeError("TFI: a single '-' field means 'none'; pass () instead")
        return [_format_text(v, "TFI field") for v in value]
    if kind is ReplyKind.JSON:
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UnidosEncodeError(f"{m}: document is not JSON-serialisable: {exc}") from None
        if not isinstance(value, (dict, list)):
            raise UnidosEncodeError(f"{m}: document must be a JSON object or array, got {value!r}")
        if SEPARATOR in text:
            raise UnidosEncodeError(f"{m}: document contains ';', which the dialect uses in place of ','")
        return [text.replace(",", SEPARATOR)]
    raise AssertionError(kind)  # pragma: no cover


def _expect_count(fields: list[str], count: int, what: str) -> None:
    if len(fields) != count:
        raise WrongFieldCount(f"{what}: expected {count} field(s) after the mnemonic, got {len(fields)}"
                              + (" (truncated reply)" if len(fields) < count else ""))


def _decode_value(spec: CommandSpec, fields: list[str]) -> Any:
    kind, m = spec.reply, spec.mnemonic
    if kind is ReplyKind.IDENTITY:
        _expect_count(fields, 4, "PTW reply")
        name, type_number, firmware, hw = fields
        if len(type_number) != 7:
            raise BadField(f"PTW: type number {type_number!r} must have 7 characters")
        if len(hw) != 3:
            raise BadField(f"PTW: hardware revision {hw!r} must have 3 characters")
        return Identity(_parse_text(name, "PTW name"), type_number, _parse_text(firmware, "PTW firmware"), hw)
    if kind is ReplyKind.SERIAL:
        _expect_count(fields, 1, "SER reply")
        return _parse_uint(fields[0], "serial number")
    if kind is ReplyKind.MAC:
        _expect_count(fields, 1, "MAC reply")
        if not _MAC_RE.fullmatch(fields[0]):
            raise BadField(f"MAC address {fields[0]!r} is not of the form xx-xx-xx-xx-xx-xx")
        return fields[0]
    if kind is ReplyKind.TOKEN:
        _expect_count(fields, 1, "TOK result")
        return _parse_bool(fields[0], "TOK result")
    if kind is ReplyKind.STATUS:
        _expect_count(fields, 1, "S reply")
        return _parse_enum(fields[0], Status, "status")
    if kind is ReplyKind.ACK:
        _expect_count(fields, 0, f"{m} reply")
        return None
    if kind is ReplyKind.INT:
        _expect_count(fields, 1, f"{m} reply")
        return _parse_int(fields[0], f"{m} value")
    if kind is ReplyKind.RANGE:
        _expect_count(fields, 1, "RGE reply")
        return _parse_enum(fields[0], Range, "range")
    if kind is ReplyKind.BOOL:
        _expect_count(fields, 1, f"{m} reply")
        return _parse_bool(fields[0], f"{m} value")
    if kind is ReplyKind.LEVEL:
        _expect_count(fields, 1, "ASL reply")
        return _parse_enum(fields[0], AutostartLevel, "autostart level")
    if kind is ReplyKind.ZERO:
        _expect_count(fields, 3, "NUS reply")
        return ZeroCorrectionStatus(_parse_text(fields[0], "zero result"),
                                    _parse_uint(fields[1], "remaining ms"), _parse_uint(fields[2], "total ms"))
    if kind is ReplyKind.SELF_TEST:
        if len(fields) < _SELF_TEST_HEAD or (len(fields) - _SELF_TEST_HEAD) % 5:
            raise WrongFieldCount(f"ASS reply: expected 3 fields plus groups of 5 per range, got {len(fields)}")
        charges = []
        for i in range(_SELF_TEST_HEAD, len(fields), 5):
            charges.append(SelfTestCharge(_parse_text(fields[i], "self-test range label"),
                                          _parse_quantity(fields[i + 1:i + 5], "self-test charge")))
        return SelfTestStatus(_parse_text(fields[0], "self-test result"), _parse_uint(fields[1], "remaining ms"),
                              _parse_uint(fields[2], "total ms"), tuple(charges))
    if kind is ReplyKind.MV:
        _expect_count(fields, _MV_FIELDS, "MV reply")
        if fields[11] != "ms":
            raise BadField(f"MV: the field after the measuring time must be 'ms', got {fields[11]!r}")
        if fields[13] != "V":
            raise BadField(f"MV: the field after the chamber voltage must be 'V', got {fields[13]!r}")
        if not _FLAGS_RE.fullmatch(fields[14]):
            raise BadField(f"MV: flags {fields[14]!r} are not a hexadecimal bit field like 0x0")
        time_ms = _parse_decimal(fields[10], "MV measuring time")
        if time_ms < 0:
            raise BadField(f"MV: negative measuring time {fields[10]!r}")
        return MeasuredValue(_parse_enum(fields[0], Status, "MV status"),
                             _parse_quantity(fields[1:5], "MV integrated value"),
                             _parse_quantity(fields[5:9], "MV rate"), _parse_timebase(fields[9]),
                             time_ms, _parse_decimal(fields[12], "MV chamber voltage"),
                             Flag(int(fields[14], 16)))
    if kind is ReplyKind.RANGE_MAXIMUM:
        _expect_count(fields, 6, "MVM reply")
        return RangeMaximum(_parse_enum(fields[0], Range, "MVM range"),
                            _parse_quantity(fields[1:5], "MVM maximum"), _parse_timebase(fields[5]))
    if kind is ReplyKind.RANGE_RESOLUTION:
        _expect_count(fields, 10, "MVR reply")
        return RangeResolution(_parse_enum(fields[0], Range, "MVR range"),
                               _parse_quantity(fields[1:5], "MVR integrated resolution"),
                               _parse_quantity(fields[5:9], "MVR rate resolution"), _parse_timebase(fields[9]))
    if kind is ReplyKind.FAILED_TELEGRAM:
        if not fields:
            raise WrongFieldCount("TFI reply: expected '-' or the failed telegram's fields, got nothing")
        if fields == ["-"]:
            return ()
        for f in fields:
            _parse_text(f, "TFI field")
        return tuple(fields)
    if kind is ReplyKind.JSON:
        text = SEPARATOR.join(fields)
        if not text.startswith(("{", "[")):
            raise BadField(f"{m}: expected a JSON document, got {text[:40]!r}")
        try:
            return json.loads(text.replace(SEPARATOR, ","))
        except ValueError as exc:
            raise BadField(f"{m}: JSON document is malformed: {exc}") from None
    raise AssertionError(kind)  # pragma: no cover


def _echo_fields(req: Request) -> list[str]:
    spec = req.spec
    if spec.echoes_param and req.params:
        return [_encode_param(spec.param, req.params[0], req.mnemonic)]
    return []


def encode_reply(req: Request, value: Any = None) -> bytes:
    """Device side: the successful reply to `req` carrying `value` (typed), with CR LF."""
    encode_request(req)  # the request itself must be valid
    spec = req.spec
    if spec.setter and req.params and value != req.params[0]:
        raise UnidosEncodeError(f"{req.mnemonic}: a setter echoes what it set ({req.params[0]!r}), not {value!r}")
    fields = [req.mnemonic] + _echo_fields(req) + _encode_value(spec, value)
    data = SEPARATOR.join(fields).encode(ENCODING)
    if len(data) > MAX_REPLY_LINE_BYTES:
        raise UnidosEncodeError(f"{req.mnemonic} reply of {len(data)} bytes exceeds {MAX_REPLY_LINE_BYTES}")
    return data + CRLF


def encode_error(code: str) -> bytes:
    """Device side: the error reply `E` + two digits, with CR LF."""
    if not isinstance(code, str) or not _ERROR_RE.fullmatch(code):
        raise UnidosEncodeError(f"error code must be 'E' and two digits, got {code!r}")
    return code.encode("ascii") + CRLF


def decode_reply(req: Request, line: str | bytes, *, max_bytes: int = MAX_REPLY_LINE_BYTES) -> Any:
    """Host side: the reply line to `req` → its typed value, or ErrorReply for `E`+2 digits.

    Raises MnemonicMismatch when the reply answers another command, EchoMismatch when it echoes
    another parameter or value, WrongFieldCount / BadField for truncated or malformed fields."""
    spec = COMMANDS[req.mnemonic]
    text = _line_text(line, max_bytes=max_bytes, ascii_only=False)
    if _ERROR_RE.fullmatch(text):
        return ErrorReply(text)
    if _ERROR_WITH_SEPARATOR_RE.fullmatch(text):   # `E;01`: a form older firmware documents use
        return ErrorReply(text.replace(SEPARATOR, ""))
    if not text:
        raise WrongFieldCount(f"empty reply to {req.mnemonic}")
    if spec.reply is ReplyKind.JSON:
        head, sep, rest = text.partition(SEPARATOR)
        parts = [head] + ([rest] if sep else [])
        if spec.echoes_param and len(parts) == 2:
            echo, sep2, doc = rest.partition(SEPARATOR)
            parts = [head, echo] + ([doc] if sep2 else [])
    else:
        parts = text.split(SEPARATOR)
    mnemonic = parts[0]
    if mnemonic != req.mnemonic:
        shown = mnemonic if _MNEMONIC_RE.fullmatch(mnemonic) else repr(mnemonic[:20])
        raise MnemonicMismatch(f"reply {shown} does not answer {req.mnemonic}: it belongs to another request")
    fields = parts[1:]
    expected_echo = _echo_fields(req)
    if expected_echo:
        if fields[:1] != expected_echo:
            got = fields[0] if fields else "nothing"
            raise EchoMismatch(f"{req.mnemonic} reply echoes {got!r}, the request said {expected_echo[0]!r}")
        fields = fields[1:]
    value = _decode_value(spec, fields)
    if spec.setter and req.params and value != req.params[0]:
        raise EchoMismatch(f"{req.mnemonic} reply reports {fields[0]!r}, the request set "
                           f"{_encode_param(spec.param, req.params[0], req.mnemonic)!r}")
    return value


def split_reply(line: str | bytes, *, max_bytes: int = MAX_REPLY_LINE_BYTES) -> tuple[str, tuple[str, ...]]:
    """Any reply line → (mnemonic or `Enn`, raw fields). For logs and for matching stray replies."""
    text = _line_text(line, max_bytes=max_bytes, ascii_only=False)
    parts = text.split(SEPARATOR)
    return parts[0], tuple(parts[1:])


# --------------------------------------------------------------------------------------------
# Line splitter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadLine:
    """A line the splitter could not accept; `error` says why (LineTooLong, BadEncoding, …)."""

    raw: bytes                 # at most the first 64 bytes, for the log
    error: UnidosDecodeError

    @property
    def reason(self) -> str:
        return self.error.reason


class LineSplitter:
    """Cuts a byte stream into CR LF-terminated lines; resynchronises on CR LF after garbage.

    feed() returns text lines (without CR LF; valid UTF-8 — or ASCII when `ascii_only` — and free
    of control characters) and BadLine items, in order. A line longer than `max_line_bytes` yields
    one BadLine(LineTooLong) as soon as the limit is passed; its rest is skipped up to the next
    CR LF. Memory stays bounded whatever arrives."""

    def __init__(self, max_line_bytes: int, *, ascii_only: bool = False) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be ≥ 1, got {max_line_bytes!r}")
        self.max_line_bytes = max_line_bytes
        self.ascii_only = ascii_only
        self._buffer = bytearray()
        self._skipping = False
        self.lines = 0
        self.bad_lines = 0

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished line (empty while skipping an over-long one)."""
        return bytes(self._buffer) if not self._skipping else b""

    def reset(self) -> None:
        self._buffer.clear()
        self._skipping = False

    def feed(self, data: bytes) -> list[Union[str, BadLine]]:
        out: list[Union[str, BadLine]] = []
        self._buffer += data
        while True:
            end = self._buffer.find(CRLF)
            if end < 0:
                break
            raw = bytes(self._buffer[:end])
            del self._buffer[:end + 2]
            if self._skipping:
                self._skipping = False
                continue
            out.append(self._accept(raw))
        unfinished = len(self._buffer) - (1 if self._buffer.endswith(b"\r") else 0)
        if not self._skipping and unfinished > self.max_line_bytes:
            # keep a trailing CR: it may be the first half of the terminator
            keep = b"\r" if self._buffer.endswith(b"\r") else b""
            raw = bytes(self._buffer[:64])
            self._buffer[:] = keep
            self._skipping = True
            self.bad_lines += 1
            out.append(BadLine(raw, LineTooLong(
                f"line exceeds {self.max_line_bytes} bytes without CR LF; skipped up to the next CR LF")))
        elif self._skipping and len(self._buffer) > 1:
            keep = b"\r" if self._buffer.endswith(b"\r") else b""
            self._buffer[:] = keep
        return out

    def _accept(self, raw: bytes) -> Union[str, BadLine]:
        try:
            text = _line_text(raw + CRLF, max_bytes=self.max_line_bytes, ascii_only=self.ascii_only)
        except UnidosDecodeError as exc:
            self.bad_lines += 1
            return BadLine(raw[:64], exc)
        self.lines += 1
        return text


def error_reply_text(code: str) -> str:
    """`E20` → `E20 (no write permission)` for logs and messages."""
    return f"{code} ({ERROR_MEANINGS.get(code, 'error code not in the UNIDOS reference table')})"

