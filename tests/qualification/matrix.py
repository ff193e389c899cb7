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
# so CI stays green until the gap is fixed, and then fails until the marker is removed.
_POWER_LOSS_GAP = ("orconsole/supervisor.py RecoveredReading.delivered_gy gives a rebooted unit's zero counter as the "
                   "delivered dose although the journal holds more (TreatmentService guards against it since d7f2560; "
                   "any other consumer of the Supervisor's recovery figure would plan a full 20 Gy on top)")
_RATE_WINDOW_GAP = ("orconsole/supervisor.py _evaluate_beam puts the IRM dose into the 1 s rate window with the poll's "
                    "start time, not the reply's time: a status read that is retried (0.1-0.3 s) or delayed by load "
                    "skews the measured dose rate by 10 % or more and trips dose_rate_out_of_tolerance falsely "
                    "(intermittent: seen at bit errors 1e-4 and byte drops 1e-3, measured 10.5 % / 10.6 % off on a "
                    "unit without output fault; fail-safe, but it interrupts a patient's treatment for nothing)")
# 12-power-loss closed in orconsole/supervisor.py (RecoveredReading never below the journal)
KNOWN_GAPS: dict[str, str] = {
                              "2a-bit-errors-1e-4": _RATE_WINDOW_GAP, "2c-byte-drops-1e-3": _RATE_WINDOW_GAP}


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
