"""QA history: every stored output, isotropy and mechanics check as rows over days, for trend views
and a CSV export the physicist can open in a spreadsheet.

Read-only: never changes a stored record. One row per check; raw readings are joined with ';' so a
row stays one line, and every number carries its unit in the column name.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from orconsole.qa import QaRepository, StoredQa
from orconsole.qa_models import IsotropyRecord, MechanicsRecord, OutputCheckRecord

HISTORY_COLUMNS = (
    "performed_on", "performed_at", "kind", "qa_id", "source_serial", "result", "acknowledged_by", "signed_by",
    "performed_by", "k_out", "deviation_percent", "warning_percent", "window_percent", "k_tp", "temperature_c",
    "pressure_kpa", "reference_temperature_c", "raw_mean_nc", "corrected_mean_nc", "reference_reading_nc",
    "spread_percent", "readings_nc", "electrometer_serial", "chamber_serial", "xrs_serial",
    "isotropy_plus_x_percent", "isotropy_minus_x_percent", "isotropy_plus_y_percent", "isotropy_minus_y_percent",
    "isotropy_plus_z_percent", "isotropy_tolerance_percent", "probe_straightness_mm", "beam_centering_mm",
    "message",
)


def history_rows(stored: Iterable[StoredQa]) -> list[dict[str, str]]:
    """One dict per check, oldest first, values formatted for CSV (empty where not applicable)."""
    rows = []
    for item in sorted(stored, key=lambda s: s.record.performed_at):
        r = item.record
        row = {c: "" for c in HISTORY_COLUMNS}
        row.update(performed_on=r.performed_on.isoformat(), performed_at=r.performed_at.isoformat(), kind=r.kind,
                   qa_id=r.qa_id, source_serial=r.source_serial, performed_by=r.performed_by,
                   signed_by="; ".join(item.signed_by), message=r.message)
        if isinstance(r, OutputCheckRecord):
            used = [x.charge_nc for x in r.readings]
            row.update(result=r.result.value, k_out=f"{r.k_out:.5f}",
                       deviation_percent=f"{r.deviation_fraction * 100:.3f}",
                       warning_percent=f"{r.warning_fraction * 100:g}", window_percent=f"{r.window_fraction * 100:g}",
                       k_tp=f"{r.k_tp:.5f}", temperature_c=f"{r.temperature_c:.2f}", pressure_kpa=f"{r.pressure_kpa:.3f}",
                       reference_temperature_c=f"{r.reference_temperature_c:g}", raw_mean_nc=f"{r.raw_mean_nc:.6f}",
                       corrected_mean_nc=f"{r.corrected_mean_nc:.6f}", reference_reading_nc=f"{r.reference_reading_nc:.6f}",
                       spread_percent=f"{r.spread_fraction * 100:.3f}", readings_nc=";".join(f"{v:.6f}" for v in used),
                       electrometer_serial=r.instruments.electrometer_serial,
                       chamber_serial=r.instruments.chamber_serial or "", xrs_serial=r.instruments.xrs_serial,
                       acknowledged_by=item.acknowledgement.acknowledged_by if item.acknowledgement else "")
        elif isinstance(r, IsotropyRecord):
            row.update(result="pass" if r.passed else "fail",
                       isotropy_tolerance_percent=f"{r.tolerance_fraction * 100:g}",
                       **{f"isotropy_{d}_percent": f"{v * 100:.3f}" for d, v in r.deviations.items()})
        elif isinstance(r, MechanicsRecord):
            row.update(result="pass" if r.passed else "fail", probe_straightness_mm=f"{r.probe_straightness_mm:.3f}",
                       beam_centering_mm=f"{r.beam_centering_mm:.3f}")
        rows.append(row)
    return rows


def history_csv(repo: QaRepository, *, source_serial: str | None = None) -> str:
    """The QA history as CSV text (header + one line per check)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history_rows(repo.records(source_serial=source_serial)):
        writer.writerow(row)
    return buffer.getvalue()


def export_history_csv(repo: QaRepository, path: str | Path, *, source_serial: str | None = None) -> int:
    """Write the QA history to `path` (UTF-8); returns the number of checks written."""
    text = history_csv(repo, source_serial=source_serial)
    Path(path).write_text(text, encoding="utf-8")
    return text.count("\n") - 1


def k_out_trend(repo: QaRepository, source_serial: str) -> list[tuple[str, float, str]]:
    """(date, k_out, result) of every output check of the source, oldest first (for the trend view)."""
    return [(s.record.performed_on.isoformat(), s.record.k_out, s.record.result.value)
            for s in sorted(repo.records(source_serial=source_serial, kind="output"),
                            key=lambda s: s.record.performed_at)]


def isotropy_trend(repo: QaRepository, source_serial: str) -> list[tuple[str, dict[str, float], bool]]:
    """(date, per-direction deviation fraction, passed) of every isotropy check, oldest first."""
    return [(s.record.performed_on.isoformat(), dict(s.record.deviations), s.record.passed)
            for s in sorted(repo.records(source_serial=source_serial, kind="isotropy"),
                            key=lambda s: s.record.performed_at)]
