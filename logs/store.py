"""The record store: one SQLAlchemy engine (SQLite by default, PostgreSQL by URL) holding users,
public keys, documents (plans, QA results, calibrations, delivery records, addenda), signatures and
the hash-chained audit trail. Migrations run on open.

Never updates a final document, a signature or an audit entry; never decides a clinical question.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import platformdirs
from sqlalchemy import Connection, create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from logs import tables as t
from logs.audit import GENESIS_HASH, AuditEntry, ChainVerdict, entry_hash, verify_chain
from logs.canonical import canonical_json, sha256_hex, utc_now_iso

APP_NAME = "orconsole"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class StoreError(RuntimeError):
    """A store operation was refused or failed; the message says what to do."""


class DocumentNotFound(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The database cannot be reached (server stopped, network down, connection lost).
    Raised in place of the driver's connection error, so that every `except StoreError` sees an outage."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImmutableDocument(StoreError):
    pass


def default_data_dir() -> Path:
    """ORCONSOLE_HOME if set (as orconsole.paths does), else platformdirs' user data directory."""
    base = os.environ.get("ORCONSOLE_HOME")
    return Path(base) if base else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_installation_key_path() -> Path:
    """ORCONSOLE_INSTALLATION_KEY if set, else installation-key.pem in the data directory."""
    env = os.environ.get("ORCONSOLE_INSTALLATION_KEY")
    return Path(env) if env else default_data_dir() / "installation-key.pem"


def default_url() -> str:
    """ORCONSOLE_DB if set, else SQLite file orconsole.sqlite3 in the user data directory."""
    env = os.environ.get("ORCONSOLE_DB")
    if env:
        return env
    return f"sqlite:///{default_data_dir() / 'orconsole.sqlite3'}"


def resolve_url(url: str | None) -> str:
    """The URL actually used: explicit argument, then ORCONSOLE_DB, then the default SQLite file.

    'postgresql://' is rewritten to 'postgresql+psycopg://' (psycopg 3 is the installed driver).
    """
    url = url or default_url()
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@dataclass(frozen=True)
class Document:
    doc_id: str
    kind: str
    subject: str | None
    status: str  # "draft" | "final"
    content: str  # canonical JSON text
    content_hash: str | None
    references_doc_id: str | None
    references_hash: str | None
    created_utc: str
    created_by: str
    finalised_utc: str | None

    @property
    def data(self) -> Any:
        return json.loads(self.content)

    @property
    def is_final(self) -> bool:
        return self.status == "final"


@dataclass(frozen=True)
class SignatureRow:
    sig_id: str
    doc_id: str
    meaning: str
    signer_user_id: str
    username: str
    printed_name: str
    role: str
    signed_utc: str
    content_hash: str
    key_id: str
    signature_b64: str
    installation_key_id: str
    countersignature_b64: str


@dataclass(frozen=True)
class UserRow:
    user_id: str
    username: str
    full_name: str
    role: str
    password_hash: str
    sealed_private_key: str
    key_id: str
    failed_attempts: int
    locked_utc: str | None
    disabled: bool
    created_utc: str
    created_by: str


@dataclass(frozen=True)
class PublicKeyRow:
    key_id: str
    owner_kind: str
    owner_id: str
    public_key_b64: str
    created_utc: str


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" hook below issues BEGIN IMMEDIATE
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_begin(conn) -> None:
    # Take the write lock at BEGIN, so two writers serialise instead of failing mid-transaction.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def upgrade_to_head(conn: Connection) -> None:
    """Run Alembic `upgrade head` on an open connection (inside its transaction)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


class Store:
    """Durable storage for records, users, keys and the audit trail.

    Store(url) opens (and creates/migrates) the database. url: SQLAlchemy URL, e.g.
    'sqlite:////var/lib/orconsole/orconsole.sqlite3' or 'postgresql+psycopg://user@host/db';
    None means ORCONSOLE_DB, then SQLite in the user data directory.
    """

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self.url = resolve_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(self.url)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        elif self.dialect == "postgresql":
            # connect_timeout: a dead server must make healthcheck() fail in seconds, not hang for minutes
            self.engine = create_engine(self.url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
        else:
            raise StoreError(f"database {self.dialect!r} is not supported: use sqlite:/// or postgresql+psycopg://")
        event.listen(self.engine, "handle_error", self._unavailable, retval=True)
        if migrate:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(7301925)"))  # one migrator at a time
                upgrade_to_head(conn)

    def close(self) -> None:
        self.engine.dispose()

    def _unavailable(self, context) -> BaseException | None:
        """handle_error hook: a lost or refused connection becomes StoreUnavailable with what to do. Not
        during a pool pre-ping (the pool then reconnects by itself: the outage is over once the server is back)."""
        if context.is_pre_ping:
            return None
        lost = context.is_disconnect
        refused = context.connection is None and isinstance(context.sqlalchemy_exception, OperationalError)
        if not (lost or refused):
            return None
        first = (str(context.original_exception).strip().splitlines() or [""])[0]
        exc = StoreUnavailable(
            f"the record store {self.display_url} is unavailable ({'connection lost' if lost else 'no connection'}: "
            f"{first}). Restore the database server or the network connection to it: no "
            "treatment can start until the store answers; a running beam continues, recorded in the local journal")
        exc.__cause__ = context.sqlalchemy_exception
        return exc

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic unit of work; everything written inside commits durably together or not at all."""
        with self.engine.begin() as conn:
            yield conn

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    # ------------------------------------------------------------------ health
    def healthcheck(self) -> Health:
        """Write, commit and read back a row. The engine calls this before beam on: when it fails the
        'record store unavailable' interlock holds the beam, because a delivery could not be recorded."""
        stamp = utc_now_iso()
        try:
            with self.transaction() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SET LOCAL statement_timeout = 3000"))
                n = conn.execute(update(t.healthcheck).where(t.healthcheck.c.id == 1).values(utc=stamp)).rowcount
                if n == 0:
                    conn.execute(insert(t.healthcheck).values(id=1, utc=stamp))
                back = conn.execute(select(t.healthcheck.c.utc).where(t.healthcheck.c.id == 1)).scalar_one()
            if back != stamp:
                return Health(False, f"record store {self.display_url} did not return what was written")
            return Health(True, f"record store {self.display_url} writable")
        except (SQLAlchemyError, StoreError, OSError) as exc:
            return Health(False, f"record store {self.display_url} is not writable: {exc.__class__.__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}")

    def writable(self) -> bool:
        return self.healthcheck().ok

    # ------------------------------------------------------------------ audit trail
    def append_audit(self, conn: Connection, actor: str, action: str, details: dict[str, Any] | None = None,
                     *, utc: str | None = None) -> AuditEntry:
        """Append one entry inside an open transaction (the head row is locked until commit)."""
        details = details or {}
        utc = utc or utc_now_iso()
        head = conn.execute(select(t.audit_head.c.seq, t.audit_head.c.entry_hash)
                            .where(t.audit_head.c.id == 1).with_for_update()).one()
        seq = int(head.seq) + 1
        h = entry_hash(head.entry_hash, seq, utc, actor, action, details)
        details_text = canonical_json(details).decode("utf-8")
        conn.execute(insert(t.audit_log).values(seq=seq, utc=utc, actor=actor, action=action, details=details_text,
                                                prev_hash=head.entry_hash, entry_hash=h))
        conn.execute(update(t.audit_head).where(t.audit_head.c.id == 1).values(seq=seq, entry_hash=h))
        return AuditEntry(seq, utc, actor, action, details_text, head.entry_hash, h)

    def audit(self, actor: str, action: str, details: dict[str, Any] | None = None) -> AuditEntry:
        """Append one audit entry in its own transaction (login, beam on/off, interlock, ...)."""
        with self.transaction() as conn:
            return self.append_audit(conn, actor, action, details)

    def audit_entries(self, *, since_seq: int = 0, action: str | None = None) -> list[AuditEntry]:
        q = select(t.audit_log).where(t.audit_log.c.seq > since_seq).order_by(t.audit_log.c.seq)
        if action:
            q = q.where(t.audit_log.c.action == action)
        with self.engine.connect() as conn:
            return [AuditEntry(int(r.seq), r.utc, r.actor, r.action, r.details, r.prev_hash, r.entry_hash)
                    for r in conn.execute(q)]

    def audit_head(self) -> tuple[int, str]:
        """(last sequence number, last entry hash): quote it elsewhere to anchor the chain externally."""
        with self.engine.connect() as conn:
            head = conn.execute(select(t.audit_head).where(t.audit_head.c.id == 1)).one()
        return int(head.seq), head.entry_hash

    def verify_audit_chain(self, on_entry=None) -> ChainVerdict:
        """Check every link of the audit trail; on_entry(entry, details) sees each parsed entry."""
        with self.engine.connect() as conn:
            head = conn.execute(select(t.audit_head).where(t.audit_head.c.id == 1)).one_or_none()
            rows = conn.execute(select(t.audit_log).order_by(t.audit_log.c.seq))
            entries = (AuditEntry(int(r.seq), r.utc, r.actor, r.action, r.details, r.prev_hash, r.entry_hash)
                       for r in rows)
            if head is None:
                return ChainVerdict(False, 0, ["the chain head row is missing: the audit table was tampered with"])
            return verify_chain(entries, int(head.seq), head.entry_hash, on_entry=on_entry)

    # ------------------------------------------------------------------ documents
    def create_document(self, kind: str, content: Any, *, actor: str, subject: str | None = None,
                        doc_id: str | None = None, references: Document | None = None,
                        final: bool = False) -> Document:
        """Store a new document (draft unless final=True). content: JSON-compatible value."""
        doc_id = doc_id or str(uuid.uuid4())
        text_ = canonical_json(content).decode("utf-8")
        now = utc_now_iso()
        values = dict(doc_id=doc_id, kind=kind, subject=subject, status="final" if final else "draft",
                      content=text_, content_hash=sha256_hex(text_.encode("utf-8")) if final else None,
                      references_doc_id=references.doc_id if references else None,
                      references_hash=references.content_hash if references else None,
                      created_utc=now, created_by=actor, finalised_utc=now if final else None)
        if references is not None and not references.is_final:
            raise StoreError(f"{kind} cannot reference draft {references.doc_id}: only a final document can be referenced")
        with self.transaction() as conn:
            conn.execute(insert(t.documents).values(**values))
            # The audit entry repeats every metadata column, so verification can detect a change to any of them.
            details = {"doc_id": doc_id, "kind": kind, "subject": subject, "created_utc": now, "created_by": actor}
            if final:
                details.update(content_hash=values["content_hash"], finalised_utc=now)
            if references is not None:
                details.update(references_doc_id=references.doc_id, references_hash=references.content_hash)
            self.append_audit(conn, actor, "document created", details)
        return Document(**values)

    def update_draft(self, doc_id: str, content: Any) -> Document:
        """Replace a draft's content (e.g. the engine appending a beam session). Refused once final."""
        text_ = canonical_json(content).decode("utf-8")
        with self.transaction() as conn:
            row = conn.execute(select(t.documents.c.status).where(t.documents.c.doc_id == doc_id)).one_or_none()
            if row is None:
                raise DocumentNotFound(f"document {doc_id} does not exist")
            if row.status != "draft":
                raise ImmutableDocument(f"document {doc_id} is final and cannot be changed: write a signed addendum")
            conn.execute(update(t.documents).where(t.documents.c.doc_id == doc_id).values(content=text_))
        return self.get_document(doc_id)

    def finalise_document(self, doc_id: str, *, actor: str) -> Document:
        """Freeze a draft: compute its content hash; from now on it never changes."""
        with self.transaction() as conn:
            row = conn.execute(select(t.documents).where(t.documents.c.doc_id == doc_id)).one_or_none()
            if row is None:
                raise DocumentNotFound(f"document {doc_id} does not exist")
            if row.status == "final":
                return _doc(row)
            h = sha256_hex(row.content.encode("utf-8"))
            now = utc_now_iso()
            conn.execute(update(t.documents).where(t.documents.c.doc_id == doc_id)
                         .values(status="final", content_hash=h, finalised_utc=now))
            self.append_audit(conn, actor, "document finalised", {"doc_id": doc_id, "kind": row.kind, "content_hash": h,
                                                                  "finalised_utc": now})
        return self.get_document(doc_id)

    def get_document(self, doc_id: str) -> Document:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.documents).where(t.documents.c.doc_id == doc_id)).one_or_none()
        if row is None:
            raise DocumentNotFound(f"document {doc_id} does not exist in {self.display_url}")
        return _doc(row)

    def find_documents(self, *, kind: str | None = None, subject: str | None = None, status: str | None = None,
                       references_doc_id: str | None = None) -> list[Document]:
        """Documents matching all given filters, oldest first."""
        q = select(t.documents).order_by(t.documents.c.created_utc, t.documents.c.doc_id)
        if kind:
            q = q.where(t.documents.c.kind == kind)
        if subject:
            q = q.where(t.documents.c.subject == subject)
        if status:
            q = q.where(t.documents.c.status == status)
        if references_doc_id:
            q = q.where(t.documents.c.references_doc_id == references_doc_id)
        with self.engine.connect() as conn:
            return [_doc(r) for r in conn.execute(q)]

    def document_ids(self, *, kind: str | None = None) -> list[str]:
        q = select(t.documents.c.doc_id).order_by(t.documents.c.created_utc, t.documents.c.doc_id)
        if kind:
            q = q.where(t.documents.c.kind == kind)
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(q)]

    # ------------------------------------------------------------------ calibrations
    def set_active_calibration(self, source_serial: str, doc_id: str, *, actor: str) -> None:
        """Make a final calibration document the active one for a source (audited).

        Permission is checked by orconsole.identity before calling this."""
        doc = self.get_document(doc_id)
        if doc.kind != "calibration" or not doc.is_final:
            raise StoreError(f"document {doc_id} is a {doc.status} {doc.kind}, not a final calibration")
        now = utc_now_iso()
        with self.transaction() as conn:
            n = conn.execute(update(t.active_calibrations).where(t.active_calibrations.c.source_serial == source_serial)
                             .values(doc_id=doc_id, set_utc=now, set_by=actor)).rowcount
            if n == 0:
                conn.execute(insert(t.active_calibrations).values(source_serial=source_serial, doc_id=doc_id,
                                                                  set_utc=now, set_by=actor))
            self.append_audit(conn, actor, "calibration activated",
                              {"source_serial": source_serial, "doc_id": doc_id, "content_hash": doc.content_hash})

    def active_calibration(self, source_serial: str) -> Document | None:
        with self.engine.connect() as conn:
            doc_id = conn.execute(select(t.active_calibrations.c.doc_id)
                                  .where(t.active_calibrations.c.source_serial == source_serial)).scalar_one_or_none()
        return self.get_document(doc_id) if doc_id else None

    # ------------------------------------------------------------------ signatures
    def add_signature(self, sig: SignatureRow, *, audit_action: str, audit_details: dict[str, Any]) -> None:
        """Store a signature and its audit entry atomically. The document must be final and its hash
        must be the one signed (checked again here, inside the transaction)."""
        with self.transaction() as conn:
            row = conn.execute(select(t.documents.c.status, t.documents.c.content_hash)
                               .where(t.documents.c.doc_id == sig.doc_id)).one_or_none()
            if row is None:
                raise DocumentNotFound(f"document {sig.doc_id} does not exist")
            if row.status != "final" or row.content_hash != sig.content_hash:
                raise StoreError(f"document {sig.doc_id} changed or is not final: the signature was not stored")
            conn.execute(insert(t.signatures).values(**sig.__dict__))
            self.append_audit(conn, sig.username, audit_action, audit_details, utc=sig.signed_utc)

    def signatures_for(self, doc_id: str) -> list[SignatureRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.signatures).where(t.signatures.c.doc_id == doc_id)
                                .order_by(t.signatures.c.signed_utc, t.signatures.c.sig_id))
            return [SignatureRow(**r._mapping) for r in rows]

    def all_signatures(self) -> dict[str, list[SignatureRow]]:
        out: dict[str, list[SignatureRow]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(select(t.signatures).order_by(t.signatures.c.signed_utc, t.signatures.c.sig_id)):
                out.setdefault(r.doc_id, []).append(SignatureRow(**r._mapping))
        return out

    # ------------------------------------------------------------------ keys and users
    def register_public_key(self, key_id: str, owner_kind: str, owner_id: str, public_key_b64: str,
                            *, actor: str, conn: Connection | None = None) -> None:
        """Register a public key once; registering the same key again is a no-op."""
        def _do(c: Connection) -> None:
            existing = c.execute(select(t.public_keys).where(t.public_keys.c.key_id == key_id)).one_or_none()
            if existing is not None:
                if existing.public_key_b64 != public_key_b64 or existing.owner_id != owner_id:
                    raise StoreError(f"key id {key_id} is already registered to {existing.owner_kind} {existing.owner_id}")
                return
            c.execute(insert(t.public_keys).values(key_id=key_id, owner_kind=owner_kind, owner_id=owner_id,
                                                   public_key_b64=public_key_b64, created_utc=utc_now_iso()))
            self.append_audit(c, actor, "key registered", {"key_id": key_id, "owner_kind": owner_kind, "owner_id": owner_id})
        if conn is not None:
            _do(conn)
        else:
            with self.transaction() as c:
                _do(c)

    def public_key(self, key_id: str) -> PublicKeyRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(t.public_keys).where(t.public_keys.c.key_id == key_id)).one_or_none()
        return PublicKeyRow(**r._mapping) if r else None

    def all_public_keys(self) -> dict[str, PublicKeyRow]:
        with self.engine.connect() as conn:
            return {r.key_id: PublicKeyRow(**r._mapping) for r in conn.execute(select(t.public_keys))}

    def count_users(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.users)).scalar_one())

    def insert_user(self, user: UserRow, public_key_b64: str, *, actor: str, require_no_users: bool = False) -> None:
        """Insert a user and register their public key, atomically (audited as 'user created')."""
        with self.transaction() as conn:
            if require_no_users:
                n = conn.execute(select(func.count()).select_from(t.users)).scalar_one()
                if n:
                    raise StoreError("users already exist: the first administrator has already been created")
            if conn.execute(select(t.users.c.user_id).where(t.users.c.username == user.username)).first():
                raise StoreError(f"user name '{user.username}' is taken: choose another")
            conn.execute(insert(t.users).values(**user.__dict__))
            self.register_public_key(user.key_id, "user", user.user_id, public_key_b64, actor=actor, conn=conn)
            self.append_audit(conn, actor, "user created",
                              {"user_id": user.user_id, "username": user.username, "role": user.role,
                               "key_id": user.key_id})

    def get_user(self, *, username: str | None = None, user_id: str | None = None) -> UserRow | None:
        q = select(t.users)
        q = q.where(t.users.c.username == username) if username is not None else q.where(t.users.c.user_id == user_id)
        with self.engine.connect() as conn:
            r = conn.execute(q).one_or_none()
        return UserRow(**r._mapping) if r else None

    def list_users(self) -> list[UserRow]:
        with self.engine.connect() as conn:
            return [UserRow(**r._mapping) for r in conn.execute(select(t.users).order_by(t.users.c.username))]

    def update_user(self, user_id: str, *, actor: str, audit_action: str | None = None,
                    audit_details: dict[str, Any] | None = None, **values: Any) -> None:
        """Change user columns (failed_attempts, locked_utc, disabled, password_hash, sealed_private_key)."""
        allowed = {"failed_attempts", "locked_utc", "disabled", "password_hash", "sealed_private_key", "full_name"}
        if set(values) - allowed:
            raise StoreError(f"cannot change user fields {sorted(set(values) - allowed)}")
        with self.transaction() as conn:
            conn.execute(update(t.users).where(t.users.c.user_id == user_id).values(**values))
            if audit_action:
                self.append_audit(conn, actor, audit_action, audit_details or {})


def _doc(row) -> Document:
    return Document(**{k: row._mapping[k] for k in Document.__dataclass_fields__})


__all__ = ["Store", "Document", "SignatureRow", "UserRow", "PublicKeyRow", "Health", "StoreError",
           "DocumentNotFound", "ImmutableDocument", "default_url", "default_data_dir", "resolve_url", "GENESIS_HASH"]
