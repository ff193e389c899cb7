"""PDF treatment report: rendered offscreen with Qt, text checked with pdftotext when installed."""
from __future__ import annotations

import os
import shutil
import subprocess
import unicodedata

import pytest

from logs.export_pdf import export_pdf
from tests.logs.conftest import drop_protection
from tests.logs.helpers import make_cast, signed_record

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _pdf_text(path) -> str:
    if shutil.which("pdftotext") is None:
        if os.environ.get("CI"):
            pytest.fail("pdftotext (poppler-utils) is required in CI to check the PDF report")
        pytest.skip("pdftotext missing: apt-get install -y poppler-utils")
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return unicodedata.normalize("NFKC", out)  # the font's "fi" ligature comes back as one character


@pytest.fixture
def signed(tmp_path):
    from logs.store import Store

    store = Store(f"sqlite:///{tmp_path / 'p.sqlite3'}")
    cast = make_cast(store)
    yield store, signed_record(store, cast)
    store.close()


def test_pdf_report_holds_what_a_physicist_files(signed, tmp_path):
    store, record_id = signed
    path = export_pdf(store, record_id, tmp_path / "report.pdf", exported_by="pia")
    assert path.read_bytes().startswith(b"%PDF")
    text = _pdf_text(path)
    for expected in ("Example, Erika (fictitious)", "EX-000123", "IORT-BM-007",       # patient
                     "20.00 Gy", "applicator surface",                                  # prescription
                     "3.0 cm", "XRS-5521", "k_out = 1.0042",                            # applicator, source, QA
                     "1379.3 s", "20.000 Gy",                                           # planned vs delivered
                     "heartbeat lost", "heartbeat watchdog",                            # interruptions, interlocks
                     "Tom Therapist", "performed delivery", "Dr. Pia Physicist", "reviewed record",
                     "Dr. Olga Oncologist", "prescribed", "VERIFIED"):
        assert expected in text, f"{expected!r} missing from the PDF report"
    assert "NOT VERIFIED" not in text
    assert "page 2 of 2" in text or "page 1 of 1" in text
    assert "export" in [e.action for e in store.audit_entries()]


def test_pdf_report_of_a_damaged_record_says_not_verified(signed, tmp_path):
    from sqlalchemy import text as sql

    store, record_id = signed
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(sql("UPDATE documents SET content=replace(content, '12.423700', '14.423700') WHERE doc_id=:d"),
                     {"d": record_id})
    path = export_pdf(store, record_id, tmp_path / "bad.pdf", exported_by="pia")
    assert "NOT VERIFIED" in _pdf_text(path)
