"""`orconsole demo --headless --json` on the in-process simulator bench: the whole workflow ends in a
signed, verifiable record with 20 Gy on both channels; refusals exit non-zero with the reason and no
treatment beam; a pause delivers only the remainder."""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from datetime import date, timedelta

import pytest

from logs.records import RecordBook
from logs.store import Store
from logs.verify import verify_stored
from orconsole.cli import main
from orconsole.journal import read_journal
from simulators.bench import get_bench, reset_benches
from simulators.sources import calibration_document

_names = itertools.count()


@pytest.fixture
def bench_name(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCONSOLE_HOME", str(tmp_path / "home"))
    name = f"treat-demo-{next(_names)}"
    yield name
    reset_benches()


def run_demo(capsys, name, artifacts, *extra):
    code = main(["demo", "--headless", "--json", "--xrs", f"sim://xrs?bench={name}",
                 "--readout", f"sim://unidos?bench={name}", "--artifacts", str(artifacts), *extra])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, f"expected one JSON object on stdout, got {out!r}"
    return code, json.loads(out[0])


def test_the_headless_demo_delivers_20_gy_on_both_channels_into_a_signed_verifiable_record(bench_name, tmp_path,
                                                                                            capsys):
    get_bench(bench_name, seed="11")
    code, payload = run_demo(capsys, bench_name, tmp_path / "out")
    assert code == 0, payload
    for key in ("planned_time_s", "beam_on_time_console_s", "beam_on_time_device_s", "delivered_dose_gy",
                "termination", "interlocks", "record_id"):
        assert key in payload, key
    # the treatment screen as it was mid-treatment, and the PDF report, next to the record
    shot = Path(payload["screenshot"])
    assert shot.parent == tmp_path / "out" and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(payload["pdf"]).read_bytes()[:5] == b"%PDF-"
    assert payload["termination"] == "NORMAL" and payload["interlocks"] == []
    dose = payload["delivered_dose_gy"]
    assert dose["primary_timer"] == pytest.approx(20.0, rel=0.005)
    assert dose["secondary_irm"] == pytest.approx(20.0, rel=0.005)
    # 3.0 cm on the ×60 fast source: about 23 s
    assert 15.0 < payload["planned_time_s"] < 35.0
    assert payload["beam_on_time_console_s"] == pytest.approx(payload["planned_time_s"], abs=0.5)
    assert payload["beam_on_time_device_s"] == pytest.approx(payload["planned_time_s"], abs=0.5)
    with Store(payload["db"].replace("sqlite:///", "sqlite:///", 1)) as store:
        verdict = verify_stored(store, payload["record_id"])
        assert verdict.ok, verdict.problems
        record = RecordBook(store).load(payload["record_id"])
        assert record.completion == "complete" and len(record.sessions) == 1
        session = record.sessions[0]
        assert session.termination_cause.value == "preset time reached"
        assert len(session.raw_device_log_sha256) == 64
        meanings = sorted(s.meaning for s in store.signatures_for(payload["record_id"]))
        assert meanings == ["performed delivery"]
        assert all(s.countersignature_b64 for s in store.signatures_for(payload["record_id"]))
        plan_meanings = sorted(s.meaning for s in store.signatures_for(record.plan.plan_document_id))
        assert plan_meanings == ["approved plan", "approved plan", "prescribed"]
    assert payload.get("pdf", "").endswith(".pdf")
    credentials = json.loads((tmp_path / "out" / "demo-credentials.json").read_text())
    assert "DEMO ONLY" in credentials["note"] and len(credentials["passwords"]) == 4


def _no_treatment_beam(artifacts):
    journal = artifacts / "journal" / "treatment-journal.jsonl"
    entries = read_journal(journal).entries if journal.exists() else ()
    return not any(e["kind"] == "treatment_opened" for e in entries)


def test_a_prescription_of_25_gy_is_refused_before_any_device_is_touched(bench_name, tmp_path, capsys):
    bench = get_bench(bench_name)
    code, payload = run_demo(capsys, bench_name, tmp_path / "out", "--dose", "25")
    assert code == 2 and payload["result"] == "refused"
    assert "25 Gy exceeds the hard ceiling" in payload["reason"]
    status = bench.xrs_model.status()
    assert status.beam_on_time_s == 0 and not status.hv_on and status.armed_plan_hash is None
    assert _no_treatment_beam(tmp_path / "out")


def test_without_an_output_check_today_planning_is_refused(bench_name, tmp_path, capsys):
    bench = get_bench(bench_name)
    code, payload = run_demo(capsys, bench_name, tmp_path / "out", "--output-check", "none")
    assert code == 2 and "no output check" in payload["reason"]
    assert bench.xrs_model.status().beam_on_time_s == 0
    assert _no_treatment_beam(tmp_path / "out")


def test_a_wrong_applicator_mounted_fails_the_checklist_and_nothing_is_armed(bench_name, tmp_path, capsys):
    get_bench(bench_name, applicator="3.5", seed="3")
    code, payload = run_demo(capsys, bench_name, tmp_path / "out", "--applicator", "3.0")
    assert code == 2
    assert "3.5 cm applicator" in payload["reason"] and "mount the 3.0 cm applicator" in payload["reason"]
    assert _no_treatment_beam(tmp_path / "out")


def test_a_calibration_of_another_source_is_refused(bench_name, tmp_path, capsys):
    bench = get_bench(bench_name)
    document = calibration_document("fast", date.today() - timedelta(days=1))
    document["source_serial"] = "XRS-OTHER-0099"
    path = tmp_path / "other.json"
    path.write_text(json.dumps(document))
    code, payload = run_demo(capsys, bench_name, tmp_path / "out", "--calibration", str(path))
    assert code == 2
    assert "XRS-SIM-FAST-01" in payload["reason"] and "no active calibration" in payload["reason"]
    assert bench.xrs_model.status().beam_on_time_s == 0
    assert _no_treatment_beam(tmp_path / "out")


def test_a_pause_records_the_interruption_and_the_resume_delivers_only_the_remainder(bench_name, tmp_path, capsys):
    get_bench(bench_name, applicator="1.5", seed="7")        # 144 Gy/min: about 8 s
    code, payload = run_demo(capsys, bench_name, tmp_path / "out", "--applicator", "1.5", "--pause-after", "3")
    assert code == 0, payload
    assert payload["termination"] == "NORMAL"
    assert any("pause" in reason for reason in payload["interruptions"])
    # the timer is cumulative: beam time equals the preset, not preset + time already delivered
    assert payload["beam_on_time_console_s"] == pytest.approx(payload["planned_time_s"], abs=0.3)
    assert payload["beam_on_time_device_s"] == pytest.approx(payload["planned_time_s"], abs=0.3)
    assert payload["delivered_dose_gy"]["secondary_irm"] == pytest.approx(20.0, rel=0.005)
    assert payload["delivered_dose_gy"]["primary_timer"] == pytest.approx(20.0, rel=0.005)
    with Store(payload["db"]) as store:
        record = RecordBook(store).load(payload["record_id"])
        assert len(record.sessions) == 1 and record.interruptions[0].initiated_by == "operator"
        assert 1.0 < record.interruptions[0].delivered_so_far_gy < 19.0
