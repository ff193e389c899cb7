"""The `orconsole` command line: the one composition root that wires devices, store and UI.

`orconsole` alone opens the bedside console; sub-commands run headless jobs (demo, qa, records,
admin). Nothing else constructs its own collaborators. Qt is imported only when a window opens.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from orconsole import __version__
from orconsole.logging_setup import configure_logging
from orconsole.paths import log_dir

# sub-command modules under orconsole/commands/, each with register(subparsers)
COMMAND_MODULES = ("admin", "records", "demo", "qa")

DEFAULT_XRS_URL = "sim://xrs"
DEFAULT_READOUT_URL = "sim://unidos"


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--xrs / --readout / --db, shared by every command that touches devices or the store."""
    parser.add_argument("--xrs", default=DEFAULT_XRS_URL, metavar="URL",
                        help="X-ray unit port: /dev/ttyUSB0, socket://host:port or sim://xrs (default)")
    parser.add_argument("--readout", default=DEFAULT_READOUT_URL, metavar="URL",
                        help="electrometer port: /dev/ttyUSB1, socket://host:8123 or sim://unidos (default)")
    add_db_option(parser)


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, metavar="URL",
                        help="record store: sqlite:///path or postgresql+psycopg://… "
                             "(default: ORCONSOLE_DB, else SQLite in the user data directory)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orconsole",
        description="ORConsole: control console and delivery records for 50 kV intraoperative radiotherapy.")
    parser.add_argument("--version", action="version", version=f"orconsole {__version__}")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="JSON-lines log file (default: logs/orconsole.jsonl in the data directory)")
    parser.add_argument("--spy", action="store_true", help="log every byte on each device link (debug)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more messages on the terminal")
    parser.add_argument("--dev", action="store_true", help="developer mode: simulator fault panel")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="site configuration (TOML); default ORCONSOLE_CONFIG, else the safe built-in "
                             "defaults. The simulator bench needs orconsole/data/site-simulator.toml")
    add_device_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"orconsole.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(log_file=args.log_file or (log_dir() / "orconsole.jsonl"),
                      console_level="INFO" if args.verbose else "WARNING", spy=args.spy)
    if args.command is None:
        if importlib.util.find_spec("ui.app") is None:
            print("orconsole: the bedside window is not built yet; try `orconsole demo --headless`.",
                  file=sys.stderr)
            return 2
        from ui.app import run_console  # Qt is imported only here

        return run_console(args)
    if args.command == "demo" and getattr(args, "headless", False) and getattr(args, "artifacts", None) \
            and importlib.util.find_spec("ui.screenshots") is not None:
        def mid_treatment_screenshot(service, path):  # Qt only here, in the composition root
            from ui.screenshots import capture_treatment_screenshot

            return capture_treatment_screenshot(service, path)

        args.mid_treatment_screenshot = mid_treatment_screenshot
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
