"""The audit trail's hash chain: how an entry is hashed and how a chain is checked.

Pure functions over rows; the Store appends and reads. Never "repairs" a broken chain: it reports
the first broken link in words a person can act on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterable

from logs.canonical import CanonicalFormError, canonical_json, parse_canonical, sha256_hex

GENESIS_HASH = "0" * 64


class AuditAction(StrEnum):
    """Safety- or security-relevant actions; the store accepts other strings but these are the vocabulary."""

    LOGIN = "login"
    LOGIN_FAILED = "login failed"
    LOGOUT = "logout"
    ACCOUNT_LOCKED = "account locked"
    ACCOUNT_UNLOCKED = "account unlocked"
    USER_CREATED = "user created"
    USER_DISABLED = "user disabled"
    PASSWORD_CHANGED = "password changed"
    PERMISSION_DENIED = "permission denied"
    SIGNATURE_FAILED = "signature failed"
    APPROVAL = "approval"
    RECORD_SIGNED = "record signed"
    DOCUMENT_CREATED = "document created"
    DOCUMENT_FINALISED = "document finalised"
    ADDENDUM_CREATED = "addendum created"
    BEAM_ON = "beam on"
    BEAM_OFF = "beam off"
    INTERLOCK = "interlock"
    EXPORT = "export"
    CONFIGURATION_CHANGE = "configuration change"
    CALIBRATION_ACTIVATED = "calibration activated"
    QA_BASELINE_CHANGED = "qa baseline changed"
    KEY_REGISTERED = "key registered"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    utc: str
    actor: str
    action: str
    details: str  # canonical JSON text
    prev_hash: str
    entry_hash: str


def entry_hash(prev_hash: str, seq: int, utc: str, actor: str, action: str, details: Any) -> str:
    """SHA-256 hex of prev_hash (64 ASCII hex digits) followed by the canonical entry."""
    body = canonical_json({"seq": seq, "utc": utc, "actor": actor, "action": action, "details": details})
    return sha256_hex(prev_hash.encode("ascii") + body)


@dataclass
class ChainVerdict:
    ok: bool
    entries_checked: int
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            n = self.entries_checked
            return f"audit trail intact: {n} entr{'y' if n == 1 else 'ies'}, every link verified"
        return "audit trail BROKEN: " + "; ".join(self.problems)


def verify_chain(entries: Iterable[AuditEntry], head_seq: int, head_hash: str, *, max_problems: int = 20,
                 on_entry: Callable[[AuditEntry, Any], None] | None = None) -> ChainVerdict:
    """Check an ordered (by seq) sequence of entries against each other and against the head row.

    on_entry(entry, details) is called for each entry whose details parsed (used to build indexes
    in the same pass)."""
    problems: list[str] = []
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    last_seq = 0
    last_hash = GENESIS_HASH
    for e in entries:
        count += 1
        if e.seq > expected_seq:
            missing = f"{expected_seq}" if e.seq == expected_seq + 1 else f"{expected_seq}–{e.seq - 1}"
            problems.append(f"entry {missing} is missing (deleted): the sequence jumps from {expected_seq - 1} to {e.seq}")
        elif e.seq < expected_seq:
            problems.append(f"entry {e.seq} appears twice or out of order")
        try:
            details = parse_canonical(e.details.encode("utf-8"))
        except CanonicalFormError as exc:
            problems.append(f"entry {e.seq} was altered: its details are not the canonical text that was hashed ({exc})")
            details = None
        if details is not None:
            if on_entry is not None:
                on_entry(e, details)
            recomputed = entry_hash(e.prev_hash, e.seq, e.utc, e.actor, e.action, details)
            if recomputed != e.entry_hash:
                problems.append(f"entry {e.seq} was altered: its hash does not match its content")
        if e.prev_hash != prev_hash and e.seq == expected_seq:
            problems.append(f"entry {e.seq} does not follow entry {e.seq - 1}: an entry was inserted, removed or edited before it")
        prev_hash = e.entry_hash
        expected_seq = e.seq + 1
        last_seq, last_hash = e.seq, e.entry_hash
        if len(problems) >= max_problems:
            break
    else:
        if head_seq > last_seq:
            problems.append(f"entries {last_seq + 1}–{head_seq} are missing: the chain head says {head_seq} entries were written")
        elif head_seq < last_seq:
            problems.append(f"entries {head_seq + 1}–{last_seq} were added behind the store's back: the chain head says {head_seq}")
        elif head_hash != last_hash:
            problems.append(f"the last entry ({last_seq}) does not match the chain head: it was replaced")
    return ChainVerdict(ok=not problems, entries_checked=count, problems=problems)
