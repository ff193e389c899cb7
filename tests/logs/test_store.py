"""Store and audit trail, on SQLite and PostgreSQL: durability settings, immutability, chain checks."""
from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from logs.store import ImmutableDocument, Store, StoreError
from tests.logs.conftest import drop_protection


def _fill(store, n=30):
    for i in range(n):
        store.audit(f"user{i % 3}", "login", {"i": i, "note": "é"})


def test_sqlite_store_uses_wal_and_synchronous_full(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    s.close()


def test_orconsole_db_environment_variable_selects_the_database(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'env.sqlite3'}"
    monkeypatch.setenv("ORCONSOLE_DB", url)
    s = Store()
    assert s.url == url
    s.close()


def test_migrations_are_idempotent_on_reopen(store_url):
    Store(store_url).close()
    s = Store(store_url)
    assert s.healthcheck().ok
    s.close()


def test_healthcheck_reports_a_writable_store(store):
    health = store.healthcheck()
    assert health.ok and "writable" in health.reason


def test_healthcheck_reports_an_unwritable_store_with_a_reason(tmp_path):
    path = tmp_path / "ro.sqlite3"
    s = Store(f"sqlite:///{path}")
    s.close()
    # Reopen read-only: every write must fail, and the reason must say so.
    ro = Store(f"sqlite:///file:{path}?mode=ro&uri=true", migrate=False)
    health = ro.healthcheck()
    assert not health.ok
    assert "not writable" in health.reason
    ro.close()


def test_audit_chain_of_untouched_entries_verifies(store):
    _fill(store)
    verdict = store.verify_audit_chain()
    assert verdict.ok, verdict.problems
    assert verdict.entries_checked == 30


def test_audit_trail_refuses_update_and_delete_through_sql(store):
    _fill(store, 3)
    with pytest.raises(DBAPIError, match="append-only"):
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET actor='mallory' WHERE seq=2"))
    with pytest.raises(DBAPIError, match="append-only"):
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log WHERE seq=2"))
    assert store.verify_audit_chain().ok


def test_edited_audit_entry_is_detected_and_named(store):
    _fill(store)
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor='mallory' WHERE seq=17"))
    verdict = store.verify_audit_chain()
    assert not verdict.ok
    assert "entry 17 was altered: its hash does not match its content" in verdict.problems


def test_edited_audit_details_byte_is_detected(store):
    _fill(store)
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET details='{\"i\": 5,\"note\":\"é\"}' WHERE seq=6"))
    verdict = store.verify_audit_chain()
    assert not verdict.ok and any("entry 6 was altered" in p for p in verdict.problems)


def test_deleted_audit_entry_is_detected_and_named(store):
    _fill(store)
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq=23"))
    verdict = store.verify_audit_chain()
    assert not verdict.ok
    assert any(p.startswith("entry 23 is missing") for p in verdict.problems), verdict.problems


def test_deleted_tail_of_audit_trail_is_detected(store):
    _fill(store)
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq>=28"))
    verdict = store.verify_audit_chain()
    assert not verdict.ok and "entries 28–30 are missing" in verdict.summary()


def test_inserted_audit_entry_is_detected(store):
    """An attacker renumbers entries to slip one in, recomputing its own hash: the next link breaks."""
    from logs.audit import entry_hash

    _fill(store, 10)
    drop_protection(store)
    entries = store.audit_entries()
    with store.engine.begin() as conn:
        for seq in range(10, 4, -1):
            conn.execute(text("UPDATE audit_log SET seq=:n WHERE seq=:o"), {"n": seq + 1, "o": seq})
        prev = entries[3].entry_hash
        h = entry_hash(prev, 5, entries[4].utc, "mallory", "approval", {})
        conn.execute(text("INSERT INTO audit_log (seq, utc, actor, action, details, prev_hash, entry_hash) "
                          "VALUES (5, :utc, 'mallory', 'approval', '{}', :p, :h)"),
                     {"utc": entries[4].utc, "p": prev, "h": h})
        conn.execute(text("UPDATE audit_head SET seq=11"))
    verdict = store.verify_audit_chain()
    assert not verdict.ok
    assert any("entry 6 does not follow entry 5" in p for p in verdict.problems), verdict.problems


def test_final_document_is_immutable_through_the_api_and_through_sql(store):
    doc = store.create_document("plan", {"prescription_gy": 20.0}, actor="anna")
    store.update_draft(doc.doc_id, {"prescription_gy": 20.0, "site": "brain"})
    final = store.finalise_document(doc.doc_id, actor="anna")
    assert final.content == '{"prescription_gy":20.000000,"site":"brain"}'
    with pytest.raises(ImmutableDocument, match="addendum"):
        store.update_draft(doc.doc_id, {"prescription_gy": 40.0})
    with pytest.raises(DBAPIError, match="immutable"):
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE documents SET content='{}' WHERE doc_id=:d"), {"d": doc.doc_id})
    assert store.get_document(doc.doc_id).content_hash == final.content_hash


def test_document_creation_and_finalisation_are_audited(store):
    doc = store.create_document("qa_result", {"k_out": 1.004}, actor="piet", subject="SRC-1")
    store.finalise_document(doc.doc_id, actor="piet")
    actions = [e.action for e in store.audit_entries()]
    assert actions == ["document created", "document finalised"]
    assert [d.doc_id for d in store.find_documents(kind="qa_result", subject="SRC-1")] == [doc.doc_id]


def test_only_a_final_calibration_can_be_made_active(store):
    draft = store.create_document("calibration", {"source_serial": "S1"}, actor="piet", subject="S1")
    with pytest.raises(StoreError, match="not a final calibration"):
        store.set_active_calibration("S1", draft.doc_id, actor="piet")
    store.finalise_document(draft.doc_id, actor="piet")
    store.set_active_calibration("S1", draft.doc_id, actor="piet")
    assert store.active_calibration("S1").doc_id == draft.doc_id
    assert store.active_calibration("S2") is None


def test_concurrent_audit_appends_keep_one_unbroken_chain(store):
    import threading

    def worker(k):
        for i in range(10):
            store.audit(f"w{k}", "beam on", {"i": i})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    verdict = store.verify_audit_chain()
    assert verdict.ok, verdict.problems
    assert verdict.entries_checked == 40


def test_two_consoles_sharing_one_store_keep_one_unbroken_chain(store_url):
    """Two Store objects (two operating rooms) appending at the same time."""
    import threading

    a, b = Store(store_url), Store(store_url)

    def worker(s, name):
        for i in range(15):
            s.audit(name, "beam on", {"i": i})

    threads = [threading.Thread(target=worker, args=(s, n)) for s, n in ((a, "or1"), (b, "or2"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    verdict = a.verify_audit_chain()
    a.close()
    b.close()
    assert verdict.ok, verdict.problems
    assert verdict.entries_checked == 30


@pytest.mark.postgres
def test_healthcheck_reports_a_stopped_postgresql_server_with_a_reason(postgres_cluster):
    """The 'record store unavailable' interlock depends on this: no exception, a reason, within seconds."""
    import time

    from tests.pg import TemporaryPostgres

    with TemporaryPostgres() as pg:
        s = Store(pg.create_database("hc"))
        assert s.healthcheck().ok
        pg._run(str(pg.bin / "pg_ctl"), "-D", str(pg.data), "-m", "immediate", "-w", "stop")
        t0 = time.monotonic()
        health = s.healthcheck()
        assert not health.ok and "is not writable" in health.reason
        assert time.monotonic() - t0 < 10
        s.close()
        pg._run(str(pg.bin / "pg_ctl"), "-D", str(pg.data), "-l", str(pg.log), "-o",
                f"-h 127.0.0.1 -p {pg.port} -k {pg.tmp} -F", "-w", "start")
