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
