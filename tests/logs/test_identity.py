"""Users, roles, lockout and electronic signatures (orconsole.identity over logs.signing)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from logs.signing import Meaning, SignatureRefused, Signer, sign_document, verify_document
from orconsole.identity import AccountLocked, AuthenticationError, IdentityService, PasswordPolicyError, \
    Permission, PermissionDenied, Role
from tests.logs.conftest import drop_protection
from tests.logs.helpers import PASSWORDS, make_cast


def _final_plan(store, actor="olga"):
    doc = store.create_document("plan", {"prescription_gy": 20.0, "applicator_diameter_cm": 3.0}, actor=actor)
    return store.finalise_document(doc.doc_id, actor=actor)


def _verify(store, doc_id):
    return verify_document(store.get_document(doc_id), store.signatures_for(doc_id), store.all_public_keys())


def test_first_administrator_is_created_explicitly_and_only_once(store):
    cast = make_cast(store)
    with pytest.raises(PermissionDenied, match="already exists"):
        cast.ids.create_first_administrator("eve", "Eve", "another-password-1")
    assert [u.username for u in cast.ids.list_users()] == ["admin", "olga", "pia", "tom"]


def test_no_account_exists_before_the_first_run_step(store):
    ids = IdentityService(store, __import__("logs.crypto", fromlist=["x"]).InstallationKey.generate(), scrypt_n=2**10)
    assert not ids.has_users()
    with pytest.raises(AuthenticationError):
        ids.login("admin", "admin")


def test_passwords_are_stored_as_scrypt_hashes_and_keys_sealed(store):
    make_cast(store)
    row = store.get_user(username="tom")
    assert row.password_hash.startswith("scrypt$")
    assert PASSWORDS["tom"] not in row.password_hash and PASSWORDS["tom"] not in row.sealed_private_key
    assert '"cipher":"AES-256-GCM"' in row.sealed_private_key


def test_short_password_is_refused_with_a_reason(store):
    cast = make_cast(store)
    with pytest.raises(PasswordPolicyError, match="at least 10 characters"):
        cast.ids.create_user(cast.admin, "sam", "Sam", Role.RADIATION_THERAPIST, "short")


def test_login_reports_attempts_left_and_locks_after_five_failures(store):
    cast = make_cast(store)
    for left in (4, 3, 2, 1):
        with pytest.raises(AuthenticationError, match=f"password incorrect for user 'tom': {left} attempt"):
            cast.ids.login("tom", "wrong-password")
    with pytest.raises(AccountLocked, match="now locked after 5 failed attempts"):
        cast.ids.login("tom", "wrong-password")
    # Even the right password no longer opens a locked account.
    with pytest.raises(AccountLocked, match="an administrator must unlock it"):
        cast.ids.login("tom", PASSWORDS["tom"])
    actions = [e.action for e in store.audit_entries()]
    assert actions.count("login failed") >= 5 and "account locked" in actions
    cast.ids.unlock_user(cast.admin, "tom")
    assert cast.ids.login("tom", PASSWORDS["tom"]).role is Role.RADIATION_THERAPIST


def test_successful_login_resets_the_failure_count(store):
    cast = make_cast(store)
    for _ in range(4):
        with pytest.raises(AuthenticationError):
            cast.ids.login("tom", "wrong-password")
    cast.ids.login("tom", PASSWORDS["tom"])
    assert store.get_user(username="tom").failed_attempts == 0


def test_wrong_password_cannot_sign_and_counts_towards_lockout(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    with pytest.raises(AuthenticationError, match="4 attempts left"):
        cast.ids.sign(cast.oncologist, "not-my-password", plan.doc_id, Meaning.PRESCRIBED)
    assert store.signatures_for(plan.doc_id) == []
    for _ in range(4):
        with pytest.raises(AuthenticationError):
            cast.ids.sign(cast.oncologist, "not-my-password", plan.doc_id, Meaning.PRESCRIBED)
    with pytest.raises(PermissionDenied, match="locked"):
        cast.ids.sign(cast.oncologist, PASSWORDS["olga"], plan.doc_id, Meaning.PRESCRIBED)
    assert store.signatures_for(plan.doc_id) == []


def test_therapist_cannot_approve_a_plan_through_the_identity_service(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    with pytest.raises(PermissionDenied, match="a radiation therapist cannot sign 'approved plan'"):
        cast.ids.sign(cast.therapist, PASSWORDS["tom"], plan.doc_id, Meaning.APPROVED_PLAN)
    assert store.signatures_for(plan.doc_id) == []
    assert "permission denied" in [e.action for e in store.audit_entries()]


def test_therapist_cannot_approve_a_plan_even_by_calling_the_signing_layer_directly(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    row = store.get_user(username="tom")
    from logs.crypto import open_private_key

    key = open_private_key(row.sealed_private_key, PASSWORDS["tom"], owner=row.user_id)
    signer = Signer(row.user_id, row.username, row.full_name, row.role, row.key_id)
    with pytest.raises(SignatureRefused, match="only a medical physicist or radiation oncologist can"):
        sign_document(store, plan.doc_id, Meaning.APPROVED_PLAN, signer, key, cast.ids.installation_key)


def test_therapist_cannot_change_a_qa_baseline_or_activate_a_calibration(store):
    cast = make_cast(store)
    with pytest.raises(PermissionDenied, match="Only a medical physicist can"):
        cast.ids.require(cast.therapist, Permission.CHANGE_QA_BASELINE)
    cal = store.create_document("calibration", {"source_serial": "S1"}, actor="pia", subject="S1", final=True)
    with pytest.raises(PermissionDenied):
        cast.ids.set_active_calibration(cast.therapist, PASSWORDS["tom"], "S1", cal.doc_id)
    assert store.active_calibration("S1") is None
    cast.ids.set_active_calibration(cast.physicist, PASSWORDS["pia"], "S1", cal.doc_id)
    assert store.active_calibration("S1").doc_id == cal.doc_id


def test_administrator_cannot_sign_clinical_documents(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    with pytest.raises(PermissionDenied):
        cast.ids.sign(cast.admin, PASSWORDS["admin"], plan.doc_id, Meaning.PRESCRIBED)


def test_only_an_administrator_creates_users(store):
    cast = make_cast(store)
    with pytest.raises(PermissionDenied, match="Only an administrator can"):
        cast.ids.create_user(cast.physicist, "x", "X", Role.MEDICAL_PHYSICIST, "long-enough-pw")


def test_draft_cannot_be_signed(store):
    cast = make_cast(store)
    draft = store.create_document("plan", {"prescription_gy": 20.0}, actor="olga")
    with pytest.raises(SignatureRefused, match="still a draft"):
        cast.ids.sign(cast.oncologist, PASSWORDS["olga"], draft.doc_id, Meaning.PRESCRIBED)


def test_valid_signatures_verify_with_printed_name_meaning_and_time(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    cast.ids.sign(cast.oncologist, PASSWORDS["olga"], plan.doc_id, Meaning.PRESCRIBED)
    cast.ids.sign(cast.physicist, PASSWORDS["pia"], plan.doc_id, Meaning.APPROVED_PLAN)
    verdict = _verify(store, plan.doc_id)
    assert verdict.ok, verdict.render()
    assert [s.printed_name for s in verdict.signatures] == ["Dr. Olga Oncologist", "Dr. Pia Physicist"]
    assert "'approved plan' by Dr. Pia Physicist (medical physicist)" in verdict.render()
    assert "approval" in [e.action for e in store.audit_entries()]


def test_signature_moved_to_another_record_fails_verification(store):
    cast = make_cast(store)
    plan_a, plan_b = _final_plan(store), _final_plan(store)
    sig = cast.ids.sign(cast.oncologist, PASSWORDS["olga"], plan_a.doc_id, Meaning.PRESCRIBED)
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE signatures SET doc_id=:b, content_hash=:h WHERE sig_id=:s"),
                     {"b": plan_b.doc_id, "h": plan_b.content_hash, "s": sig.sig_id})
    verdict = _verify(store, plan_b.doc_id)
    assert not verdict.ok
    assert "does not match who/what/when" in verdict.render()


def test_signature_reattributed_to_another_user_fails_verification(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    sig = cast.ids.sign(cast.physicist, PASSWORDS["pia"], plan.doc_id, Meaning.APPROVED_PLAN)
    olga = store.get_user(username="olga")
    drop_protection(store)
    with store.engine.begin() as conn:  # claim Olga signed, with her key id, keeping Pia's signature bytes
        conn.execute(text("UPDATE signatures SET signer_user_id=:u, username='olga', printed_name=:n, "
                          "role='radiation oncologist', key_id=:k WHERE sig_id=:s"),
                     {"u": olga.user_id, "n": olga.full_name, "k": olga.key_id, "s": sig.sig_id})
    verdict = _verify(store, plan.doc_id)
    assert not verdict.ok and "does not match who/what/when" in verdict.render()


def test_signature_role_upgraded_after_the_fact_fails(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    sig = cast.ids.sign(cast.physicist, PASSWORDS["pia"], plan.doc_id, Meaning.APPROVED_PLAN)
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE signatures SET meaning='prescribed' WHERE sig_id=:s"), {"s": sig.sig_id})
    verdict = _verify(store, plan.doc_id)
    assert not verdict.ok
    assert "a medical physicist cannot sign 'prescribed'" in verdict.render()


def test_password_change_keeps_the_key_and_old_signatures_valid(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    cast.ids.sign(cast.oncologist, PASSWORDS["olga"], plan.doc_id, Meaning.PRESCRIBED)
    cast.ids.change_password(cast.oncologist, PASSWORDS["olga"], "a-brand-new-password")
    with pytest.raises(AuthenticationError):
        cast.ids.login("olga", PASSWORDS["olga"])
    session = cast.ids.login("olga", "a-brand-new-password")
    cast.ids.sign(session, "a-brand-new-password", plan.doc_id, Meaning.APPROVED_PLAN)
    assert _verify(store, plan.doc_id).ok


def test_the_same_person_cannot_sign_the_same_meaning_twice(store):
    cast = make_cast(store)
    plan = _final_plan(store)
    cast.ids.sign(cast.oncologist, PASSWORDS["olga"], plan.doc_id, Meaning.PRESCRIBED)
    with pytest.raises(SignatureRefused, match="already signed"):
        cast.ids.sign(cast.oncologist, PASSWORDS["olga"], plan.doc_id, Meaning.PRESCRIBED)


def test_therapist_cannot_store_a_qa_baseline_or_calibration_by_any_identity_path(store):
    cast = make_cast(store)
    for kind, meaning in (("qa_baseline", Meaning.APPROVED_CALIBRATION), ("calibration", Meaning.APPROVED_CALIBRATION),
                          ("qa_result", Meaning.PERFORMED_QA)):
        with pytest.raises(PermissionDenied, match="radiation therapist cannot store"):
            cast.ids.create_signed_document(cast.therapist, PASSWORDS["tom"], kind, {"k_out": 1.0}, meaning)
    assert store.find_documents() == []


def test_physicist_stores_and_signs_a_qa_baseline_in_one_step(store):
    cast = make_cast(store)
    doc, sig = cast.ids.create_signed_document(cast.physicist, PASSWORDS["pia"], "qa_baseline",
                                               {"source_serial": "S1", "reference_reading_c": 1.234e-9},
                                               Meaning.APPROVED_CALIBRATION, subject="S1")
    assert doc.is_final and sig.meaning == "approved calibration"
    assert _verify(store, doc.doc_id).ok


def test_wrong_password_stores_nothing(store):
    cast = make_cast(store)
    with pytest.raises(AuthenticationError):
        cast.ids.create_signed_document(cast.physicist, "wrong-password", "qa_result", {"k_out": 1.0},
                                        Meaning.PERFORMED_QA)
    assert store.find_documents() == []
