"""`orconsole admin ...`: the explicit first-run step that creates the first administrator, then user
management (add, unlock, disable, list) and the installation key's fingerprint.

Thin: all rules live in orconsole.identity. Never accepts a password on the command line (prompt or
--password-stdin only) and never creates a default account.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys

ROLE_CHOICES = {
    "therapist": "radiation therapist",
    "physicist": "medical physicist",
    "oncologist": "radiation oncologist",
    "administrator": "administrator",
}


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=argparse.SUPPRESS, metavar="URL",
                        help="record store URL (default: ORCONSOLE_DB, else SQLite in the user data directory)")


def _add_stdin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read password(s) from standard input, one per line, instead of prompting")


def register(subparsers) -> None:
    p = subparsers.add_parser("admin", help="first administrator, users, installation key",
                              description="User administration. Start here on a new installation: "
                                          "orconsole admin create-first-admin --username NAME --full-name 'PRINTED NAME'")
    sub = p.add_subparsers(dest="admin_command", metavar="ACTION", required=True)

    f = sub.add_parser("create-first-admin", help="first run: create the first administrator (only if no user exists)")
    f.add_argument("--username", required=True)
    f.add_argument("--full-name", required=True, help="printed name shown on signatures and the audit trail")
    _add_stdin(f)
    _add_db(f)
    f.set_defaults(func=cmd_create_first_admin)

    a = sub.add_parser("add-user", help="an administrator creates an account")
    a.add_argument("--admin", required=True, metavar="ADMIN_USERNAME", help="the administrator doing this")
    a.add_argument("--username", required=True)
    a.add_argument("--full-name", required=True)
    a.add_argument("--role", required=True, choices=sorted(ROLE_CHOICES))
    _add_stdin(a)
    _add_db(a)
    a.set_defaults(func=cmd_add_user)

    for name, helptext, func in (("unlock", "unlock an account locked after failed attempts", cmd_unlock),
                                 ("disable", "disable an account (its signatures stay valid)", cmd_disable)):
        u = sub.add_parser(name, help=helptext)
        u.add_argument("username")
        u.add_argument("--admin", required=True, metavar="ADMIN_USERNAME")
        _add_stdin(u)
        _add_db(u)
        u.set_defaults(func=func)

    ls = sub.add_parser("list-users", help="users, roles, lock state and key ids")
    _add_db(ls)
    ls.set_defaults(func=cmd_list_users)

    k = sub.add_parser("installation-key", help="show (create on first use) this console's countersigning key")
    _add_db(k)
    k.set_defaults(func=cmd_installation_key)


def _identity(args):
    from logs.crypto import InstallationKey
    from logs.store import Store, default_installation_key_path
    from orconsole.identity import IdentityService

    store = Store(getattr(args, "db", None))
    key = InstallationKey.load_or_create(default_installation_key_path(),
                                         os.environ.get("ORCONSOLE_INSTALLATION_KEY_PASSPHRASE"))
    return IdentityService(store, key)


class _Passwords:
    def __init__(self, from_stdin: bool) -> None:
        self.lines = sys.stdin.read().splitlines() if from_stdin else None

    def ask(self, prompt: str, *, confirm: bool = False) -> str:
        if self.lines is not None:
            if not self.lines:
                raise SystemExit(f"admin: standard input ended before '{prompt.strip(': ')}'")
            return self.lines.pop(0)
        pw = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat: ") != pw:
            raise SystemExit("admin: the two passwords differ; nothing was changed")
        return pw


def _run(func):
    from logs.store import StoreError
    from orconsole.identity import AuthenticationError, PasswordPolicyError

    try:
        return func()
    except (AuthenticationError, PermissionError, PasswordPolicyError, StoreError, ValueError) as exc:
        print(f"admin: {exc}", file=sys.stderr)
        return 1


def cmd_create_first_admin(args) -> int:
    ids = _identity(args)
    if ids.has_users():
        print("admin: users already exist in this store; the first administrator was created before. "
              "Ask an administrator for an account.", file=sys.stderr)
        return 1
    pw = _Passwords(args.password_stdin)

    def go() -> int:
        session = ids.create_first_administrator(args.username, args.full_name,
                                                 pw.ask(f"New password for {args.username}: ", confirm=True))
        print(f"created administrator '{session.username}' ({session.full_name}) in {ids.store.display_url}")
        print(f"installation key: {ids.installation_key.key_id}")
        return 0
    return _run(go)


def cmd_add_user(args) -> int:
    ids = _identity(args)
    pw = _Passwords(args.password_stdin)

    def go() -> int:
        admin = ids.login(args.admin, pw.ask(f"Password of administrator {args.admin}: "))
        new_pw = pw.ask(f"New password for {args.username}: ", confirm=True)
        s = ids.create_user(admin, args.username, args.full_name, ROLE_CHOICES[args.role], new_pw)
        print(f"created {s.role} '{s.username}' ({s.full_name})")
        return 0
    return _run(go)


def cmd_unlock(args) -> int:
    ids = _identity(args)
    pw = _Passwords(args.password_stdin)

    def go() -> int:
        admin = ids.login(args.admin, pw.ask(f"Password of administrator {args.admin}: "))
        ids.unlock_user(admin, args.username)
        print(f"unlocked '{args.username}'")
        return 0
    return _run(go)


def cmd_disable(args) -> int:
    ids = _identity(args)
    pw = _Passwords(args.password_stdin)

    def go() -> int:
        admin = ids.login(args.admin, pw.ask(f"Password of administrator {args.admin}: "))
        ids.disable_user(admin, args.username)
        print(f"disabled '{args.username}'")
        return 0
    return _run(go)


def cmd_list_users(args) -> int:
    from logs.store import Store

    store = Store(getattr(args, "db", None))
    users = store.list_users()
    if not users:
        print("no users yet: run 'orconsole admin create-first-admin --username NAME --full-name \"PRINTED NAME\"'")
    for u in users:
        state = "disabled" if u.disabled else ("LOCKED since " + u.locked_utc if u.locked_utc else "active")
        print(f"{u.username:<16} {u.role:<22} {u.full_name:<30} {state:<12} {u.key_id}")
    return 0


def cmd_installation_key(args) -> int:
    ids = _identity(args)
    from logs.signing import ensure_installation_key

    ensure_installation_key(ids.store, ids.installation_key)
    print(f"key id:     {ids.installation_key.key_id}")
    print(f"public key: {ids.installation_key.public_key_b64}")
    print(f"file:       {ids.installation_key.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orconsole")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["admin", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
