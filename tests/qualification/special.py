"""Qualification scenarios that are not a simulator `--fault`: the serial port unplugged and replugged, the
console killed with SIGKILL, power loss of both processes, a stalled screen, a wall-clock jump, and the
record store failing. Each returns a harness Row; none weakens a check to pass.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from orconsole.journal import read_journal
from orconsole.statemachine import State
from orconsole.supervisor import Supervisor
from simulators.clock import MonotonicClock
from tests.qualification.harness import (ACK, CONTINUATION_TOTAL_TOLERANCE_FRACTION, OVERSHOOT_LIMIT_FRACTION,
                                         PRESCRIPTION_GY, RECORD_HARDWARE_AGREEMENT_FRACTION, Row, Sim,
                                         approved_plan, beam_off_after, check_message, check_record, deliver,
                                         qa_result, ready_driver)
from tests.qualification.scenarios import (CONFIG, SERIAL, WATCHDOG_BOUND_S, continue_treatment, read_back,
                                           unit_display)

REPO = Path(__file__).resolve().parents[2]
PIPE_SLACK_S = 0.05      # host-side latencies include the simulator's event pipe


def _finish(row: Row, started: float) -> Row:
    row.passed = not row.failures
    row.duration_s = round(time.monotonic() - started, 1)
    return row


def _totals(row: Row, first_gy: float | None, second_gy: float | None, *, underdose_allowed_gy: float | None = None) -> None:
    row.delivered_first_gy = first_gy
    total = None if first_gy is None else first_gy + (second_gy or 0.0)
    row.delivered_total_gy = total
    if total is None:
        return
    row.max_overshoot_fraction = round((total - PRESCRIPTION_GY) / PRESCRIPTION_GY, 5)
    row.check(total <= PRESCRIPTION_GY * (1 + OVERSHOOT_LIMIT_FRACTION),
              f"delivered {total:.4f} Gy exceeds 20 Gy by more than 0.5 %")
    if second_gy is not None and underdose_allowed_gy is not None:
        row.check(total >= PRESCRIPTION_GY - underdose_allowed_gy,
                  f"treatment + continuation delivered {total:.3f} Gy: more under-dosed than the console's declared "
                  f"margin of {underdose_allowed_gy:.3f} Gy")
    elif second_gy is not None:
        row.check(abs(total - PRESCRIPTION_GY) <= CONTINUATION_TOTAL_TOLERANCE_FRACTION * PRESCRIPTION_GY,
                  f"treatment + continuation delivered {total:.3f} Gy, not 20 Gy ± 1 %")


# ------------------------------------------------------------------------------------------------ 3


def run_unplug(*, seed: int = 1, applicator_cm: float = 3.0) -> Row:
    """USB-serial adapter unplugged during beam, then plugged back.

    The unplug is simulated at the console's end of the line: /dev/null is dup2()'d onto the driver's open
    port descriptor, so the fd number stays valid (no reuse race) but reads report "readiness to read but
    returned no data" — what pyserial raises for an unplugged adapter — and writes reach nobody, as on a
    pulled cable; the pty slave is released, so the simulator sees the host side close. Plugging back is
    `XrsDriver.reconnect()`, which reopens the same device path (the simulator still serves it).
    """
    started = time.monotonic()
    row = Row(scenario="3-unplug", title="serial port unplugged and plugged back", fault="dup2(/dev/null) on port fd",
              latency_bound_s=WATCHDOG_BOUND_S + PIPE_SLACK_S, bound_basis="unit watchdog 0.5 s + 1 poll (host clock)")
    workdir = Path(tempfile.mkdtemp(prefix="qual-unplug-"))
    first = approved_plan(applicator_cm=applicator_cm, config=CONFIG, serial=SERIAL)
    at_s = round(random.Random(f"{seed}:3-unplug").uniform(0.15, 0.85) * first.plan.preset_time_s, 3)
    row.fault_at_s = at_s
    sim = Sim("--applicator", str(applicator_cm), "--seed", str(seed))
    xrs = None
    unplugged_at: list[float] = []
    try:
        xrs = ready_driver(sim.xrs_port)

        def unplug_later(_sup) -> None:
            def unplug() -> None:
                fd = xrs._port.port.fd
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd)
                os.close(null)
                unplugged_at.append(time.monotonic())
            threading.Timer(at_s, unplug).start()

        d = deliver(xrs, first, workdir / "journal.jsonl", config=CONFIG, serial=SERIAL,
                    end_timeout_s=first.plan.preset_time_s + 15, on_beam=unplug_later,
                    unit_reading=lambda: unit_display(sim))     # plug back: the Supervisor's Reconnect
        row.termination = f"{d.final.state.value} / {d.final.termination.value}" if d.final and d.final.termination else ""
        row.check(bool(unplugged_at), "the unplug did not happen during the beam")
        off = sim.wait_for("beam_off", 3.0)
        if off is not None and unplugged_at:
            row.beam_off_latency_s = round(off["host_rx_s"] - unplugged_at[0], 4)
            row.notes.append(f"beam off by {off['cause']} ({off['reason']}), latency on the host clock")
            row.check(row.beam_off_latency_s <= row.latency_bound_s,
                      f"beam off {row.beam_off_latency_s:.3f} s after the unplug, bound {row.latency_bound_s:.3f} s")
        row.check(d.final is not None and d.final.state in (State.FAULT, State.TERMINATED),
                  f"expected a fault after the unplug, got {row.termination}")
        device_gy, how = read_back(xrs, sim)          # the unit's counter, over the restored link
        row.notes.append(f"unit counter {how}")
        check_message(row, d, "link_lost")
        check_record(row, d, device_gy, expect_interlock="link_lost")
        second = None
        if device_gy is not None:
            second, _ = continue_treatment(row, how="reset", sim=sim, xrs=xrs, delivered_gy=device_gy,
                                           applicator_cm=applicator_cm, workdir=workdir,
                                           first_hash=first.plan.content_hash)
        _totals(row, device_gy, second)
    except Exception as exc:  # noqa: BLE001
        row.failures.append(f"harness error: {type(exc).__name__}: {exc}")
    finally:
        if xrs is not None:
            xrs.close()
        sim.stop()
    return _finish(row, started)


# ------------------------------------------------------------------------------------------------ 8, 12


def _start_child(port: str, journal: Path, applicator_cm: float) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.qualification.console_child", port, str(journal),
                             str(applicator_cm)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True, env=env, cwd=str(REPO))
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.strip())
    t = threading.Thread(target=read, name="qual-child-out", daemon=True)
    t.start()
    return proc, lines, t


def _wait_line(lines: list[str], prefix: str, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in lines:
            if line.startswith(prefix):
                return line
        time.sleep(0.02)
    return None


def run_console_killed(*, seed: int = 1, applicator_cm: float = 3.0, power_loss: bool = False) -> Row:
    """8: the console is SIGKILLed during beam on (the unit stops itself; the restarted console recovers the
    treatment with the dose read back from the unit; the remainder is delivered as a continuation).
    12 (power_loss): console and unit die at once; on restart nothing journalled is lost."""
    started = time.monotonic()
    sid = "12-power-loss" if power_loss else "8-console-sigkill"
    row = Row(scenario=sid, title=("console and unit lose power at once" if power_loss
                                   else "console process killed (SIGKILL) during beam on"),
              fault="SIGKILL both processes" if power_loss else "SIGKILL console",
              latency_bound_s=None if power_loss else WATCHDOG_BOUND_S + PIPE_SLACK_S,
              bound_basis="power gone: HV off with it" if power_loss else "unit watchdog 0.5 s + 1 poll (host clock)")
    workdir = Path(tempfile.mkdtemp(prefix=f"qual-{sid}-"))
    journal = workdir / "journal.jsonl"
    first = approved_plan(applicator_cm=applicator_cm, config=CONFIG, serial=SERIAL)
    at_s = round(random.Random(f"{seed}:{sid}").uniform(0.15, 0.85) * first.plan.preset_time_s, 3)
    row.fault_at_s = at_s
    sim = Sim("--applicator", str(applicator_cm), "--seed", str(seed))
    sims = [sim]
    proc = None
    xrs = None
    try:
        proc, lines, reader = _start_child(sim.xrs_port, journal, applicator_cm)
        row.check(_wait_line(lines, "BEAM_ON", 30) is not None, f"the console child did not reach beam on: {lines[-3:]}")
        time.sleep(at_s)
        fsynced = [int(x.split()[1]) for x in list(lines) if x.startswith("FSYNC")]
        proc.kill()                      # console first, the unit a moment later: power lost for both
        killed_at = time.monotonic()
        if power_loss:
            sim.kill(wait=False)
        proc.wait(10)
        if power_loss:
            sim.proc._proc.wait(10)
        reader.join(2.0)
        fsynced = [int(x.split()[1]) for x in list(lines) if x.startswith("FSYNC")]
        last_fsync = max(fsynced) if fsynced else 0
        readout = read_journal(journal)
        size = journal.stat().st_size
        row.check(size >= last_fsync, f"journal has {size} bytes, but {last_fsync} bytes were fsync'd before the kill")
        row.check(not readout.problems, f"journal problems after the kill: {readout.problems}")
        row.check(bool(readout.unfinished), "the journal does not show the interrupted treatment as unfinished")
        progress = [e for e in readout.entries if e.get("kind") == "progress"]
        journal_gy = progress[-1]["data"]["irm_dose_gy"] if progress else 0.0
        row.recorded = (f"journal: {len(readout.entries)} entries intact ({len(progress)} progress, last "
                        f"{journal_gy:.3f} Gy), {size} bytes ≥ {last_fsync} fsync'd")
        if power_loss:
            sim = Sim("--applicator", str(applicator_cm))     # power back: the unit boots with fresh counters
            sims.append(sim)
        else:
            off = sim.wait_for("beam_off", 3.0)
            if row.check(off is not None, "the unit did not switch the beam off after the console died"):
                row.beam_off_latency_s = round(off["host_rx_s"] - killed_at, 4)
                row.notes.append(f"beam off by {off['cause']} ({off['reason']}), latency on the host clock")
                row.check(off["cause"] == "watchdog", f"beam off by {off['cause']}, expected the watchdog")
                row.check(row.beam_off_latency_s <= row.latency_bound_s,
                          f"beam off {row.beam_off_latency_s:.3f} s after SIGKILL, bound {row.latency_bound_s:.3f} s")
        # restart: a new console on the same journal
        xrs = ready_driver(sim.xrs_port, warm_up=False)
        sup = Supervisor(xrs, journal_path=journal, clock=MonotonicClock(), device_source_serial=SERIAL,
                         config=CONFIG, qa_results=lambda: [qa_result(SERIAL)])
        box = sup.subscribe()
        sup.start()
        try:
            snap = box.wait_for(lambda s: True, 5)
            row.termination = snap.state.value if snap else "no snapshot"
            row.check(snap is not None and snap.state is State.INTERRUPTED,
                      f"the restarted console is {row.termination}, expected interrupted")
            row.console_message = snap.last_message if snap else ""
            rec = sup.recovered_reading
            unit_gy = off_gy = None
            if not power_loss:
                off_gy = sim.of("beam_off")[-1]["irm_dose_gy"] if sim.of("beam_off") else None
            recovered = rec.delivered_gy if rec else None
            if power_loss:
                unit_gy = journal_gy
                if recovered is not None and recovered < journal_gy - 0.01:
                    row.failures.append(
                        f"after the unit's power cycle the recovery reads back {recovered:.3f} Gy delivered while the "
                        f"journal holds {journal_gy:.3f} Gy; RecoveredReading.delivered_gy (and TreatmentService's "
                        "RecoveryInfo.delivered_dose_gy, which decide_recovery records and a continuation is planned "
                        "from) takes the device figure without comparing it with the journal: a continuation would "
                        f"overdose by {journal_gy:.3f} Gy")
                row.notes.append(f"the unit's counters did not survive the power loss (read back "
                                 f"{rec.irm_since_last_arm_gy if rec else None} Gy): the journal's last progress "
                                 f"{journal_gy:.3f} Gy is the only figure")
                row.gaps.append("after a power loss the dose delivered between the last journal progress entry and "
                                "the loss (≤ journal_progress_interval_s = 1 s of beam; 0.87 Gy on the fast bench, "
                                "≈ 0.015 Gy clinically) is known to no one: no continuation is planned from it here")
            else:
                if row.check(recovered is not None, f"no dose read back on recovery: {rec.detail if rec else None}"):
                    row.recorded += f"; recovery read-back {recovered:.4f} Gy ({rec.detail})"
                    if off_gy:
                        dev = abs(recovered - off_gy) / off_gy
                        row.check(dev <= RECORD_HARDWARE_AGREEMENT_FRACTION + 0.01 or abs(recovered - off_gy) < 0.03,
                                  f"recovered {recovered:.4f} Gy vs the unit's beam_off report {off_gy:.4f} Gy")
                unit_gy = recovered
            ack = sup.acknowledge_interruption(delivered_dose_gy=unit_gy or 0.0,
                                               acknowledgement=ACK).result(timeout=5)
            row.check(ack.ok, f"acknowledging the interruption was refused: {ack.reason}")
        finally:
            sup.close()
        second = None
        if not power_loss and unit_gy is not None:
            second, _ = continue_treatment(row, how="reset", sim=sim, xrs=xrs, delivered_gy=unit_gy,
                                           applicator_cm=applicator_cm, workdir=workdir,
                                           first_hash=first.plan.content_hash)
        _totals(row, unit_gy, second)
    except Exception as exc:  # noqa: BLE001
        row.failures.append(f"harness error: {type(exc).__name__}: {exc}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc is not None and proc.stdout:
            proc.stdout.close()
        if xrs is not None:
            xrs.close()
        for s in sims:
            try:
                s.stop()
            except Exception:  # noqa: BLE001 - a killed simulator has nothing to stop
                pass
    return _finish(row, started)


# ------------------------------------------------------------------------------------------------ 10, 11, 9


def _plain_delivery(row: Row, *, applicator_cm: float, **deliver_kwargs):
    workdir = Path(tempfile.mkdtemp(prefix=f"qual-{row.scenario}-"))
    first = approved_plan(applicator_cm=applicator_cm, config=CONFIG, serial=SERIAL)
    sim = Sim("--applicator", str(applicator_cm))
    xrs = ready_driver(sim.xrs_port)
    try:
        d = deliver(xrs, first, workdir / "journal.jsonl", config=CONFIG, serial=SERIAL,
                    end_timeout_s=first.plan.preset_time_s + 15, **deliver_kwargs)
        device_gy, _ = read_back(xrs, sim)
        return first, d, device_gy, sim
    finally:
        xrs.close()
        sim.stop()


def run_stalled_consumer(*, seed: int = 1, applicator_cm: float = 3.0, stall_s: float = 5.0) -> Row:
    """10: a screen's thread stalls for 5 s during beam on; the Supervisor must not care."""
    started = time.monotonic()
    row = Row(scenario="10-stalled-screen", title=f"a snapshot consumer (screen thread) stalls {stall_s:g} s in beam",
              fault=f"consumer sleeps {stall_s:g} s")
    try:
        stall_done: list[float] = []

        def stall(sup: Supervisor) -> None:
            box = sup.subscribe()

            def consumer() -> None:
                box.wait_for(lambda s: s.state is State.BEAM_ON, 5)
                time.sleep(stall_s)                 # the GUI thread is stuck in something
                stall_done.append(box.latest().seq)
            threading.Thread(target=consumer, name="qual-stalled-consumer", daemon=True).start()

        first, d, device_gy, _ = _plain_delivery(row, applicator_cm=applicator_cm, on_beam=stall)
        preset = first.plan.preset_time_s
        row.termination = f"{d.final.state.value} / {d.final.termination.value}" if d.final else "none"
        row.check(d.final is not None and d.final.state is State.COMPLETED, f"not completed: {row.termination}")
        if d.final is not None:
            row.check(abs(d.final.elapsed_s - preset) <= 0.1 + 0.01 * preset,
                      f"timer {d.final.elapsed_s:.2f} s vs preset {preset:.2f} s")
        row.check(d.overruns <= 2, f"the supervisor missed {d.overruns} poll deadlines while a consumer stalled")
        row.check(bool(stall_done), "the stalled consumer never resumed")
        row.notes.append(f"after the stall the consumer read the latest snapshot (no backlog); overruns {d.overruns}; "
                         "ui/ has its own 2 s GUI-stall test (tests/ui/test_treatment_screen.py)")
        check_record(row, d, device_gy, expect_interlock=None)
        _totals(row, device_gy, None)
    except Exception as exc:  # noqa: BLE001
        row.failures.append(f"harness error: {type(exc).__name__}: {exc}")
    return _finish(row, started)


class JumpingWallClock:
    """UTC that jumps by `jump` once `after_s` of monotonic time have passed since `arm()`."""

    def __init__(self, jump: timedelta) -> None:
        self.jump = jump
        self.armed_at: float | None = None
        self.after_s = 0.0

    def arm(self, after_s: float) -> None:
        self.after_s = after_s
        self.armed_at = time.monotonic()

    def __call__(self) -> datetime:
        now = datetime.now(timezone.utc)
        if self.armed_at is not None and time.monotonic() - self.armed_at >= self.after_s:
            return now + self.jump
        return now


def run_clock_jump(*, seed: int = 1, applicator_cm: float = 3.0, hours: float = 1.0) -> Row:
    """11: the wall clock jumps by ±1 h during beam on: monotonic timing unaffected, UTC stamps flagged."""
    started = time.monotonic()
    sign = "+" if hours > 0 else "-"
    row = Row(scenario=f"11-clock-jump{sign}", title=f"wall clock jumps {sign}{abs(hours):g} h during beam on",
              fault=f"utc_now seam {sign}{abs(hours):g} h")
    try:
        clock = JumpingWallClock(timedelta(hours=hours))
        at = random.Random(f"{seed}:{row.scenario}").uniform(0.2, 0.8)

        def arm(_sup) -> None:
            clock.arm(at * 10.0)

        first, d, device_gy, _ = _plain_delivery(row, applicator_cm=applicator_cm, utc_now=clock, on_beam=arm)
        row.fault_at_s = round(at * 10.0, 3)
        preset = first.plan.preset_time_s
        row.termination = f"{d.final.state.value} / {d.final.termination.value}" if d.final else "none"
        row.check(d.final is not None and d.final.state is State.COMPLETED, f"not completed: {row.termination}")
        if d.final is not None:
            row.check(abs(d.final.elapsed_s - preset) <= 0.1 + 0.01 * preset,
                      f"timer {d.final.elapsed_s:.2f} s vs preset {preset:.2f} s: monotonic timing affected")
        check_record(row, d, device_gy, expect_interlock=None)
        if d.report is not None and d.report.segments:
            seg = d.report.segments[0]
            utc_span = (seg.stop_utc - seg.start_utc).total_seconds()
            mono_span = seg.stop_mono_s - seg.start_mono_s
            row.notes.append(f"segment: monotonic {mono_span:.2f} s, UTC stamps span {utc_span:.1f} s")
            row.check(abs(mono_span - preset) <= 0.5, f"monotonic segment {mono_span:.2f} s vs preset {preset:.2f} s")
            jumps = [c for c in d.report.interlock_changes if c.interlock == "wall_clock_jump"]
            for c in jumps:
                row.notes.append(f"flagged in the report: {c.detail}")
            row.check(bool(jumps) or abs(utc_span - mono_span) <= 60,
                      f"the wall clock jumped {sign}{abs(hours):g} h: the segment's UTC stamps span {utc_span:.0f} s "
                      f"for {mono_span:.1f} s of beam and nothing flags it")
        _totals(row, device_gy, None)
    except Exception as exc:  # noqa: BLE001
        row.failures.append(f"harness error: {type(exc).__name__}: {exc}")
    return _finish(row, started)


def run_store_failure(*, seed: int = 1, applicator_cm: float = 3.0) -> Row:
    """9 (Supervisor level): the record store fails before beam on (treatment refused) and during beam on
    (the beam goes on; the journal keeps everything)."""
    started = time.monotonic()
    row = Row(scenario="9-record-store-fails", title="record store fails before / during beam on",
              fault="store probe reports unavailable")
    try:
        # before beam on: refused with a specific message
        _first, d, _dev, _ = _plain_delivery(row, applicator_cm=applicator_cm, store_available=lambda: False)
        refused = [m for m in d.messages_seen if "refused" in m]
        row.check(d.report is None and (d.final is None or d.final.state not in (State.BEAM_ON, State.COMPLETED)),
                  f"a treatment started with the record store unavailable: {d.final.state if d.final else None}")
        row.check(any("record store" in m.lower() for m in refused),
                  f"the refusal does not name the record store: {refused}")
        row.console_message = refused[0] if refused else ""
        # during beam on: the store goes away after the beam started
        state = {"ok": True}

        def fail_store(_sup) -> None:
            threading.Timer(2.0, lambda: state.update(ok=False)).start()

        _first, d2, device_gy, _ = _plain_delivery(row, applicator_cm=applicator_cm,
                                                  store_available=lambda: state["ok"], on_beam=fail_store)
        row.termination = f"{d2.final.state.value} / {d2.final.termination.value}" if d2.final else "none"
        row.check(d2.final is not None and d2.final.state in (State.COMPLETED, State.TERMINATED),
                  f"unexpected end {row.termination}")
        check_record(row, d2, device_gy, expect_interlock=None)
        _totals(row, device_gy, None)
        row.notes.append("record completion once the store is back: qualified through the TreatmentService on a "
                         "real PostgreSQL outage in row 9-record-store-fails-service")
    except Exception as exc:  # noqa: BLE001
        row.failures.append(f"harness error: {type(exc).__name__}: {exc}")
    return _finish(row, started)


# ------------------------------------------------------------------------------------------------ 8, 12 with the
# TreatmentService: the whole console (`orconsole demo --headless`) in its own process, records in the store


def _demo(args: list[str], *, timeout_s: float = 180.0, popen: bool = False):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "QT_QPA_PLATFORM": "offscreen"}
    cmd = [sys.executable, "-m", "orconsole", "demo", "--headless", "--json", *args]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                text=True, env=env, cwd=str(REPO))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(REPO))


def _json_of(stdout: str) -> dict:
    import json
    for line in reversed(stdout.strip().splitlines() or [""]):
        try:
            return json.loads(line)
        except ValueError:
            continue
    try:
        return json.loads(stdout)
    except ValueError:
        return {}


def run_service_killed(*, seed: int = 1, applicator_cm: float = 3.0, power_loss: bool = False) -> Row:
    """8/12 through the TreatmentService: `orconsole demo --headless` runs the treatment (store, signed plan and
    approvals, checklist, record draft) against orconsole-sim on ptys and is SIGKILLed during beam on; then
    `orconsole demo --headless --recover` recovers it (dose read back from the unit), plans and delivers the
    remainder as a continuation into the same record, signs it, and the record must verify and total 20 Gy."""
    started = time.monotonic()
    sid = "12-power-loss-service" if power_loss else "8-console-sigkill-service"
    row = Row(scenario=sid, title=("console and unit lose power at once (TreatmentService, demo CLI)" if power_loss
                                   else "console process killed (SIGKILL) during beam on (TreatmentService, demo CLI)"),
              fault="SIGKILL orconsole demo + orconsole-sim" if power_loss else "SIGKILL orconsole demo",
              latency_bound_s=None if power_loss else WATCHDOG_BOUND_S + PIPE_SLACK_S,
              bound_basis="power gone: HV off with it" if power_loss else "unit watchdog 0.5 s + 1 poll (host clock)")
    art = Path(tempfile.mkdtemp(prefix=f"qual-{sid}-"))
    first = approved_plan(applicator_cm=applicator_cm, config=CONFIG, serial=SERIAL)
    at_s = round(random.Random(f"{seed}:{sid}").uniform(0.15, 0.85) * first.plan.preset_time_s, 3)
    row.fault_at_s = at_s
    sim = Sim("--applicator", str(applicator_cm), "--seed", str(seed))
    sims = [sim]
    proc = None
    try:
        ports = ["--xrs", sim.xrs_port, "--readout", sim.proc.ports["unidos"], "--artifacts", str(art),
                 "--applicator", str(applicator_cm)]
        try:
            setup = _demo(ports + ["--setup-only"], timeout_s=240)
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stderr or b"")[-600:]
            row.failures.append(f"demo --setup-only did not finish in 240 s; its last output: "
                                f"{tail.decode(errors='replace') if isinstance(tail, bytes) else tail}")
            return _finish(row, started)
        if not row.check(setup.returncode == 0, f"demo --setup-only failed: {setup.stdout[-300:]} {setup.stderr[-300:]}"):
            return _finish(row, started)
        proc = _demo(ports + ["--output-check", "existing"], popen=True)
        deadline = time.monotonic() + 90
        on = None
        while time.monotonic() < deadline and on is None and proc.poll() is None:
            on = next((e for e in sim.of("beam_on") if e.get("backup_time_s", 0) > 5.0), None)
            time.sleep(0.02)
        if not row.check(on is not None, "the demo never switched the treatment beam on"):
            return _finish(row, started)
        time.sleep(max(0.0, at_s - (time.monotonic() - on["host_rx_s"])))
        proc.kill()                      # console first, the unit a moment later: power lost for both
        killed_at = time.monotonic()
        if power_loss:
            sim.kill(wait=False)
        proc.wait(10)
        if power_loss:
            sim.proc._proc.wait(10)
        journal = art / "journal" / "treatment-journal.jsonl"
        readout = read_journal(journal)
        progress = [e for e in readout.entries if e.get("kind") == "progress"]
        journal_gy = progress[-1]["data"]["irm_dose_gy"] if progress else 0.0
        row.check(not readout.problems, f"journal problems after the kill: {readout.problems}")
        row.check(bool(readout.unfinished), "the journal does not show the interrupted treatment as unfinished")
        unit_first = None
        if power_loss:
            sim = Sim("--applicator", str(applicator_cm))   # power back: fresh counters
            sims.append(sim)
            ports[1], ports[3] = sim.xrs_port, sim.proc.ports["unidos"]
        else:
            off = sim.wait_for("beam_off", 3.0, cause="watchdog")
            if row.check(off is not None, "the unit did not switch the beam off by its watchdog after SIGKILL"):
                row.beam_off_latency_s = round(off["host_rx_s"] - killed_at, 4)
                row.check(row.beam_off_latency_s <= row.latency_bound_s,
                          f"beam off {row.beam_off_latency_s:.3f} s after SIGKILL, bound {row.latency_bound_s:.3f} s")
                unit_first = off["irm_dose_gy"]
        n_offs = len(sim.of("beam_off"))
        rec = _demo(ports + ["--recover"])
        out = _json_of(rec.stdout)
        recovery = out.get("recovery", {})
        row.termination = f"recovered: {out.get('result', 'no result')} ({out.get('completion', '-')})"
        row.console_message = _cell_text(rec.stderr)
        row.check(rec.returncode == 0 and out.get("result") == "delivered",
                  f"demo --recover did not deliver: rc {rec.returncode}, {out.get('reason', rec.stdout[-300:])}")
        totals = out.get("total_delivered_dose_gy", {})
        row.recorded = (f"journal {len(readout.entries)} entries intact (last progress {journal_gy:.3f} Gy); recovery: "
                        f"unit read-back {recovery.get('device_irm_dose_gy')} Gy, journal {recovery.get('journal_irm_dose_gy')} "
                        f"Gy; record {out.get('record_id', '?')[:8]}…: {out.get('sessions')} sessions, total primary "
                        f"{totals.get('primary_timer', float('nan')):.3f} / IRM {totals.get('secondary_irm', float('nan')):.3f} Gy, "
                        f"verified={out.get('record_verified')}, interruptions {out.get('interruptions')}")
        row.check(out.get("record_verified") is True, "the record does not verify")
        row.check(out.get("sessions") == 2, f"expected 2 sessions (treatment + continuation), got {out.get('sessions')}")
        if unit_first is not None and recovery.get("device_irm_dose_gy") is not None:
            dev = abs(recovery["device_irm_dose_gy"] - unit_first)
            row.check(dev <= max(0.005 * unit_first, 0.03),
                      f"recovery read back {recovery['device_irm_dose_gy']:.4f} Gy, the unit reported {unit_first:.4f} Gy")
        cont_offs = sim.of("beam_off")[n_offs:]
        unit_second = sum(e["irm_dose_gy"] for e in cont_offs if e.get("backup_time_s", 1) and e["cause"] != "watchdog")
        row.continuation = (f"CONTINUATION delivered by the service: unit IRM {unit_second:.3f} Gy "
                            f"({len(cont_offs)} beam off event(s))")
        if power_loss:
            # the unit's counters died with it: estimate session 1 from the beam time before the kill at the planned
            # rate (the unit's IRM follows it within 0.2 % in every other row)
            rate_gy_per_s = first.plan.dose_to_deliver_gy / first.plan.treatment_time_s
            first_gy = round((killed_at - on["host_rx_s"]) * rate_gy_per_s, 4)
            last = out.get("delivered_dose_gy", {}).get("secondary_irm")
            # what the record holds for session 1 (RecoveryInfo.delivered_dose_gy): total minus the continuation
            assumed = (round(totals["secondary_irm"] - last, 4)
                       if isinstance(last, (int, float)) and "secondary_irm" in totals else None)
            row.notes.append(f"the unit's counters were lost with power: session 1 estimated from the beam time before "
                             f"the kill, {first_gy:.3f} Gy (journal {journal_gy:.3f} Gy; the recovery assumed "
                             f"{assumed} Gy)")
            margin = (assumed - journal_gy) if isinstance(assumed, (int, float)) else 0.0
            if assumed is not None and assumed < first_gy - 0.01:
                row.failures.append(f"the recovery assumed {assumed:.3f} Gy for session 1, less than the ≈ {first_gy:.3f} "
                                    "Gy delivered: the continuation over-doses")
            elif margin > 0:
                row.gaps.append(f"after a power loss the recovery assumes the journal's dose plus the most the beam "
                                f"could have given unjournalled ({margin:.3f} Gy): safe (never an overdose), but the "
                                f"patient is under-dosed by up to that much and the record's session 1 is an upper "
                                "bound, not a measurement")
            _totals(row, first_gy, unit_second, underdose_allowed_gy=max(margin, 0.0) + 0.005 * PRESCRIPTION_GY)
        else:
            _totals(row, unit_first, unit_second)
    except Exception as exc:  # noqa: BLE001
        row.failures.append(f"harness error: {type(exc).__name__}: {exc}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc is not None and proc.stdout:
            proc.stdout.close()
        for s in sims:
            try:
                s.stop()
            except Exception:  # noqa: BLE001 - a killed simulator has nothing to stop
                pass
    return _finish(row, started)


def _cell_text(stderr: str) -> str:
    lines = [line.strip().lstrip("\x1b[2K").strip() for line in stderr.splitlines()]
    for line in lines:
        if "restarted during treatment" in line or "console restarted" in line:
            return line
    return next((line for line in lines if line), "")
