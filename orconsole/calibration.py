"""Source calibrations: import a calibration file (JSON "orconsole-source-calibration/1" or its CSV
variant) with validation that names file, line and field of every error; keep every version; the
physicist approves one and it becomes the source's active calibration; expiry raises an interlock.

Nothing half-imported: a file with any error imports nothing. Never reads simulator code; never
changes a stored version (a correction is a new import).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from drivers.hal import APPLICATOR_DIAMETERS_CM
from orconsole.qa_models import CALIBRATION_FORMAT, CalibrationApplicator, CalibrationRecord

DEFAULT_MAX_VALIDITY_DAYS = 366  # one calendar year, leap day included
# highest plausible clinical surface dose rate; the simulator's fast TEST source (60x) needs an explicit,
# higher limit (orconsole qa calibration import --test-source)
DEFAULT_MAX_DOSE_RATE_GY_PER_MIN = 10.0
_TOP_FIELDS = ("format", "source_serial", "source_model", "calibration_date", "valid_until", "calibrated_by",
               "nominal_kv", "nominal_ua", "qa_exposure_s", "reference_reading_nc", "applicators")
_OPTIONAL_TOP_FIELDS = ("note", "comment", "generated_by")
_APPLICATOR_FIELDS = ("diameter_cm", "surface_dose_rate_gy_per_min", "assumption", "note")
_REQUIRED_APPLICATOR_FIELDS = ("diameter_cm", "surface_dose_rate_gy_per_min")


@dataclass(frozen=True)
class CalibrationIssue:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}, line {self.line if self.line is not None else '?'}, field '{self.field}': {self.message}"


class CalibrationImportError(ValueError):
    """The file cannot be imported; every problem is listed. Nothing was imported."""

    def __init__(self, file: str, issues: list[CalibrationIssue]) -> None:
        self.file = file
        self.issues = issues
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"calibration file {file}: {len(issues)} problem(s); nothing was imported. Correct the file "
                         f"and import it again:\n{lines}")


class CalibrationInterlock(RuntimeError):
    """No usable calibration for the source: treatment is held. The message says what to do."""


# --------------------------------------------------------------------------------------------
# A small JSON reader that remembers the line of every value (json.loads forgets it)
# --------------------------------------------------------------------------------------------


class _JsonSyntax(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")


class _LinedJson:
    """Parses JSON text into plain values and records `lines[path] = line number` for every value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[str, int] = {}

    def line_at(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def parse(self) -> Any:
        value = self._value("")
        self._ws()
        if self.pos != len(self.text):
            raise _JsonSyntax("unexpected text after the end of the JSON document", self.line_at(self.pos))
        return value

    def _ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n\ufeff":
            self.pos += 1

    def _value(self, path: str) -> Any:
        self._ws()
        if self.pos >= len(self.text):
            raise _JsonSyntax("the file ends in the middle of a value", self.line_at(self.pos))
        self.lines[path] = self.line_at(self.pos)
        ch = self.text[self.pos]
        if ch == "{":
            return self._object(path)
        if ch == "[":
            return self._array(path)
        if ch == '"':
            return self._string()
        for literal, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(literal, self.pos):
                self.pos += len(literal)
                return value
        m = _NUMBER.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            number = m.group(0)
            return float(number) if any(c in number for c in ".eE") else int(number)
        raise _JsonSyntax(f"unexpected character {ch!r} where a value should be", self.line_at(self.pos))

    def _string(self) -> str:
        try:
            value, end = json.decoder.scanstring(self.text, self.pos + 1)
        except json.JSONDecodeError as exc:
            raise _JsonSyntax(f"bad string: {exc.msg}", self.line_at(exc.pos)) from exc
        self.pos = end
        return value

    def _object(self, path: str) -> dict:
        self.pos += 1
        out: dict[str, Any] = {}
        self._ws()
        if self.text.startswith("}", self.pos):
            self.pos += 1
            return out
        while True:
            self._ws()
            if not self.text.startswith('"', self.pos):
                raise _JsonSyntax("expected a quoted field name", self.line_at(self.pos))
            key_pos = self.pos
            key = self._string()
            child = f"{path}.{key}" if path else key
            if key in out:
                raise _JsonSyntax(f"field {key!r} appears twice", self.line_at(key_pos))
            self._ws()
            if not self.text.startswith(":", self.pos):
                raise _JsonSyntax(f"expected ':' after field name {key!r}", self.line_at(self.pos))
            self.pos += 1
            out[key] = self._value(child)
            self._ws()
            if self.text.startswith(",", self.pos):
                self.pos += 1
                continue
            if self.text.startswith("}", self.pos):
                self.pos += 1
                return out
            raise _JsonSyntax("expected ',' or '}' (a missing comma?)", self.line_at(self.pos))

    def _array(self, path: str) -> list:
        self.pos += 1
        out: list[Any] = []
        self._ws()
        if self.text.startswith("]", self.pos):
            self.pos += 1
            return out
        while True:
            out.append(self._value(f"{path}[{len(out)}]"))
            self._ws()
            if self.text.startswith(",", self.pos):
                self.pos += 1
                continue
            if self.text.startswith("]", self.pos):
                self.pos += 1
                return out
            raise _JsonSyntax("expected ',' or ']' (a missing comma?)", self.line_at(self.pos))


# --------------------------------------------------------------------------------------------
# Validation shared by both formats
# --------------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, file: str, lines: dict[str, int], *, today: date, max_validity_days: int) -> None:
        self.file = file
        self.lines = lines
        self.today = today
        self.max_validity_days = max_validity_days
        self.issues: list[CalibrationIssue] = []

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rsplit(".", 1)[0] if "." in path else (path.rsplit("[", 1)[0] if "[" in path else "")
        return self.lines.get("")

    def err(self, path: str, message: str) -> None:
        self.issues.append(CalibrationIssue(self.file, self.line(path), path, message))

    def text(self, data: dict, key: str, path: str, *, required: bool = True) -> str | None:
        if key not in data:
            if required:
                self.err(path, "missing: add it")
            return None
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            self.err(path, f"must be non-empty text (got {value!r})")
            return None
        if value != value.strip():
            self.err(path, f"{value!r} has leading or trailing spaces: remove them")
            return None
        return value

    def number(self, data: dict, key: str, path: str, *, low: float, high: float, unit: str,
               low_inclusive: bool = False) -> float | None:
        if key not in data:
            self.err(path, "missing: add it")
            return None
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.err(path, f"must be a number in {unit} (got {value!r})")
            return None
        too_low = value < low if low_inclusive else value <= low
        if too_low or value > high:
            self.err(path, f"{value} {unit} is outside {'[' if low_inclusive else '('}{low:g}, {high:g}] {unit}: "
                           "check the certificate")
            return None
        return float(value)

    def day(self, data: dict, key: str, path: str) -> date | None:
        if key not in data:
            self.err(path, "missing: add it")
            return None
        value = data[key]
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            self.err(path, f"must be a date written YYYY-MM-DD (got {value!r})")
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.err(path, f"{value!r} is not a calendar date")
            return None


def validate_calibration_data(data: Any, *, file: str, lines: dict[str, int], file_sha256: str,
                              today: date | None = None, max_validity_days: int = DEFAULT_MAX_VALIDITY_DAYS,
                              max_dose_rate_gy_per_min: float = DEFAULT_MAX_DOSE_RATE_GY_PER_MIN) -> CalibrationRecord:
    """Check parsed calibration data; return the record or raise CalibrationImportError listing every issue."""
    today = today or date.today()
    c = _Checker(file, lines, today=today, max_validity_days=max_validity_days)
    if not isinstance(data, dict):
        c.err("", "the file must hold one calibration object")
        raise CalibrationImportError(file, c.issues)
    for key in data:
        if key not in _TOP_FIELDS and key not in _OPTIONAL_TOP_FIELDS:
            c.err(key, f"unknown field (a typo? expected one of {', '.join(_TOP_FIELDS)})")
    fmt = data.get("format")
    if fmt != CALIBRATION_FORMAT:
        c.err("format", f"must be {CALIBRATION_FORMAT!r} (got {fmt!r}): this is not a calibration file ORConsole reads")
    serial = c.text(data, "source_serial", "source_serial")
    model = c.text(data, "source_model", "source_model")
    by = c.text(data, "calibrated_by", "calibrated_by")
    cal_day = c.day(data, "calibration_date", "calibration_date")
    until = c.day(data, "valid_until", "valid_until")
    if cal_day is not None and cal_day > today:
        c.err("calibration_date", f"{cal_day} is in the future (today is {today}): check the date")
    if cal_day is not None and until is not None:
        if until < cal_day:
            c.err("valid_until", f"{until} is before calibration_date {cal_day}")
        elif until > cal_day + timedelta(days=max_validity_days):
            c.err("valid_until", f"{until} is more than {max_validity_days} days after calibration_date {cal_day}: "
                                 f"this site accepts calibrations valid for at most {max_validity_days} days")
    kv = c.number(data, "nominal_kv", "nominal_kv", low=0, high=50.0, unit="kV")
    ua = c.number(data, "nominal_ua", "nominal_ua", low=0, high=40.0, unit="µA")
    exposure_s = c.number(data, "qa_exposure_s", "qa_exposure_s", low=0, high=600.0, unit="s")
    reference_nc = c.number(data, "reference_reading_nc", "reference_reading_nc", low=0, high=1e6, unit="nC")
    applicators: list[CalibrationApplicator] = []
    raw = data.get("applicators")
    if "applicators" not in data:
        c.err("applicators", "missing: add the list of applicators with their surface dose rates")
    elif not isinstance(raw, list) or not raw:
        c.err("applicators", "must be a non-empty list of applicators")
    else:
        seen: dict[float, str] = {}
        sizes = ", ".join(f"{d:.1f}" for d in APPLICATOR_DIAMETERS_CM)
        for i, item in enumerate(raw):
            base = f"applicators[{i}]"
            if not isinstance(item, dict):
                c.err(base, f"must be an object with {', '.join(_REQUIRED_APPLICATOR_FIELDS)}")
                continue
            for key in item:
                if key not in _APPLICATOR_FIELDS:
                    c.err(f"{base}.{key}", f"unknown field (expected {', '.join(_APPLICATOR_FIELDS)})")
            diameter = c.number(item, "diameter_cm", f"{base}.diameter_cm", low=0, high=10.0, unit="cm")
            if diameter is not None and diameter not in APPLICATOR_DIAMETERS_CM:
                c.err(f"{base}.diameter_cm", f"no spherical applicator of {diameter} cm exists: use one of {sizes} cm")
                diameter = None
            if diameter is not None:
                if diameter in seen:
                    c.err(f"{base}.diameter_cm", f"{diameter} cm appears twice (also {seen[diameter]}): keep one")
                    diameter = None
                else:
                    seen[diameter] = base
            rate = c.number(item, "surface_dose_rate_gy_per_min", f"{base}.surface_dose_rate_gy_per_min",
                            low=0, high=max_dose_rate_gy_per_min, unit="Gy/min")
            assumption = item.get("assumption", False)
            if not isinstance(assumption, bool):
                c.err(f"{base}.assumption", f"must be true or false (got {assumption!r})")
                assumption = None
            note = item.get("note", "")
            if note is None:
                note = ""
            if not isinstance(note, str):
                c.err(f"{base}.note", f"must be text (got {note!r})")
                note = None
            if None not in (diameter, rate, assumption, note):
                applicators.append(CalibrationApplicator(diameter_cm=diameter, surface_dose_rate_gy_per_min=rate,
                                                         assumption=assumption, note=note))
    if c.issues:
        raise CalibrationImportError(file, c.issues)
    return CalibrationRecord(source_serial=serial, source_model=model, calibration_date=cal_day, valid_until=until,
                             calibrated_by=by, nominal_kv=kv, nominal_ua=ua, qa_exposure_s=exposure_s,
                             reference_reading_nc=reference_nc, applicators=tuple(applicators),
                             imported_from=file, file_sha256=file_sha256)


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def parse_calibration_json(text: str, *, file: str = "<calibration>", file_sha256: str = "",
                           today: date | None = None, max_validity_days: int = DEFAULT_MAX_VALIDITY_DAYS,
                           max_dose_rate_gy_per_min: float = DEFAULT_MAX_DOSE_RATE_GY_PER_MIN) -> CalibrationRecord:
    reader = _LinedJson(text)
    try:
        data = reader.parse()
    except _JsonSyntax as exc:
        raise CalibrationImportError(file, [CalibrationIssue(file, exc.line, "(syntax)",
                                                             f"not valid JSON: {exc}")]) from exc
    return validate_calibration_data(data, file=file, lines=reader.lines, file_sha256=file_sha256, today=today,
                                     max_validity_days=max_validity_days,
                                     max_dose_rate_gy_per_min=max_dose_rate_gy_per_min)


_CSV_TABLE_HEADER = "diameter_cm"


def _csv_scalar(text: str, key: str) -> Any:
    """CSV cells are text: numbers and booleans are read for the fields that hold them."""
    numeric = {"nominal_kv", "nominal_ua", "qa_exposure_s", "reference_reading_nc", "diameter_cm",
               "surface_dose_rate_gy_per_min"}
    if key in numeric:
        try:
            value = float(text)
        except ValueError:
            return text  # reported as "must be a number" by the checker
        return value
    if key == "assumption":
        low = text.strip().lower()
        if low in ("true", "yes", "1"):
            return True
        if low in ("false", "no", "0", ""):
            return False
        return text
    return text


def parse_calibration_csv(text: str, *, file: str = "<calibration>", file_sha256: str = "",
                          today: date | None = None, max_validity_days: int = DEFAULT_MAX_VALIDITY_DAYS,
                          max_dose_rate_gy_per_min: float = DEFAULT_MAX_DOSE_RATE_GY_PER_MIN) -> CalibrationRecord:
    """CSV variant: `key,value` rows, then the applicator table under a `diameter_cm,...` header row.
    Blank rows and rows starting with '#' are ignored (see docs/calibration-format.md)."""
    data: dict[str, Any] = {}
    lines: dict[str, int] = {"": 1}
    issues: list[CalibrationIssue] = []
    header: list[str] | None = None
    applicators: list[dict[str, Any]] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        row = [cell.strip() for cell in row]
        if header is None and row[0].lstrip("\ufeff") == _CSV_TABLE_HEADER:
            header = row
            lines["applicators"] = line_no
            for column in header:
                if column not in _APPLICATOR_FIELDS:
                    issues.append(CalibrationIssue(file, line_no, f"applicators.{column or '(empty column)'}",
                                                   f"unknown column (expected {', '.join(_APPLICATOR_FIELDS)})"))
            for required in _REQUIRED_APPLICATOR_FIELDS:
                if required not in header:
                    issues.append(CalibrationIssue(file, line_no, f"applicators.{required}", "column missing: add it"))
            continue
        if header is None:
            key = row[0].lstrip("\ufeff")
            if len(row) != 2:
                issues.append(CalibrationIssue(file, line_no, key or "(empty)",
                                               f"expected 'field,value' (2 cells), found {len(row)} cells"))
                continue
            if key in data:
                issues.append(CalibrationIssue(file, line_no, key, f"appears twice (first on line {lines[key]})"))
                continue
            data[key] = _csv_scalar(row[1], key)
            lines[key] = line_no
            continue
        index = len(applicators)
        base = f"applicators[{index}]"
        lines[base] = line_no
        if len(row) != len(header):
            issues.append(CalibrationIssue(file, line_no, base,
                                           f"{len(row)} cells but the header has {len(header)}: check the commas "
                                           "(quote a note that contains a comma)"))
            applicators.append({})
            continue
        item = {}
        for column, cell in zip(header, row):
            if column in _APPLICATOR_FIELDS:
                item[column] = _csv_scalar(cell, column)
                lines[f"{base}.{column}"] = line_no
        applicators.append(item)
    if header is not None:
        data["applicators"] = applicators
    if issues:
        # structural problems first; the field checks below would only repeat them
        raise CalibrationImportError(file, issues)
    return validate_calibration_data(data, file=file, lines=lines, file_sha256=file_sha256, today=today,
                                     max_validity_days=max_validity_days,
                                     max_dose_rate_gy_per_min=max_dose_rate_gy_per_min)


def read_calibration_file(path: str | Path, *, today: date | None = None,
                          max_validity_days: int = DEFAULT_MAX_VALIDITY_DAYS,
                          max_dose_rate_gy_per_min: float = DEFAULT_MAX_DOSE_RATE_GY_PER_MIN) -> CalibrationRecord:
    """Read and validate a calibration file (.json or .csv). Raises CalibrationImportError; imports nothing."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalibrationImportError(name, [CalibrationIssue(name, None, "(file)",
                                                             f"cannot read the file ({exc.strerror or exc})")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise CalibrationImportError(name, [CalibrationIssue(name, line, "(encoding)",
                                                             "not UTF-8 text: save the file as UTF-8")]) from exc
    digest = hashlib.sha256(raw).hexdigest()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return parse_calibration_csv(text, file=name, file_sha256=digest, today=today,
                                     max_validity_days=max_validity_days,
                                     max_dose_rate_gy_per_min=max_dose_rate_gy_per_min)
    if suffix == ".json" or text.lstrip("\ufeff \t\r\n").startswith("{"):
        return parse_calibration_json(text, file=name, file_sha256=digest, today=today,
                                      max_validity_days=max_validity_days,
                                      max_dose_rate_gy_per_min=max_dose_rate_gy_per_min)
    raise CalibrationImportError(name, [CalibrationIssue(name, None, "(file)",
                                                         "unknown format: name the file .json or .csv")])


# --------------------------------------------------------------------------------------------
# Versions, approval, the active calibration per source, expiry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredCalibration:
    doc_id: str
    version: int                          # 1, 2, … per source, in import order
    record: CalibrationRecord
    imported_by: str
    imported_utc: str


class CalibrationRepository(Protocol):
    def add(self, record: CalibrationRecord, *, actor: str) -> StoredCalibration: ...
    def versions(self, source_serial: str) -> list[StoredCalibration]: ...
    def activate(self, source_serial: str, doc_id: str, *, actor: str) -> None: ...
    def active(self, source_serial: str) -> StoredCalibration | None: ...


class InMemoryCalibrationRepository:
    def __init__(self) -> None:
        self._items: list[StoredCalibration] = []
        self._active: dict[str, str] = {}

    def add(self, record: CalibrationRecord, *, actor: str) -> StoredCalibration:
        version = 1 + sum(1 for s in self._items if s.record.source_serial == record.source_serial)
        stored = StoredCalibration(doc_id=f"cal-{record.source_serial}-v{version}", version=version, record=record,
                                   imported_by=actor, imported_utc=datetime.now(timezone.utc).isoformat())
        self._items.append(stored)
        return stored

    def versions(self, source_serial: str) -> list[StoredCalibration]:
        return [s for s in self._items if s.record.source_serial == source_serial]

    def activate(self, source_serial: str, doc_id: str, *, actor: str) -> None:
        if not any(s.doc_id == doc_id and s.record.source_serial == source_serial for s in self._items):
            raise KeyError(f"no calibration {doc_id} for source {source_serial}")
        self._active[source_serial] = doc_id

    def active(self, source_serial: str) -> StoredCalibration | None:
        doc_id = self._active.get(source_serial)
        return next((s for s in self._items if s.doc_id == doc_id), None)


CALIBRATION_DOC_KIND = "calibration"


class StoreCalibrationRepository:
    """Calibration versions as final 'calibration' documents in logs.Store (subject = source serial);
    the active one is the store's active_calibrations row (set_active_calibration is audited)."""

    def __init__(self, store) -> None:
        self.store = store

    def _stored(self, doc, version: int) -> StoredCalibration:
        return StoredCalibration(doc_id=doc.doc_id, version=version,
                                 record=CalibrationRecord.model_validate(doc.data), imported_by=doc.created_by,
                                 imported_utc=doc.created_utc)

    def add(self, record: CalibrationRecord, *, actor: str) -> StoredCalibration:
        doc = self.store.create_document(CALIBRATION_DOC_KIND, record.model_dump(mode="json"), actor=actor,
                                         subject=record.source_serial, final=True)
        return self._stored(doc, len(self.versions(record.source_serial)))

    def versions(self, source_serial: str) -> list[StoredCalibration]:
        docs = [d for d in self.store.find_documents(kind=CALIBRATION_DOC_KIND, subject=source_serial, status="final")
                if isinstance(d.data, dict) and d.data.get("format") == CALIBRATION_FORMAT]
        return [self._stored(d, i) for i, d in enumerate(docs, start=1)]

    def activate(self, source_serial: str, doc_id: str, *, actor: str) -> None:
        self.store.set_active_calibration(source_serial, doc_id, actor=actor)

    def active(self, source_serial: str) -> StoredCalibration | None:
        doc = self.store.active_calibration(source_serial)
        if doc is None:
            return None
        for stored in self.versions(source_serial):
            if stored.doc_id == doc.doc_id:
                return stored
        return None


def import_calibration(repo: CalibrationRepository, path: str | Path, *, actor: str, today: date | None = None,
                       max_validity_days: int = DEFAULT_MAX_VALIDITY_DAYS,
                       max_dose_rate_gy_per_min: float = DEFAULT_MAX_DOSE_RATE_GY_PER_MIN) -> StoredCalibration:
    """Validate the whole file first, then store it as a new version (not yet active: a physicist approves)."""
    record = read_calibration_file(path, today=today, max_validity_days=max_validity_days,
                                   max_dose_rate_gy_per_min=max_dose_rate_gy_per_min)
    for existing in repo.versions(record.source_serial):
        if existing.record.file_sha256 == record.file_sha256:
            raise CalibrationImportError(str(path), [CalibrationIssue(
                str(path), None, "(file)", f"this exact file is already stored as version {existing.version} "
                                           f"({existing.doc_id}) of source {record.source_serial}: nothing imported")])
    return repo.add(record, actor=actor)


def approve_calibration(repo: CalibrationRepository, source_serial: str, doc_id: str, *, physicist: str,
                        today: date | None = None, sign=None) -> StoredCalibration:
    """The physicist approves a stored version: it becomes the source's active calibration.

    `sign(doc_id)`: the signature hook (orconsole.identity.IdentityService.sign with the meaning
    'approved calibration', bound to the session and password by the caller); None only in tests."""
    today = today or date.today()
    stored = next((s for s in repo.versions(source_serial) if s.doc_id == doc_id), None)
    if stored is None:
        raise CalibrationInterlock(f"there is no calibration {doc_id} for source {source_serial}: import it first")
    if stored.record.valid_until < today:
        raise CalibrationInterlock(f"calibration {doc_id} of source {source_serial} expired on "
                                   f"{stored.record.valid_until}: it cannot be approved; import a current calibration")
    if sign is not None:
        sign(doc_id)
    repo.activate(source_serial, doc_id, actor=physicist)
    return stored


def active_calibration_or_interlock(repo: CalibrationRepository, source_serial: str, *, today: date | None = None,
                                    max_validity_days: int = DEFAULT_MAX_VALIDITY_DAYS) -> CalibrationRecord:
    """The active calibration of the source, or CalibrationInterlock saying why treatment is held."""
    today = today or date.today()
    stored = repo.active(source_serial)
    if stored is None:
        raise CalibrationInterlock(f"source {source_serial} has no active calibration: the physicist must import "
                                   "and approve its calibration before QA or treatment")
    record = stored.record
    expiry = min(record.valid_until, record.calibration_date + timedelta(days=max_validity_days))
    if today > expiry:
        raise CalibrationInterlock(f"the calibration of source {source_serial} (version {stored.version}, dated "
                                   f"{record.calibration_date}) expired on {expiry}: no treatment; the physicist must "
                                   "have the source calibrated and import and approve the new calibration")
    if today < record.calibration_date:
        raise CalibrationInterlock(f"the calibration of source {source_serial} is dated {record.calibration_date}, "
                                   f"after today ({today}): check the console's date")
    return record


def calibration_interlock_reason(repo: CalibrationRepository, source_serial: str, *, today: date | None = None,
                                 max_validity_days: int = DEFAULT_MAX_VALIDITY_DAYS) -> str | None:
    """None when the source has a usable active calibration, else the interlock text."""
    try:
        active_calibration_or_interlock(repo, source_serial, today=today, max_validity_days=max_validity_days)
    except CalibrationInterlock as exc:
        return str(exc)
    return None
