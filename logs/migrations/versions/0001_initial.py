"""Initial record store: users, public keys, documents, signatures, audit trail, calibrations.

Also installs triggers that refuse UPDATE/DELETE on the audit trail, signatures and public keys,
and on documents once final. Revision ID: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = {
    "audit_log": "the audit trail is append-only",
    "signatures": "a signature cannot be changed or removed",
    "public_keys": "a registered public key cannot be changed or removed",
}
FINAL_DOC_MESSAGE = "a final document is immutable: write a signed addendum instead"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("sealed_private_key", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("failed_attempts", sa.Integer, nullable=False),
        sa.Column("locked_utc", sa.String(32), nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_utc", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "public_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("owner_kind", sa.String(20), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("public_key_b64", sa.String(64), nullable=False),
        sa.Column("created_utc", sa.String(32), nullable=False),
    )
    op.create_table(
        "documents",
        sa.Column("doc_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("references_doc_id", sa.String(64), nullable=True),
        sa.Column("references_hash", sa.String(64), nullable=True),
        sa.Column("created_utc", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("finalised_utc", sa.String(32), nullable=True),
    )
    op.create_index("ix_documents_kind", "documents", ["kind"])
    op.create_index("ix_documents_subject", "documents", ["subject"])
    op.create_index("ix_documents_references_doc_id", "documents", ["references_doc_id"])
    op.create_table(
        "signatures",
        sa.Column("sig_id", sa.String(64), primary_key=True),
        sa.Column("doc_id", sa.String(64), sa.ForeignKey("documents.doc_id"), nullable=False),
        sa.Column("meaning", sa.String(40), nullable=False),
        sa.Column("signer_user_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("printed_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("signed_utc", sa.String(32), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature_b64", sa.String(100), nullable=False),
        sa.Column("installation_key_id", sa.String(64), nullable=False),
        sa.Column("countersignature_b64", sa.String(100), nullable=False),
    )
    op.create_index("ix_signatures_doc_id", "signatures", ["doc_id"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("utc", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    op.execute("INSERT INTO audit_head (id, seq, entry_hash) VALUES (1, 0, '" + "0" * 64 + "')")
    op.create_table(
        "active_calibrations",
        sa.Column("source_serial", sa.String(100), primary_key=True),
        sa.Column("doc_id", sa.String(64), sa.ForeignKey("documents.doc_id"), nullable=False),
        sa.Column("set_utc", sa.String(32), nullable=False),
        sa.Column("set_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "healthcheck",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("utc", sa.String(32), nullable=False),
    )
    _install_triggers()


def _install_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table, message in APPEND_ONLY.items():
            for event in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER documents_final_no_{event.lower()} BEFORE {event} ON documents "
                       f"WHEN OLD.status = 'final' BEGIN SELECT RAISE(ABORT, '{FINAL_DOC_MESSAGE}'); END")
    elif dialect == "postgresql":
        op.execute("CREATE FUNCTION orconsole_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$")
        for table, message in APPEND_ONLY.items():
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION orconsole_refuse_change('{message}')")
        op.execute("CREATE TRIGGER documents_final_immutable BEFORE UPDATE OR DELETE ON documents "
                   "FOR EACH ROW WHEN (OLD.status = 'final') "
                   f"EXECUTE FUNCTION orconsole_refuse_change('{FINAL_DOC_MESSAGE}')")


def downgrade() -> None:
    raise RuntimeError("the record store is never downgraded: records must stay readable")
