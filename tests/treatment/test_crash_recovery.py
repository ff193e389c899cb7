"""A console killed during beam: the unit stops the beam by itself (watchdog), the restarted console shows
the dose read back from the unit, and the remainder is delivered as a continuation into the same record,
20 Gy in total. The console runs as a separate process against `orconsole-sim bench --pty`."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from logs.records import RecordBook
from logs.store import Store
from logs.verify import verify_stored
from orconsole.cli import main
from simulators.bench import get_bench, reset_benches
from simulators.launcher import SimulatorProcess

WATCHDOG_S = 0.5          # the simulated unit's heartbeat watchdog (simulators/xrs_model.py default)
LOADED_MACHINE_SLACK_S = 2.0
_names = itertools.count()


@pytest.mark.slow
def test_a_killed_console_is_stopped_by_the_unit_and_the_remainder_is_delivered_as_a_continuation(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ORCONSOLE_HOME", str(tmp_path / "home"))
    artifacts = tmp_path / "out"
    # 1. users, calibration and today's output check of the fast source (same serial as the pty bench's), on an
    #    in-process bench whose electrometer is quick to warm up
    name = f"treat-crash-{next(_names)}"
    get_bench(name, applicator="3.0", seed="2")
    try:
        code = main(["demo", "--headless", "--json", "--setup-only", "--xrs", f"sim://xrs?bench={name}",
                     "--readout", f"sim://unidos?bench={name}", "--artifacts", str(artifacts)])
        assert code == 0, capsys.readouterr()
    finally:
        reset_benches()
    capsys.readouterr()
    with SimulatorProcess("bench", "--pty", "--applicator", "3.0", "--seed", "4") as sim:
        ports = ["--xrs", sim.ports["xrs"], "--readout", sim.ports["unidos"]]
        # 2. the treatment in a separate console process, killed during beam
        child = subprocess.Popen(
            [sys.executable, "-m", "orconsole", "demo", "--headless", "--json", *ports, "--artifacts", str(artifacts),
             "--output-check", "existing"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            sim.wait_event("beam_on", timeout_s=60)
            time.sleep(5.0)                                  # about 4.5 Gy of 20 on the 3.0 cm applicator
            killed_at = time.monotonic()
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            off = sim.wait_event("beam_off", timeout_s=WATCHDOG_S + LOADED_MACHINE_SLACK_S)
            stopped_after_s = time.monotonic() - killed_at
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
            child.stdout.close()
            child.stderr.close()
        assert off["cause"] == "watchdog", off
        assert stopped_after_s <= WATCHDOG_S + LOADED_MACHINE_SLACK_S
        # 3. restart: the recovery shows the dose read back from the unit; the remainder is a continuation
        code = main(["demo", "--headless", "--json", "--recover", *ports, "--artifacts", str(artifacts)])
        payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, json.dumps(payload, indent=1)
    recovery = payload["recovery"]
    assert recovery["device_state"] == "fault"
    assert 2.0 < recovery["device_irm_dose_gy"] < 15.0
    # the journal is written every second: it lags the unit's counter by at most about a second of beam
    assert recovery["journal_irm_dose_gy"] <= recovery["device_irm_dose_gy"] + 1e-6
    assert recovery["device_irm_dose_gy"] - recovery["journal_irm_dose_gy"] < 20.0 / 23.0 * 2.5
    assert payload["sessions"] == 2 and payload["termination"] == "NORMAL"
    remainder = payload["delivered_dose_gy"]["secondary_irm"]
    assert remainder == pytest.approx(20.0 - recovery["device_irm_dose_gy"], rel=0.01)
    assert payload["total_delivered_dose_gy"]["secondary_irm"] == pytest.approx(20.0, rel=0.005)
    assert payload["total_delivered_dose_gy"]["primary_timer"] == pytest.approx(20.0, rel=0.005)
    with Store(payload["db"]) as store:
        assert verify_stored(store, payload["record_id"]).ok
        record = RecordBook(store).load(payload["record_id"])
        assert [s.delivery_type for s in record.sessions] == ["TREATMENT", "CONTINUATION"]
        assert record.sessions[0].termination_cause.value == "unknown"
        assert record.sessions[0].dose_gy.secondary_irm_gy == pytest.approx(recovery["device_irm_dose_gy"])
        assert any(i.initiated_by == "console" for i in record.interruptions)
        assert record.completion == "complete"
