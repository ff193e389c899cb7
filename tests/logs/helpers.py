"""Shared builders for the logs tests: an identity service with cheap scrypt and a cast of users."""
from __future__ import annotations

from dataclasses import dataclass

from logs.crypto import InstallationKey
from orconsole.identity import IdentityService, Role, Session

PASSWORDS = {"admin": "admin-pass-123", "tom": "therapist-pw-1", "pia": "physicist-pw-1", "olga": "oncologist-pw-1"}
TEST_SCRYPT_N = 2**10  # cheap for tests only; production default is 2**15


@dataclass
class Cast:
    ids: IdentityService
    admin: Session
    therapist: Session
    physicist: Session
    oncologist: Session


def make_cast(store) -> Cast:
    ids = IdentityService(store, InstallationKey.generate(), scrypt_n=TEST_SCRYPT_N)
    admin = ids.create_first_administrator("admin", "Ada Admin", PASSWORDS["admin"])
    tom = ids.create_user(admin, "tom", "Tom Therapist", Role.RADIATION_THERAPIST, PASSWORDS["tom"])
    pia = ids.create_user(admin, "pia", "Dr. Pia Physicist", Role.MEDICAL_PHYSICIST, PASSWORDS["pia"])
    olga = ids.create_user(admin, "olga", "Dr. Olga Oncologist", Role.RADIATION_ONCOLOGIST, PASSWORDS["olga"])
    return Cast(ids, admin, tom, pia, olga)


def signed_record(store, cast: Cast, *, mrn: str = "EX-000123", review: bool = True):
    """A plan prescribed and approved, then a two-session record finalised and signed. Returns record_id."""
    from logs.records import ApprovalRef, RecordBook
    from logs.samples import example_record, example_sessions
    from logs.signing import Meaning

    plan = store.create_document("plan", {"plan_id": "PLAN-007-1", "prescription_gy": 20.0}, actor="olga",
                                 subject=mrn, final=True)
    approvals = [cast.ids.sign(cast.oncologist, PASSWORDS["olga"], plan.doc_id, Meaning.PRESCRIBED),
                 cast.ids.sign(cast.physicist, PASSWORDS["pia"], plan.doc_id, Meaning.APPROVED_PLAN)]
    book = RecordBook(store)
    rec = example_record(installation_key_id=cast.ids.installation_key.key_id, mrn=mrn)
    rec.plan.plan_document_id = plan.doc_id
    rec.plan.plan_hash = plan.content_hash
    rec.approvals = [ApprovalRef(meaning=a.meaning, printed_name=a.printed_name, role=a.role,
                                 signer_user_id=a.signer_user_id, signed_utc=a.signed_utc, signature_id=a.sig_id,
                                 signed_document_id=a.doc_id, signed_content_hash=a.content_hash) for a in approvals]
    record_id = book.start(rec, actor="tom")
    sessions, interruptions, interlocks = example_sessions()
    book.append_session(record_id, sessions[0])
    for ev in interlocks:
        book.add_interlock_event(record_id, ev)
    book.add_interruption(record_id, interruptions[0])
    book.append_session(record_id, sessions[1])
    book.finalise(record_id, actor="tom", completion="complete")
    cast.ids.sign(cast.therapist, PASSWORDS["tom"], record_id, Meaning.PERFORMED_DELIVERY)
    if review:
        cast.ids.sign(cast.physicist, PASSWORDS["pia"], record_id, Meaning.REVIEWED_RECORD)
    return record_id
