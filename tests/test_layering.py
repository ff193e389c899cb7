"""The shape of the house (shared/STYLE.md), enforced: arrows point one way.

protocol/ imports nothing of ours; simulators/ know only protocol/; drivers/ reach simulators/ only
through the sim:// URL handler; the core (orconsole/) and the device layers never import Qt.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"orconsole", "drivers", "protocol", "ui", "logs", "simulators"}
QT = {"PySide6", "shiboken6", "pyqtgraph"}

# package -> top-level names it must never import (module-level or inside functions)
FORBIDDEN = {
    "protocol": (OURS - {"protocol"}) | QT,
    "simulators": (OURS - {"simulators", "protocol"}) | QT,
    "drivers": {"orconsole", "ui", "logs"} | QT,
    "orconsole": {"ui"} | QT,
    "logs": {"orconsole", "drivers", "ui", "simulators"},
}
# the only allowed crossings, each with its reason
ALLOWED = {
    ("drivers/urlhandler/protocol_sim.py", "simulators"): "sim:// wires a port to the in-process bench",
    ("orconsole/cli.py", "ui"): "the composition root opens the window",
}
QT_ALLOWED_IN_LOGS = ("logs/export_pdf.py", "logs/pdf.py", "logs/exports/pdf.py", "logs/report_pdf.py")


def imported_top_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def python_files(package: str):
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_layering_allows(package):
    violations = []
    for path in python_files(package):
        rel = path.relative_to(ROOT).as_posix()
        if "/migrations/" in rel:
            continue
        for name in imported_top_names(path) & FORBIDDEN[package]:
            if (rel, name) in ALLOWED:
                continue
            if package == "logs" and name in QT:
                continue
            violations.append(f"{rel} imports {name}")
    assert not violations, "layering broken (see shared/STYLE.md):\n" + "\n".join(violations)


def test_logs_uses_qt_only_in_the_pdf_renderer():
    offenders = [p.relative_to(ROOT).as_posix() for p in python_files("logs")
                 if imported_top_names(p) & QT and not p.relative_to(ROOT).as_posix().endswith(QT_ALLOWED_IN_LOGS)]
    assert not offenders, f"Qt imported outside the PDF renderer in logs/: {offenders}"


def test_the_layering_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from PySide6 import QtCore\n", encoding="utf-8")
    assert "PySide6" in imported_top_names(bad)
