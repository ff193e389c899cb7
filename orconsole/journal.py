"""The local treatment journal: append-only JSON lines, each with its own checksum, fsync'd per entry.

Written before beam on and at least every second during beam, so that after a crash the console can
tell what was delivered. Never rewrite or truncate a journal; never swallow a write failure (raise
JournalWriteError: the supervisor turns it into the journal-write-failure interlock). Reading must
never crash on a torn or corrupt line: it reports it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

JOURNAL_FORMAT = 1

# Entry kinds
TREATMENT_OPENED = "treatment_opened"      # plan, preset: written (fsync) before the first beam on
BEAM_ON = "beam_on"
PROGRESS = "progress"                      # elapsed, doses: at least every second during beam
BEAM_OFF = "beam_off"
TREATMENT_CLOSED = "treatment_closed"      # completed / terminated: the treatment is finished
RECOVERY_ACKNOWLEDGED = "recovery_acknowledged"   # an unfinished treatment was taken over after restart
IRM_RECONCILED = "irm_reconciled"          # a closed delivery's IRM dose settled after its link was lost

CLOSING_KINDS = frozenset({TREATMENT_CLOSED, RECOVERY_ACKNOWLEDGED})


class JournalWriteError(OSError):
    """The journal could not be appended or synced. `message` says what and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Clock(Protocol):
    def now_s(self) -> float: ...


def _checksum(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _encode(body: dict[str, Any]) -> bytes:
    line = dict(body)
    line["sum"] = _checksum(body)
    return (json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            + "\n").encode("utf-8")


class Journal:
    """Appends entries to one journal file. Each append is written and fsync'd before it returns."""

    def __init__(self, path: str | Path, *, clock: _Clock, wall_clock: Callable[[], datetime] | None = None,
                 fsync: Callable[[int], None] = os.fsync) -> None:
        self.path = Path(path)
        self._clock = clock
        self._wall = wall_clock or (lambda: datetime.now(timezone.utc))
        self._fsync = fsync
        existing = read_journal(self.path) if self.path.exists() else None
        self._seq = existing.last_seq if existing else 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            if created:
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    self._fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise JournalWriteError(
                f"cannot open the treatment journal {self.path} for appending ({exc.strerror or exc}): "
                "check the journal directory exists, is writable and the disk is not full") from exc
        if existing is not None and existing.torn_tail:
            # Terminate the torn line so the next entry starts on a line of its own.
            self._write_raw(b"\n")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_raw(self, data: bytes) -> None:
        if self._fd < 0:
            raise JournalWriteError(f"the treatment journal {self.path} is closed: nothing was written")
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self._fsync(self._fd)
        except OSError as exc:
            raise JournalWriteError(
                f"writing the treatment journal {self.path} failed ({exc.strerror or exc}): the delivery cannot "
                "be recorded locally; free disk space or fix the journal directory, then have service clear "
                "the journal interlock") from exc

    def append(self, kind: str, treatment_id: str, **data: Any) -> dict[str, Any]:
        """Append one entry (written and fsync'd before returning). Returns the entry as written."""
        body = {"v": JOURNAL_FORMAT, "seq": self._seq + 1, "kind": kind, "treatment_id": treatment_id,
                "mono_s": self._clock.now_s(), "wall": self._wall().isoformat(), "data": data}
        try:
            encoded = _encode(body)
        except (TypeError, ValueError) as exc:
            raise JournalWriteError(f"journal entry {kind!r} cannot be encoded ({exc}): this is a console bug; "
                                    "the entry was not written") from exc
        self._write_raw(encoded)
        self._seq += 1
        return body

    # Convenience wrappers naming what the supervisor writes ---------------------------------------

    def treatment_opened(self, treatment_id: str, *, plan_id: str, plan_hash: str, preset_s: float,
                         prescription_dose_gy: float, dose_to_deliver_gy: float, applicator_cm: float,
                         source_serial: str, delivery_type: str) -> dict[str, Any]:
        return self.append(TREATMENT_OPENED, treatment_id, plan_id=plan_id, plan_hash=plan_hash,
                           preset_s=preset_s, prescription_dose_gy=prescription_dose_gy,
                           dose_to_deliver_gy=dose_to_deliver_gy, applicator_cm=applicator_cm,
                           source_serial=source_serial, delivery_type=delivery_type)

    def progress(self, treatment_id: str, *, elapsed_s: float, primary_dose_gy: float, irm_dose_gy: float,
                 beam_on: bool, **extra: Any) -> dict[str, Any]:
        return self.append(PROGRESS, treatment_id, elapsed_s=elapsed_s, primary_dose_gy=primary_dose_gy,
                           irm_dose_gy=irm_dose_gy, beam_on=beam_on, **extra)

    def treatment_closed(self, treatment_id: str, *, status: str, elapsed_s: float, primary_dose_gy: float,
                         irm_dose_gy: float, reason: str) -> dict[str, Any]:
        return self.append(TREATMENT_CLOSED, treatment_id, status=status, elapsed_s=elapsed_s,
                           primary_dose_gy=primary_dose_gy, irm_dose_gy=irm_dose_gy, reason=reason)


@dataclass(frozen=True)
class UnfinishedTreatment:
    """A treatment opened in the journal but never closed: what is known of it."""

    treatment_id: str
    plan_id: str
    plan_hash: str
    preset_s: float
    elapsed_s: float                 # last journalled timer reading
    primary_dose_gy: float
    irm_dose_gy: float
    beam_was_on: bool                # the last entry said the beam was on
    last_seq: int
    last_mono_s: float
    opened: dict[str, Any]


@dataclass(frozen=True)
class JournalProblem:
    line_number: int
    reason: str


@dataclass(frozen=True)
class JournalReadout:
    entries: tuple[dict[str, Any], ...]
    torn_tail: bool                  # the last line was incomplete (crash during a write): tolerated
    problems: tuple[JournalProblem, ...] = field(default=())   # corrupt lines (torn tail included)
    unfinished: tuple[UnfinishedTreatment, ...] = field(default=())

    @property
    def last_seq(self) -> int:
        return max((e["seq"] for e in self.entries), default=0)

    @property
    def report(self) -> str:
        parts = [f"{len(self.entries)} journal entries read"]
        if self.torn_tail:
            parts.append("the last line was torn (console stopped during a write) and was ignored")
        others = [p for p in self.problems if not (self.torn_tail and p is self.problems[-1])]
        if others:
            parts.append(f"{len(others)} corrupt line(s): "
                         + "; ".join(f"line {p.line_number}: {p.reason}" for p in others))
        if self.unfinished:
            parts.append(f"{len(self.unfinished)} unfinished treatment(s): "
                         + ", ".join(u.treatment_id for u in self.unfinished))
        return "; ".join(parts) + "."


def _decode(line: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        entry = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not a JSON line ({exc})"
    if not isinstance(entry, dict) or "sum" not in entry:
        return None, "no checksum"
    body = {k: v for k, v in entry.items() if k != "sum"}
    try:
        expected = _checksum(body)
    except (TypeError, ValueError) as exc:
        return None, f"cannot be checksummed ({exc})"
    if entry["sum"] != expected:
        return None, "checksum mismatch (the line was altered or damaged)"
    for key, kind in (("seq", int), ("kind", str), ("treatment_id", str), ("data", dict)):
        if not isinstance(body.get(key), kind):
            return None, f"field {key!r} missing or of the wrong type"
    return body, ""


def read_journal(path: str | Path) -> JournalReadout:
    """Read a journal back. Never raises for bad content; a missing file reads as empty."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return JournalReadout(entries=(), torn_tail=False)
    lines = raw.split(b"\n")
    # raw ends with "\n" when the last write completed: then the final split element is empty.
    last_complete = raw.endswith(b"\n") or raw == b""
    entries: list[dict[str, Any]] = []
    problems: list[JournalProblem] = []
    torn = False
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        if is_last and last_complete:
            break
        if not line.strip():
            continue
        entry, reason = _decode(line)
        if entry is None:
            if is_last:
                torn = True
                reason = f"torn last line: {reason}"
            problems.append(JournalProblem(number, reason))
            continue
        entries.append(entry)
    return JournalReadout(entries=tuple(entries), torn_tail=torn, problems=tuple(problems),
                          unfinished=_unfinished(entries))


def _num(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def _unfinished(entries: list[dict[str, Any]]) -> tuple[UnfinishedTreatment, ...]:
    opened: dict[str, dict[str, Any]] = {}
    last: dict[str, dict[str, Any]] = {}
    progress: dict[str, dict[str, Any]] = {}
    for entry in entries:
        tid = entry["treatment_id"]
        if entry["kind"] == TREATMENT_OPENED:
            opened[tid] = entry
        if tid in opened:
            last[tid] = entry
            if entry["kind"] == PROGRESS:
                progress[tid] = entry
            if entry["kind"] in CLOSING_KINDS:
                opened.pop(tid)
                last.pop(tid, None)
                progress.pop(tid, None)
    found = []
    for tid, op in opened.items():
        tail = last[tid]
        prog = progress.get(tid, {}).get("data", {})
        data = op["data"]
        beam_was_on = tail["kind"] == BEAM_ON or (tail["kind"] == PROGRESS and bool(tail["data"].get("beam_on")))
        found.append(UnfinishedTreatment(
            treatment_id=tid, plan_id=str(data.get("plan_id", "")), plan_hash=str(data.get("plan_hash", "")),
            preset_s=_num(data.get("preset_s"), float("nan")), elapsed_s=_num(prog.get("elapsed_s"), 0.0),
            primary_dose_gy=_num(prog.get("primary_dose_gy"), 0.0), irm_dose_gy=_num(prog.get("irm_dose_gy"), 0.0),
            beam_was_on=beam_was_on, last_seq=int(tail["seq"]), last_mono_s=_num(tail.get("mono_s"), 0.0),
            opened=dict(data)))
    return tuple(found)
