"""The dose-rate interlock measures the rate on the unit's own clock: status replies that arrive late or
irregularly (retransmissions on a noisy line, a loaded console) must not look like a rate change."""
from __future__ import annotations

import random
import time

from orconsole.statemachine import State
from orconsole.supervisor import Supervisor
from simulators.clock import MonotonicClock

from tests.core import factories as f
from tests.core.fake_xrs import FakeXrs
from tests.core.test_supervisor import CONFIG, ok, short_plan, to_ready, wait_state


class LateRepliesXrs(FakeXrs):
    """A noisy line, seeded: the request may reach the unit 0-250 ms late (lost, retransmitted), and the
    reply may reach the console 0-250 ms after the unit read its counters (lost, answered from its cache)."""

    DELAYS_S = (0.0, 0.0, 0.03, 0.06, 0.1, 0.25)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rng = random.Random(7)

    def status(self):
        time.sleep(self._rng.choice(self.DELAYS_S))
        status = super().status()
        time.sleep(self._rng.choice(self.DELAYS_S))
        return status


def test_late_status_replies_do_not_trip_the_dose_rate_interlock(tmp_path):
    clock = MonotonicClock()
    xrs = LateRepliesXrs(clock, dose_rate_gy_per_s=20.0 / 4.0)
    sup = Supervisor(xrs, journal_path=tmp_path / "journal.jsonl", clock=clock, device_source_serial=f.SERIAL,
                     config=CONFIG, today=lambda: f.TODAY, qa_results=lambda: [f.qa()],
                     record_store_available=lambda: True, segment_close_timeout_s=1.0)
    box = sup.subscribe()
    sup.start()
    try:
        to_ready(sup, short_plan(4.0), xrs)
        ok(sup.arm())
        ok(sup.beam_on())
        rates = []
        end = None
        while end is None:
            snap = box.wait_for(lambda s: True, 0.2)
            if snap is not None and snap.state in (State.COMPLETED, State.TERMINATED, State.FAULT):
                end = snap
            elif snap is not None and snap.dose_rate_gy_per_min:
                rates.append(snap.dose_rate_gy_per_min)
        end = wait_state(box, State.COMPLETED, State.TERMINATED, State.FAULT)
    finally:
        sup.close()
    assert end.state is State.COMPLETED, end.last_message
    assert xrs.status_calls > 10
    assert rates and all(abs(r / 300.0 - 1) < 0.02 for r in rates), rates   # 5 Gy/s = 300 Gy/min
