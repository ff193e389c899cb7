"""A console in its own process for the crash scenarios: runs one treatment with the Supervisor and the real
XrsDriver against a simulator pty, prints `BEAM_ON` once the beam is on and `FSYNC <bytes>` after every
journal fsync, then waits to be killed. Never used outside tests/qualification and benchmarks.qualify.

Usage: python -m tests.qualification.console_child PORT JOURNAL APPLICATOR_CM
"""
from __future__ import annotations

import os
import sys
import time


def main(argv: list[str]) -> int:
    port, journal, applicator = argv[0], argv[1], float(argv[2])
    from datetime import date

    from orconsole.models import ApprovedPlan
    from orconsole.statemachine import State
    from orconsole.supervisor import Supervisor
    from simulators.clock import MonotonicClock
    from tests.qualification.harness import approved_plan, qa_result, ready_driver, site_config
    from simulators.sources import load_source

    config, serial = site_config(), load_source("fast").serial

    def fsync(fd: int) -> None:
        os.fsync(fd)
        try:
            size = os.fstat(fd).st_size if os.path.isfile(f"/proc/self/fd/{fd}") else -1
        except OSError:
            size = -1
        if size >= 0:
            print(f"FSYNC {size}", flush=True)

    xrs = ready_driver(port)
    approved = approved_plan(applicator_cm=applicator, config=config, serial=serial)
    sup = Supervisor(xrs, journal_path=journal, clock=MonotonicClock(), device_source_serial=serial, config=config,
                     today=date.today, qa_results=lambda: [qa_result(serial)], journal_fsync=fsync)
    box = sup.subscribe()
    sup.start()
    p = approved.plan.patient
    for future in (sup.load_plan(ApprovedPlan(plan=approved.plan)), sup.approve(approved),
                   sup.verify_identity(medical_record_number=p.medical_record_number, date_of_birth=p.date_of_birth),
                   sup.confirm_ready(), sup.arm(), sup.beam_on()):
        result = future.result(timeout=10)
        if not result.ok:
            print(f"REFUSED {result.reason}", flush=True)
            return 2
    box.wait_for(lambda s: s.state is State.BEAM_ON, 5)
    print(f"BEAM_ON {approved.plan.preset_time_s}", flush=True)
    while True:                      # until SIGKILL
        snap = box.latest()
        print(f"SNAP {snap.elapsed_s:.3f} {snap.secondary_dose_gy:.5f} {snap.state.value}", flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
