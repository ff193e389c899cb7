"""JSON export of a delivery record: the canonical record, its signatures, addenda, the plan and the
public keys needed to verify it offline, sealed by the installation key.

The file is canonical JSON (no whitespace), so any changed byte is detected by
`orconsole records verify FILE`. Never exports a draft as if it were signed.
"""
from __future__ import annotations

import os
from pathlib import Path

from logs.canonical import canonical_json, utc_now_iso
from logs.crypto import InstallationKey
from logs.signing import ensure_installation_key
from logs.store import Store, StoreError
from logs.verify import export_body


def export_json_bytes(store: Store, record_id: str, installation_key: InstallationKey, *, exported_by: str) -> bytes:
    doc = store.get_document(record_id)
    if not doc.is_final:
        raise StoreError(f"record {record_id} is still a draft: finalise and sign it before exporting")
    ensure_installation_key(store, installation_key)
    body = export_body(store, record_id, exported_by=exported_by, exported_utc=utc_now_iso())
    keys = store.all_public_keys()
    body["public_keys"][installation_key.key_id] = keys[installation_key.key_id].__dict__
    seal = {"installation_key_id": installation_key.key_id, "signature": installation_key.sign(canonical_json(body))}
    return canonical_json({"body": body, "seal": seal})


def write_atomically(path: Path | str, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def export_json(store: Store, record_id: str, path: Path | str, installation_key: InstallationKey, *,
                exported_by: str) -> Path:
    """Write the sealed JSON export to path and audit the export."""
    data = export_json_bytes(store, record_id, installation_key, exported_by=exported_by)
    write_atomically(path, data)
    store.audit(exported_by, "export", {"record_id": record_id, "format": "json", "file": str(path),
                                        "sha256": __import__("hashlib").sha256(data).hexdigest()})
    return Path(path)
