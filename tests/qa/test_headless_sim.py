"""`orconsole qa output --headless --json` against the simulator bench: one JSON object, exit codes,
the stored record, the physicist's signature and the treatment gate."""
from __future__ import annotations

import io
import itertools
import json
from datetime import date, timedelta

import pytest

from logs.store import Store
from orconsole.calibration import StoreCalibrationRepository, approve_calibration, import_calibration
from orconsole.cli import main
from simulators.bench import get_bench, reset_benches
from simulators.sources import calibration_document
from tests.logs.helpers import PASSWORDS, make_cast

_names = itertools.count()


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCONSOLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCONSOLE_INSTALLATION_KEY", str(tmp_path / "installation-key.pem"))
    monkeypatch.delenv("ORCONSOLE_CONFIG", raising=False)
    db = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    cal = tmp_path / "fast.json"
    cal.write_text(json.dumps(calibration_document("fast", date.today() - timedelta(days=1)), indent=2))
    with Store(db) as store:
        make_cast(store)
        repo = StoreCalibrationRepository(store)
        stored = import_calibration(repo, cal, actor="pia", max_dose_rate_gy_per_min=200.0)
        approve_calibration(repo, stored.record.source_serial, stored.doc_id, physicist="pia")
    name = f"qa-headless-{next(_names)}"
    bench = get_bench(name, seed="5")
    bench.unidos_model.warmup_s = 0.2
    bench.unidos_model.zero_duration_s = 0.2
    yield db, name, bench
    reset_benches()


def headless(db, name, monkeypatch, *extra, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["--xrs", f"sim://xrs?bench={name}", "--db", db, "qa", "output", "--headless", "--json",
                 "--temperature", "22.0", "--pressure", "1005 hPa", "--readout", f"sim://unidos?bench={name}", *extra])


def test_headless_output_check_prints_one_json_object_and_stores_the_signed_record(setup, monkeypatch, capsys):
    db, name, bench = setup
    bench.room.temperature_c, bench.room.pressure_kpa = 22.0, 100.5
    code = headless(db, name, monkeypatch, "--chamber-serial", "34013-0007", "--sign-as", "pia", "--password-stdin",
                    stdin=PASSWORDS["pia"] + "\n")
    payload = json.loads(capsys.readouterr().out)
    assert code == 0, payload
    for key in ("readings", "k_tp", "corrected_mean_c", "k_out", "result", "qa_id"):
        assert key in payload
    assert payload["result"] == "pass" and len(payload["readings"]) == 3
    assert payload["k_tp"] == pytest.approx((295.15 / 293.15) * (101.325 / 100.5), rel=1e-9)
    assert payload["k_out"] == pytest.approx(1.0, abs=0.01)
    assert payload["signed_by"] == ["Dr. Pia Physicist"] and payload["treatment_allowed"] is True
    with Store(db) as store:
        doc = store.get_document(payload["qa_id"])
        assert doc.kind == "qa_result" and doc.is_final
        assert doc.data["instruments"]["chamber_serial"] == "34013-0007"
        # every raw reading survives the store's 6-decimal canonical floats (kept in nC)
        stored = [r["charge_nc"] for r in doc.data["readings"]]
        assert stored == pytest.approx([c * 1e9 for c in payload["readings"]], abs=1e-6) and min(stored) > 2.5
        assert [s.meaning for s in store.signatures_for(payload["qa_id"])] == ["performed QA"]


def test_headless_fail_exits_non_zero_and_blocks_the_source(setup, monkeypatch, capsys):
    db, name, bench = setup
    bench.room.temperature_c, bench.room.pressure_kpa = 22.0, 100.5
    bench.xrs_model.inject("output_drop", fraction=0.10)
    code = headless(db, name, monkeypatch)
    payload = json.loads(capsys.readouterr().out)
    assert code == 1 and payload["result"] == "fail" and payload["treatment_allowed"] is False
    assert payload["k_out"] == pytest.approx(0.90, abs=0.01)
    assert main(["qa", "status", "--source", "XRS-SIM-FAST-01", "--db", db]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_headless_incomplete_check_exits_non_zero_with_the_reason(setup, monkeypatch, capsys):
    db, name, bench = setup
    bench.unidos_model.inject("overload", which="charge")
    code = headless(db, name, monkeypatch)
    payload = json.loads(capsys.readouterr().out)
    assert code == 3 and payload["result"] == "incomplete" and "overload" in payload["reason"]
    with Store(db) as store:
        assert any(e.action == "qa output check incomplete" for e in store.audit_entries())
        assert store.find_documents(kind="qa_result") == []


def test_headless_without_an_active_calibration_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ORCONSOLE_HOME", str(tmp_path / "home"))
    name = f"qa-headless-{next(_names)}"
    get_bench(name)
    try:
        code = headless(f"sqlite:///{tmp_path / 'empty.sqlite3'}", name, monkeypatch)
        payload = json.loads(capsys.readouterr().out)
        assert code == 2 and "no active calibration" in payload["reason"]
    finally:
        reset_benches()


def test_isotropy_baseline_recorded_by_a_physicist_then_checked_against(setup, monkeypatch, capsys):
    db, name, bench = setup
    base = ["--xrs", f"sim://xrs?bench={name}", "--readout", f"sim://unidos?bench={name}", "--db", db, "qa",
            "isotropy", "--json"]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORDS["tom"] + "\n"))
    assert main([*base, "--set-baseline", "--sign-as", "tom", "--password-stdin"]) == 2     # a therapist cannot
    assert "cannot" in json.loads(capsys.readouterr().out)["reason"]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORDS["pia"] + "\n"))
    assert main([*base, "--set-baseline", "--note", "acceptance", "--sign-as", "pia", "--password-stdin"]) == 0
    baseline = json.loads(capsys.readouterr().out)
    assert baseline["result"] == "baseline recorded" and baseline["signed_by"] == ["Dr. Pia Physicist"]
    assert main(base) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["result"] == "pass" and check["baseline_id"] == baseline["baseline_id"]
    assert all(abs(v) < 1.0 for v in check["deviations_percent"].values())
    bench.xrs_model.inject("output_drop", fraction=0.08)
    assert main(base) == 1
    assert json.loads(capsys.readouterr().out)["result"] == "fail"


def test_unsigned_pass_does_not_clear_the_source_until_signed(setup, monkeypatch, capsys):
    db, name, bench = setup
    bench.room.temperature_c, bench.room.pressure_kpa = 22.0, 100.5
    assert headless(db, name, monkeypatch) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["result"] == "pass" and payload["signed_by"] == [] and payload["treatment_allowed"] is False
    assert "not signed" in payload["gate_reason"]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORDS["pia"] + "\n"))
    assert main(["qa", "sign", payload["qa_id"], "--sign-as", "pia", "--password-stdin", "--db", db]) == 0
    capsys.readouterr()
    assert main(["qa", "status", "--source", "XRS-SIM-FAST-01", "--db", db]) == 0


def test_warning_needs_acknowledgement_through_the_command(setup, monkeypatch, capsys):
    db, name, bench = setup
    bench.room.temperature_c, bench.room.pressure_kpa = 22.0, 100.5
    bench.xrs_model.inject("output_drop", fraction=0.025)
    code = headless(db, name, monkeypatch, "--sign-as", "pia", "--password-stdin", stdin=PASSWORDS["pia"] + "\n")
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["result"] == "warning" and payload["treatment_allowed"] is False
    assert "acknowledge" in payload["gate_reason"]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORDS["tom"] + "\n"))
    assert main(["qa", "acknowledge", payload["qa_id"], "--comment", "fine", "--sign-as", "tom",
                 "--password-stdin", "--db", db]) == 2                                   # a therapist cannot
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORDS["pia"] + "\n"))
    assert main(["qa", "acknowledge", payload["qa_id"], "--comment", "source re-seated, T/P re-read",
                 "--sign-as", "pia", "--password-stdin", "--db", db]) == 0
    capsys.readouterr()
    assert main(["qa", "status", "--source", "XRS-SIM-FAST-01", "--json", "--db", db]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["treatment_allowed"] is True and status["k_out"] == pytest.approx(0.975, abs=0.005)
    with Store(db) as store:
        acks = store.find_documents(kind="qa_acknowledgement")
        assert len(acks) == 1 and acks[0].references_doc_id == payload["qa_id"] and acks[0].created_by == "pia"
