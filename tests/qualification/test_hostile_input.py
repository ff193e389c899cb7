"""Hostile and mistaken input, qualified: a prescription is accepted only when it is exactly the protocol
dose; broken configuration and calibration files are refused naming file, line and field with nothing
half-loaded; patient fields full of control characters, SQL and markup are stored and exported verbatim;
a locked-out user cannot sign. (Electrometer garbage / late / wrong replies: tests/drivers/test_unidos_driver.py;
role and audit-chain tampering: tests/logs/test_identity.py and test_store.py — listed in docs/qualification.md.)
"""
from __future__ import annotations

import json
import math
from datetime import date

import pytest

from orconsole.calibration import CalibrationImportError, InMemoryCalibrationRepository, import_calibration
from orconsole.config import ConfigError, SiteConfig, load_config
from orconsole.dosecalc import parse_prescription_gy
from orconsole.models import Refused, TrialProtocol
from simulators.sources import calibration_document

PROTOCOL = TrialProtocol(name="IORT-BM qualification")

REFUSED_PRESCRIPTIONS = [
    "200", "2", "20.5", "19.99", "20.01", "20,0", "NaN", "nan", "inf", "-inf", "Infinity", "-20", "+20", "1e308",
    "2e1", "20e0", "0x14", "", " ", "\t", "\n", "20 Gy", "20Gy", "twenty", "２０", "٢٠", "२०", "20\u200b", "2\u20030",
    "20..0", ".20", "020.0.", "20\x00", "20;DROP TABLE plans", "1" * 400, "20\n20", "0", "-0", "0020.00001",
]
ACCEPTED_PRESCRIPTIONS = ["20", "20.0", "20.00", " 20 ", "\t20.0"]


@pytest.mark.parametrize("text", REFUSED_PRESCRIPTIONS, ids=[repr(t)[:24] for t in REFUSED_PRESCRIPTIONS])
def test_prescription_entry_accepts_only_exactly_the_protocol_dose(text):
    with pytest.raises(Refused) as info:
        parse_prescription_gy(text, PROTOCOL)
    message = info.value.message if hasattr(info.value, "message") else str(info.value)
    assert "20" in message, f"the refusal must say what to enter: {message!r}"


@pytest.mark.parametrize("text", ACCEPTED_PRESCRIPTIONS)
def test_prescription_entry_of_the_protocol_dose_is_accepted_as_exactly_20_gy(text):
    value = parse_prescription_gy(text, PROTOCOL)
    assert value == 20.0 and math.isfinite(value)


@pytest.mark.parametrize("value", [20.0000001, float("nan"), float("inf"), 200.0, -20.0, None, 20])
def test_prescription_typed_as_a_non_string_is_refused(value):
    with pytest.raises(Refused):
        parse_prescription_gy(value, PROTOCOL)


# --------------------------------------------------------------------------------------------- configuration

BROKEN_CONFIGS = [
    # (text, expected line, expected field or None for a syntax error)
    ('[qa]\nk_out_window_fraction = 0.30\n', 2, "qa.k_out_window_fraction"),
    ('[qa]\nk_out_window_fraction = nan\n', 2, "qa.k_out_window_fraction"),
    ('[qa]\nk_out_window_fraction = inf\n', 2, "qa.k_out_window_fraction"),
    ('[qa]\nk_out_window_fraction = "0.03"\n', 2, "qa.k_out_window_fraction"),
    ('[delivery]\nramp_up_s = -1\n', 2, "delivery.ramp_up_s"),
    ('[delivery]\nchannel_agreement_fraction = 0.5\n', 2, "delivery.channel_agreement_fraction"),
    ('[prescription]\nhard_ceiling_dose_gy = 25\n', 2, "prescription.hard_ceiling_dose_gy"),
    ('[link]\nstatus_poll_period_s = 0.5\n', 2, "link.status_poll_period_s"),
    ('[link]\nlink_lost_after_s = 0\n', 2, "link.link_lost_after_s"),
    ('# site\n[planning]\ntimer_resolution_s = 1.0\n', 3, "planning.timer_resolution_s"),
    ('[qa]\nk_out_windw_fraction = 0.03\n', 2, "qa.k_out_windw_fraction"),
    ('[qa]\nk_out_window_fraction = 0.03\nk_out_warning_fraction = = 0.02\n', 3, None),
    ('[qa\nk_out_window_fraction = 0.03\n', 1, None),
    ('site_name = "x\n', 1, None),
]


@pytest.mark.parametrize("text,line,field", BROKEN_CONFIGS, ids=[f"case{i}" for i in range(len(BROKEN_CONFIGS))])
def test_configuration_errors_name_file_line_and_field_and_load_nothing(tmp_path, text, line, field):
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert str(path) in err.message and f"line {line}" in err.message, err.message
    assert err.line == line
    if field is not None:
        assert err.field == field and field in err.message, err.message
    assert "no configuration was loaded" in err.message or "nothing changed" in err.message


def test_a_configuration_file_that_is_not_utf8_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "site.toml"
    path.write_bytes(b'site_name = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message and "UTF-8" in info.value.message


def test_a_valid_configuration_after_a_refused_one_is_untouched_by_it(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[qa]\nk_out_window_fraction = 0.03\n[delivery]\nramp_up_s = -1\n', encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(bad)
    assert load_config(None) == SiteConfig()     # no module-level state was half-updated


# --------------------------------------------------------------------------------------------- calibration

def _calibration_json() -> dict:
    return calibration_document("clinical", calibrated_on=date.today())


def _mutations():
    def set_rate(doc, value):
        doc["applicators"][1]["surface_dose_rate_gy_per_min"] = value
    yield "negative rate", lambda d: set_rate(d, -0.8), "surface_dose_rate_gy_per_min"
    yield "zero rate", lambda d: set_rate(d, 0.0), "surface_dose_rate_gy_per_min"
    yield "text rate", lambda d: set_rate(d, "0.8"), "surface_dose_rate_gy_per_min"
    yield "huge rate", lambda d: set_rate(d, 1e308), "surface_dose_rate_gy_per_min"
    yield "missing serial", lambda d: d.pop("source_serial"), "source_serial"
    yield "empty serial", lambda d: d.update(source_serial=""), "source_serial"
    yield "bad date", lambda d: d.update(calibration_date="2026-13-45"), "calibration_date"
    yield "validity before date", lambda d: d.update(valid_until="2000-01-01"), "valid_until"
    yield "negative reference", lambda d: d.update(reference_reading_nc=-1.0), "reference_reading_nc"
    yield "duplicate applicator", lambda d: d["applicators"].append(dict(d["applicators"][0])), "diameter_cm"
    yield "unknown diameter", lambda d: d["applicators"][0].update(diameter_cm=1.7), "diameter_cm"
    yield "wrong format", lambda d: d.update(format="something-else/9"), "format"


MUTATIONS = list(_mutations())


@pytest.mark.parametrize("name,mutate,field", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_calibration_errors_name_file_line_and_field_and_import_nothing(tmp_path, name, mutate, field):
    doc = _calibration_json()
    mutate(doc)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    repo = InMemoryCalibrationRepository()
    with pytest.raises(CalibrationImportError) as info:
        import_calibration(repo, path, actor="pia")
    issues = info.value.issues
    assert issues, "an import error must list its problems"
    assert all(issue.file == str(path) for issue in issues)
    matching = [i for i in issues if field in i.field]
    assert matching, f"{name}: no issue names field {field!r}: {[str(i) for i in issues]}"
    assert any(i.line is not None for i in matching), f"{name}: no line given: {[str(i) for i in matching]}"
    assert "nothing was imported" in str(info.value)
    assert repo.versions(doc.get("source_serial") or "XRS-SIM-CLIN-01") == []


def test_a_calibration_json_syntax_error_names_the_line(tmp_path):
    text = json.dumps(_calibration_json(), indent=2).splitlines()
    text[5] = text[5].rstrip(",")            # a missing comma on line 6
    path = tmp_path / "calibration.json"
    path.write_text("\n".join(text), encoding="utf-8")
    repo = InMemoryCalibrationRepository()
    with pytest.raises(CalibrationImportError) as info:
        import_calibration(repo, path, actor="pia")
    assert any(i.line in (6, 7) for i in info.value.issues), [str(i) for i in info.value.issues]


# --------------------------------------------------------------------------------------------- records

HOSTILE = {
    "control": "Erika\x07\x1b[31mRED\x1b[0m\r\nMustermann\x7f\t\x01",
    "long": "A" * 20_000 + "Ω",
    "sql": "Robert'); DROP TABLE documents;-- \" OR 1=1 --",
    "markup": "<script>alert('x')</script><b>bold</b>&amp;{{7*7}}${7*7}%s%n",
    "bidi": "\u202eevil\u202c \ufeff zero\u200bwidth",
}


@pytest.fixture
def sqlite_store(tmp_path):
    from logs.store import Store
    store = Store(f"sqlite:///{tmp_path / 'records.sqlite3'}")
    yield store
    store.close()


def test_hostile_patient_fields_are_stored_and_exported_verbatim(sqlite_store):
    from logs.crypto import InstallationKey
    from logs.export_json import export_json_bytes
    from logs.records import RecordBook
    from logs.samples import example_record
    from logs.verify import verify_export_bytes

    from tests.logs.helpers import make_cast
    store = sqlite_store
    cast = make_cast(store)
    book = RecordBook(store)
    ids = {}
    for key, text in HOSTILE.items():
        rec = example_record(installation_key_id=cast.ids.installation_key.key_id, mrn=f"MRN-{key}")
        rec.patient.full_name = text
        rec.patient.trial_subject_id = text[:200]
        rec.plan.site = text
        record_id = book.start(rec, actor="tom")
        ids[key] = record_id
        loaded = book.load(record_id)
        assert loaded.patient.full_name == text, f"{key}: name changed on the way through the store"
        assert loaded.plan.site == text
    # the tables are still there and hold every record: nothing was interpreted as SQL
    assert len(store.document_ids(kind="delivery_record")) >= len(HOSTILE)
    for key, record_id in ids.items():
        book.finalise(record_id, actor="tom", completion="incomplete")
        from logs.signing import Meaning
        from tests.logs.helpers import PASSWORDS
        cast.ids.sign(cast.therapist, PASSWORDS["tom"], record_id, Meaning.PERFORMED_DELIVERY)
        data = export_json_bytes(store, record_id, cast.ids.installation_key, exported_by="tom")
        exported = json.loads(data.decode("utf-8"))
        assert _contains(exported, HOSTILE[key]), f"{key}: the exported JSON does not hold the name verbatim"
        verdicts = verify_export_bytes(data)
        assert verdicts and all(v.ok for v in verdicts), f"{key}: {[v for v in verdicts if not v.ok]}"


def test_a_nul_character_in_a_patient_field_is_refused_with_a_reason_never_stripped(sqlite_store):
    from logs.canonical import CanonicalFormError
    from logs.records import RecordBook
    from logs.samples import example_record
    rec = example_record(mrn="MRN-NUL")
    rec.patient.full_name = "Erika\x00Mustermann"
    with pytest.raises(CanonicalFormError) as info:
        RecordBook(sqlite_store).start(rec, actor="tom")
    assert "NUL" in str(info.value)
    assert sqlite_store.document_ids(kind="delivery_record") == []


def _contains(obj, text: str) -> bool:
    if isinstance(obj, str):
        return obj == text
    if isinstance(obj, dict):
        return any(_contains(v, text) for v in obj.values())
    if isinstance(obj, list):
        return any(_contains(v, text) for v in obj)
    return False


def test_hostile_patient_fields_are_escaped_not_interpreted_in_the_printed_report():
    from logs.export_pdf import report_html
    from logs.samples import example_record
    rec = example_record()
    rec.patient.full_name = HOSTILE["markup"]
    html = report_html(rec, content_hash="ab" * 32, signatures=[], verdict_ok=True, verdict_text="verified",
                       addenda=[], exported_by="q", exported_utc="2026-11-26T12:00:00Z")
    assert "<script>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;" in html


# --------------------------------------------------------------------------------------------- identity

def test_a_locked_out_user_cannot_sign(sqlite_store):
    from logs.signing import Meaning
    from orconsole.identity import AccountLocked, AuthenticationError

    from tests.logs.helpers import PASSWORDS, make_cast
    store = sqlite_store
    cast = make_cast(store)
    plan = store.create_document("plan", {"plan_id": "PLAN-Q", "prescription_gy": 20.0}, actor="olga",
                                 subject="MRN-Q", final=True)
    for _ in range(cast.ids.max_failed_attempts):
        with pytest.raises(AuthenticationError):
            cast.ids.login("pia", "wrong-password-1")
    with pytest.raises((AccountLocked, AuthenticationError, PermissionError)) as info:
        cast.ids.sign(cast.physicist, PASSWORDS["pia"], plan.doc_id, Meaning.APPROVED_PLAN)
    assert "locked" in str(info.value)
    assert store.signatures_for(plan.doc_id) == []
