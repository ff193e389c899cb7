"""`orconsole records ...` and `orconsole admin ...` as a person uses them: verdicts and exit status."""
from __future__ import annotations

import io
import random

import pytest

from orconsole.commands import admin as admin_cmd
from orconsole.commands import records as records_cmd
from tests.logs.conftest import drop_protection
from tests.logs.helpers import make_cast, signed_record


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCONSOLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ORCONSOLE_DB", raising=False)


def test_verify_all_passes_then_fails_after_a_changed_byte(store, capsys):
    from sqlalchemy import text

    cast = make_cast(store)
    record_id = signed_record(store, cast)
    assert records_cmd.main(["verify", "--all", "--db", store.url]) == 0
    out = capsys.readouterr().out
    assert "ALL VERIFIED" in out and "'performed delivery' by Tom Therapist (radiation therapist)" in out
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE documents SET content=replace(content, '20.000000', '20.000001') WHERE doc_id=:d"),
                     {"d": record_id})
    assert records_cmd.main(["verify", record_id, "--db", store.url]) == 1
    out = capsys.readouterr().out
    assert "VERIFICATION FAILED" in out and "altered after it was finalised" in out


def test_export_json_then_verify_the_file_offline(store, tmp_path, capsys):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    out_file = tmp_path / "record.json"
    assert records_cmd.main(["export", record_id, "--format", "json", "-o", str(out_file), "--db", store.url]) == 0
    assert records_cmd.main(["verify", str(out_file)]) == 0
    assert "VERIFIED: exported file" in capsys.readouterr().out
    data = bytearray(out_file.read_bytes())
    pos = random.Random(3).randrange(len(data))
    data[pos] ^= 0x04
    out_file.write_bytes(bytes(data))
    assert records_cmd.main(["verify", str(out_file)]) == 1
    assert "must not be trusted" in capsys.readouterr().out
    assert "export" in [e.action for e in store.audit_entries()]


def test_verify_unknown_record_explains_and_exits_2(store, capsys):
    assert records_cmd.main(["verify", "no-such-record", "--db", store.url]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_first_admin_step_then_refused_a_second_time(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    monkeypatch.setattr("sys.stdin", io.StringIO("first-admin-pass\n"))
    assert admin_cmd.main(["create-first-admin", "--username", "ada", "--full-name", "Ada Admin",
                           "--password-stdin", "--db", url]) == 0
    assert "created administrator 'ada'" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password\n"))
    assert admin_cmd.main(["create-first-admin", "--username", "eve", "--full-name", "Eve",
                           "--password-stdin", "--db", url]) == 1
    assert "already exist" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("first-admin-pass\ntherapist-pass-1\n"))
    assert admin_cmd.main(["add-user", "--admin", "ada", "--username", "tom", "--full-name", "Tom T",
                           "--role", "therapist", "--password-stdin", "--db", url]) == 0
    assert admin_cmd.main(["list-users", "--db", url]) == 0
    assert "radiation therapist" in capsys.readouterr().out


def test_cli_composition_root_accepts_db_before_or_after_the_subcommand(store, capsys):
    from orconsole.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["--db", store.url, "records", "verify", "--all"])
    assert args.db == store.url
    args = parser.parse_args(["records", "verify", "--all", "--db", store.url])
    assert args.db == store.url
    assert args.func(args) == 0


def test_export_pdf_and_dicom_through_the_cli_and_send_to_a_dicom_receiver(store, tmp_path, capsys, monkeypatch):
    import socket

    from pydicom import dcmread
    from pynetdicom import AE, evt

    from logs.export_dicom import RT_BEAMS_TREATMENT_RECORD_STORAGE

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    pdf = tmp_path / "r.pdf"
    assert records_cmd.main(["export", record_id, "--format", "pdf", "-o", str(pdf), "--db", store.url]) == 0
    assert pdf.read_bytes()[:4] == b"%PDF"

    received = []
    scp = AE(ae_title="OIS")
    scp.add_supported_context(RT_BEAMS_TREATMENT_RECORD_STORAGE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = scp.start_server(("127.0.0.1", port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(e.dataset) or 0x0000)])
    try:
        monkeypatch.setenv("ORCONSOLE_OIS", f"OIS@127.0.0.1:{port}")
        dcm = tmp_path / "r.dcm"
        assert records_cmd.main(["export", record_id, "--format", "dicom", "-o", str(dcm), "--send",
                                 "--db", store.url]) == 0
    finally:
        server.shutdown()
    assert "accepted" in capsys.readouterr().out
    assert len(received) == 1 and dcmread(str(dcm)).SOPInstanceUID == received[0].SOPInstanceUID
    sends = [e for e in store.audit_entries(action="export") if "c-store" in e.details]
    assert len(sends) == 1 and '"ok":true' in sends[0].details


def test_send_without_a_configured_destination_explains_what_to_set(store, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ORCONSOLE_OIS", raising=False)
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    assert records_cmd.main(["export", record_id, "--format", "dicom", "-o", str(tmp_path / "x.dcm"), "--send",
                             "--db", store.url]) == 2
    assert "set ORCONSOLE_OIS=AET@HOST:PORT" in capsys.readouterr().err
