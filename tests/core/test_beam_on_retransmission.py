"""A beam-on whose reply had to be retransmitted: the unit switched on at the first frame, the console heard
back later. The console's timer counts from the first frame, so it never ends the beam late."""
from __future__ import annotations

import time

import pytest

from orconsole.statemachine import State, TimerError, TreatmentTimer
from orconsole.supervisor import Supervisor
from simulators.clock import ManualClock, MonotonicClock

from tests.core import factories as f
from tests.core.fake_xrs import FakeXrs
from tests.core.test_supervisor import CONFIG, ok, short_plan, to_ready, wait_state

REPLY_DELAY_S = 0.3       # reply lost twice at a 0.1 s retransmission interval, say


class SlowReplyXrs(FakeXrs):
    """Switches on at once, but its acknowledgement reaches the console REPLY_DELAY_S later."""

    def beam_on(self, *, plan_hash: bytes) -> None:
        super().beam_on(plan_hash=plan_hash)
        time.sleep(REPLY_DELAY_S)


def _deliver_2_s(xrs_class, tmp_path):
    """A 2 s treatment on a fake unit of `xrs_class` whose output (97 %) leaves the end to the timer.
    Returns the unit and the DeliveryReport; fails unless the treatment completed."""
    clock = MonotonicClock()
    xrs = xrs_class(clock, dose_rate_gy_per_s=20.0 / 2.0)
    xrs.output_factor = 0.97
    sup = Supervisor(xrs, journal_path=tmp_path / "journal.jsonl", clock=clock, device_source_serial=f.SERIAL,
                     config=CONFIG, today=lambda: f.TODAY, qa_results=lambda: [f.qa()],
                     record_store_available=lambda: True, segment_close_timeout_s=1.0)
    box, reports = sup.subscribe(), sup.subscribe_reports()
    sup.start()
    try:
        to_ready(sup, short_plan(2.0))
        ok(sup.arm())
        ok(sup.beam_on())
        end = wait_state(box, State.COMPLETED, State.TERMINATED, State.FAULT)
        assert end.state is State.COMPLETED, end.last_message
        return xrs, reports.get(timeout=5.0)
    finally:
        sup.close()


def test_the_timer_counts_from_the_first_beam_on_frame_not_from_the_late_reply(tmp_path):
    xrs, report = _deliver_2_s(SlowReplyXrs, tmp_path)
    # without the back-dated start the unit would irradiate REPLY_DELAY_S longer than the preset
    assert xrs.beam_time_s < 2.0 + REPLY_DELAY_S / 2, xrs.beam_time_s
    assert report.console_beam_on_s == pytest.approx(xrs.beam_time_s, abs=REPLY_DELAY_S / 2)


def test_the_timer_start_only_moves_earlier():
    clock = ManualClock()
    timer = TreatmentTimer(clock)
    timer.set_preset(10.0)
    with pytest.raises(TimerError):
        timer.start_earlier(0.0)                     # not running
    clock.advance(5.0)
    timer.start()
    with pytest.raises(TimerError):
        timer.start_earlier(6.0)
    timer.start_earlier(4.7)
    assert timer.elapsed_s == pytest.approx(0.3)


class SlowStatusXrs(FakeXrs):
    """Every status read takes 150 ms (a noisy line whose replies are resent)."""

    def status(self):
        time.sleep(0.15)
        return super().status()


def test_at_the_preset_end_the_beam_goes_off_before_the_status_is_read(tmp_path):
    xrs, _report = _deliver_2_s(SlowStatusXrs, tmp_path)
    # a status read in flight at the preset end would hold the beam off back by up to 150 ms (by 40 ms or more in
    # three runs of four, depending on where the polls fall); none starts within 0.25 s of the end
    assert xrs.beam_time_s - 2.0 < 0.04, xrs.beam_time_s
