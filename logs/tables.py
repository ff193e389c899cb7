"""SQLAlchemy Core description of the store's tables (the Alembic migrations create them).

Times are ISO-8601 UTC text (exactly what was hashed); JSON payloads are canonical JSON text.
Never change a column here without a new migration in logs/migrations/versions.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Integer, MetaData, String, Table, Text

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("user_id", String(64), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("full_name", String(200), nullable=False),
    Column("role", String(40), nullable=False),
    Column("password_hash", String(300), nullable=False),
    Column("sealed_private_key", Text, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("locked_utc", String(32), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_utc", String(32), nullable=False),
    Column("created_by", String(64), nullable=False),
)

public_keys = Table(
    "public_keys", metadata,
    Column("key_id", String(64), primary_key=True),
    Column("owner_kind", String(20), nullable=False),  # "user" | "installation"
    Column("owner_id", String(64), nullable=False),
    Column("public_key_b64", String(64), nullable=False),
    Column("created_utc", String(32), nullable=False),
)

documents = Table(
    "documents", metadata,
    Column("doc_id", String(64), primary_key=True),
    Column("kind", String(40), nullable=False, index=True),
    Column("subject", String(200), nullable=True, index=True),
    Column("status", String(10), nullable=False),  # "draft" | "final"
    Column("content", Text, nullable=False),
    Column("content_hash", String(64), nullable=True),
    Column("references_doc_id", String(64), nullable=True, index=True),
    Column("references_hash", String(64), nullable=True),
    Column("created_utc", String(32), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("finalised_utc", String(32), nullable=True),
)

signatures = Table(
    "signatures", metadata,
    Column("sig_id", String(64), primary_key=True),
    Column("doc_id", String(64), ForeignKey("documents.doc_id"), nullable=False, index=True),
    Column("meaning", String(40), nullable=False),
    Column("signer_user_id", String(64), nullable=False),
    Column("username", String(64), nullable=False),
    Column("printed_name", String(200), nullable=False),
    Column("role", String(40), nullable=False),
    Column("signed_utc", String(32), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature_b64", String(100), nullable=False),
    Column("installation_key_id", String(64), nullable=False),
    Column("countersignature_b64", String(100), nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("utc", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(60), nullable=False, index=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

active_calibrations = Table(
    "active_calibrations", metadata,
    Column("source_serial", String(100), primary_key=True),
    Column("doc_id", String(64), ForeignKey("documents.doc_id"), nullable=False),
    Column("set_utc", String(32), nullable=False),
    Column("set_by", String(200), nullable=False),
)

healthcheck = Table(
    "healthcheck", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("utc", String(32), nullable=False),
)
