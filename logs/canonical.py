"""Canonical JSON: the one byte form of a record that is hashed and signed.

Rules (documented in docs/records.md): keys sorted, no whitespace, UTF-8 without escaping, floats
written fixed-point with exactly 6 decimals, integers as integers, NaN/Infinity refused. Never emit
the same value two ways: a hash over non-canonical bytes would verify nothing.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

FLOAT_DECIMALS = 6


class CanonicalFormError(ValueError):
    """A value that has no canonical JSON form (NaN, Infinity, a non-string key, an unknown type)."""


_FLOAT_MARK = "\x00"
_MARKED_FLOAT = re.compile(r'"\\u0000(-?[0-9]+\.[0-9]+)\\u0000"')
_FLOAT_TEXT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]{%d}" % FLOAT_DECIMALS)
_ZERO = f"{0.0:.{FLOAT_DECIMALS}f}"


def _float_text(value: float) -> str:
    if not math.isfinite(value):
        raise CanonicalFormError(f"{value!r} cannot be recorded: only finite numbers are allowed")
    text = f"{value:.{FLOAT_DECIMALS}f}"
    if text[0] == "-" and text[1:] == _ZERO:
        text = _ZERO  # -0.000000 and 0.000000 are the same value
    return text


def _prep(value: Any) -> Any:
    """Replace each float by a marked string holding its fixed-point text; check keys and strings."""
    t = type(value)
    if t is str:
        if _FLOAT_MARK in value:
            raise CanonicalFormError("text containing the NUL character cannot be recorded")
        return value
    if t is float:
        return _FLOAT_MARK + _float_text(value) + _FLOAT_MARK
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalFormError(f"object key {k!r} is not a string")
            if _FLOAT_MARK in k:
                raise CanonicalFormError("a key containing the NUL character cannot be recorded")
            out[k] = _prep(v)
        return out
    if t is list or t is tuple:
        return [_prep(v) for v in value]
    if value is None or t is bool or t is int:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _prep(float(value))
    if isinstance(value, str):
        return _prep(str(value))
    if isinstance(value, dict):
        return _prep(dict(value))
    raise CanonicalFormError(f"value of type {type(value).__name__} has no canonical JSON form")


def _dump(prepared: Any) -> str:
    text = json.dumps(prepared, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _MARKED_FLOAT.sub(r"\1", text) if "\\u0000" in text else text


def canonical_json(value: Any) -> bytes:
    """Return the canonical UTF-8 bytes of a JSON-compatible value (dict, list, str, int, float, bool, None)."""
    return _dump(_prep(value)).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """SHA-256 (lower-case hex) of the canonical bytes of value."""
    return sha256_hex(canonical_json(value))


def _float_marker(text: str) -> str:
    if not _FLOAT_TEXT.fullmatch(text) or text == "-" + _ZERO:
        raise CanonicalFormError(f"number {text} is not written with exactly {FLOAT_DECIMALS} decimals")
    return _FLOAT_MARK + text + _FLOAT_MARK


def _refuse_constant(name: str) -> Any:
    raise CanonicalFormError(f"{name} is not a number that can be recorded")


def parse_canonical(data: bytes) -> Any:
    """Parse bytes that must already be canonical; raise CanonicalFormError if they are not.

    A stored or exported record is accepted only if re-encoding it gives back exactly the same bytes,
    so a changed byte anywhere (even in a place JSON would ignore) is detected.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalFormError(f"not valid UTF-8 at byte {exc.start}") from exc
    if "\\u0000" in text:
        raise CanonicalFormError("the text contains an escaped NUL character, which canonical JSON never holds")
    try:
        marked = json.loads(text, parse_float=_float_marker, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise CanonicalFormError(f"not valid JSON: {exc.msg} at character {exc.pos}") from exc
    except RecursionError as exc:
        raise CanonicalFormError("nested too deeply") from exc
    if _dump(marked) != text:
        raise CanonicalFormError("the bytes are valid JSON but not in canonical form: they were changed after writing")
    return json.loads(text)


def utc_now_iso() -> str:
    """The current UTC time as 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (the only timestamp form in records)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
