"""A console installation in a realistic state for tests: demo users (throw-away passwords), the simulated
source's calibration imported and approved, and (optionally) today's output check, made by the product's
own `orconsole demo --headless --setup-only` against an in-process bench, then copied per test.

It only calls the product's public entry points (the demo command, orconsole.wiring); it never writes
rows itself and never fakes a signature. Use `make_installation` once per session and `copy_to` per test.
"""
from __future__ import annotations

import itertools
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

SIMULATOR_CONFIG = Path(__file__).resolve().parents[2] / "orconsole" / "data" / "site-simulator.toml"
_names = itertools.count()

THERAPIST, PHYSICIST, ONCOLOGIST, ADMIN = "demo-therapist", "demo-physicist", "demo-oncologist", "demo-admin"


@dataclass(frozen=True)
class Installation:
    """A data directory (ORCONSOLE_HOME) holding one SQLite store, the installation key and the passwords."""

    home: Path
    db_url: str
    passwords: dict[str, str]

    def copy_to(self, home: Path) -> "Installation":
        """An independent copy (the store is a file; nothing else is shared)."""
        shutil.copytree(self.home, home)
        db_file = Path(self.db_url.removeprefix("sqlite:///"))
        return Installation(home=home, db_url=f"sqlite:///{home / db_file.name}", passwords=dict(self.passwords))


def make_installation(home: Path, *, output_check: str = "run") -> Installation:
    """Run `orconsole demo --headless --setup-only` into `home` on a fresh in-process fast bench.

    output_check="run": today's output check is measured on the bench and signed (about 3 s);
    "none": calibration only, so planning is refused for want of today's QA.
    The caller sets ORCONSOLE_HOME; the bench is stopped again before returning.
    """
    attempts = 3           # a physicist repeats an output check whose readings scatter; so does this helper
    for attempt in range(1, attempts + 1):
        try:
            return _setup(home, output_check)
        except _Scatter:
            if attempt == attempts:
                raise
            shutil.rmtree(home, ignore_errors=True)
    raise AssertionError("unreachable")


class _Scatter(RuntimeError):
    pass


def _setup(home: Path, output_check: str) -> Installation:
    from orconsole.cli import main
    from simulators.bench import get_bench, reset_benches

    name = f"support-setup-{next(_names)}"
    get_bench(name, source="fast", seed="5")
    out, err = StringIO(), StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["demo", "--headless", "--json", "--setup-only", "--output-check", output_check,
                         "--xrs", f"sim://xrs?bench={name}", "--readout", f"sim://unidos?bench={name}",
                         "--artifacts", str(home)])
    finally:
        reset_benches()
    payload = json.loads(out.getvalue().strip().splitlines()[-1])
    if code != 0 and "readings scatter" in str(payload.get("reason", "")):
        raise _Scatter(payload["reason"])
    if code != 0:
        raise RuntimeError(f"demo --setup-only failed ({code}): {payload}\n{err.getvalue()}")
    state = json.loads((home / "demo-state.json").read_text())
    passwords = json.loads((home / "demo-credentials.json").read_text())["passwords"]
    return Installation(home=home, db_url=state["db"], passwords=passwords)


def console_args(installation: Installation, bench_name: str, *, dev: bool = True,
                 config: Path = SIMULATOR_CONFIG):
    """The command line `make demo-window` uses, on the in-process bench `bench_name`."""
    from orconsole.cli import build_parser

    argv = ["--xrs", f"sim://xrs?bench={bench_name}", "--readout", f"sim://unidos?bench={bench_name}",
            "--db", installation.db_url, "--config", str(config)]
    return build_parser().parse_args((["--dev"] if dev else []) + argv)
