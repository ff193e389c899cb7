"""Starts the built one-folder bundle headless and checks that it runs: version, and a headless demo.

Usage: python scripts/check_bundle.py dist/orconsole. Exits non-zero, saying why, when it does not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "dist/orconsole")
    binary = folder / "orconsole"
    if not binary.exists():
        print(f"check_bundle: {binary} does not exist; run `make bundle` first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "ORCONSOLE_HOME": home}
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env, timeout=120)
        if version.returncode != 0 or "orconsole" not in version.stdout:
            print(f"check_bundle: --version failed ({version.returncode}): {version.stderr}", file=sys.stderr)
            return 1
        print(f"check_bundle: {version.stdout.strip()}")
        demo = subprocess.run([str(binary), "demo", "--headless", "--json"], capture_output=True, text=True,
                              env=env, timeout=600)
        if demo.returncode != 0:
            print(f"check_bundle: headless demo failed ({demo.returncode}):\n{demo.stderr[-3000:]}", file=sys.stderr)
            return 1
        result = json.loads(demo.stdout.strip().splitlines()[-1])
        print(f"check_bundle: headless demo ran: termination={result.get('termination')} "
              f"record={result.get('record_id')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
