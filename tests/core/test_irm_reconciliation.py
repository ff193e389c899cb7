"""A delivery whose link was lost before the final IRM reading: the report carries the last reading (a lower
bound) and says so; Reconnect settles it from the unit's counter (or an upper bound when the unit lost its
counters); a physicist may enter the value shown at the unit; the settlement is journalled and published."""
from __future__ import annotations

import math
import queue
import time

import pytest

from drivers.hal import BeamOffCause, XrsState
from orconsole.journal import IRM_RECONCILED, read_journal
from orconsole.statemachine import State
from orconsole.supervisor import DeliveryReport, IrmReconciliation, Supervisor, _delivered_by_plan_id
from simulators.clock import MonotonicClock

from tests.core import factories as f
from tests.core.fake_xrs import FakeXrs
from tests.core.test_supervisor import CONFIG, ok, short_plan, to_ready, wait_state

PLAN_S = 3.0


@pytest.fixture
def lost(tmp_path):
    """A 3 s treatment whose link drops 1 s into the beam; the unit (fake) goes on 0.3 s more, then stops
    by itself as its watchdog would. Yields (supervisor, fake unit, report queue, journal path, report)."""
    clock = MonotonicClock()
    xrs = FakeXrs(clock, dose_rate_gy_per_s=20.0 / PLAN_S)
    sup = Supervisor(xrs, journal_path=tmp_path / "journal.jsonl", clock=clock, device_source_serial=f.SERIAL,
                     config=CONFIG, today=lambda: f.TODAY, qa_results=lambda: [f.qa()],
                     record_store_available=lambda: True, segment_close_timeout_s=0.5)
    box, reports = sup.subscribe(), sup.subscribe_reports()
    sup.start()
    try:
        plan = to_ready(sup, short_plan(PLAN_S), xrs)
        ok(sup.arm())
        ok(sup.beam_on())
        time.sleep(1.0)
        xrs.link_down = True
        wait_state(box, State.FAULT)
        time.sleep(0.3)
        with xrs._lock:                       # the unit's watchdog: HV off, counters kept
            xrs._advance()
            xrs._off(BeamOffCause.WATCHDOG, XrsState.FAULT)
        report = reports.get(timeout=5.0)
        assert isinstance(report, DeliveryReport)
        yield sup, xrs, reports, tmp_path / "journal.jsonl", report, plan
    finally:
        sup.close()


def test_the_report_says_its_irm_is_the_last_reading_before_the_link_loss(lost):
    sup, xrs, _reports, _journal, report, _plan = lost
    assert not report.irm_read_after_beam_off
    assert report.secondary_dose_gy < xrs.irm_dose_gy - 0.1      # the unit went on after the last reading
    assert sup.irm_unreconciled


def test_reconnect_settles_the_dose_from_the_units_counter_and_journals_it(lost):
    sup, xrs, reports, journal, report, plan = lost
    xrs.link_down = False
    result = ok(sup.reconnect())
    assert "settled" in result.reason
    settled = reports.get(timeout=5.0)
    assert isinstance(settled, IrmReconciliation)
    assert settled.reconciled_gy == pytest.approx(xrs.irm_dose_gy, abs=1e-9)
    assert settled.unit_counter_gy == pytest.approx(xrs.irm_dose_gy, abs=1e-9)
    assert settled.recorded_gy == pytest.approx(report.secondary_dose_gy)
    assert settled.device_log_sha256 == report.device_log_sha256
    assert not sup.irm_unreconciled
    entries = read_journal(journal).entries
    assert [e["data"]["irm_dose_gy"] for e in entries if e["kind"] == IRM_RECONCILED] == [settled.reconciled_gy]
    # after a restart, the dose already given under this plan counts the settled figure, not the lower one
    assert _delivered_by_plan_id(entries)[plan.plan.plan_id] == pytest.approx(xrs.irm_dose_gy, abs=1e-9)


def test_a_unit_that_lost_its_counters_gives_the_upper_bound_never_the_lower_reading(lost):
    sup, xrs, reports, _journal, report, _plan = lost
    unit_gy = xrs.irm_dose_gy
    xrs.irm_dose_gy, xrs.beam_time_s = 0.0, 0.0            # rebooted while the link was down
    xrs.link_down = False
    ok(sup.reconnect())
    settled = reports.get(timeout=5.0)
    assert settled.unit_counter_gy is None and settled.basis.startswith("upper bound")
    assert settled.reconciled_gy >= unit_gy                 # never below what the unit really gave
    assert settled.reconciled_gy > report.secondary_dose_gy


def test_a_physicist_enters_the_units_reading_when_the_link_stays_down(lost):
    sup, xrs, reports, _journal, report, _plan = lost
    refusals = [sup.enter_unit_irm(unit_irm_gy=value, entered_by="pat").result(timeout=5)
                for value in (report.secondary_dose_gy - 0.5, 99.0, math.nan, "7.1")]
    assert [r.ok for r in refusals] == [False] * 4
    assert "below the console's last reading" in refusals[0].reason
    assert "above the IRM limit" in refusals[1].reason
    assert all("Gy" in r.reason for r in refusals)
    with pytest.raises(queue.Empty):
        reports.get(timeout=0.2)
    result = ok(sup.enter_unit_irm(unit_irm_gy=xrs.irm_dose_gy, entered_by="pat"))
    settled = reports.get(timeout=5.0)
    assert settled.reconciled_gy == pytest.approx(xrs.irm_dose_gy) and "entered by pat" in settled.basis
    assert "settled" in result.reason
    again = sup.enter_unit_irm(unit_irm_gy=xrs.irm_dose_gy, entered_by="pat").result(timeout=5)
    assert not again.ok and "nothing to enter" in again.reason
