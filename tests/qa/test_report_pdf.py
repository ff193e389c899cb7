"""`orconsole qa report --month YYYY-MM -o FILE.pdf`: the month's checks of every source, the trend chart, the
warnings and fails in words, a review block; read back with pdftotext."""
from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date

import pytest

from logs.store import Store
from orconsole.cli import main
from tests.logs.helpers import make_cast
from tests.qa.history_data import SERIAL, seed_history

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) not installed")


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCONSOLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ORCONSOLE_CONFIG", raising=False)
    url = f"sqlite:///{tmp_path / 'report.sqlite3'}"
    with Store(url) as store:
        cast = make_cast(store)
        seeded = seed_history(store, cast, today=date(2026, 11, 26), days=60)
    return url, seeded


def pdf_text(path, *, layout: bool = True) -> str:
    return subprocess.run(["pdftotext", *(["-layout"] if layout else []), str(path), "-"], check=True,
                          capture_output=True, text=True).stdout


def pdf_pages(path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True, text=True).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


def test_the_monthly_report_lists_the_months_checks_and_names_the_warning_and_the_fail(db, tmp_path, capsys):
    url, seeded = db
    out = tmp_path / "qa-2026-11.pdf"
    assert main(["qa", "report", "--month", "2026-11", "-o", str(out), "--db", url, "--by", "Dr. Pia Physicist"]) == 0
    assert "wrote the QA report for November 2026" in capsys.readouterr().out
    text = pdf_text(out)
    assert "Daily QA — monthly report, November 2026" in text
    assert f"Source {SERIAL}" in text and "k_out over the month" in text and "Isotropy over the month" in text
    november_outputs = sum(1 for line in text.splitlines() if line.strip().startswith("2026-11-") and "07:" in line)
    assert november_outputs == 23                      # 22 clinic days in Nov 1–26, the fail day checked twice
    assert "1 FAIL, 1" in text and "WARNING" in text
    # the warning and the fail are named with their check ids (a long id may wrap at a hyphen)
    joined = "".join(pdf_text(out, layout=False).split())
    assert re.search(r"WARNING2026-11-\d\d\d\d:\d\d\(output,qa-output-[0-9a-f]{8}-", joined), joined[:2000]
    assert re.search(r"FAIL2026-11-\d\d\d\d:\d\d\(output,qa-output-[0-9a-f]{8}-", joined), joined[:2000]
    assert "k_out = 0.9000" in text and "NOT SIGNED" in text
    assert "Reviewed by the medical physicist" in text and "page 1 of" in text
    assert "2026-10-" not in text                      # October's checks are not in November's report
    assert 2 <= pdf_pages(out) <= 4
    with Store(url) as store:
        import json
        entry = store.audit_entries(action="export")[-1]
        details = entry.details if isinstance(entry.details, dict) else json.loads(entry.details)
        assert details["what"] == "qa monthly report" and details["checks"] == 23 + 4


def test_a_month_without_checks_says_so(db, tmp_path):
    url, _ = db
    out = tmp_path / "empty.pdf"
    assert main(["qa", "report", "--month", "2025-01", "-o", str(out), "--db", url, "--by", "x"]) == 0
    assert "No QA checks were recorded in this month." in pdf_text(out)


def test_a_malformed_month_is_refused(db, tmp_path, capsys):
    url, _ = db
    assert main(["qa", "report", "--month", "11/2026", "-o", str(tmp_path / "x.pdf"), "--db", url]) == 2
    assert "is not YYYY-MM" in capsys.readouterr().err
