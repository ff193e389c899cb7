"""The simulated UNIDOS behaves in time: warm-up, write token, ranges and overload, HV ramp and HV
error flag, k_TP, leakage, noise, interval measurement, zero correction, self test, error replies.
Driven by a ManualClock; expected charges are computed by hand from the physics.
"""
from __future__ import annotations

import math

import pytest

from protocol import unidos as u
from protocol.unidos import Flag, Range, Status, request
from simulators.clock import ManualClock
from simulators.unidos_model import RANGE_LIMITS, UnidosModel
from simulators.world import Room

FIELD_A = 100e-12  # 100 pA at reference air density


def make(field_a=FIELD_A, *, room=None, warmup_s=10.0, noise_fraction=0.0, events=None, **kw):
    clock = ManualClock(1000.0)
    field = field_a if callable(field_a) else (lambda now_s: field_a)
    model = UnidosModel(clock, field_current_a=field, room=room or Room(), seed=7, warmup_s=warmup_s,
                        noise_fraction=noise_fraction, on_event=None if events is None else events.append, **kw)
    return clock, model


def ask(model, mnemonic, *params):
    """Send one request as bytes; return the decoded reply (typed value or ErrorReply)."""
    req = request(mnemonic, *params)
    return u.decode_reply(req, model.handle(u.encode_request(req)))


def run(clock, model, seconds, step_s=0.5):
    """Advance the clock, ticking the model like the runner does."""
    remaining = seconds
    while remaining > 1e-12:
        dt = min(step_s, remaining)
        clock.advance(dt)
        model.tick()
        remaining -= dt


E = u.ErrorReply

# ---- write token ---------------------------------------------------------------------------

STATE_CHANGING = [("STA",), ("HLD",), ("RES",), ("INT",), ("CHR",), ("NUL",), ("AST",), ("IT", 60),
                  ("RGE", Range.LOW), ("HV", 300), ("UEL", True), ("ASE", False), ("ASR", False),
                  ("ASL", u.AutostartLevel.LOW)]


@pytest.mark.parametrize("command", STATE_CHANGING, ids=lambda c: str(request(*c)))
def test_a_state_changing_command_without_the_write_token_is_refused_with_e20(command):
    clock, model = make()
    assert ask(model, *command) == E("E20")
    assert model.status == Status.RES


@pytest.mark.parametrize("query", ["PTW", "SER", "MAC", "S", "IT", "NUS", "ASS", "RGE", "HV", "UEL", "ASE",
                                   "ASR", "ASL", "MV", "MVM", "MVR", "TFI", "RDA", "RMR", "RIR", "RSR", "REC",
                                   "RHR"])
def test_queries_need_no_write_token(query):
    clock, model = make()
    assert not isinstance(ask(model, query), E)


def test_the_token_is_granted_queried_and_released():
    clock, model = make()
    assert ask(model, "TOK", 1) is False
    assert ask(model, "TOK") is True
    assert ask(model, "TOK", 1) is True
    assert ask(model, "STA") is None and model.status == Status.MEAS
    assert ask(model, "TOK", 0) is True
    assert ask(model, "TOK", 1) is False
    assert ask(model, "HLD") == E("E20")


# ---- warm-up and zero correction -----------------------------------------------------------

def test_zero_correction_is_refused_with_e03_during_warm_up_and_runs_its_full_time_after():
    clock, model = make(warmup_s=300.0, zero_duration_s=82.0)
    ask(model, "TOK")
    assert ask(model, "NUL") == E("E03")
    assert ask(model, "TFI") == ("E03", "NUL")
    run(clock, model, 299.0, step_s=10.0)
    assert ask(model, "NUL") == E("E03")
    run(clock, model, 1.0)
    assert ask(model, "NUL") is None
    assert ask(model, "S") == Status.ZERO
    run(clock, model, 41.0, step_s=1.0)
    nus = ask(model, "NUS")
    assert (nus.result, nus.remaining_ms, nus.total_ms) == ("Running", 41000, 82000)
    assert ask(model, "STA") == E("E03")          # busy: not at this moment
    run(clock, model, 41.0, step_s=1.0)
    assert ask(model, "S") == Status.RES
    assert ask(model, "NUS") == u.ZeroCorrectionStatus("Passed", 0, 82000)


def test_zero_correction_is_not_allowed_while_measuring():
    clock, model = make()
    run(clock, model, 20.0, step_s=5.0)
    ask(model, "TOK")
    ask(model, "STA")
    assert ask(model, "NUL") == E("E02")


# ---- charge integration: k_TP, leakage, noise, polarity ----------------------------------

def test_the_interval_charge_is_field_over_k_tp_plus_leakage():
    room = Room(temperature_c=30.0, pressure_kpa=95.0)
    clock, model = make(room=room)
    k_tp = (273.15 + 30.0) / (273.15 + 20.0) * (101.325 / 95.0)     # = 1.1031…: this room reads low
    expected_c = (FIELD_A / k_tp + 10e-15) * 60.0
    ask(model, "TOK")
    assert ask(model, "IT", 60) == 60
    assert ask(model, "INT") is None
    run(clock, model, 61.0, step_s=0.25)
    mv = ask(model, "MV")
    assert mv.status == Status.INTHLD and mv.time_ms == 60000.0
    assert mv.integrated.unit == "C"
    assert mv.integrated.value == pytest.approx(expected_c, rel=2e-5)   # 5 significant digits on the wire
    assert model.charge_c == pytest.approx(expected_c, rel=1e-12)


def test_a_warm_low_pressure_room_reads_lower_than_the_reference_room():
    charges = []
    for room in (Room(), Room(temperature_c=35.0, pressure_kpa=90.0)):
        clock, model = make(room=room)
        ask(model, "TOK")
        ask(model, "IT", 10)
        ask(model, "INT")
        run(clock, model, 11.0)
        charges.append(model.charge_c)
    k_tp = (273.15 + 35.0) / 293.15 * (101.325 / 90.0)
    assert charges[1] < charges[0]
    assert (charges[1] - 10e-15 * 10) / (charges[0] - 10e-15 * 10) == pytest.approx(1 / k_tp, rel=1e-9)


def test_leakage_alone_integrates_about_ten_femtoamperes_of_positive_charge():
    clock, model = make(field_a=0.0)
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 100.0, step_s=1.0)
    ask(model, "HLD")
    mv = ask(model, "MV")
    assert mv.integrated.value == pytest.approx(+10e-15 * 100.0, rel=1e-4)   # +1.0 pC
    assert mv.rate.value == pytest.approx(10e-15, rel=1e-4)
    assert mv.integrated.prefix == "p"


def test_leakage_does_not_follow_the_chamber_polarity_but_the_signal_does():
    clock, model = make(hv_nominal_v=-300)
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 10.0)
    assert model.charge_c == pytest.approx((-FIELD_A + 10e-15) * 10.0, rel=1e-9)


def test_reading_noise_is_about_a_tenth_of_a_percent():
    clock, model = make(field_a=10e-9, noise_fraction=0.001)
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 10.0)
    true_c = model.charge_c
    readings = [ask(model, "MV").integrated.value / true_c - 1.0 for _ in range(400)]
    spread = math.sqrt(sum(r * r for r in readings) / len(readings))
    assert 0.0006 < spread < 0.0015
    assert max(abs(r) for r in readings) < 0.006


def test_a_held_reading_does_not_change_between_reads():
    clock, model = make(noise_fraction=0.001)
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 5.0)
    ask(model, "HLD")
    first = ask(model, "MV")
    run(clock, model, 5.0)
    assert ask(model, "MV") == first and first.status == Status.HOLD


def test_hold_then_start_continues_integrating():
    clock, model = make()
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 4.0)
    ask(model, "HLD")
    run(clock, model, 100.0, step_s=5.0)      # not integrating while held
    ask(model, "STA")
    run(clock, model, 6.0)
    assert model.charge_c == pytest.approx((FIELD_A + 10e-15) * 10.0, rel=1e-9)
    assert ask(model, "MV").time_ms == pytest.approx(10000.0)


def test_reset_zeroes_charge_and_time():
    clock, model = make()
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 3.0)
    ask(model, "RES")
    mv = ask(model, "MV")
    assert (mv.status, mv.integrated.value, mv.time_ms) == (Status.RES, 0.0, 0.0)


# ---- interval measurement ------------------------------------------------------------------

def test_an_interval_measurement_runs_for_the_integration_time_then_holds():
    events = []
    clock, model = make(events=events)
    ask(model, "TOK")
    ask(model, "IT", 5)
    ask(model, "INT")
    run(clock, model, 3.0)
    assert ask(model, "S") == Status.INT
    assert ask(model, "INT") == E("E02")
    run(clock, model, 3.0)
    mv = ask(model, "MV")
    assert mv.status == Status.INTHLD and mv.time_ms == 5000.0
    assert model.charge_c == pytest.approx((FIELD_A + 10e-15) * 5.0, rel=1e-9)
    done = [e for e in events if e["event"] == "interval_done"]
    assert len(done) == 1 and done[0]["charge_c"] == pytest.approx(model.charge_c)
    assert ask(model, "INT") is None and ask(model, "S") == Status.INT   # a new interval from INTHLD


@pytest.mark.parametrize("seconds", [0, -1, 3600000])
def test_integration_time_out_of_range_is_refused_with_e08(seconds):
    clock, model = make()
    ask(model, "TOK")
    assert ask(model, "IT", seconds) == E("E08")
    assert ask(model, "IT") == 60


# ---- ranges and overload -------------------------------------------------------------------

def test_current_above_the_range_maximum_sets_the_overload_flag_and_error_status():
    clock, model = make(field_a=1e-9)                  # 1 nA > VERY_LOW's 300 pA
    ask(model, "TOK")
    assert ask(model, "RGE", Range.VERY_LOW) == Range.VERY_LOW
    ask(model, "STA")
    run(clock, model, 0.5)
    mv = ask(model, "MV")
    assert mv.status == Status.ERROR
    assert Flag.OVERLOAD_CURRENT in mv.flags
    assert ask(model, "STA") == E("E02")               # latched until reset
    ask(model, "RES")
    assert ask(model, "MV").flags == Flag.NONE


def test_charge_above_the_range_maximum_sets_the_charge_overload_flag():
    clock, model = make(field_a=10e-9)                 # LOW: 30 nA, 300 nC
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 29.0)
    assert ask(model, "MV").flags == Flag.NONE
    run(clock, model, 2.0)                             # 310 nC
    mv = ask(model, "MV")
    assert mv.status == Status.ERROR and mv.flags == Flag.OVERLOAD_CHARGE


def test_the_same_current_is_in_range_on_a_higher_range():
    clock, model = make(field_a=1e-9)
    ask(model, "TOK")
    ask(model, "RGE", Range.LOW)
    ask(model, "STA")
    run(clock, model, 5.0)
    assert ask(model, "MV").status == Status.MEAS


@pytest.mark.parametrize("rng", list(Range))
def test_mvm_reports_the_current_maximum_of_the_range(rng):
    clock, model = make()
    ask(model, "TOK")
    ask(model, "RGE", rng)
    mvm = ask(model, "MVM")
    assert mvm.range == rng and mvm.maximum.unit == "A"
    assert mvm.maximum.value == pytest.approx(RANGE_LIMITS[rng].current_max_a, rel=1e-9)
    mvr = ask(model, "MVR")
    assert mvr.integrated.value == pytest.approx(RANGE_LIMITS[rng].charge_resolution_c, rel=1e-9)
    assert mvr.rate.value == pytest.approx(RANGE_LIMITS[rng].current_resolution_a, rel=1e-9)


def test_range_maxima_increase_with_the_range_and_low_is_hundreds_of_nc():
    ordered = [RANGE_LIMITS[r] for r in (Range.VERY_LOW, Range.LOW, Range.MEDIUM, Range.HIGH)]
    assert all(a.charge_max_c < b.charge_max_c and a.current_max_a < b.current_max_a
               for a, b in zip(ordered, ordered[1:]))
    assert 100e-9 <= RANGE_LIMITS[Range.LOW].charge_max_c <= 999e-9
    assert 10e-9 <= RANGE_LIMITS[Range.LOW].current_max_a <= 99e-9


def test_range_cannot_change_while_measuring():
    clock, model = make()
    ask(model, "TOK")
    ask(model, "STA")
    assert ask(model, "RGE", Range.HIGH) == E("E02")
    assert ask(model, "RGE") == Range.LOW


# ---- chamber voltage -----------------------------------------------------------------------

def test_after_an_hv_change_readings_carry_the_hv_error_flag_until_the_ramp_ends():
    clock, model = make(hv_ramp_v_per_s=50.0)
    ask(model, "TOK")
    assert ask(model, "HV", 200) == 200
    mv = ask(model, "MV")
    assert mv.hv_v == 300.0 and Flag.HV_ERROR_CURRENT in mv.flags and Flag.HV_ERROR_CHARGE in mv.flags
    run(clock, model, 1.0)
    assert ask(model, "MV").hv_v == 250.0
    run(clock, model, 1.0)
    mv = ask(model, "MV")
    assert mv.hv_v == 200.0 and mv.flags == Flag.NONE
    assert ask(model, "HV") == 200


@pytest.mark.parametrize("volts", [401, -401, 500])
def test_hv_out_of_range_is_refused_with_e08(volts):
    clock, model = make()
    ask(model, "TOK")
    assert ask(model, "HV", volts) == E("E08")
    assert ask(model, "HV") == 300


def test_an_hv_fault_flags_the_reading_and_collects_less_charge():
    events = []
    clock, model = make(events=events)
    ask(model, "TOK")
    ask(model, "STA")
    model.inject("hv_fault", value=0.0)
    run(clock, model, 10.0)                          # HV sags to 0 V at 50 V/s: 6 s of collapse
    mv = ask(model, "MV")
    assert mv.hv_v == 0.0
    assert Flag.HV_ERROR_CURRENT in mv.flags and Flag.HV_ERROR_CHARGE in mv.flags
    assert model.charge_c < FIELD_A * 10.0 * 0.5
    model.clear("hv_fault")
    ask(model, "HLD")
    run(clock, model, 10.0)
    mv = ask(model, "MV")
    assert mv.hv_v == 300.0
    assert mv.flags == Flag.HV_ERROR_CHARGE           # the held charge was taken with a bad HV
    ask(model, "RES")
    assert ask(model, "MV").flags == Flag.NONE
    assert {"event": "fault_injected", "kind": "hv_fault", "volts": 0.0} in events


# ---- self test, units, documents, errors ---------------------------------------------------

def test_self_test_runs_then_reports_its_test_charges():
    clock, model = make(self_test_duration_s=89.0)
    ask(model, "TOK")
    assert ask(model, "AST") is None
    assert ask(model, "S") == Status.SELF_TEST
    run(clock, model, 50.0, step_s=5.0)
    running = ask(model, "ASS")
    assert (running.result, running.remaining_ms, running.charges) == ("Running", 39000, ())
    run(clock, model, 40.0, step_s=5.0)
    done = ask(model, "ASS")
    assert done.result == "Passed" and done.remaining_ms == 0 and done.total_ms == 89000
    assert [c.range_label for c in done.charges] == ["Low", "Med", "High"]
    assert ask(model, "S") == Status.RES


def test_dose_units_report_gray_with_a_minute_timebase():
    clock, model = make(field_a=1e-10)
    ask(model, "TOK")
    assert ask(model, "UEL", False) is False
    ask(model, "STA")
    run(clock, model, 2.0)
    mv = ask(model, "MV")
    assert (mv.integrated.unit, mv.rate.unit, mv.timebase) == ("Gy", "Gy", "min")
    assert mv.integrated.value == pytest.approx(model.charge_c * 1.13e10, rel=1e-4)


def test_json_documents_and_an_unknown_detector():
    clock, model = make()
    detectors = ask(model, "RDA")
    guid = detectors[0]["guid"]
    assert ask(model, "RDR", guid)["typeNumber"] == "TM34013"
    assert ask(model, "RDR", "no-such-detector") == E("E21")
    assert ask(model, "RIR")["serialNumber"] == 123456
    assert ask(model, "RMR")["integrationTime"] == 60


def test_measurement_history_is_kept_and_cleared():
    clock, model = make()
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 2.0)
    ask(model, "HLD")
    history = ask(model, "RHR")
    assert len(history) == 1 and history[0]["dose"] == pytest.approx((FIELD_A + 10e-15) * 2.0)
    ask(model, "CHR")
    assert ask(model, "RHR") == []


@pytest.mark.parametrize("line,code", [
    (b"XYZ\r\n", "E01"), (b"HV;\r\n", "E18"), (b"STA;1\r\n", "E17"), (b"RDR\r\n", "E19"),
    (b"HV;abc\r\n", "E29"), (b"RGE;HUGE\r\n", "E28"), (b"TOK;5\r\n", "E08"),
])
def test_malformed_requests_get_the_reference_error_reply(line, code):
    clock, model = make()
    assert model.handle(line) == code.encode() + b"\r\n"


def test_events_report_start_and_hold_with_the_charge():
    events = []
    clock, model = make(events=events)
    ask(model, "TOK")
    ask(model, "STA")
    run(clock, model, 2.0)
    ask(model, "HLD")
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["token_granted", "measure_start", "hold"]
    assert events[2]["charge_c"] == pytest.approx((FIELD_A + 10e-15) * 2.0)


def test_unknown_fault_kinds_are_refused():
    clock, model = make()
    with pytest.raises(ValueError):
        model.inject("meltdown")
    with pytest.raises(ValueError):
        model.inject("late", delay_ms=-5)


def test_constructor_refuses_impossible_timings():
    with pytest.raises(ValueError):
        make(warmup_s=-1.0)
    with pytest.raises(ValueError):
        make(hv_nominal_v=500)
