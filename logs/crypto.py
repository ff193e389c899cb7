"""Key material: scrypt password hashes, Ed25519 key pairs, private keys sealed under a password,
and the installation key that countersigns every signature made on this console.

Never stores or logs a password or an unencrypted user private key; never invents a default password.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from logs.canonical import canonical_json

# Production cost of scrypt: n=2**15, r=8, p=1 (32 MiB, ~0.1 s). Tests may pass a lower n.
SCRYPT_N_DEFAULT = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAXMEM = 256 * 1024 * 1024


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)


def hash_password(password: str, *, n: int = SCRYPT_N_DEFAULT) -> str:
    """Return 'scrypt$n$r$p$salt_b64$hash_b64' for storage."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64e(salt)}${b64e(digest)}"


def check_password(password: str, stored: str) -> bool:
    """Constant-time comparison of password against a hash made by hash_password."""
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown password hash scheme {scheme!r}")
    candidate = _scrypt(password, b64d(salt), int(n), int(r), int(p))
    return hmac.compare_digest(candidate, b64d(digest))


def public_key_raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_key: Ed25519PublicKey | bytes) -> str:
    """Key identifier: 'ed25519:' + first 32 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key if isinstance(public_key, bytes) else public_key_raw(public_key)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def load_public_key(raw_b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(b64d(raw_b64))


@functools.lru_cache(maxsize=4096)
def _cached_public_key(public_key_b64: str) -> Ed25519PublicKey:
    return load_public_key(public_key_b64)


def verify_ed25519(public_key_b64: str, signature_b64: str, message: bytes) -> bool:
    try:
        _cached_public_key(public_key_b64).verify(base64.b64decode(signature_b64, validate=True), message)
        return True
    except (InvalidSignature, ValueError, binascii.Error):
        return False


class WrongPassword(Exception):
    """The password does not open this sealed key."""


def seal_private_key(private_key: Ed25519PrivateKey, password: str, *, owner: str, n: int = SCRYPT_N_DEFAULT) -> str:
    """Encrypt an Ed25519 private key under a password: scrypt(password, salt) -> AES-256-GCM key.

    The owner string (user id) is authenticated data, so a sealed key copied to another user's row
    does not open. Returns canonical JSON text: {kdf, n, r, p, salt, nonce, ciphertext}.
    """
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    kek = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P)
    raw = private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    ciphertext = AESGCM(kek).encrypt(nonce, raw, owner.encode("utf-8"))
    blob = {"kdf": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64e(salt), "nonce": b64e(nonce),
            "cipher": "AES-256-GCM", "ciphertext": b64e(ciphertext)}
    return canonical_json(blob).decode("utf-8")


def open_private_key(sealed: str, password: str, *, owner: str) -> Ed25519PrivateKey:
    import json

    blob = json.loads(sealed)
    kek = _scrypt(password, b64d(blob["salt"]), int(blob["n"]), int(blob["r"]), int(blob["p"]))
    try:
        raw = AESGCM(kek).decrypt(b64d(blob["nonce"]), b64d(blob["ciphertext"]), owner.encode("utf-8"))
    except InvalidTag as exc:
        raise WrongPassword("the password does not open this private key") from exc
    return Ed25519PrivateKey.from_private_bytes(raw)


@dataclass(frozen=True)
class InstallationKey:
    """The console installation's own Ed25519 key; it countersigns every signature made here."""

    private_key: Ed25519PrivateKey
    path: Path | None = None

    @property
    def public_key_b64(self) -> str:
        return b64e(public_key_raw(self.private_key.public_key()))

    @property
    def key_id(self) -> str:
        return key_id_of(self.private_key.public_key())

    def sign(self, message: bytes) -> str:
        return b64e(self.private_key.sign(message))

    @classmethod
    def generate(cls) -> "InstallationKey":
        """An in-memory key (tests, benchmarks). A console uses load_or_create."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path | str, passphrase: str | None = None) -> "InstallationKey":
        """Load the key from a PKCS#8 PEM file, or create it (mode 0600) if the file does not exist.

        With a passphrase (ORCONSOLE_INSTALLATION_KEY_PASSPHRASE) the PEM is encrypted with
        cryptography's BestAvailableEncryption; without one it is protected by file permissions only.
        """
        path = Path(path)
        pw = passphrase.encode("utf-8") if passphrase else None
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise PermissionError(
                    f"installation key {path} is readable by other users (mode {mode:o}): run 'chmod 600 {path}'")
            key = serialization.load_pem_private_key(path.read_bytes(), password=pw)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 key")
            return cls(key, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        enc = serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        return cls(key, path)
