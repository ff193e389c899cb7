"""The whole qualification matrix in one list: scenario id, how to run it, and whether CI runs it.

`benchmarks.qualify` runs every row; tests/qualification/test_fault_matrix.py runs the rows marked `ci`.
Never drops a row because it fails: a failing row is evidence.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tests.qualification import special, store_outage
from tests.qualification.harness import Row
from tests.qualification.scenarios import SCENARIOS, run_fault

# Rows whose failure is a known, reported safety gap in another module: pytest marks them xfail(strict=True)
# so CI stays green until the gap is fixed, and then fails until the marker is removed. None open now:
# - 12-power-loss closed in orconsole/supervisor.py (RecoveredReading never below the journal);
# - 2a/2c false dose-rate / channel trips under retransmission closed: the rate window runs on the unit's clock
#   and the channel check compares the IRM with the timer over the request-to-reply interval
#   (tests/core/test_rate_window_delays.py); 2b completes since the driver resends within 30 ms (1f3a7b8).
KNOWN_GAPS: dict[str, str] = {}


@dataclass(frozen=True)
class Entry:
    id: str
    run: Callable[..., Row]      # run(seed=…) -> Row
    ci: bool
    applicator_cm: float


def _fault(sid: str) -> Callable[..., Row]:
    return lambda *, seed=1, applicator_cm=3.0: run_fault(SCENARIOS[sid], seed=seed, applicator_cm=applicator_cm)


# the subset `make test` runs on every CI run (the whole matrix: python -m benchmarks.qualify, ~10 min);
# link loss and SIGKILL are also covered by tests/conformance and the TreatmentService rows below
CI_FAULTS = ("4a-hv-arc", "7-channels-disagree")

MATRIX: list[Entry] = (
    [Entry(sid, _fault(sid), sid in CI_FAULTS, 3.0) for sid in SCENARIOS if sid < "3"]
    + [Entry("3-unplug", special.run_unplug, False, 3.0)]
    + [Entry(sid, _fault(sid), sid in CI_FAULTS, 3.0) for sid in SCENARIOS if sid >= "3"]
    + [Entry("8-console-sigkill", special.run_console_killed, False, 3.0),
       Entry("8-console-sigkill-service", special.run_service_killed, True, 3.0),
       Entry("9-record-store-fails", special.run_store_failure, False, 1.5),
       Entry("9-record-store-fails-service", store_outage.run_store_failure_service, True, 1.5),
       Entry("10-stalled-screen", special.run_stalled_consumer, True, 1.5),
       Entry("11-clock-jump+", lambda *, seed=1, applicator_cm=1.5: special.run_clock_jump(
           seed=seed, applicator_cm=applicator_cm, hours=1.0), True, 1.5),
       Entry("11-clock-jump-", lambda *, seed=1, applicator_cm=1.5: special.run_clock_jump(
           seed=seed, applicator_cm=applicator_cm, hours=-1.0), False, 1.5),
       Entry("12-power-loss", lambda *, seed=1, applicator_cm=3.0: special.run_console_killed(
           seed=seed, applicator_cm=applicator_cm, power_loss=True), False, 3.0),
       Entry("12-power-loss-service", lambda *, seed=1, applicator_cm=3.0: special.run_service_killed(
           seed=seed, applicator_cm=applicator_cm, power_loss=True), True, 3.0)]
)


def run_entry(entry: Entry, seed: int) -> Row:
    return entry.run(seed=seed, applicator_cm=entry.applicator_cm)
