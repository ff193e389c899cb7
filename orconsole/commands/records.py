"""`orconsole records verify|export|list`: check signatures, hashes and the audit chain; export a
signed record as JSON, PDF or DICOM RT Beams Treatment Record (optionally sent by C-STORE).

Thin: parses arguments and prints verdicts; the work is in logs/. Never changes a stored record.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_VERIFICATION_FAILED = 1
EXIT_USAGE = 2


def _add_db(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: when not given here, a --db given before the sub-command (orconsole --db URL records ...) stays.
    parser.add_argument("--db", default=argparse.SUPPRESS, metavar="URL",
                        help="record store URL (default: ORCONSOLE_DB, else SQLite in the user data directory)")


def register(subparsers) -> None:
    p = subparsers.add_parser("records", help="verify and export signed delivery records",
                              description="Verify and export signed delivery records.")
    sub = p.add_subparsers(dest="records_command", metavar="ACTION", required=True)

    v = sub.add_parser("verify", help="check every signature, content hash and the audit chain",
                       description="Check signatures, content hashes and the audit chain. Exit status 0 only if "
                                   "everything verifies; 1 if anything fails.")
    v.add_argument("target", nargs="?", metavar="RECORD_ID|FILE",
                   help="a record id in the store, or an exported .json file (default: --all)")
    v.add_argument("--all", action="store_true", help="every document in the store and the audit chain")
    _add_db(v)
    v.set_defaults(func=cmd_verify)

    e = sub.add_parser("export", help="export a signed record as JSON, PDF or DICOM",
                       description="Export a final record. JSON carries the public keys for offline verification.")
    e.add_argument("record_id", metavar="RECORD_ID")
    e.add_argument("--format", choices=("json", "pdf", "dicom"), required=True)
    e.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    e.add_argument("--send", metavar="AET@HOST:PORT", nargs="?", const="configured", default=None,
                   help="DICOM only: also C-STORE the file to the oncology information system; without a value, "
                        "the one configured in ORCONSOLE_OIS (e.g. OIS@10.0.0.5:104)")
    e.add_argument("--calling-aet", default="ORCONSOLE", help="our DICOM AE title (default ORCONSOLE)")
    _add_db(e)
    e.set_defaults(func=cmd_export)

    ls = sub.add_parser("list", help="list delivery records in the store")
    _add_db(ls)
    ls.set_defaults(func=cmd_list)


def _open_store(args):
    from logs.store import Store

    return Store(getattr(args, "db", None))


def _installation_key():
    from logs.crypto import InstallationKey
    from logs.store import default_installation_key_path

    return InstallationKey.load_or_create(default_installation_key_path(),
                                          os.environ.get("ORCONSOLE_INSTALLATION_KEY_PASSPHRASE"))


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli:unknown"


def cmd_verify(args) -> int:
    from logs.store import DocumentNotFound
    from logs.verify import verify_all, verify_export_file, verify_stored

    target = args.target
    if target and args.all:
        print("records verify: give either --all or one RECORD_ID/FILE, not both", file=sys.stderr)
        return EXIT_USAGE
    if target and (Path(target).is_file() or os.path.sep in target or target.endswith(".json")):
        if not Path(target).is_file():
            print(f"records verify: file {target} does not exist", file=sys.stderr)
            return EXIT_USAGE
        verdicts = verify_export_file(target)
        for v in verdicts:
            print(v.render())
        ok = all(v.ok for v in verdicts)
        print(f"{'VERIFIED' if ok else 'VERIFICATION FAILED'}: exported file {target} "
              f"({len(verdicts)} document(s)) {'is intact and every signature is valid' if ok else 'must not be trusted'}")
        return EXIT_OK if ok else EXIT_VERIFICATION_FAILED
    store = _open_store(args)
    try:
        if target:
            try:
                v = verify_stored(store, target)
            except DocumentNotFound as exc:
                print(f"records verify: {exc}. List records with 'orconsole records list'.", file=sys.stderr)
                return EXIT_USAGE
            chain = store.verify_audit_chain()
            print(v.render())
            print(("OK      " if chain.ok else "FAILED  ") + chain.summary())
            ok = v.ok and chain.ok
            print(f"{'VERIFIED' if ok else 'VERIFICATION FAILED'}: record {target}")
            return EXIT_OK if ok else EXIT_VERIFICATION_FAILED
        verdict = verify_all(store)
        print(f"store: {store.display_url}")
        print(verdict.render())
        return EXIT_OK if verdict.ok else EXIT_VERIFICATION_FAILED
    finally:
        store.close()


def cmd_list(args) -> int:
    from logs.records import RECORD_KIND

    store = _open_store(args)
    try:
        docs = store.find_documents(kind=RECORD_KIND)
        sigs = store.all_signatures()
        if not docs:
            print(f"no delivery records in {store.display_url}")
        for d in docs:
            data = d.data
            meanings = ", ".join(s.meaning for s in sigs.get(d.doc_id, [])) or "unsigned"
            print(f"{d.doc_id}  {data['treatment_date']}  {data['patient']['medical_record_number']:<12} "
                  f"{data['patient']['trial_subject_id']:<14} {d.status:<5}  {meanings}")
        return EXIT_OK
    finally:
        store.close()


def parse_send_target(text: str) -> tuple[str, str, int]:
    """'OIS@10.0.0.5:104' -> ('OIS', '10.0.0.5', 104)."""
    try:
        aet, hostport = text.split("@", 1)
        host, port = hostport.rsplit(":", 1)
        return aet, host, int(port)
    except ValueError as exc:
        raise ValueError(f"'{text}' is not AET@HOST:PORT (for example OIS@10.0.0.5:104)") from exc


def cmd_export(args) -> int:
    from logs.store import DocumentNotFound, StoreError

    store = _open_store(args)
    try:
        try:
            doc = store.get_document(args.record_id)
        except DocumentNotFound as exc:
            print(f"records export: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if not doc.is_final:
            print(f"records export: record {args.record_id} is still a draft: finalise and sign it first", file=sys.stderr)
            return EXIT_USAGE
        actor = _actor()
        key = _installation_key()
        try:
            if args.format == "json":
                from logs.export_json import export_json

                export_json(store, args.record_id, args.output, key, exported_by=actor)
            elif args.format == "pdf":
                from logs.export_pdf import export_pdf

                export_pdf(store, args.record_id, args.output, exported_by=actor)
            else:
                from logs.export_dicom import export_dicom

                export_dicom(store, args.record_id, args.output, exported_by=actor)
        except StoreError as exc:
            print(f"records export: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"exported record {args.record_id} as {args.format.upper()} to {args.output}")
        send = args.send
        if send and args.format != "dicom":
            print("records export: --send applies to --format dicom only", file=sys.stderr)
            return EXIT_USAGE
        if send == "configured":
            send = os.environ.get("ORCONSOLE_OIS")
            if not send:
                print("records export: no oncology information system configured: set ORCONSOLE_OIS=AET@HOST:PORT "
                      "or give --send AET@HOST:PORT", file=sys.stderr)
                return EXIT_USAGE
        if send:
            from logs.dicom_send import send_dicom

            aet, host, port = parse_send_target(send)
            result = send_dicom(args.output, host=host, port=port, called_aet=aet, calling_aet=args.calling_aet)
            store.audit(actor, "export", {"record_id": args.record_id, "format": "dicom c-store",
                                          "destination": send, "ok": result.ok, "status": result.message})
            print(result.message)
            return EXIT_OK if result.ok else EXIT_VERIFICATION_FAILED
        return EXIT_OK
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m orconsole.commands.records ...` without the full console CLI."""
    parser = argparse.ArgumentParser(prog="orconsole")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["records", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
