"""Record-store figures: sign + commit latency with durable writes, and the time to verify 10 000
signed records, on SQLite (WAL, synchronous FULL) and on a throwaway PostgreSQL cluster (fsync on).

A script that prints JSON (`python -m benchmarks.records --json`), not a timed test. Never run it
against a production store: it creates its own databases in a temporary directory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert

from logs import tables as t
from logs.canonical import canonical_json, sha256_hex, utc_now_iso
from logs.crypto import InstallationKey, b64e, open_private_key
from logs.records import RECORD_KIND
from logs.samples import example_record, example_sessions
from logs.signing import Meaning, Signer, countersignature_payload, ensure_installation_key, sign_document, \
    signature_payload
from logs.store import Store
from logs.verify import verify_all
from orconsole.identity import IdentityService, Role

TARGETS = {"sign_commit_p50_ms_sqlite": 20.0, "verify_10000_records_s": 3.0}
PASSWORD = "benchmark-password-1"


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _record_content(installation_key_id: str) -> dict:
    rec = example_record(installation_key_id=installation_key_id)
    sessions, interruptions, interlocks = example_sessions()
    rec.sessions, rec.interruptions, rec.interlock_events = sessions, interruptions, interlocks
    rec.completion = "complete"
    rec.totals = rec.computed_totals()
    return rec.to_json_data()


def _setup(url: str):
    store = Store(url)
    ikey = InstallationKey.generate()
    ids = IdentityService(store, ikey)  # production scrypt cost
    admin = ids.create_first_administrator("admin", "Bench Admin", PASSWORD)
    ids.create_user(admin, "tom", "Tom Therapist", Role.RADIATION_THERAPIST, PASSWORD)
    row = store.get_user(username="tom")
    key = open_private_key(row.sealed_private_key, PASSWORD, owner=row.user_id)
    signer = Signer(row.user_id, row.username, row.full_name, row.role, row.key_id)
    ensure_installation_key(store, ikey)
    return store, ids, ikey, key, signer


def bench_sign_commit(store: Store, ikey, key, signer, n: int) -> dict:
    """Latency of sign_document: key already unsealed; includes signature, countersignature, the
    transaction with its audit entry, and the durable commit."""
    template = _record_content(ikey.key_id)
    docs = []
    for _ in range(n):
        rid = str(uuid.uuid4())
        template["record_id"] = rid
        docs.append(store.create_document(RECORD_KIND, template, actor="tom", doc_id=rid, final=True).doc_id)
    lat = []
    for doc_id in docs:
        t0 = time.perf_counter()
        sign_document(store, doc_id, Meaning.PERFORMED_DELIVERY, signer, key, ikey)
        lat.append((time.perf_counter() - t0) * 1000)
    return {"n": n, "p50_ms": round(_percentile(lat, 0.5), 2), "p99_ms": round(_percentile(lat, 0.99), 2),
            "max_ms": round(max(lat), 2)}


def bench_sign_with_password(store: Store, ids: IdentityService, ikey, n: int) -> dict:
    """Latency of IdentityService.sign: password check (scrypt n=2**15) + key unsealing (scrypt) + signing."""
    session = ids.login("tom", PASSWORD)
    template = _record_content(ikey.key_id)
    lat = []
    for _ in range(n):
        rid = str(uuid.uuid4())
        template["record_id"] = rid
        store.create_document(RECORD_KIND, template, actor="tom", doc_id=rid, final=True)
        t0 = time.perf_counter()
        ids.sign(session, PASSWORD, rid, Meaning.PERFORMED_DELIVERY)
        lat.append((time.perf_counter() - t0) * 1000)
    return {"n": n, "p50_ms": round(_percentile(lat, 0.5), 1), "p99_ms": round(_percentile(lat, 0.99), 1)}


def seed_signed_records(store: Store, ikey, key, signer, n: int) -> None:
    """Bulk-create n final, signed, countersigned records with their audit entries (one transaction)."""
    template = _record_content(ikey.key_id)
    with store.transaction() as conn:
        for _ in range(n):
            rid = str(uuid.uuid4())
            template["record_id"] = rid
            text_ = canonical_json(template).decode()
            h = sha256_hex(text_.encode())
            now = utc_now_iso()
            conn.execute(insert(t.documents).values(doc_id=rid, kind=RECORD_KIND, subject="EX-000123", status="final",
                                                    content=text_, content_hash=h, references_doc_id=None,
                                                    references_hash=None, created_utc=now, created_by="tom",
                                                    finalised_utc=now))
            store.append_audit(conn, "tom", "document created", {"doc_id": rid, "kind": RECORD_KIND,
                                                                 "subject": "EX-000123", "content_hash": h})
            sig_id = str(uuid.uuid4())
            payload = signature_payload(sig_id=sig_id, doc_id=rid, doc_kind=RECORD_KIND, content_hash=h,
                                        meaning="performed delivery", signer_user_id=signer.user_id,
                                        username=signer.username, printed_name=signer.full_name, role=signer.role,
                                        signed_utc=now, key_id=signer.key_id)
            sig = b64e(key.sign(payload))
            counter = ikey.sign(countersignature_payload(payload, sig, ikey.key_id))
            conn.execute(insert(t.signatures).values(sig_id=sig_id, doc_id=rid, meaning="performed delivery",
                                                     signer_user_id=signer.user_id, username=signer.username,
                                                     printed_name=signer.full_name, role=signer.role, signed_utc=now,
                                                     content_hash=h, key_id=signer.key_id, signature_b64=sig,
                                                     installation_key_id=ikey.key_id, countersignature_b64=counter))
            store.append_audit(conn, "tom", "record signed", {"doc_id": rid, "kind": RECORD_KIND,
                                                              "meaning": "performed delivery", "sig_id": sig_id,
                                                              "content_hash": h, "role": signer.role})


def bench_verify(store: Store, n_records: int) -> dict:
    t0 = time.perf_counter()
    verdict = verify_all(store, kinds=(RECORD_KIND,))
    elapsed = time.perf_counter() - t0
    checked = len(verdict.documents)
    if not verdict.ok:
        raise SystemExit("benchmark store does not verify: " + verdict.render()[-2000:])
    t1 = time.perf_counter()
    chain = store.verify_audit_chain()
    chain_s = time.perf_counter() - t1
    return {"records": checked, "seconds": round(elapsed, 3), "per_record_ms": round(elapsed / max(checked, 1) * 1000, 3),
            "includes": "content hash, schema, every signature + countersignature, audit cross-checks, audit chain",
            "audit_chain_entries": chain.entries_checked, "audit_chain_only_s": round(chain_s, 3)}


def run_backend(url: str, *, n_sign: int, n_password: int, n_verify: int) -> dict:
    store, ids, ikey, key, signer = _setup(url)
    try:
        out = {"url": store.display_url}
        out["sign_commit"] = bench_sign_commit(store, ikey, key, signer, n_sign)
        out["sign_with_password_reentry"] = bench_sign_with_password(store, ids, ikey, n_password)
        already = len(store.document_ids(kind=RECORD_KIND))
        t0 = time.perf_counter()
        seed_signed_records(store, ikey, key, signer, max(0, n_verify - already))
        out["seed_s"] = round(time.perf_counter() - t0, 1)
        out["verify_all"] = bench_verify(store, n_verify)
        return out
    finally:
        store.close()


def _ed25519_verify_us() -> float:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.generate()
    msg = b"x" * 400
    sig = k.sign(msg)
    pub = k.public_key()
    t0 = time.perf_counter()
    for _ in range(2000):
        pub.verify(sig, msg)
    return round((time.perf_counter() - t0) / 2000 * 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON only (default prints JSON too)")
    ap.add_argument("--sign", type=int, default=300, help="signatures timed (default 300)")
    ap.add_argument("--password-signs", type=int, default=10, help="signatures with password re-entry timed")
    ap.add_argument("--records", type=int, default=10000, help="records to verify (default 10000)")
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = ap.parse_args(argv)
    results: dict = {"targets": TARGETS, "python": sys.version.split()[0], "machine": platform.machine(),
                     "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                     "ed25519_verify_us": _ed25519_verify_us(), "utc": utc_now_iso(),
                     "note": "verification checks 2 Ed25519 signatures per record (user + installation "
                             "countersignature); on a shared or small machine that alone bounds the time"}
    with tempfile.TemporaryDirectory(prefix="orconsole-bench-") as tmp:
        results["sqlite"] = run_backend(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}", n_sign=args.sign,
                                        n_password=args.password_signs, n_verify=args.records)
    if not args.no_postgres:
        try:
            from tests.pg import PostgresUnavailable, TemporaryPostgres
        except ImportError:  # installed without the tests folder
            results["postgresql"] = {"skipped": "tests/pg.py not available"}
        else:
            try:
                with TemporaryPostgres(durable=True) as pg:
                    results["postgresql"] = run_backend(pg.create_database("bench"), n_sign=args.sign,
                                                        n_password=args.password_signs, n_verify=args.records)
            except PostgresUnavailable as exc:
                results["postgresql"] = {"skipped": str(exc)}
    s = results["sqlite"]
    results["verdict"] = {
        "sign_commit_p50_sqlite_within_target": s["sign_commit"]["p50_ms"] <= TARGETS["sign_commit_p50_ms_sqlite"],
        "verify_10000_sqlite_within_target": s["verify_all"]["seconds"] <= TARGETS["verify_10000_records_s"],
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
