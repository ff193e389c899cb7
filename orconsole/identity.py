"""Users, roles, permissions, authentication and lockout; the only door to signing.

A Qt-free core service over logs.Store. Permissions are enforced here (and signature entitlements
again in logs.signing), never only by hiding buttons. Never stores a password, never creates a
default account: the first administrator is created explicitly (orconsole admin create-first-admin).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logs.canonical import utc_now_iso
from logs.crypto import SCRYPT_N_DEFAULT, InstallationKey, WrongPassword, check_password, hash_password, \
    key_id_of, open_private_key, seal_private_key
from logs.signing import MEANING_ROLES, Meaning, Role, Signer, SignatureRefused, public_key_b64_of, sign_document
from logs.store import Document, SignatureRow, Store, UserRow

MAX_FAILED_ATTEMPTS = 5
MIN_PASSWORD_LENGTH = 10

__all__ = ["Role", "Meaning", "Permission", "ROLE_PERMISSIONS", "Session", "IdentityService", "AuthenticationError",
           "AccountLocked", "PermissionDenied", "PasswordPolicyError", "MAX_FAILED_ATTEMPTS"]


class Permission(StrEnum):
    SELECT_PATIENT = "select patient"
    OPERATE_BEAM = "operate beam"
    PRESCRIBE = "prescribe"
    APPROVE_PLAN = "approve plan"
    PERFORM_DELIVERY = "sign performed delivery"
    REVIEW_RECORD = "review record"
    AUTHOR_ADDENDUM = "write record addendum"
    PERFORM_QA = "perform QA"
    CHANGE_QA_BASELINE = "change QA baseline"
    MANAGE_CALIBRATION = "manage calibration"
    EXPORT_RECORD = "export record"
    VERIFY_RECORDS = "verify records"
    MANAGE_USERS = "manage users"
    CHANGE_CONFIGURATION = "change configuration"


_CLINICAL_COMMON = {Permission.SELECT_PATIENT, Permission.EXPORT_RECORD, Permission.VERIFY_RECORDS,
                    Permission.AUTHOR_ADDENDUM}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.RADIATION_THERAPIST: frozenset(_CLINICAL_COMMON | {Permission.OPERATE_BEAM, Permission.PERFORM_DELIVERY}),
    Role.MEDICAL_PHYSICIST: frozenset(_CLINICAL_COMMON | {
        Permission.OPERATE_BEAM, Permission.PERFORM_DELIVERY, Permission.APPROVE_PLAN, Permission.REVIEW_RECORD,
        Permission.PERFORM_QA, Permission.CHANGE_QA_BASELINE, Permission.MANAGE_CALIBRATION}),
    Role.RADIATION_ONCOLOGIST: frozenset(_CLINICAL_COMMON | {
        Permission.OPERATE_BEAM, Permission.PERFORM_DELIVERY, Permission.PRESCRIBE, Permission.APPROVE_PLAN,
        Permission.REVIEW_RECORD}),
    Role.ADMINISTRATOR: frozenset({Permission.MANAGE_USERS, Permission.CHANGE_CONFIGURATION,
                                   Permission.VERIFY_RECORDS, Permission.EXPORT_RECORD}),
}

MEANING_PERMISSION: dict[Meaning, Permission] = {
    Meaning.PRESCRIBED: Permission.PRESCRIBE,
    Meaning.APPROVED_PLAN: Permission.APPROVE_PLAN,
    Meaning.PERFORMED_DELIVERY: Permission.PERFORM_DELIVERY,
    Meaning.REVIEWED_RECORD: Permission.REVIEW_RECORD,
    Meaning.AUTHORED_ADDENDUM: Permission.AUTHOR_ADDENDUM,
    Meaning.PERFORMED_QA: Permission.PERFORM_QA,
    Meaning.APPROVED_CALIBRATION: Permission.MANAGE_CALIBRATION,
    Meaning.ACKNOWLEDGED_QA_WARNING: Permission.PERFORM_QA,
}

# Who may create (and sign) which kind of document through create_signed_document.
KIND_PERMISSION: dict[str, Permission] = {
    "plan": Permission.PRESCRIBE,
    "qa_result": Permission.PERFORM_QA,
    "qa_baseline": Permission.CHANGE_QA_BASELINE,
    "calibration": Permission.MANAGE_CALIBRATION,
}

# The two tables must agree: a permission to sign implies entitlement in logs.signing and vice versa.
for _m, _p in MEANING_PERMISSION.items():
    assert {r for r in Role if _p in ROLE_PERMISSIONS[r]} == set(MEANING_ROLES[_m]), _m


class AuthenticationError(Exception):
    """Wrong user name or password; the message says how many attempts are left."""


class AccountLocked(AuthenticationError):
    """Too many failed attempts, or the account was disabled; an administrator must unlock it."""


class PermissionDenied(PermissionError):
    """The user's role does not allow the action; the message says who can do it."""


class PasswordPolicyError(ValueError):
    pass


@dataclass(frozen=True)
class Session:
    """A logged-in user. Holds no password and no key."""

    user_id: str
    username: str
    full_name: str
    role: Role
    started_utc: str

    @property
    def actor(self) -> str:
        return self.username


class IdentityService:
    """Users and signatures for the treatment engine, the QA service, the UI and the CLI.

    store: the record store. installation_key: this console's countersigning key.
    scrypt_n: password-hash cost (production default 2**15; tests may pass 2**10).
    """

    def __init__(self, store: Store, installation_key: InstallationKey, *, scrypt_n: int = SCRYPT_N_DEFAULT,
                 max_failed_attempts: int = MAX_FAILED_ATTEMPTS) -> None:
        self.store = store
        self.installation_key = installation_key
        self.scrypt_n = scrypt_n
        self.max_failed_attempts = max_failed_attempts

    # ---------------------------------------------------------------- accounts
    def has_users(self) -> bool:
        return self.store.count_users() > 0

    def create_first_administrator(self, username: str, full_name: str, password: str) -> Session:
        """The explicit first-run step: create the administrator when (and only when) no user exists."""
        if self.has_users():
            raise PermissionDenied("the first administrator already exists: ask an administrator to create your account")
        user = self._new_user(username, full_name, Role.ADMINISTRATOR, password, created_by="first-run")
        self.store.insert_user(user.row, user.public_key_b64, actor="first-run", require_no_users=True)
        return self._session(user.row)

    def create_user(self, admin: Session, username: str, full_name: str, role: Role | str, password: str) -> Session:
        """An administrator creates an account; the new user's key pair is sealed under their password."""
        self.require(admin, Permission.MANAGE_USERS, f"create user '{username}'")
        user = self._new_user(username, full_name, Role(role), password, created_by=admin.username)
        self.store.insert_user(user.row, user.public_key_b64, actor=admin.username)
        return self._session(user.row)

    def unlock_user(self, admin: Session, username: str) -> None:
        self.require(admin, Permission.MANAGE_USERS, f"unlock user '{username}'")
        row = self._row(username)
        self.store.update_user(row.user_id, actor=admin.username, failed_attempts=0, locked_utc=None,
                               audit_action="account unlocked", audit_details={"username": username})

    def disable_user(self, admin: Session, username: str) -> None:
        self.require(admin, Permission.MANAGE_USERS, f"disable user '{username}'")
        row = self._row(username)
        self.store.update_user(row.user_id, actor=admin.username, disabled=True,
                               audit_action="user disabled", audit_details={"username": username})

    def change_password(self, session: Session, old_password: str, new_password: str) -> None:
        """Re-seal the user's private key under the new password (the key pair, and thus old signatures, stay valid)."""
        _check_policy(new_password)
        row = self._authenticate(session.username, old_password, purpose="change password")
        key = open_private_key(row.sealed_private_key, old_password, owner=row.user_id)
        self.store.update_user(row.user_id, actor=row.username,
                               password_hash=hash_password(new_password, n=self.scrypt_n),
                               sealed_private_key=seal_private_key(key, new_password, owner=row.user_id, n=self.scrypt_n),
                               audit_action="password changed", audit_details={"username": row.username})

    def list_users(self) -> list[UserRow]:
        return self.store.list_users()

    # ---------------------------------------------------------------- authentication
    def login(self, username: str, password: str) -> Session:
        row = self._authenticate(username, password, purpose="login")
        self.store.audit(row.username, "login", {"user_id": row.user_id, "role": row.role})
        return self._session(row)

    def logout(self, session: Session) -> None:
        self.store.audit(session.username, "logout", {"user_id": session.user_id})

    def verify_password(self, session: Session, password: str) -> None:
        """Re-entry of the password (e.g. before a critical action); counts towards lockout."""
        self._authenticate(session.username, password, purpose="password re-entry")

    # ---------------------------------------------------------------- authorisation
    def can(self, session: Session, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[Role(session.role)]

    def require(self, session: Session, permission: Permission, what: str = "") -> None:
        """Raise PermissionDenied (audited) unless the session's role holds the permission.

        Also refuses a user who has been disabled or locked since logging in."""
        row = self.store.get_user(user_id=session.user_id)
        if row is None or row.disabled:
            raise PermissionDenied(f"account '{session.username}' is disabled: ask an administrator")
        if row.locked_utc:
            raise PermissionDenied(f"account '{session.username}' is locked: ask an administrator to unlock it")
        if not self.can(session, permission):
            holders = " or ".join(r.value for r in Role if permission in ROLE_PERMISSIONS[r])
            action = what or permission.value
            self.store.audit(session.username, "permission denied",
                             {"permission": permission.value, "role": str(session.role), "what": action})
            raise PermissionDenied(f"{session.full_name} is {_a(session.role)}: {_a(session.role)} cannot {action}. "
                                   f"Only {_a(holders)} can.")

    # ---------------------------------------------------------------- signing
    def sign(self, session: Session, password: str, doc_id: str, meaning: Meaning | str) -> SignatureRow:
        """Sign a final document with re-entry of the password.

        Checks the permission for the meaning, the password (a wrong one counts towards lockout),
        unseals the user's key, signs, countersigns with the installation key, stores and audits."""
        meaning = Meaning(meaning)
        self.require(session, MEANING_PERMISSION[meaning], f"sign '{meaning.value}'")
        row = self._authenticate(session.username, password, purpose=f"signature '{meaning.value}'")
        return self._sign_as(row, password, doc_id, meaning)

    def create_signed_document(self, session: Session, password: str, kind: str, content: Any,
                               meaning: Meaning | str, *, subject: str | None = None) -> tuple[Document, SignatureRow]:
        """Store a final document and sign it in one step: a plan, a QA result, a QA baseline, a calibration.

        The role must hold the permission for the kind (a therapist cannot store a QA baseline or a
        calibration by any path) and for the meaning; the password is checked before anything is stored."""
        meaning = Meaning(meaning)
        if kind not in KIND_PERMISSION:
            raise ValueError(f"'{kind}' documents are not created here: use RecordBook for delivery records")
        self.require(session, KIND_PERMISSION[kind], f"store a {kind.replace('_', ' ')}")
        self.require(session, MEANING_PERMISSION[meaning], f"sign '{meaning.value}'")
        row = self._authenticate(session.username, password, purpose=f"store and sign a {kind}")
        doc = self.store.create_document(kind, content, actor=session.username, subject=subject, final=True)
        return doc, self._sign_as(row, password, doc.doc_id, meaning)

    def audit(self, session: Session, action: str, details: dict[str, Any] | None = None) -> None:
        """Append an audit entry in the name of the logged-in user (beam on/off, interlock, configuration change...)."""
        self.store.audit(session.username, action, details or {})

    def _sign_as(self, row: UserRow, password: str, doc_id: str, meaning: Meaning) -> SignatureRow:
        try:
            key = open_private_key(row.sealed_private_key, password, owner=row.user_id)
        except WrongPassword as exc:
            raise AuthenticationError(f"the private key of '{row.username}' does not open with this password: "
                                      "ask an administrator (the key store may be damaged)") from exc
        signer = Signer(row.user_id, row.username, row.full_name, row.role, row.key_id)
        return sign_document(self.store, doc_id, meaning, signer, key, self.installation_key)

    def set_active_calibration(self, session: Session, password: str, source_serial: str, doc_id: str) -> None:
        """A physicist makes a final calibration active for a source (password re-entry, audited)."""
        self.require(session, Permission.MANAGE_CALIBRATION, f"activate a calibration for source {source_serial}")
        self._authenticate(session.username, password, purpose="activate calibration")
        self.store.set_active_calibration(source_serial, doc_id, actor=session.username)

    # ---------------------------------------------------------------- internals
    @dataclass(frozen=True)
    class _NewUser:
        row: UserRow
        public_key_b64: str

    def _new_user(self, username: str, full_name: str, role: Role, password: str, *, created_by: str) -> "_NewUser":
        username = username.strip()
        if not username or not username.replace(".", "").replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"user name '{username}' is not valid: use letters, digits, '.', '-' or '_'")
        if not full_name.strip():
            raise ValueError("the printed name is required: it appears on every signature")
        _check_policy(password)
        user_id = str(uuid.uuid4())
        key = Ed25519PrivateKey.generate()
        row = UserRow(user_id=user_id, username=username, full_name=full_name.strip(), role=role.value,
                      password_hash=hash_password(password, n=self.scrypt_n),
                      sealed_private_key=seal_private_key(key, password, owner=user_id, n=self.scrypt_n),
                      key_id=key_id_of(key.public_key()), failed_attempts=0, locked_utc=None, disabled=False,
                      created_utc=utc_now_iso(), created_by=created_by)
        return self._NewUser(row, public_key_b64_of(key))

    def _row(self, username: str) -> UserRow:
        row = self.store.get_user(username=username)
        if row is None:
            raise AuthenticationError(f"there is no user '{username}'")
        return row

    def _authenticate(self, username: str, password: str, *, purpose: str) -> UserRow:
        row = self.store.get_user(username=username)
        if row is None:
            self.store.audit(username, "login failed", {"purpose": purpose, "reason": "unknown user"})
            raise AuthenticationError(f"user name or password incorrect for '{username}'")
        if row.disabled:
            self.store.audit(username, "login failed", {"purpose": purpose, "reason": "account disabled"})
            raise AccountLocked(f"account '{username}' is disabled: ask an administrator")
        if row.locked_utc:
            self.store.audit(username, "login failed", {"purpose": purpose, "reason": "account locked"})
            raise AccountLocked(f"account '{username}' is locked after {self.max_failed_attempts} failed attempts "
                                f"(since {row.locked_utc}): an administrator must unlock it "
                                f"(orconsole admin unlock {username})")
        if check_password(password, row.password_hash):
            if row.failed_attempts:
                self.store.update_user(row.user_id, actor=username, failed_attempts=0)
            return row
        failures = row.failed_attempts + 1
        left = self.max_failed_attempts - failures
        if left <= 0:
            now = utc_now_iso()
            self.store.update_user(row.user_id, actor=username, failed_attempts=failures, locked_utc=now,
                                   audit_action="account locked",
                                   audit_details={"purpose": purpose, "failed_attempts": failures})
            raise AccountLocked(f"password incorrect for user '{username}': the account is now locked after "
                                f"{failures} failed attempts; an administrator must unlock it")
        self.store.update_user(row.user_id, actor=username, failed_attempts=failures, audit_action="login failed",
                               audit_details={"purpose": purpose, "failed_attempts": failures})
        raise AuthenticationError(f"password incorrect for user '{username}': {left} attempt{'s' if left != 1 else ''} "
                                  "left before the account locks")

    @staticmethod
    def _session(row: UserRow) -> Session:
        return Session(row.user_id, row.username, row.full_name, Role(row.role), utc_now_iso())


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _check_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if password.strip() != password or not password.strip():
        raise PasswordPolicyError("the password must not start or end with spaces")
