"""Canonical JSON: the one byte form of a record that is hashed and signed.

Rules (documented in docs/records.md): keys sorted, no whitespace, UTF-8 without escaping, floats
written fixed-point with exactly 6 decimals, integers as integers, NaN/Infinity refused. Never emit
the same value two ways: a hash over non-canonical bytes would verify nothing.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

FLOAT_DECIMALS = 6


class CanonicalFormError(ValueError):
    """A value that has no canonical JSON form (NaN, Infinity, a non-string key, an unknown type)."""


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalFormError(f"{value!r} cannot be recorded: only finite numbers are allowed")
        text = f"{value:.{FLOAT_DECIMALS}f}"
        if text.lstrip("-").strip("0.") == "":
            text = f"{0.0:.{FLOAT_DECIMALS}f}"  # -0.000000 and 0.000000 are the same value
        out.append(text)
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key in sorted(value):
            if not isinstance(key, str):
                raise CanonicalFormError(f"object key {key!r} is not a string")
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise CanonicalFormError(f"value of type {type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    """Return the canonical UTF-8 bytes of a JSON-compatible value (dict, list, str, int, float, bool, None)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """SHA-256 (lower-case hex) of the canonical bytes of value."""
    return sha256_hex(canonical_json(value))


def parse_canonical(data: bytes) -> Any:
    """Parse bytes that must already be canonical; raise CanonicalFormError if they are not.

    A stored or exported record is accepted only if re-encoding it gives back exactly the same bytes,
    so a changed byte anywhere (even in a place JSON would ignore) is detected.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalFormError(f"not valid UTF-8 at byte {exc.start}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CanonicalFormError(f"not valid JSON: {exc.msg} at character {exc.pos}") from exc
    if canonical_json(value) != data:
        raise CanonicalFormError("the bytes are valid JSON but not in canonical form: they were changed after writing")
    return value


def utc_now_iso() -> str:
    """The current UTC time as 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (the only timestamp form in records)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
