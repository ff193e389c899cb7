"""`orconsole qa ...` without devices: calibration import/approve with a physicist's signature,
mechanics, status, history CSV, refusals with exit codes."""
from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

import pytest

from logs.store import Store
from orconsole.cli import main
from tests.logs.helpers import PASSWORDS, make_cast


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCONSOLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCONSOLE_INSTALLATION_KEY", str(tmp_path / "installation-key.pem"))
    monkeypatch.delenv("ORCONSOLE_DB", raising=False)
    monkeypatch.delenv("ORCONSOLE_CONFIG", raising=False)
    db = f"sqlite:///{tmp_path / 'qa.sqlite3'}"
    with Store(db) as store:
        make_cast(store)
    return db


def run(argv, monkeypatch, stdin: str = ""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(argv)


def clinical_calibration(tmp_path) -> str:
    from simulators.sources import calibration_document

    path = tmp_path / "clinical.json"
    path.write_text(json.dumps(calibration_document("clinical", date.today() - timedelta(days=3)), indent=2))
    return str(path)


def test_calibration_import_and_approval_by_a_physicist(env, tmp_path, monkeypatch, capsys):
    path = clinical_calibration(tmp_path)
    assert run(["--db", env, "qa", "calibration", "import", path], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "version 1" in out and "not active yet" in out and "ASSUMPTION" in out
    doc_id = out.split("as version 1: ")[1].split(";")[0]
    # a therapist may not approve
    assert run(["qa", "calibration", "approve", doc_id, "--source", "XRS-SIM-0412", "--sign-as", "tom",
                "--password-stdin", "--db", env], monkeypatch, PASSWORDS["tom"] + "\n") == 2
    assert "cannot" in capsys.readouterr().err
    assert run(["qa", "calibration", "approve", doc_id, "--source", "XRS-SIM-0412", "--sign-as", "pia",
                "--password-stdin", "--db", env], monkeypatch, PASSWORDS["pia"] + "\n") == 0
    assert "now the active calibration" in capsys.readouterr().out
    with Store(env) as store:
        sigs = store.signatures_for(doc_id)
        assert [(s.meaning, s.printed_name) for s in sigs] == [("approved calibration", "Dr. Pia Physicist")]
        assert store.active_calibration("XRS-SIM-0412").doc_id == doc_id
    assert run(["qa", "calibration", "list", "--source", "XRS-SIM-0412", "--db", env], monkeypatch) == 0
    assert "ACTIVE v1" in capsys.readouterr().out


def test_a_bad_calibration_file_is_refused_with_file_line_field_and_nothing_stored(env, tmp_path, monkeypatch, capsys):
    path = clinical_calibration(tmp_path)
    text = open(path).read().replace('"nominal_kv": 50.0', '"nominal_kv": 500.0')
    open(path, "w").write(text)
    assert run(["--db", env, "qa", "calibration", "import", path], monkeypatch) == 2
    err = capsys.readouterr().err
    line = next(i for i, l in enumerate(text.splitlines(), 1) if '"nominal_kv"' in l)
    assert f"{path}, line {line}, field 'nominal_kv'" in err and "nothing was imported" in err
    with Store(env) as store:
        assert store.find_documents(kind="calibration") == []


def test_mechanics_signed_then_history_csv(env, tmp_path, monkeypatch, capsys):
    assert run(["qa", "mechanics", "--source", "XRS-SIM-0412", "--straightness", "0.05", "--centering", "0.1",
                "--json", "--sign-as", "pia", "--password-stdin", "--db", env], monkeypatch,
               PASSWORDS["pia"] + "\n") == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["result"] == "pass" and payload["signed_by"] == ["Dr. Pia Physicist"]
    assert run(["qa", "mechanics", "--source", "XRS-SIM-0412", "--straightness", "0.5", "--centering", "0.1",
                "--db", env], monkeypatch) == 1
    capsys.readouterr()
    out_file = tmp_path / "history.csv"
    assert run(["qa", "history", "--csv", str(out_file), "--db", env], monkeypatch) == 0
    rows = list(csv.DictReader(open(out_file, encoding="utf-8")))
    assert [r["result"] for r in rows] == ["pass", "fail"]
    assert rows[0]["signed_by"] == "Dr. Pia Physicist" and rows[1]["probe_straightness_mm"] == "0.500"


def test_status_blocks_a_source_without_todays_check_or_calibration(env, monkeypatch, capsys):
    assert run(["qa", "status", "--source", "XRS-SIM-0412", "--json", "--db", env], monkeypatch) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["treatment_allowed"] is False
    assert "no output check" in payload["output_check"] and "no active calibration" in payload["calibration"]


def test_output_refuses_unmarked_pressure_before_touching_devices(env, monkeypatch, capsys):
    code = run(["qa", "output", "--headless", "--json", "--temperature", "22", "--pressure", "1013",
                "--xrs", "sim://xrs?bench=never-opened", "--db", env], monkeypatch)
    assert code == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["result"] == "refused" and "hPa" in payload["reason"]
    from simulators import bench
    assert "never-opened" not in bench._benches


def test_output_without_headless_says_how_to_run_it(env, monkeypatch, capsys):
    assert run(["qa", "output", "--temperature", "22", "--pressure", "101.3", "--db", env], monkeypatch) == 2
    assert "--headless" in capsys.readouterr().err
