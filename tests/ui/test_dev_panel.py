"""Developer mode (`orconsole --dev`): the simulator panel injects every fault kind live into the bench that
orconsole.wiring hands the window (ConsoleParts.bench), and an interlock injected from it during beam
stops the treatment, raises the alarm in words and asks for the reason."""
from __future__ import annotations

from protocol.xrs import FaultBit, InterlockBit
from orconsole.statemachine import State
from simulators.xrs_model import FAULT_KINDS
from tests.support.installation import THERAPIST
from tests.ui import steps

# what each fault kind does to the simulated unit, read from the bench itself
EFFECT = {
    "hv_arc": lambda b: FaultBit.HV_ARC in b.xrs_model.status().faults,
    "hv_failure": lambda b: FaultBit.HV_FAILURE in b.xrs_model.status().faults,
    "interlock_open": lambda b: InterlockBit.EXTERNAL_INTERLOCK_OPEN in b.xrs_model.status().interlocks,
    "emergency_stop": lambda b: InterlockBit.EMERGENCY_STOP in b.xrs_model.status().interlocks,
    "key_switch_off": lambda b: InterlockBit.KEY_SWITCH_OFF in b.xrs_model.status().interlocks,
    "output_drop": lambda b: b.xrs_model._output_drop > 0,
    "output_drift": lambda b: bool(b.xrs_model._drifts),
    "applicator_removed": lambda b: b.xrs_model.status().applicator_cm is None,
    "silent": lambda b: b.faults["xrs"].silent,
    "bit_errors": lambda b: b.faults["xrs"].bit_error_rate > 0,
    "byte_drops": lambda b: b.faults["xrs"].byte_drop_rate > 0,
}
CLEARABLE = set(FAULT_KINDS) - {"hv_arc"}     # hv_arc is latched: cleared by a reset, not by clear()
# after clear() the cause is gone; a latched fault bit stays until a reset with acknowledgement
CAUSE_PRESENT = {**EFFECT, "hv_failure": lambda b: b.xrs_model._hv_failure_present}


def test_every_fault_kind_is_injected_live_into_the_wired_bench_and_cleared(installation, console_factory, qtbot):
    assert set(EFFECT) == set(FAULT_KINDS), "a new fault kind needs a button check here"
    console = console_factory(installation)
    assert console.parts.bench is console.bench, "--dev must hand the window the bench behind sim://"
    steps.login(qtbot, console, THERAPIST)
    steps.go(qtbot, console, "dev")
    panel = console.window.screens["dev"]
    assert set(panel.inject_buttons) == set(FAULT_KINDS)
    for kind in FAULT_KINDS:
        assert not EFFECT[kind](console.bench), kind
        steps.click(qtbot, panel.inject_buttons[kind])
        assert panel.message.text().startswith(f"Injected {kind}"), panel.message.text()
        assert EFFECT[kind](console.bench), f"{kind} did not reach the simulated unit"
        if kind == "interlock_open":       # the console sees it through the real link
            qtbot.waitUntil(lambda: any("nterlock" in t for t in console.window.screens["treatment"].interlocks.texts),
                            timeout=10000)
        if kind == "silent":
            qtbot.waitUntil(lambda: not console.window.ctx.snapshot.link_ok, timeout=10000)
            assert "LINK TO X-RAY UNIT LOST" in console.window.banner.text()
        if kind in CLEARABLE:
            steps.click(qtbot, panel.clear_buttons[kind])
            assert panel.message.text() == f"Cleared {kind}"
            assert not CAUSE_PRESENT[kind](console.bench), f"{kind} was not cleared"
    # a value typed in the panel goes with the injection; a wrong one is refused in words
    steps.type_into(qtbot, panel.value, "a lot")
    steps.click(qtbot, panel.inject_buttons["output_drop"])
    assert "not a number" in panel.message.text() and not EFFECT["output_drop"](console.bench)
    steps.type_into(qtbot, panel.value, "0.25")
    steps.click(qtbot, panel.inject_buttons["output_drop"])
    assert console.bench.xrs_model._output_drop == 0.25


def test_an_interlock_injected_during_beam_stops_it_with_the_alarm_in_words(installation, console_factory, qtbot):
    console = console_factory(installation)
    steps.plan_and_approve(qtbot, console)
    steps.login(qtbot, console, THERAPIST)
    steps.warm_up_and_check(qtbot, console)
    steps.arm_and_start(qtbot, console)
    w = console.window
    qtbot.waitUntil(lambda: w.ctx.snapshot.elapsed_s > 1.5, timeout=15000)
    steps.go(qtbot, console, "dev")                       # the beam keeps going while another screen is shown
    steps.click(qtbot, w.screens["dev"].inject_buttons["interlock_open"])
    steps.wait_state(qtbot, console, State.TERMINATED, State.FAULT)
    assert not console.bench.xrs_model.status().hv_on
    snap = w.ctx.snapshot
    assert snap.termination.value == "MACHINE"
    assert snap.elapsed_s < snap.preset_s - 1.0
    qtbot.waitUntil(lambda: w.alarm.isVisible() and "TERMINATED BY THE MACHINE" in w.alarm.text, timeout=5000)
    assert "Device interlock chain open" in w.alarm.text
    assert w.current_key() == "treatment", "a machine stop brings the treatment screen forward"
    assert w.alarm.sounding
    assert "TERMINATED" in w.banner.text()
    t = w.screens["treatment"]
    qtbot.waitUntil(lambda: any("nterlock" in x for x in t.interlocks.texts), timeout=5000)
    qtbot.waitUntil(t.reason_panel.isVisible, timeout=5000)
    # silencing stops the sound, never the words
    steps.click(qtbot, w.alarm.ack_button)
    assert not w.alarm.sounding and w.alarm.isVisible() and "nterlock" in w.alarm.text
    steps.wait_step(qtbot, console, "delivery_ended")
    from logs.records import RecordBook
    record = RecordBook(console.parts.store).load(steps.status(console).record_id)
    session = record.sessions[-1]
    assert session.termination_cause.value == "interlock"
    assert record.interruptions[-1].initiated_by == "interlock"
    assert 1.0 < session.dose_gy.secondary_irm_gy < 19.0


def test_a_lost_link_is_reconnected_and_its_interlock_cleared_by_a_person_in_words(installation, console_factory,
                                                                                   qtbot):
    console = console_factory(installation)
    w = console.window
    steps.login(qtbot, console, THERAPIST)
    steps.go(qtbot, console, "dev")
    panel = w.screens["dev"]
    steps.click(qtbot, panel.inject_buttons["silent"])
    qtbot.waitUntil(lambda: not w.ctx.snapshot.link_ok, timeout=10000)
    steps.click(qtbot, panel.clear_buttons["silent"])          # the cable is back; the console still says LOST
    steps.go(qtbot, console, "treatment")
    t = w.screens["treatment"]
    qtbot.waitUntil(t.clear_row.isVisible, timeout=5000)
    assert "LINK TO X-RAY UNIT LOST" in w.banner.text()
    steps.click(qtbot, t.reconnect_button)
    qtbot.waitUntil(lambda: t.message.text().startswith(("Reconnect: done", "Reconnect REFUSED")), timeout=15000)
    assert t.message.text().startswith("Reconnect: done"), t.message.text()
    qtbot.waitUntil(t.clear_button.isEnabled, timeout=10000)   # the link answers again: the latch can be cleared
    steps.click(qtbot, t.clear_button)
    assert "write what you checked" in t.message.text(), "clearing needs the person's acknowledgement"
    steps.type_into(qtbot, t.clear_ack, "cable reseated, unit answers, beam was off")
    steps.click(qtbot, t.clear_button)
    qtbot.waitUntil(lambda: t.message.text().startswith(("Clear: done", "Clear REFUSED")), timeout=15000)
    assert t.message.text().startswith("Clear: done"), t.message.text()
    qtbot.waitUntil(lambda: w.ctx.snapshot.link_ok, timeout=15000)
    assert "LINK TO X-RAY UNIT LOST" not in w.banner.text()
    qtbot.waitUntil(lambda: not t.clear_row.isVisible(), timeout=5000)
