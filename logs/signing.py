"""Electronic signatures: what a signature binds, who may sign with which meaning, how a stored
document and its signatures are verified.

A signature is Ed25519 over a canonical payload naming the document id, its content hash, the
signer (id, user name, printed name, role), the meaning and the UTC time; the installation key
countersigns each signature. Never signs a draft; never trusts a stored hash without recomputing it.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logs.canonical import canonical_json, sha256_hex, utc_now_iso
from logs.crypto import InstallationKey, b64e, key_id_of, public_key_raw, verify_ed25519
from logs.store import Document, PublicKeyRow, SignatureRow, Store, StoreError


class Role(StrEnum):
    RADIATION_THERAPIST = "radiation therapist"
    MEDICAL_PHYSICIST = "medical physicist"
    RADIATION_ONCOLOGIST = "radiation oncologist"
    ADMINISTRATOR = "administrator"


class Meaning(StrEnum):
    PRESCRIBED = "prescribed"
    APPROVED_PLAN = "approved plan"
    PERFORMED_DELIVERY = "performed delivery"
    REVIEWED_RECORD = "reviewed record"
    AUTHORED_ADDENDUM = "authored addendum"
    PERFORMED_QA = "performed QA"
    APPROVED_CALIBRATION = "approved calibration"
    ACKNOWLEDGED_QA_WARNING = "acknowledged QA warning"


# Who may sign with which meaning. Checked when signing AND when verifying, so a signature whose
# role was not entitled to its meaning fails verification even if it was written behind our back.
MEANING_ROLES: dict[Meaning, frozenset[Role]] = {
    Meaning.PRESCRIBED: frozenset({Role.RADIATION_ONCOLOGIST}),
    Meaning.APPROVED_PLAN: frozenset({Role.RADIATION_ONCOLOGIST, Role.MEDICAL_PHYSICIST}),
    Meaning.PERFORMED_DELIVERY: frozenset({Role.RADIATION_THERAPIST, Role.MEDICAL_PHYSICIST, Role.RADIATION_ONCOLOGIST}),
    Meaning.REVIEWED_RECORD: frozenset({Role.MEDICAL_PHYSICIST, Role.RADIATION_ONCOLOGIST}),
    Meaning.AUTHORED_ADDENDUM: frozenset({Role.RADIATION_THERAPIST, Role.MEDICAL_PHYSICIST, Role.RADIATION_ONCOLOGIST}),
    Meaning.PERFORMED_QA: frozenset({Role.MEDICAL_PHYSICIST}),
    Meaning.APPROVED_CALIBRATION: frozenset({Role.MEDICAL_PHYSICIST}),
    Meaning.ACKNOWLEDGED_QA_WARNING: frozenset({Role.MEDICAL_PHYSICIST}),
}

# Which meanings make sense on which document kind.
MEANING_KINDS: dict[Meaning, frozenset[str]] = {
    Meaning.PRESCRIBED: frozenset({"plan", "prescription"}),
    Meaning.APPROVED_PLAN: frozenset({"plan"}),
    Meaning.PERFORMED_DELIVERY: frozenset({"delivery_record"}),
    Meaning.REVIEWED_RECORD: frozenset({"delivery_record", "addendum"}),
    Meaning.AUTHORED_ADDENDUM: frozenset({"addendum"}),
    Meaning.PERFORMED_QA: frozenset({"qa_result"}),
    Meaning.APPROVED_CALIBRATION: frozenset({"calibration", "qa_baseline"}),
    Meaning.ACKNOWLEDGED_QA_WARNING: frozenset({"qa_acknowledgement"}),
}

SIGNATURE_PURPOSE = "ORConsole electronic signature v1"
COUNTERSIGNATURE_PURPOSE = "ORConsole installation countersignature v1"


class SignatureRefused(PermissionError):
    """Signing was refused; the message says why and what to do."""


@dataclass(frozen=True)
class Signer:
    """Who signs: identity as stored in the users table at the moment of signing."""

    user_id: str
    username: str
    full_name: str
    role: str
    key_id: str


def signature_payload(*, sig_id: str, doc_id: str, doc_kind: str, content_hash: str, meaning: str,
                      signer_user_id: str, username: str, printed_name: str, role: str, signed_utc: str,
                      key_id: str) -> bytes:
    """The exact bytes a user's key signs (canonical JSON)."""
    return canonical_json({
        "purpose": SIGNATURE_PURPOSE, "sig_id": sig_id, "doc_id": doc_id, "doc_kind": doc_kind,
        "content_hash": content_hash, "meaning": meaning, "signer_user_id": signer_user_id, "username": username,
        "printed_name": printed_name, "role": role, "signed_utc": signed_utc, "key_id": key_id,
    })


def payload_of(row: SignatureRow, doc_kind: str) -> bytes:
    return signature_payload(sig_id=row.sig_id, doc_id=row.doc_id, doc_kind=doc_kind, content_hash=row.content_hash,
                             meaning=row.meaning, signer_user_id=row.signer_user_id, username=row.username,
                             printed_name=row.printed_name, role=row.role, signed_utc=row.signed_utc, key_id=row.key_id)


def countersignature_payload(signature_payload_bytes: bytes, signature_b64: str, installation_key_id: str) -> bytes:
    return canonical_json({
        "purpose": COUNTERSIGNATURE_PURPOSE, "signature_payload_sha256": sha256_hex(signature_payload_bytes),
        "signature": signature_b64, "installation_key_id": installation_key_id,
    })


def check_entitled(role: str, meaning: str, doc_kind: str) -> str | None:
    """None if role may sign doc_kind with meaning, else the reason in words."""
    try:
        m = Meaning(meaning)
    except ValueError:
        return f"'{meaning}' is not a signature meaning ORConsole knows"
    if role not in {r.value for r in MEANING_ROLES[m]}:
        allowed = " or ".join(sorted(r.value for r in MEANING_ROLES[m]))
        return f"a {role} cannot sign '{m.value}': only a {allowed} can"
    if doc_kind not in MEANING_KINDS[m]:
        return f"'{m.value}' is not a meaning for a {doc_kind.replace('_', ' ')}"
    return None


def ensure_installation_key(store: Store, installation_key: InstallationKey) -> None:
    """Register the installation's public key in the store (once per Store object)."""
    done: set[str] = store.__dict__.setdefault("_registered_installation_keys", set())
    if installation_key.key_id in done:
        return
    store.register_public_key(installation_key.key_id, "installation", installation_key.key_id,
                              installation_key.public_key_b64, actor="installation")
    done.add(installation_key.key_id)


def sign_document(store: Store, doc_id: str, meaning: Meaning | str, signer: Signer, private_key: Ed25519PrivateKey,
                  installation_key: InstallationKey) -> SignatureRow:
    """Sign a final document; countersign with the installation key; store both with an audit entry.

    Callers are orconsole.identity (which checked the password and the permission); this layer checks
    again that the role is entitled to the meaning and that the key is the signer's registered key.
    """
    doc = store.get_document(doc_id)
    if not doc.is_final:
        raise SignatureRefused(f"{doc.kind.replace('_', ' ')} {doc_id} is still a draft: finalise it before signing")
    reason = check_entitled(signer.role, str(meaning), doc.kind)
    if reason:
        raise SignatureRefused(f"{signer.full_name} ({signer.username}): {reason}")
    meaning = Meaning(meaning)
    if key_id_of(private_key.public_key()) != signer.key_id:
        raise SignatureRefused(f"the key offered is not the registered key of user '{signer.username}'")
    for existing in store.signatures_for(doc_id):
        if existing.signer_user_id == signer.user_id and existing.meaning == meaning.value:
            raise SignatureRefused(f"{signer.full_name} has already signed '{meaning.value}' on this {doc.kind.replace('_', ' ')}")
    ensure_installation_key(store, installation_key)
    sig_id = str(uuid.uuid4())
    signed_utc = utc_now_iso()
    payload = signature_payload(sig_id=sig_id, doc_id=doc.doc_id, doc_kind=doc.kind, content_hash=doc.content_hash,
                                meaning=meaning.value, signer_user_id=signer.user_id, username=signer.username,
                                printed_name=signer.full_name, role=signer.role, signed_utc=signed_utc,
                                key_id=signer.key_id)
    signature_b64 = b64e(private_key.sign(payload))
    counter_b64 = installation_key.sign(countersignature_payload(payload, signature_b64, installation_key.key_id))
    row = SignatureRow(sig_id=sig_id, doc_id=doc.doc_id, meaning=meaning.value, signer_user_id=signer.user_id,
                       username=signer.username, printed_name=signer.full_name, role=signer.role,
                       signed_utc=signed_utc, content_hash=doc.content_hash, key_id=signer.key_id,
                       signature_b64=signature_b64, installation_key_id=installation_key.key_id,
                       countersignature_b64=counter_b64)
    action = "approval" if meaning in (Meaning.PRESCRIBED, Meaning.APPROVED_PLAN, Meaning.APPROVED_CALIBRATION) \
        else "record signed"
    store.add_signature(row, audit_action=action, audit_details={
        "doc_id": doc.doc_id, "kind": doc.kind, "meaning": meaning.value, "sig_id": sig_id,
        "content_hash": doc.content_hash, "role": signer.role})
    return row


# ---------------------------------------------------------------------- verification

@dataclass
class SignatureCheck:
    sig_id: str
    meaning: str
    printed_name: str
    role: str
    signed_utc: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        when = f"{self.signed_utc[:10]} {self.signed_utc[11:19]} UTC" if len(self.signed_utc) >= 19 else self.signed_utc
        head = f"'{self.meaning}' by {self.printed_name} ({self.role}) on {when}"
        return f"  ok   signature {head}" if self.ok else f"  FAIL signature {head}: " + "; ".join(self.problems)


def check_signature(row: SignatureRow, doc_id: str, doc_kind: str, content_hash: str,
                    keys: dict[str, PublicKeyRow]) -> SignatureCheck:
    """Verify one signature row against the document it is attached to and the registered keys."""
    chk = SignatureCheck(row.sig_id, row.meaning, row.printed_name, row.role, row.signed_utc)
    if row.doc_id != doc_id:
        chk.problems.append(f"it belongs to document {row.doc_id}, not {doc_id}")
    if row.content_hash != content_hash:
        chk.problems.append("it was made over different content: the document changed after signing or the signature was moved")
    key = keys.get(row.key_id)
    if key is None:
        chk.problems.append(f"the signer's public key {row.key_id} is not registered")
    elif key.owner_kind != "user" or key.owner_id != row.signer_user_id:
        chk.problems.append(f"key {row.key_id} belongs to {key.owner_kind} {key.owner_id}, not to signer {row.signer_user_id}: re-attributed")
    payload = payload_of(row, doc_kind)
    if key is not None and not verify_ed25519(key.public_key_b64, row.signature_b64, payload):
        chk.problems.append("the cryptographic signature does not match who/what/when it claims (altered, moved or re-attributed)")
    reason = check_entitled(row.role, row.meaning, doc_kind)
    if reason:
        chk.problems.append(reason)
    ikey = keys.get(row.installation_key_id)
    if ikey is None or ikey.owner_kind != "installation":
        chk.problems.append(f"the countersigning installation key {row.installation_key_id} is not registered")
    elif not verify_ed25519(ikey.public_key_b64, row.countersignature_b64,
                            countersignature_payload(payload, row.signature_b64, row.installation_key_id)):
        chk.problems.append("the installation countersignature does not verify")
    return chk


@dataclass
class DocumentVerdict:
    doc_id: str
    kind: str
    status: str
    content_hash: str | None
    problems: list[str] = field(default_factory=list)
    signatures: list[SignatureCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: object = field(default=None, repr=False)  # the parsed content, when it parsed

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.signatures)

    def render(self) -> str:
        kind = self.kind.replace("_", " ")
        if self.ok:
            n = len(self.signatures)
            signed = (f"{n} signature{'s' if n != 1 else ''} valid and countersigned" if n else "no signatures")
            state = "content intact" if self.status == "final" else "draft, well-formed"
            head = f"OK      {kind} {self.doc_id}: {state} (sha256 {str(self.content_hash)[:16]}…), {signed}" \
                if self.status == "final" else f"OK      {kind} {self.doc_id}: {state}, {signed}"
        else:
            head = f"FAILED  {kind} {self.doc_id}: " + ("; ".join(self.problems) if self.problems
                                                       else "a signature does not verify")
        lines = [head] + [s.line() for s in self.signatures] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def verify_document(doc: Document, sigs: list[SignatureRow], keys: dict[str, PublicKeyRow]) -> DocumentVerdict:
    """Recompute the content hash of a stored document and check every signature on it."""
    from logs.canonical import CanonicalFormError, parse_canonical

    v = DocumentVerdict(doc.doc_id, doc.kind, doc.status, doc.content_hash)
    data = doc.content.encode("utf-8")
    if doc.status == "final":
        # The hash covers every byte: if it matches, the bytes are exactly those finalised (and canonical,
        # since only canonical text is ever finalised); if not, we say so and also check the form.
        if doc.content_hash == sha256_hex(data):
            try:
                v.data = json.loads(data)
            except ValueError as exc:
                v.problems.append(f"stored content is damaged: {exc}")
        else:
            v.problems.append("stored content does not match its content hash: the record was altered after it was finalised")
            try:
                parse_canonical(data)
            except CanonicalFormError as exc:
                v.problems.append(f"stored content is damaged: {exc}")
    else:
        try:
            v.data = parse_canonical(data)
        except CanonicalFormError as exc:
            v.problems.append(f"stored content is damaged: {exc}")
        if sigs:
            v.problems.append("signatures are attached to a document marked draft: its status was altered")
        else:
            v.notes.append("draft: not yet finalised or signed")
    for row in sigs:
        v.signatures.append(check_signature(row, doc.doc_id, doc.kind, doc.content_hash or "", keys))
    return v


def public_key_b64_of(private_key: Ed25519PrivateKey) -> str:
    return b64e(public_key_raw(private_key.public_key()))
