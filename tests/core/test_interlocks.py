"""The interlock registry: every required interlock, latched vs self-clearing, who may clear it."""
from __future__ import annotations

from pathlib import Path

import pytest

from orconsole.interlocks import (REGISTRY, ClearRole, Effect, InterlockBank, InterlockDefinition, InterlockId,
                                  Latching, render_markdown)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "interlocks.md"

REQUIRED = {
    "output_check_not_passed", "plan_not_approved", "identity_not_verified", "applicator_mismatch",
    "source_serial_mismatch", "device_fault", "emergency_stop", "link_lost", "kv_out_of_tolerance",
    "ua_out_of_tolerance", "dose_rate_out_of_tolerance", "dose_channels_disagree",
    "cumulative_dose_exceeds_prescription", "record_store_unavailable", "journal_write_failure",
}


def test_every_required_interlock_is_registered():
    assert REQUIRED <= {i.value for i in REGISTRY}


@pytest.mark.parametrize("definition", list(REGISTRY.values()), ids=lambda d: d.id.value)
def test_every_interlock_speaks_to_a_person(definition):
    assert len(definition.title) > 5 and len(definition.condition) > 10
    assert definition.message.endswith(".") and len(definition.message) > 15
    assert len(definition.remediation) > 15
    assert not definition.title.lower().startswith(("error", "code", "malfunction"))


@pytest.mark.parametrize("definition", list(REGISTRY.values()), ids=lambda d: d.id.value)
def test_latched_interlocks_name_who_clears_them_and_self_clearing_ones_nobody(definition):
    if definition.latching is Latching.LATCHED:
        assert definition.clearable_by
    else:
        assert not definition.clearable_by


def test_a_definition_without_clearing_roles_cannot_be_latched():
    with pytest.raises(ValueError):
        InterlockDefinition(InterlockId.DEVICE_FAULT, "t", "c", "m", "r", Latching.LATCHED,
                            Effect.TERMINATES_BEAM, frozenset())


@pytest.mark.parametrize("interlock", [InterlockId.EMERGENCY_STOP, InterlockId.LINK_LOST, InterlockId.DEVICE_FAULT,
                                       InterlockId.JOURNAL_WRITE_FAILURE, InterlockId.DOSE_CHANNELS_DISAGREE,
                                       InterlockId.KV_OUT_OF_TOLERANCE, InterlockId.SOURCE_SERIAL_MISMATCH])
def test_safety_critical_interlocks_are_latched_and_terminate_beam(interlock):
    assert REGISTRY[interlock].latching is Latching.LATCHED
    assert REGISTRY[interlock].effect is Effect.TERMINATES_BEAM


def test_self_clearing_interlock_follows_its_condition():
    bank = InterlockBank()
    i = InterlockId.IDENTITY_NOT_VERIFIED
    assert bank.update(i, True, now_s=1.0, detail="not yet confirmed") is True
    assert bank.is_active(i) and bank.status(i).detail == "not yet confirmed"
    assert bank.update(i, True, now_s=2.0) is False          # not newly tripped
    bank.update(i, False, now_s=3.0)
    assert not bank.is_active(i)
    result = bank.clear(i, role=ClearRole.PHYSICIST, acknowledgement="x")
    assert not result.ok and "clears itself" in result.reason


def test_latched_interlock_stays_after_its_condition_is_gone():
    bank = InterlockBank()
    i = InterlockId.EMERGENCY_STOP
    bank.update(i, True, now_s=10.0, detail="e-stop at the unit")
    bank.update(i, False, now_s=11.0)
    status = bank.status(i)
    assert status.active and not status.condition_present and status.tripped_at_s == 10.0


def test_latched_interlock_cannot_be_cleared_while_its_cause_is_present():
    bank = InterlockBank()
    i = InterlockId.EMERGENCY_STOP
    bank.update(i, True, now_s=0.0, detail="button still pressed")
    result = bank.clear(i, role=ClearRole.THERAPIST, acknowledgement="patient safe")
    assert not result.ok and "still present" in result.reason and "button still pressed" in result.reason
    assert bank.is_active(i)


def test_only_the_listed_roles_may_clear():
    bank = InterlockBank()
    i = InterlockId.DOSE_RATE_OUT_OF_TOLERANCE
    bank.trip(i, now_s=0.0, detail="0.70 Gy/min measured, 0.87 expected")
    refused = bank.clear(i, role=ClearRole.THERAPIST, acknowledgement="looked fine")
    assert not refused.ok and "physicist" in refused.reason and "therapist" in refused.reason
    assert bank.is_active(i)
    assert not bank.clear(i, role="janitor", acknowledgement="x").ok
    assert not bank.clear(i, role=ClearRole.PHYSICIST, acknowledgement="  ").ok   # needs words
    done = bank.clear(i, role=ClearRole.PHYSICIST, acknowledgement="output re-measured, within 1 %")
    assert done.ok and not bank.is_active(i)


def test_clearing_an_inactive_interlock_is_refused():
    result = InterlockBank().clear(InterlockId.LINK_LOST, role=ClearRole.THERAPIST, acknowledgement="x")
    assert not result.ok and "not active" in result.reason


@pytest.mark.parametrize("definition", [d for d in REGISTRY.values() if d.latching is Latching.LATCHED],
                         ids=lambda d: d.id.value)
def test_each_latched_interlock_clears_for_each_allowed_role_only(definition):
    for role in ClearRole:
        bank = InterlockBank()
        bank.trip(definition.id, now_s=0.0)
        result = bank.clear(definition.id, role=role, acknowledgement="checked")
        assert result.ok is (role in definition.clearable_by), (role, result.reason)
        assert bank.is_active(definition.id) is not result.ok


def test_status_is_structured_and_readable():
    bank = InterlockBank()
    bank.update(InterlockId.APPLICATOR_MISMATCH, True, now_s=5.0, detail="mounted 3.5 cm, plan 3.0 cm")
    (status,) = bank.active()
    assert status.id is InterlockId.APPLICATOR_MISMATCH
    assert "mounted 3.5 cm, plan 3.0 cm" in status.text and "Mount the plan's applicator" in status.text
    assert status.effect is Effect.TERMINATES_BEAM
    assert bank.active(Effect.BLOCKS_START) == ()
    assert len(bank.statuses()) == len(REGISTRY)


def test_docs_match_the_registry():
    assert DOCS.read_text(encoding="utf-8") == render_markdown(), \
        "docs/interlocks.md is stale: run python -m orconsole.interlocks > docs/interlocks.md"


# -- conditions from device status and delivery figures ------------------------------------------------

from drivers.hal import BeamOffCause, XrsFault, XrsInterlock, XrsState, XrsStatus  # noqa: E402
from orconsole.config import SiteConfig  # noqa: E402
from orconsole.interlocks import beam_conditions, cumulative_dose_condition, device_conditions  # noqa: E402


def status(**changes) -> XrsStatus:
    data = dict(state=XrsState.BEAM_ON, kv=50.0, ua=40.0, hv_on=True, irm_counts=0, irm_dose_gy=0.0,
                applicator_diameter_cm=3.0, interlocks=XrsInterlock.NONE, faults=XrsFault.NONE, device_time_s=0.0,
                beam_on_time_s=0.0, last_beam_off_cause=BeamOffCause.NONE, last_beam_off_reason=None,
                armed_plan_hash=None)
    data.update(changes)
    return XrsStatus(**data)


def present(conditions) -> dict:
    return {c.interlock: c.detail for c in conditions if c.present}


def dev(s: XrsStatus, serial: str = "XRS-0042"):
    return present(device_conditions(s, plan_applicator_cm=3.0, plan_source_serial="XRS-0042",
                                     device_source_serial=serial))


def test_a_healthy_status_raises_no_condition():
    assert dev(status()) == {}


def test_device_conditions_name_what_is_wrong():
    assert "mounted 3.5 cm, plan requires 3.0 cm" in dev(status(applicator_diameter_cm=3.5))[
        InterlockId.APPLICATOR_MISMATCH]
    assert "no applicator sensed" in dev(status(applicator_diameter_cm=None))[InterlockId.APPLICATOR_MISMATCH]
    assert "external interlock open" in dev(status(interlocks=XrsInterlock.EXTERNAL_INTERLOCK_OPEN))[
        InterlockId.DEVICE_INTERLOCK_OPEN]
    assert InterlockId.EMERGENCY_STOP in dev(status(interlocks=XrsInterlock.EMERGENCY_STOP))
    assert InterlockId.EMERGENCY_STOP in dev(status(faults=XrsFault.EMERGENCY_STOP, state=XrsState.FAULT))
    assert "hv arc" in dev(status(faults=XrsFault.HV_ARC))[InterlockId.DEVICE_FAULT]
    assert InterlockId.DEVICE_FAULT in dev(status(state=XrsState.FAULT))
    assert "connected XRS-0099" in dev(status(), serial="XRS-0099")[InterlockId.SOURCE_SERIAL_MISMATCH]


def beam(s: XrsStatus, *, t: float = 10.0, measured: float | None = 0.0145, primary: float = 0.145,
         secondary: float = 0.145):
    return present(beam_conditions(s, config=SiteConfig(), since_beam_start_s=t, expected_rate_gy_per_s=0.0145,
                                   measured_rate_gy_per_s=measured, primary_dose_gy=primary,
                                   secondary_dose_gy=secondary))


def test_technique_is_judged_only_after_ramp_up():
    assert beam(status(kv=30.0, ua=10.0), t=1.0) == {}
    bad = beam(status(kv=48.9, ua=37.9))
    assert set(bad) == {InterlockId.KV_OUT_OF_TOLERANCE, InterlockId.UA_OUT_OF_TOLERANCE}
    assert "48.90 kV" in bad[InterlockId.KV_OUT_OF_TOLERANCE]
    assert beam(status(kv=49.0, ua=38.0)) == {}        # exactly at ±2 % / ±5 %


def test_dose_rate_outside_10_percent_trips_after_ramp_up():
    assert beam(status(), measured=0.0145 * 1.10) == {}
    assert InterlockId.DOSE_RATE_OUT_OF_TOLERANCE in beam(status(), measured=0.0145 * 1.11)
    assert InterlockId.DOSE_RATE_OUT_OF_TOLERANCE in beam(status(), measured=0.0145 * 0.85)
    assert beam(status(), measured=0.0, t=2.9) == {}
    assert beam(status(), measured=None) == {}


def test_dose_channels_must_agree():
    assert beam(status(), primary=10.0, secondary=9.6) == {}            # 4 %
    assert InterlockId.DOSE_CHANNELS_DISAGREE in beam(status(), primary=10.0, secondary=9.4)
    assert beam(status(), primary=0.15, secondary=0.0) == {}            # floor 0.2 Gy at the start
    assert InterlockId.DOSE_CHANNELS_DISAGREE in beam(status(), primary=0.5, secondary=0.0)


def test_cumulative_dose_may_not_exceed_the_prescription():
    c = SiteConfig()
    ok = cumulative_dose_condition(prescription_dose_gy=20.0, previously_delivered_gy=12.0, delivered_now_gy=0.0,
                                   still_preset_gy=8.0, config=c)
    assert not ok.present
    at_end = cumulative_dose_condition(prescription_dose_gy=20.0, previously_delivered_gy=0.0,
                                       delivered_now_gy=20.09, still_preset_gy=0.0, config=c)
    assert not at_end.present                                            # within 0.5 %
    over = cumulative_dose_condition(prescription_dose_gy=20.0, previously_delivered_gy=12.0,
                                     delivered_now_gy=0.0, still_preset_gy=8.5, config=c)
    assert over.present and "20.500 Gy > 20 Gy" in over.detail
