"""Where ORConsole keeps its files: data directory, logs, journal. One place, from platformdirs.

ORCONSOLE_HOME overrides the base directory (tests and portable installs). Never hard-codes a path.
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir() -> Path:
    base = os.environ.get("ORCONSOLE_HOME")
    path = Path(base) if base else Path(platformdirs.user_data_dir("orconsole", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir() -> Path:
    path = data_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def journal_dir() -> Path:
    path = data_dir() / "journal"
    path.mkdir(parents=True, exist_ok=True)
    return path
