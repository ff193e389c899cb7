"""Verification of stored and exported records: content hashes, every signature and countersignature,
the record schema, addenda, and cross-checks against the audit trail.

Read-only. Never "fixes" anything; reports in sentences a physicist can act on.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from logs.audit import ChainVerdict
from logs.canonical import CanonicalFormError, canonical_json, parse_canonical, sha256_hex
from logs.crypto import verify_ed25519
from logs.records import ADDENDUM_KIND, RECORD_KIND, DeliveryRecord, RecordAddendum
from logs.signing import DocumentVerdict, verify_document
from logs.store import Document, DocumentNotFound, PublicKeyRow, SignatureRow, Store

SCHEMAS = {RECORD_KIND: DeliveryRecord, ADDENDUM_KIND: RecordAddendum}
_AUDITED_COLUMNS = ("kind", "subject", "created_utc", "created_by", "references_doc_id", "references_hash",
                    "finalised_utc")


@dataclass
class AuditIndex:
    """What the audit trail says happened to documents and signatures."""

    created: set[str] = field(default_factory=set)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # doc_id -> audited column values
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # key_id -> (owner_kind, owner_id)
    finalised: dict[str, str] = field(default_factory=dict)  # doc_id -> content hash
    signatures: dict[str, dict[str, str]] = field(default_factory=dict)  # doc_id -> {sig_id: meaning}

    def add(self, e, d: Any) -> None:
        if not isinstance(d, dict):
            return
        if e.action == "document created":
            self.created.add(d.get("doc_id"))
            meta = self.metadata.setdefault(d.get("doc_id"), {})
            meta.update({k: d[k] for k in _AUDITED_COLUMNS if k in d})
            if d.get("content_hash"):
                self.finalised[d["doc_id"]] = d["content_hash"]
        elif e.action == "document finalised":
            self.finalised[d.get("doc_id")] = d.get("content_hash")
            if "finalised_utc" in d:
                self.metadata.setdefault(d.get("doc_id"), {})["finalised_utc"] = d["finalised_utc"]
        elif e.action == "key registered":
            self.keys[d.get("key_id")] = (d.get("owner_kind"), d.get("owner_id"))
        elif e.action in ("record signed", "approval") and d.get("sig_id"):
            self.signatures.setdefault(d.get("doc_id"), {})[d["sig_id"]] = d.get("meaning")

    @classmethod
    def from_store(cls, store: Store) -> "AuditIndex":
        idx = cls()
        for e in store.audit_entries():
            if e.action not in ("document created", "document finalised", "record signed", "approval"):
                continue
            try:
                idx.add(e, json.loads(e.details))
            except ValueError:
                continue  # the chain check reports the damaged entry
        return idx

    @classmethod
    def with_chain(cls, store: Store) -> tuple["AuditIndex", ChainVerdict]:
        """Build the index and verify the chain in one pass over the audit trail."""
        idx = cls()
        chain = store.verify_audit_chain(on_entry=idx.add)
        return idx, chain

    def check(self, v: DocumentVerdict, doc: Document, sigs: list[SignatureRow]) -> None:
        if doc.doc_id not in self.created:
            v.problems.append("the audit trail has no entry for the creation of this document: it was inserted behind the store's back")
        audited_hash = self.finalised.get(doc.doc_id)
        if doc.is_final and audited_hash and audited_hash != doc.content_hash:
            v.problems.append("its content hash differs from the one recorded in the audit trail when it was finalised")
        if doc.is_final and not audited_hash:
            v.problems.append("the audit trail does not record that this document was finalised")
        if not doc.is_final and audited_hash:
            v.problems.append("the audit trail says this document was finalised, but it is stored as a draft")
        meta = self.metadata.get(doc.doc_id, {})
        changed = [col for col, audited in meta.items() if col != "content_hash" and getattr(doc, col) != audited]
        for col in ("references_doc_id", "references_hash"):
            if col not in meta and getattr(doc, col) is not None and doc.doc_id in self.created:
                changed.append(col)
        if changed:
            v.problems.append("its " + ", ".join(c.replace("_", " ") for c in changed) +
                              " differ(s) from what the audit trail recorded: the stored row was edited")
        present = {s.sig_id for s in sigs}
        for sig_id, meaning in self.signatures.get(doc.doc_id, {}).items():
            if sig_id not in present:
                v.problems.append(f"the '{meaning}' signature {sig_id} recorded in the audit trail is missing")


def _schema_check(v: DocumentVerdict, kind: str, data: Any) -> None:
    model = SCHEMAS.get(kind)
    if model is None or data is None:
        return
    try:
        model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        v.problems.append(f"content does not match the {kind.replace('_', ' ')} schema "
                          f"({'.'.join(str(p) for p in first['loc'])}: {first['msg']})")


def _describe(v: DocumentVerdict, kind: str, data: Any) -> None:
    try:
        if kind == RECORD_KIND:
            p = data["patient"]
            v.notes.insert(0, f"patient {p['full_name']} (MRN {p['medical_record_number']}, trial subject "
                              f"{p['trial_subject_id']}), {len(data['sessions'])} beam session(s), {data['completion']}")
        elif kind == ADDENDUM_KIND:
            v.notes.insert(0, f"addendum to record {data['amends_record_id']}: {data['reason']}")
    except (KeyError, TypeError):
        pass


PlanLookup = Callable[[str], tuple[Document | None, list[SignatureRow]]]


def _check_approvals(v: DocumentVerdict, data: Any, plan_lookup: PlanLookup) -> None:
    """The record's plan hash and approval copies must match the stored, signed plan document."""
    try:
        plan = data["plan"]
        plan_doc_id = plan.get("plan_document_id")
        approvals = data.get("approvals", [])
    except (KeyError, TypeError, AttributeError):
        return
    if not plan_doc_id:
        if approvals:
            v.notes.append("approvals are listed but the plan document is not named: they cannot be cross-checked")
        return
    plan_doc, plan_sigs = plan_lookup(plan_doc_id)
    if plan_doc is None:
        v.problems.append(f"the plan document {plan_doc_id} named by the record is missing")
        return
    if plan.get("plan_hash") != plan_doc.content_hash:
        v.problems.append("the plan hash in the record differs from the stored plan's content hash: "
                          "the delivered plan is not the approved one")
    # each approval copy is checked against the plan version it signs (a continuation is a new version)
    lookups = {plan_doc_id: (plan_doc, plan_sigs)}
    for a in approvals:
        signed_id = a.get("signed_document_id") or plan_doc_id
        if signed_id not in lookups:
            lookups[signed_id] = plan_lookup(signed_id)
        signed_doc, signed_sigs = lookups[signed_id]
        s = next((x for x in signed_sigs if x.sig_id == a.get("signature_id")), None)
        if signed_doc is None or s is None or s.meaning != a.get("meaning") \
                or s.signer_user_id != a.get("signer_user_id") or s.signed_utc != a.get("signed_utc") \
                or s.content_hash != a.get("signed_content_hash") or s.content_hash != signed_doc.content_hash:
            v.problems.append(f"approval '{a.get('meaning')}' by {a.get('printed_name')} is not a signature on the "
                              f"stored plan {signed_id}")
    if approvals:
        versions = len({a.get("signed_document_id") or plan_doc_id for a in approvals})
        v.notes.append(f"{len(approvals)} plan approval(s) match signatures on {versions} stored plan version(s)")


def verify_one(doc: Document, sigs: list[SignatureRow], keys: dict[str, PublicKeyRow],
               audit: AuditIndex | None = None, *, addenda: list[tuple[Document, list[SignatureRow]]] = (),
               plan_lookup: PlanLookup | None = None) -> DocumentVerdict:
    v = verify_document(doc, sigs, keys)
    data = v.data
    _schema_check(v, doc.kind, data)
    _describe(v, doc.kind, data)
    if doc.kind == RECORD_KIND and data is not None and plan_lookup is not None:
        _check_approvals(v, data, plan_lookup)
    if doc.kind == ADDENDUM_KIND and doc.is_final and data:
        if data.get("amends_content_hash") != doc.references_hash or data.get("amends_record_id") != doc.references_doc_id:
            v.problems.append("the addendum names a different original than the one it is stored against")
    if audit is not None:
        audit.check(v, doc, sigs)
    if doc.is_final and doc.kind == RECORD_KIND and not sigs:
        v.notes.append("finalised but not yet signed 'performed delivery'")
    for add_doc, add_sigs in addenda:
        av = verify_one(add_doc, add_sigs, keys, audit)
        if add_doc.references_hash != doc.content_hash:
            av.problems.append("it references a different version of the record (hash mismatch)")
        if not av.ok:
            v.problems.append(f"addendum {add_doc.doc_id} fails: " + "; ".join(av.problems or ["a signature does not verify"]))
        else:
            v.notes.append(f"addendum {add_doc.doc_id} verified ({len(add_sigs)} signature(s))")
    return v


def verify_stored(store: Store, doc_id: str) -> DocumentVerdict:
    """Verify one stored document (normally a delivery record) with its addenda."""
    doc = store.get_document(doc_id)
    keys = store.all_public_keys()
    audit = AuditIndex.from_store(store)
    addenda = [(a, store.signatures_for(a.doc_id)) for a in store.find_documents(kind=ADDENDUM_KIND, references_doc_id=doc_id)]
    plan_verdicts: list[DocumentVerdict] = []

    def plan_lookup(plan_doc_id: str):
        try:
            plan_doc = store.get_document(plan_doc_id)
        except DocumentNotFound:
            return None, []
        plan_sigs = store.signatures_for(plan_doc_id)
        plan_verdicts.append(verify_one(plan_doc, plan_sigs, keys, audit))
        return plan_doc, plan_sigs

    v = verify_one(doc, store.signatures_for(doc_id), keys, audit, addenda=addenda, plan_lookup=plan_lookup)
    for pv in plan_verdicts:
        if not pv.ok:
            v.problems.append(f"its plan {pv.doc_id} fails verification: " + "; ".join(
                pv.problems or [s.line().strip() for s in pv.signatures if not s.ok]))
    return v


@dataclass
class StoreVerdict:
    documents: list[DocumentVerdict]
    chain: ChainVerdict
    orphans: list[str]

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.orphans and all(d.ok for d in self.documents)

    def render(self) -> str:
        lines = [d.render() for d in self.documents]
        lines += [f"FAILED  {o}" for o in self.orphans]
        lines.append(("OK      " if self.chain.ok else "FAILED  ") + self.chain.summary())
        bad = sum(not d.ok for d in self.documents) + len(self.orphans)
        lines.append(f"{'ALL VERIFIED' if self.ok else 'VERIFICATION FAILED'}: {len(self.documents)} document(s) checked, "
                     f"{bad} failed, audit trail {'intact' if self.chain.ok else 'broken'}")
        return "\n".join(lines)


_SHARED: tuple | None = None  # (docs, sigs, keys, audit) inherited by forked workers


def _verify_slice(bounds: tuple[int, int]) -> list[DocumentVerdict]:
    docs, sigs, keys, audit, lookup = _SHARED
    out = []
    for doc in docs[bounds[0]:bounds[1]]:
        v = verify_one(doc, sigs.get(doc.doc_id, []), keys, audit, plan_lookup=lookup)
        v.data = None  # not needed by the caller; keeps the result small
        out.append(v)
    return out


def _default_workers() -> int:
    import sys

    if "PySide6.QtCore" in sys.modules:
        return 1  # never fork a process that runs Qt threads
    return max(1, min(8, (os.cpu_count() or 1)))


def verify_all(store: Store, *, kinds: tuple[str, ...] | None = None, workers: int | None = None,
               parallel_from: int = 2000) -> StoreVerdict:
    """Every document, every signature, the audit chain and audit cross-checks.

    With many documents the signature checks run in forked worker processes (workers defaults to
    the CPU count, at most 8) while this process checks the audit chain.
    """
    global _SHARED
    keys = store.all_public_keys()
    sigs = store.all_signatures()
    audit, chain = AuditIndex.with_chain(store)
    all_docs = store.find_documents()
    ids = {d.doc_id for d in all_docs}
    docs = [d for d in all_docs if not kinds or d.kind in kinds]
    by_id = {d.doc_id: d for d in all_docs}

    def lookup(plan_doc_id: str):
        return by_id.get(plan_doc_id), sigs.get(plan_doc_id, [])
    workers = workers or _default_workers()
    if workers > 1 and len(docs) >= parallel_from and "fork" in mp.get_all_start_methods():
        _SHARED = (docs, sigs, keys, audit, lookup)
        try:
            step = -(-len(docs) // workers)
            bounds = [(i, min(i + step, len(docs))) for i in range(0, len(docs), step)]
            with mp.get_context("fork").Pool(workers) as pool:
                verdicts = [v for part in pool.map(_verify_slice, bounds) for v in part]
        finally:
            _SHARED = None
    else:
        verdicts = [verify_one(doc, sigs.get(doc.doc_id, []), keys, audit, plan_lookup=lookup) for doc in docs]
    orphans = [f"signature(s) {', '.join(s.sig_id for s in rows)} belong to document {doc_id}, which does not exist"
               for doc_id, rows in sigs.items() if doc_id not in ids]
    for doc_id in sorted(audit.created - ids):
        orphans.append(f"document {doc_id} was created according to the audit trail but is missing from the store")
    for key_id, row in sorted(keys.items()):
        if audit.keys.get(key_id) != (row.owner_kind, row.owner_id):
            orphans.append(f"public key {key_id} ({row.owner_kind} {row.owner_id}) was not registered through the "
                           "store: it was inserted or re-assigned behind the store's back")
    return StoreVerdict(verdicts, chain, orphans)


# ---------------------------------------------------------------------- exported files

EXPORT_FORMAT = "orconsole.record_export/1"


def export_body(store: Store, record_id: str, *, exported_by: str, exported_utc: str) -> dict[str, Any]:
    """The JSON export (without seal): the record, its signatures, addenda, the plan and the keys."""
    def doc_entry(doc: Document) -> dict[str, Any]:
        return {"doc_id": doc.doc_id, "kind": doc.kind, "status": doc.status, "content": json.loads(doc.content),
                "content_hash": doc.content_hash, "references_doc_id": doc.references_doc_id,
                "references_hash": doc.references_hash, "created_utc": doc.created_utc,
                "finalised_utc": doc.finalised_utc,
                "signatures": [s.__dict__ for s in store.signatures_for(doc.doc_id)]}

    record = store.get_document(record_id)
    docs = [doc_entry(record)] + [doc_entry(a) for a in store.find_documents(kind=ADDENDUM_KIND, references_doc_id=record_id)]
    try:
        plan_doc_id = json.loads(record.content)["plan"].get("plan_document_id")
    except (KeyError, ValueError, AttributeError):
        plan_doc_id = None
    if plan_doc_id:
        try:
            docs.append(doc_entry(store.get_document(plan_doc_id)))
        except Exception:  # noqa: BLE001 - a missing plan is reported by verification, not by the export
            pass
    key_ids = {s["key_id"] for d in docs for s in d["signatures"]} | {s["installation_key_id"] for d in docs for s in d["signatures"]}
    keys = store.all_public_keys()
    head_seq, head_hash = store.audit_head()
    return {
        "format": EXPORT_FORMAT, "record_id": record_id, "exported_utc": exported_utc, "exported_by": exported_by,
        "documents": docs,
        "public_keys": {k: keys[k].__dict__ for k in sorted(key_ids) if k in keys},
        "audit_head_at_export": {"seq": head_seq, "entry_hash": head_hash},
    }


def verify_export_bytes(data: bytes, *, source: str = "file") -> list[DocumentVerdict]:
    """Verify an exported JSON file: canonical form, installation seal, then every document offline."""
    fail = DocumentVerdict(source, "export", "file", None)
    try:
        envelope = parse_canonical(data)
    except CanonicalFormError as exc:
        fail.problems.append(f"the export was altered or damaged: {exc}")
        return [fail]
    try:
        body, seal = envelope["body"], envelope["seal"]
        if set(envelope) != {"body", "seal"} or body.get("format") != EXPORT_FORMAT:
            raise KeyError("format")
        keys = {k: PublicKeyRow(**v) for k, v in body["public_keys"].items()}
        seal_key = keys.get(seal["installation_key_id"])
        if seal_key is None or seal_key.owner_kind != "installation" or \
                not verify_ed25519(seal_key.public_key_b64, seal["signature"], canonical_json(body)):
            fail.problems.append("the export seal does not verify: the file was changed after export")
            return [fail]
        out = []
        docs = {d["doc_id"]: d for d in body["documents"]}
        parsed: dict[str, tuple[Document, list[SignatureRow]]] = {}
        for d in body["documents"]:
            content_text = canonical_json(d["content"]).decode("utf-8")
            doc = Document(doc_id=d["doc_id"], kind=d["kind"], subject=None, status=d["status"], content=content_text,
                           content_hash=d["content_hash"], references_doc_id=d["references_doc_id"],
                           references_hash=d["references_hash"], created_utc=d["created_utc"], created_by="",
                           finalised_utc=d["finalised_utc"])
            parsed[doc.doc_id] = (doc, [SignatureRow(**s) for s in d["signatures"]])

        def lookup(plan_doc_id: str):
            return parsed.get(plan_doc_id, (None, []))
        for doc, sigs in parsed.values():
            v = verify_one(doc, sigs, keys, plan_lookup=lookup)
            if doc.kind == ADDENDUM_KIND and doc.references_doc_id in docs and \
                    docs[doc.references_doc_id]["content_hash"] != doc.references_hash:
                v.problems.append("it references a different version of the record (hash mismatch)")
            out.append(v)
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        fail.problems.append(f"the file is not an ORConsole record export ({exc.__class__.__name__}: {exc})")
        return [fail]


def verify_export_file(path: Path | str) -> list[DocumentVerdict]:
    return verify_export_bytes(Path(path).read_bytes(), source=str(path))
