"""QA history rows, CSV export and trends from an in-memory repository."""
from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta, timezone

from orconsole.qa import InMemoryQaRepository, evaluate_isotropy, evaluate_mechanics
from orconsole.qa_history import HISTORY_COLUMNS, export_history_csv, history_csv, isotropy_trend, k_out_trend
from tests.qa.test_output_check_fake import TODAY, make_check
from tests.qa.fakes import World
from orconsole.qa import OutputCheckRequest


def test_history_csv_has_one_row_per_check_with_raw_readings_and_units(tmp_path):
    repo = InMemoryQaRepository()
    check, _, _ = make_check(World(output_fraction=0.99))
    out = check.run(OutputCheckRequest("21.0 C", "1000 hPa"))
    repo.save(out)
    repo.mark_signed(out.qa_id, "Dr. Pia Physicist")
    t = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)
    repo.save(evaluate_isotropy({"plus_x": 1.01, "minus_x": 0.99, "plus_y": 1.0, "minus_y": 1.0, "plus_z": 1.04},
                                source_serial="XRS-TEST-1", today=TODAY, now=t + timedelta(hours=1)))
    repo.save(evaluate_mechanics(source_serial="XRS-TEST-1", probe_straightness_mm=0.1, beam_centering_mm=0.05,
                                 today=TODAY, now=t + timedelta(hours=2)))
    rows = list(csv.DictReader(io.StringIO(history_csv(repo))))
    assert len(rows) == 3 and list(rows[0]) == list(HISTORY_COLUMNS)
    output = next(r for r in rows if r["kind"] == "output")
    assert output["signed_by"] == "Dr. Pia Physicist" and output["result"] == "pass"
    assert float(output["k_out"]) == round(out.k_out, 5)
    assert [float(v) for v in output["readings_nc"].split(";")] == [round(r.charge_nc, 6) for r in out.readings]
    assert output["pressure_kpa"] == "100.000"
    iso = next(r for r in rows if r["kind"] == "isotropy")
    assert iso["result"] == "fail" and iso["isotropy_plus_z_percent"] == "4.000"
    assert export_history_csv(repo, tmp_path / "h.csv") == 3
    assert [k for _, k, _ in k_out_trend(repo, "XRS-TEST-1")] == [out.k_out]
    assert isotropy_trend(repo, "XRS-TEST-1")[0][2] is False
    assert history_csv(repo, source_serial="OTHER").count("\n") == 1
