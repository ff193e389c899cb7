"""Calibration import: both formats, every kind of error named by file, line and field; nothing
half-imported; versions; approval; the active calibration; expiry raises an interlock."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from orconsole.calibration import (CalibrationImportError, CalibrationInterlock, InMemoryCalibrationRepository,
                                   StoreCalibrationRepository, active_calibration_or_interlock, approve_calibration,
                                   calibration_interlock_reason, import_calibration, read_calibration_file)

TODAY = date(2026, 11, 26)


def good_document(**changes) -> dict:
    doc = {
        "format": "orconsole-source-calibration/1",
        "source_serial": "XRS-TEST-1",
        "source_model": "test source",
        "calibration_date": "2026-06-01",
        "valid_until": "2027-06-01",
        "calibrated_by": "A. Physicist",
        "nominal_kv": 50.0,
        "nominal_ua": 40.0,
        "qa_exposure_s": 60.0,
        "reference_reading_nc": 3.0,
        "applicators": [
            {"diameter_cm": 3.0, "surface_dose_rate_gy_per_min": 0.87, "assumption": False, "note": "published"},
            {"diameter_cm": 4.0, "surface_dose_rate_gy_per_min": 0.80, "assumption": False, "note": "published"},
            {"diameter_cm": 1.5, "surface_dose_rate_gy_per_min": 2.40, "assumption": True, "note": "ASSUMPTION"},
        ],
    }
    doc.update(changes)
    return doc


def write_json(tmp_path, doc, name="cal.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return str(path)


def line_of(path: str, needle: str, occurrence: int = 1) -> int:
    seen = 0
    for number, line in enumerate(open(path, encoding="utf-8").read().splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def issues_of(path: str):
    with pytest.raises(CalibrationImportError) as info:
        read_calibration_file(path, today=TODAY)
    return info.value.issues


def test_a_good_json_file_reads_with_nanocoulomb_converted_to_coulomb(tmp_path):
    record = read_calibration_file(write_json(tmp_path, good_document()), today=TODAY)
    assert record.source_serial == "XRS-TEST-1"
    assert record.reference_reading_c == pytest.approx(3.0e-9)
    cal = record.to_source_calibration()
    assert cal.dose_rate_for(1.5).assumption is True
    assert cal.dose_rate_for(3.0).surface_dose_rate_gy_per_min == 0.87
    assert cal.qa_reference_reading_c == pytest.approx(3.0e-9)


def test_the_simulator_document_is_readable_without_importing_simulators_code(tmp_path):
    # the test may use the simulator to produce the file; the importer only reads the file
    from simulators.sources import calibration_document

    path = write_json(tmp_path, calibration_document("clinical", calibrated_on=TODAY - timedelta(days=10)))
    record = read_calibration_file(path, today=TODAY)
    assert record.source_serial == "XRS-SIM-0412"
    assert len(record.applicators) == 8
    assert record.to_source_calibration().dose_rate_for(3.0).surface_dose_rate_gy_per_min == 0.87


def test_a_test_source_faster_than_any_clinical_one_needs_an_explicit_limit(tmp_path):
    from simulators.sources import calibration_document

    path = write_json(tmp_path, calibration_document("fast", calibrated_on=TODAY - timedelta(days=10)))
    issues = issues_of(path)
    assert len(issues) == 8 and all("Gy/min is outside" in i.message for i in issues)
    record = read_calibration_file(path, today=TODAY, max_dose_rate_gy_per_min=200.0)
    assert record.applicators[0].surface_dose_rate_gy_per_min == 144.0
    import orconsole.calibration as module
    assert "simulators" not in open(module.__file__, encoding="utf-8").read().split('"""', 2)[2]


@pytest.mark.parametrize("field,value,needle,fragment", [
    ("nominal_kv", 80.0, '"nominal_kv"', "outside"),
    ("nominal_ua", "forty", '"nominal_ua"', "must be a number"),
    ("reference_reading_nc", -1.0, '"reference_reading_nc"', "outside"),
    ("qa_exposure_s", 0, '"qa_exposure_s"', "outside"),
    ("calibration_date", "01/06/2026", '"calibration_date"', "YYYY-MM-DD"),
    ("calibration_date", "2026-02-30", '"calibration_date"', "not a calendar date"),
    ("calibration_date", "2027-01-01", '"calibration_date"', "future"),
    ("valid_until", "2026-05-01", '"valid_until"', "before calibration_date"),
    ("valid_until", "2028-06-01", '"valid_until"', "at most"),
    ("calibrated_by", "", '"calibrated_by"', "non-empty"),
    ("source_serial", " XRS-1", '"source_serial"', "spaces"),
    ("format", "something-else/2", '"format"', "not a calibration file"),
    ("applicators", [], '"applicators"', "non-empty"),
])
def test_each_top_level_error_names_file_line_and_field(tmp_path, field, value, needle, fragment):
    path = write_json(tmp_path, good_document(**{field: value}))
    issues = issues_of(path)
    assert len(issues) == 1, issues
    issue = issues[0]
    assert issue.file == path and issue.field == field and issue.line == line_of(path, needle)
    assert fragment in issue.message
    assert path in str(issue) and f"line {issue.line}" in str(issue) and field in str(issue)


def test_missing_and_unknown_fields_are_named(tmp_path):
    doc = good_document()
    del doc["qa_exposure_s"]
    doc["reference_reading_c"] = 3e-9
    path = write_json(tmp_path, doc)
    by_field = {i.field: i for i in issues_of(path)}
    assert "missing" in by_field["qa_exposure_s"].message
    assert "unknown field" in by_field["reference_reading_c"].message
    assert by_field["reference_reading_c"].line == line_of(path, '"reference_reading_c"')


def test_applicator_errors_name_the_entry_and_its_line(tmp_path):
    doc = good_document()
    doc["applicators"] = [
        {"diameter_cm": 3.0, "surface_dose_rate_gy_per_min": 0.87},
        {"diameter_cm": 3.2, "surface_dose_rate_gy_per_min": 0.85},          # no such applicator
        {"diameter_cm": 4.0, "surface_dose_rate_gy_per_min": 0.0},           # rate not positive
        {"diameter_cm": 3.0, "surface_dose_rate_gy_per_min": 0.9},           # duplicate
        {"diameter_cm": 5.0, "surface_dose_rate_gy_per_min": 0.45, "assumption": "no", "colour": "red"},
        {"surface_dose_rate_gy_per_min": 0.6},                               # diameter missing
    ]
    path = write_json(tmp_path, doc)
    by_field = {i.field: i for i in issues_of(path)}
    assert by_field["applicators[1].diameter_cm"].line == line_of(path, '"diameter_cm": 3.2')
    assert "no spherical applicator" in by_field["applicators[1].diameter_cm"].message
    assert by_field["applicators[2].surface_dose_rate_gy_per_min"].line == line_of(path, '"surface_dose_rate_gy_per_min": 0.0')
    assert "twice" in by_field["applicators[3].diameter_cm"].message
    assert by_field["applicators[3].diameter_cm"].line == line_of(path, '"diameter_cm": 3.0', occurrence=2)
    assert "true or false" in by_field["applicators[4].assumption"].message
    assert "unknown field" in by_field["applicators[4].colour"].message
    assert "missing" in by_field["applicators[5].diameter_cm"].message
    assert by_field["applicators[5].diameter_cm"].line == line_of(path, '"surface_dose_rate_gy_per_min": 0.6') - 1


def test_json_syntax_errors_name_the_line(tmp_path):
    text = json.dumps(good_document(), indent=2).replace('"nominal_ua": 40.0,', '"nominal_ua": 40.0')
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    issues = issues_of(str(path))
    assert len(issues) == 1 and issues[0].field == "(syntax)"
    assert issues[0].line == line_of(str(path), '"qa_exposure_s"')


def test_duplicate_json_keys_are_refused(tmp_path):
    text = json.dumps(good_document(), indent=2).replace('"nominal_ua": 40.0,', '"nominal_ua": 40.0,\n  "nominal_ua": 30.0,')
    path = tmp_path / "dup.json"
    path.write_text(text, encoding="utf-8")
    issues = issues_of(str(path))
    assert "twice" in issues[0].message and issues[0].line == line_of(str(path), '"nominal_ua": 30.0')


def test_not_utf8_is_refused_with_its_line(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps(good_document(calibrated_by="Dr. X"), indent=2).replace("Dr. X", "Dr. M\u00fcller")
                     .encode("latin-1"))
    issues = issues_of(str(path))
    assert issues[0].field == "(encoding)" and issues[0].line == line_of_bytes(path, b"calibrated_by")


def line_of_bytes(path, needle: bytes) -> int:
    return next(i for i, line in enumerate(path.read_bytes().splitlines(), start=1) if needle in line)


CSV_GOOD = """# ORConsole source calibration, CSV variant
format,orconsole-source-calibration/1
source_serial,XRS-TEST-1
source_model,test source
calibration_date,2026-06-01
valid_until,2027-06-01
calibrated_by,A. Physicist
nominal_kv,50
nominal_ua,40
qa_exposure_s,60
reference_reading_nc,3.0

diameter_cm,surface_dose_rate_gy_per_min,assumption,note
3.0,0.87,false,published
4.0,0.80,false,"published, 25 min"
1.5,2.40,true,ASSUMPTION
"""


def test_a_good_csv_file_reads_like_the_json_one(tmp_path):
    path = tmp_path / "cal.csv"
    path.write_text(CSV_GOOD, encoding="utf-8")
    record = read_calibration_file(path, today=TODAY)
    json_record = read_calibration_file(write_json(tmp_path, good_document()), today=TODAY)
    assert record.applicators[1].note == "published, 25 min"
    assert record.to_source_calibration().dose_rates == json_record.to_source_calibration().dose_rates
    assert record.reference_reading_nc == json_record.reference_reading_nc


@pytest.mark.parametrize("old,new,field,fragment", [
    ("nominal_kv,50", "nominal_kv,fifty", "nominal_kv", "must be a number"),
    ("4.0,0.80,false", "4.0,-0.80,false", "applicators[1].surface_dose_rate_gy_per_min", "outside"),
    ("1.5,2.40,true", "1.7,2.40,true", "applicators[2].diameter_cm", "no spherical applicator"),
    ("1.5,2.40,true", "1.5,2.40,maybe", "applicators[2].assumption", "true or false"),
    ("valid_until,2027-06-01", "valid_until,2027-06-01,extra", "valid_until", "2 cells"),
    ("3.0,0.87,false,published", "3.0,0.87,false,published,oops", "applicators[0]", "header has"),
    ("assumption,note", "assumption,note,colour", "applicators.colour", "unknown column"),
    ("source_model,test source", "source_model,test source\nsource_model,again", "source_model", "twice"),
])
def test_each_csv_error_names_file_line_and_field(tmp_path, old, new, field, fragment):
    text = CSV_GOOD.replace(old, new)
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    issues = issues_of(str(path))
    matching = [i for i in issues if i.field == field]
    assert matching, issues
    expected_line = next(i for i, line in enumerate(text.splitlines(), start=1)
                         if new.splitlines()[-1] in line)
    assert matching[0].line == expected_line and fragment in matching[0].message
    assert matching[0].file == str(path)


def test_an_import_with_any_error_imports_nothing(tmp_path):
    repo = InMemoryCalibrationRepository()
    doc = good_document()
    doc["applicators"][2]["surface_dose_rate_gy_per_min"] = 99.0   # one bad line among good ones
    with pytest.raises(CalibrationImportError):
        import_calibration(repo, write_json(tmp_path, doc), actor="phys", today=TODAY)
    assert repo.versions("XRS-TEST-1") == []


def test_versions_approval_active_and_expiry_interlock(tmp_path):
    repo = InMemoryCalibrationRepository()
    v1 = import_calibration(repo, write_json(tmp_path, good_document(), "v1.json"), actor="phys", today=TODAY)
    assert calibration_interlock_reason(repo, "XRS-TEST-1", today=TODAY).startswith("source XRS-TEST-1 has no active")
    signed = []
    approve_calibration(repo, "XRS-TEST-1", v1.doc_id, physicist="phys", today=TODAY, sign=signed.append)
    assert signed == [v1.doc_id]
    assert active_calibration_or_interlock(repo, "XRS-TEST-1", today=TODAY).reference_reading_nc == 3.0
    v2 = import_calibration(repo, write_json(tmp_path, good_document(reference_reading_nc=3.1), "v2.json"),
                            actor="phys", today=TODAY)
    assert [v.version for v in repo.versions("XRS-TEST-1")] == [1, 2]
    assert repo.active("XRS-TEST-1").doc_id == v1.doc_id          # a new import is not active until approved
    approve_calibration(repo, "XRS-TEST-1", v2.doc_id, physicist="phys", today=TODAY)
    assert repo.active("XRS-TEST-1").record.reference_reading_nc == 3.1
    with pytest.raises(CalibrationImportError, match="already stored"):
        import_calibration(repo, write_json(tmp_path, good_document(reference_reading_nc=3.1), "v2.json"),
                           actor="phys", today=TODAY)
    # the day after valid_until the interlock holds treatment
    assert calibration_interlock_reason(repo, "XRS-TEST-1", today=date(2027, 6, 1)) is None
    with pytest.raises(CalibrationInterlock, match="expired on 2027-06-01"):
        active_calibration_or_interlock(repo, "XRS-TEST-1", today=date(2027, 6, 2))


def test_an_expired_calibration_cannot_be_approved(tmp_path):
    repo = InMemoryCalibrationRepository()
    stored = import_calibration(repo, write_json(tmp_path, good_document()), actor="phys", today=TODAY)
    with pytest.raises(CalibrationInterlock, match="expired"):
        approve_calibration(repo, "XRS-TEST-1", stored.doc_id, physicist="phys", today=date(2027, 7, 1))
    assert repo.active("XRS-TEST-1") is None


def test_store_backed_versions_and_activation(tmp_path):
    from logs.store import Store

    with Store(f"sqlite:///{tmp_path / 'db.sqlite3'}") as store:
        repo = StoreCalibrationRepository(store)
        v1 = import_calibration(repo, write_json(tmp_path, good_document(), "a.json"), actor="phys", today=TODAY)
        v2 = import_calibration(repo, write_json(tmp_path, good_document(reference_reading_nc=2.9), "b.json"),
                                actor="phys", today=TODAY)
        assert (v1.version, v2.version) == (1, 2)
        approve_calibration(repo, "XRS-TEST-1", v2.doc_id, physicist="phys", today=TODAY)
        assert repo.active("XRS-TEST-1").record.reference_reading_nc == 2.9
        assert any(e.action == "calibration activated" for e in store.audit_entries())
