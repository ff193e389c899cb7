"""The delivery record: incremental drafts, canonical form, signing, addenda and tamper detection."""
from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from logs.canonical import canonical_json
from logs.records import Correction, RecordBook, TerminationCause
from logs.samples import example_record, example_sessions
from logs.signing import Meaning
from logs.store import ImmutableDocument
from logs.verify import verify_all, verify_export_bytes, verify_stored
from logs.export_json import export_json_bytes
from tests.logs.conftest import drop_protection
from tests.logs.helpers import PASSWORDS, make_cast, signed_record


def test_record_is_built_incrementally_and_totals_are_computed_at_finalisation(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    rec = RecordBook(store).load(record_id)
    assert [s.delivery_type for s in rec.sessions] == ["TREATMENT", "CONTINUATION"]
    assert rec.totals.dose_gy.primary_timer_gy == pytest.approx(20.0)
    assert rec.totals.console_beam_on_s == pytest.approx(1379.3)
    assert rec.completion == "complete"
    assert len(rec.interruptions) == 1 and len(rec.interlock_events) == 2


def test_canonical_record_has_sorted_keys_fixed_decimals_and_no_whitespace():
    rec = example_record()
    data = rec.canonical_bytes()
    assert b"\n" not in data and b"\": " not in data and b"\", \"" not in data
    assert b'"prescription_gy":20.000000' in data and b'"k_out":1.004200' in data
    obj = json.loads(data)
    assert list(obj) == sorted(obj)
    assert canonical_json(obj) == data


def test_second_session_must_be_a_continuation():
    rec = example_record()
    s1, s2 = example_sessions()[0]
    with pytest.raises(ValidationError, match="CONTINUATION"):
        rec.sessions = [s1, s2.model_copy(update={"delivery_type": "TREATMENT"})]


def test_naive_timestamps_are_refused():
    from datetime import datetime

    s1 = example_sessions()[0][0]
    with pytest.raises(ValidationError, match="without time zone"):
        s1.model_copy(update={}).__class__.model_validate({**s1.model_dump(), "beam_on_utc": datetime(2026, 1, 1)})


def test_termination_causes_map_to_dicom_statuses():
    assert TerminationCause.PRESET_TIME_REACHED.dicom_status == "NORMAL"
    assert TerminationCause.OPERATOR_STOP.dicom_status == "OPERATOR"
    assert TerminationCause.INTERLOCK.dicom_status == "MACHINE"
    assert TerminationCause.UNKNOWN.dicom_status == "UNKNOWN"


def test_signed_record_verifies_with_every_signature(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    v = verify_stored(store, record_id)
    assert v.ok, v.render()
    assert [s.meaning for s in v.signatures] == ["performed delivery", "reviewed record"]
    assert "Example, Erika" in v.render()
    whole = verify_all(store)
    assert whole.ok, whole.render()


def test_signed_record_cannot_be_changed_only_amended(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    book = RecordBook(store)
    with pytest.raises(ImmutableDocument):
        book.update(record_id, lambda r: setattr(r, "comments", "edited"))
    add = book.add_addendum(record_id, author="tom", reason="termination detail mistyped",
                            corrections=[Correction(field_path="sessions.1.termination_detail",
                                                    recorded_value="heartbeat from the control unit lost for 1.2 s",
                                                    corrected_value="heartbeat lost for 1.3 s")])
    cast.ids.sign(cast.therapist, PASSWORDS["tom"], add.doc_id, Meaning.AUTHORED_ADDENDUM)
    assert add.references_hash == store.get_document(record_id).content_hash
    v = verify_stored(store, record_id)
    assert v.ok, v.render()
    assert any("addendum" in n and "verified" in n for n in v.notes)


def _flip(data: bytes, rng: random.Random) -> tuple[bytes, int]:
    pos = rng.randrange(len(data))
    new = bytes([data[pos] ^ (1 << rng.randrange(8))])
    return data[:pos] + new + data[pos + 1:], pos


def test_flipping_any_byte_of_a_stored_record_is_detected(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    drop_protection(store)
    original = store.get_document(record_id).content.encode("utf-8")
    rng = random.Random(20)
    for _ in range(25):
        damaged, pos = _flip(original, rng)
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE documents SET content=:c WHERE doc_id=:d"),
                         {"c": damaged.decode("utf-8", errors="replace"), "d": record_id})
        v = verify_stored(store, record_id)
        assert not v.ok, f"flip at byte {pos} not detected"
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE documents SET content=:c WHERE doc_id=:d"), {"c": original.decode(), "d": record_id})
    assert verify_stored(store, record_id).ok


def test_flipping_a_byte_in_any_signature_field_is_detected(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast, review=False)
    drop_protection(store)
    sig = store.signatures_for(record_id)[0]
    rng = random.Random(7)
    for column in ("meaning", "signer_user_id", "username", "printed_name", "role", "signed_utc", "content_hash",
                   "key_id", "signature_b64", "installation_key_id", "countersignature_b64", "sig_id"):
        value = getattr(sig, column)
        pos = rng.randrange(len(value))
        changed = value[:pos] + chr(ord(value[pos]) ^ 1) + value[pos + 1:]
        with store.engine.begin() as conn:
            conn.execute(text(f"UPDATE signatures SET {column}=:v WHERE sig_id=:s"), {"v": changed, "s": sig.sig_id})
        assert not verify_all(store).ok, f"change in {column} not detected"
        with store.engine.begin() as conn:
            key = changed if column == "sig_id" else sig.sig_id
            conn.execute(text(f"UPDATE signatures SET {column}=:v WHERE sig_id=:s"), {"v": value, "s": key})
        assert verify_all(store).ok


def test_deleting_a_signature_or_a_record_is_detected_through_the_audit_trail(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    drop_protection(store)
    sig = store.signatures_for(record_id)[1]
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM signatures WHERE sig_id=:s"), {"s": sig.sig_id})
    v = verify_stored(store, record_id)
    assert not v.ok and "'reviewed record' signature" in v.render() and "missing" in v.render()
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM signatures WHERE doc_id=:d"), {"d": record_id})
        conn.execute(text("DELETE FROM documents WHERE doc_id=:d"), {"d": record_id})
    whole = verify_all(store)
    assert not whole.ok and f"document {record_id} was created according to the audit trail" in whole.render()


def test_exported_json_verifies_offline(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    data = export_json_bytes(store, record_id, cast.ids.installation_key, exported_by="pia")
    verdicts = verify_export_bytes(data)
    assert all(v.ok for v in verdicts), "\n".join(v.render() for v in verdicts)
    kinds = [v.kind for v in verdicts]
    assert kinds == ["delivery_record", "plan"]
    body = json.loads(data)["body"]
    assert body["documents"][0]["content"]["patient"]["trial_subject_id"] == "IORT-BM-007"
    assert all(k["public_key_b64"] for k in body["public_keys"].values())


def test_flipping_random_bytes_in_an_exported_record_is_detected(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    data = export_json_bytes(store, record_id, cast.ids.installation_key, exported_by="pia")
    rng = random.Random(1234)
    for _ in range(200):
        damaged, pos = _flip(data, rng)
        verdicts = verify_export_bytes(damaged)
        assert not all(v.ok for v in verdicts), f"flip at byte {pos} ({data[pos - 10:pos + 10]!r}) not detected"


def test_export_of_a_draft_is_refused(store):
    cast = make_cast(store)
    rec = example_record()
    RecordBook(store).start(rec, actor="tom")
    with pytest.raises(Exception, match="still a draft"):
        export_json_bytes(store, rec.record_id, cast.ids.installation_key, exported_by="tom")


def test_parallel_verification_finds_the_same_damage_as_serial(store):
    cast = make_cast(store)
    ids = [signed_record(store, cast, mrn=f"EX-{i}", review=False) for i in range(3)]
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE documents SET content=replace(content, '12.423700', '12.423701') WHERE doc_id=:d"),
                     {"d": ids[1]})
    serial = verify_all(store, workers=1)
    parallel = verify_all(store, workers=2, parallel_from=1)
    assert not serial.ok and not parallel.ok
    assert [(v.doc_id, v.ok) for v in serial.documents] == [(v.doc_id, v.ok) for v in parallel.documents]
    assert [v.doc_id for v in parallel.documents if not v.ok] == [ids[1]]


def test_record_approvals_must_be_real_signatures_on_the_stored_plan(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast, review=False)
    v = verify_stored(store, record_id)
    assert v.ok and any("2 plan approval(s) match" in n for n in v.notes), v.render()
    # A plan signature removed behind the store's back: the record's approval copy no longer matches.
    plan_id = RecordBook(store).load(record_id).plan.plan_document_id
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM signatures WHERE doc_id=:p AND meaning='approved plan'"), {"p": plan_id})
    v = verify_stored(store, record_id)
    assert not v.ok
    assert "approval 'approved plan' by Dr. Pia Physicist is not a signature on the stored plan" in v.render()
    assert not verify_all(store).ok


def test_record_pointing_at_an_unapproved_plan_version_fails(store):
    cast = make_cast(store)
    book = RecordBook(store)
    approved = store.create_document("plan", {"plan_id": "P", "v": 1}, actor="olga", final=True)
    cast.ids.sign(cast.oncologist, PASSWORDS["olga"], approved.doc_id, Meaning.PRESCRIBED)
    rec = example_record()
    rec.plan.plan_document_id = approved.doc_id  # plan_hash left as some other plan's hash
    book.start(rec, actor="tom")
    book.finalise(rec.record_id, actor="tom", completion="incomplete")
    v = verify_stored(store, rec.record_id)
    assert not v.ok and "the delivered plan is not the approved one" in v.render()


def test_changing_any_column_of_a_stored_record_or_addendum_is_detected(store):
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    add = RecordBook(store).add_addendum(record_id, author="tom", reason="typo", corrections=[])
    cast.ids.sign(cast.therapist, PASSWORDS["tom"], add.doc_id, Meaning.AUTHORED_ADDENDUM)
    assert verify_all(store).ok
    drop_protection(store)
    columns = ("kind", "subject", "status", "content", "content_hash", "references_doc_id", "references_hash",
               "created_utc", "created_by", "finalised_utc")
    for doc_id in (record_id, add.doc_id):
        row = store.get_document(doc_id)
        for column in columns:
            value = getattr(row, column)
            changed = "x" if value is None else value[:-1] + chr(ord(value[-1]) ^ 1)
            with store.engine.begin() as conn:
                conn.execute(text(f"UPDATE documents SET {column}=:v WHERE doc_id=:d"), {"v": changed, "d": doc_id})
            assert not verify_all(store).ok, f"change of {column} in {row.kind} not detected"
            with store.engine.begin() as conn:
                conn.execute(text(f"UPDATE documents SET {column}=:v WHERE doc_id=:d"), {"v": value, "d": doc_id})
    assert verify_all(store).ok


def test_a_public_key_slipped_into_the_store_is_reported(store):
    from logs.crypto import b64e, key_id_of, public_key_raw
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    cast = make_cast(store)
    signed_record(store, cast, review=False)
    olga = store.get_user(username="olga")
    k = Ed25519PrivateKey.generate()
    with store.engine.begin() as conn:  # an attacker's own key, registered for Olga
        conn.execute(text("INSERT INTO public_keys (key_id, owner_kind, owner_id, public_key_b64, created_utc) "
                          "VALUES (:k, 'user', :u, :p, '2026-01-01T00:00:00.000000Z')"),
                     {"k": key_id_of(k.public_key()), "u": olga.user_id, "p": b64e(public_key_raw(k.public_key()))})
    verdict = verify_all(store)
    assert not verdict.ok and "was not registered through the store" in verdict.render()


def test_approvals_of_a_continuation_plan_version_are_checked_against_that_version(store):
    from logs.records import ApprovalRef

    cast = make_cast(store)
    book = RecordBook(store)
    first = store.create_document("plan", {"plan_id": "P", "v": 1}, actor="olga", final=True)
    second = store.create_document("plan", {"plan_id": "P", "v": 2, "delivery": "CONTINUATION"}, actor="olga",
                                   final=True)
    sigs = [cast.ids.sign(cast.oncologist, PASSWORDS["olga"], first.doc_id, Meaning.PRESCRIBED),
            cast.ids.sign(cast.physicist, PASSWORDS["pia"], second.doc_id, Meaning.APPROVED_PLAN)]
    rec = example_record()
    rec.plan.plan_document_id, rec.plan.plan_hash = first.doc_id, first.content_hash
    rec.approvals = [ApprovalRef(meaning=a.meaning, printed_name=a.printed_name, role=a.role,
                                 signer_user_id=a.signer_user_id, signed_utc=a.signed_utc, signature_id=a.sig_id,
                                 signed_document_id=a.doc_id, signed_content_hash=a.content_hash) for a in sigs]
    book.start(rec, actor="tom")
    book.finalise(rec.record_id, actor="tom", completion="complete")
    v = verify_stored(store, rec.record_id)
    assert v.ok and any("2 stored plan version(s)" in n for n in v.notes), v.render()
    # the continuation's approval copied onto the first version: it is not a signature there
    forged = rec.model_copy(deep=True)
    forged.record_id = "forged-" + rec.record_id[7:]
    forged.approvals[1] = forged.approvals[1].model_copy(update={"signed_document_id": first.doc_id})
    book.start(forged, actor="tom")
    book.finalise(forged.record_id, actor="tom", completion="complete")
    v = verify_stored(store, forged.record_id)
    assert not v.ok and f"is not a signature on the stored plan {first.doc_id}" in v.render()
