"""The interlock registry and the bank that tracks which interlocks are active.

Each interlock is declared once: id, condition, message with remediation, latched or self-clearing,
its effect, and who may clear it. Never report an interlock as a bare code, and never let a latched
interlock clear itself or be cleared while its condition is still present.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping

from drivers.hal import XrsFault, XrsInterlock, XrsState, XrsStatus
from orconsole.config import SiteConfig


class InterlockId(str, enum.Enum):
    OUTPUT_CHECK_NOT_PASSED = "output_check_not_passed"
    CALIBRATION_NOT_VALID = "calibration_not_valid"
    PLAN_NOT_APPROVED = "plan_not_approved"
    IDENTITY_NOT_VERIFIED = "identity_not_verified"
    APPLICATOR_MISMATCH = "applicator_mismatch"
    SOURCE_SERIAL_MISMATCH = "source_serial_mismatch"
    DEVICE_INTERLOCK_OPEN = "device_interlock_open"
    DEVICE_FAULT = "device_fault"
    EMERGENCY_STOP = "emergency_stop"
    LINK_LOST = "link_lost"
    KV_OUT_OF_TOLERANCE = "kv_out_of_tolerance"
    UA_OUT_OF_TOLERANCE = "ua_out_of_tolerance"
    DOSE_RATE_OUT_OF_TOLERANCE = "dose_rate_out_of_tolerance"
    DOSE_CHANNELS_DISAGREE = "dose_channels_disagree"
    CUMULATIVE_DOSE_EXCEEDS_PRESCRIPTION = "cumulative_dose_exceeds_prescription"
    RECORD_STORE_UNAVAILABLE = "record_store_unavailable"
    JOURNAL_WRITE_FAILURE = "journal_write_failure"


class Latching(str, enum.Enum):
    LATCHED = "latched"              # stays active after the condition goes, until cleared by a person
    SELF_CLEARING = "self-clearing"  # active exactly while the condition is present


class Effect(str, enum.Enum):
    BLOCKS_START = "blocks start"                      # no arm, no beam on while active
    TERMINATES_BEAM = "terminates beam"                # also stops a running beam (termination)


class ClearRole(str, enum.Enum):
    THERAPIST = "therapist"
    PHYSICIST = "physicist"
    PHYSICIAN = "physician"
    SERVICE = "service"


@dataclass(frozen=True)
class InterlockDefinition:
    id: InterlockId
    title: str
    condition: str                   # when it trips, in words
    message: str                     # what happened (shown to the user)
    remediation: str                 # what to do
    latching: Latching
    effect: Effect
    clearable_by: frozenset[ClearRole]   # empty for self-clearing interlocks

    def __post_init__(self) -> None:
        if self.latching is Latching.LATCHED and not self.clearable_by:
            raise ValueError(f"latched interlock {self.id.value} must name who may clear it")
        if self.latching is Latching.SELF_CLEARING and self.clearable_by:
            raise ValueError(f"self-clearing interlock {self.id.value} cannot be cleared by a person")


_T, _P, _D, _S = ClearRole.THERAPIST, ClearRole.PHYSICIST, ClearRole.PHYSICIAN, ClearRole.SERVICE


def _d(id_: InterlockId, title: str, condition: str, message: str, remediation: str, latching: Latching,
       effect: Effect, clearable_by: Iterable[ClearRole] = ()) -> InterlockDefinition:
    return InterlockDefinition(id_, title, condition, message, remediation, latching, effect, frozenset(clearable_by))


_DEFINITIONS: tuple[InterlockDefinition, ...] = (
    _d(InterlockId.OUTPUT_CHECK_NOT_PASSED, "Output check not passed today",
       "no passed (or acknowledged warning) output check of the connected source for today's date, or its "
       "k_out is outside the window",
       "Today's output check of this source has not passed.",
       "The physicist performs the daily output check; treatment is possible once it passes.",
       Latching.SELF_CLEARING, Effect.BLOCKS_START),
    _d(InterlockId.CALIBRATION_NOT_VALID, "Source calibration not valid",
       "the connected source has no approved active calibration, its calibration has expired (valid_until or "
       "the site's maximum validity) or is dated after today, or the active calibration belongs to another source "
       "than the loaded plan's",
       "The connected source has no valid calibration for this treatment.",
       "The physicist imports and approves the source's current calibration (QA > Calibration), then re-plans "
       "with it; treatment is possible once it is active and valid today.",
       Latching.SELF_CLEARING, Effect.BLOCKS_START),
    _d(InterlockId.PLAN_NOT_APPROVED, "Plan not approved",
       "the loaded plan version lacks the physician's or the physicist's approval (with independent time check)",
       "The plan is not approved by both physician and physicist.",
       "Physician and physicist review and approve this plan version; an edited plan needs new approvals.",
       Latching.SELF_CLEARING, Effect.BLOCKS_START),
    _d(InterlockId.IDENTITY_NOT_VERIFIED, "Patient identity not verified",
       "the patient's identity has not been confirmed by two identifiers (e.g. name and date of birth, "
       "medical record number) against the plan",
       "The patient's identity is not verified by two identifiers.",
       "Verify the patient against the plan with two identifiers and confirm at the console.",
       Latching.SELF_CLEARING, Effect.BLOCKS_START),
    _d(InterlockId.APPLICATOR_MISMATCH, "Mounted applicator differs from plan",
       "the applicator the device senses is absent or differs from the plan's applicator",
       "The mounted applicator differs from the plan.",
       "Mount the plan's applicator (the device must sense it), or re-plan for the mounted one.",
       Latching.SELF_CLEARING, Effect.TERMINATES_BEAM),
    _d(InterlockId.SOURCE_SERIAL_MISMATCH, "Source serial differs from calibration",
       "the connected X-ray source reports a serial number other than the calibration's and plan's",
       "The connected source is not the calibrated source of this plan.",
       "Connect the calibrated source, or have the physicist load that source's calibration and re-plan; "
       "the physicist clears this after checking.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_P,)),
    _d(InterlockId.DEVICE_INTERLOCK_OPEN, "Device interlock chain open",
       "the unit reports an open external interlock (door), key switch off or no applicator sensed",
       "The X-ray unit's interlock chain is open.",
       "Close the door / interlock chain, turn the key switch on and seat the applicator.",
       Latching.SELF_CLEARING, Effect.TERMINATES_BEAM),
    _d(InterlockId.DEVICE_FAULT, "X-ray unit fault",
       "the unit reports a latched fault or FAULT state",
       "The X-ray unit reports a fault; the beam is off.",
       "Read the fault shown, remove its cause, reset the unit's fault with acknowledgement, then clear here.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_T, _P, _S)),
    _d(InterlockId.EMERGENCY_STOP, "Emergency stop",
       "the emergency stop was pressed (at the unit or at the console)",
       "Emergency stop: the beam is off and the treatment is terminated.",
       "Make the situation safe, release the emergency stop button, then clear here; the remaining dose "
       "needs a continuation plan.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_T, _P)),
    _d(InterlockId.LINK_LOST, "Link to X-ray unit lost",
       "no valid status from the unit within the link-loss time (heartbeat missed); beam state unknown",
       "The console lost the link to the X-ray unit; its watchdog stops the beam.",
       "Check the cable, reconnect, confirm at the unit that the beam is off, then clear here.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_T, _P, _S)),
    _d(InterlockId.KV_OUT_OF_TOLERANCE, "Tube voltage out of tolerance",
       "after ramp-up, the reported kV is outside nominal ± the configured tolerance",
       "The tube voltage left its tolerance during beam.",
       "The physicist checks the unit (HV supply) before any further beam, then clears here.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_P,)),
    _d(InterlockId.UA_OUT_OF_TOLERANCE, "Beam current out of tolerance",
       "after ramp-up, the reported µA is outside nominal ± the configured tolerance",
       "The beam current left its tolerance during beam.",
       "The physicist checks the unit (emission) before any further beam, then clears here.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_P,)),
    _d(InterlockId.DOSE_RATE_OUT_OF_TOLERANCE, "Dose rate out of tolerance",
       "after ramp-up, the IRM dose rate differs from the plan's expected rate by more than the tolerance "
       "(default ±10 %)",
       "The measured dose rate differs from the plan's expected rate.",
       "The physicist checks the source output and the plan before any further beam, then clears here.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_P,)),
    _d(InterlockId.DOSE_CHANNELS_DISAGREE, "Primary and secondary dose channels disagree",
       "the primary dose (console timer × planned rate) and the secondary dose (IRM) differ by more than "
       "the channel agreement tolerance",
       "The two dose channels disagree; the delivered dose is uncertain.",
       "The physicist reconciles the channels from the record and the unit's counters before any continuation.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_P,)),
    _d(InterlockId.CUMULATIVE_DOSE_EXCEEDS_PRESCRIPTION, "Cumulative dose would exceed prescription",
       "dose delivered so far plus dose still preset exceeds the prescription (or the hard ceiling)",
       "Delivering on would exceed the prescribed dose.",
       "Do not deliver more; physician and physicist review the record and the plan.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_P, _D)),
    _d(InterlockId.RECORD_STORE_UNAVAILABLE, "Record store unavailable",
       "the record store does not accept writes (no beam that cannot be recorded)",
       "The record store is unavailable; a treatment cannot start.",
       "Restore the record store connection (network, database server); a running beam continues, recorded "
       "in the local journal.",
       Latching.SELF_CLEARING, Effect.BLOCKS_START),
    _d(InterlockId.JOURNAL_WRITE_FAILURE, "Journal write failure",
       "appending or syncing the local treatment journal failed",
       "The local treatment journal cannot be written; delivery cannot be recorded.",
       "Free disk space or fix the journal directory's permissions; service clears after a test write.",
       Latching.LATCHED, Effect.TERMINATES_BEAM, (_P, _S)),
)

REGISTRY: Mapping[InterlockId, InterlockDefinition] = {d.id: d for d in _DEFINITIONS}
if set(REGISTRY) != set(InterlockId):  # pragma: no cover - a programming error, caught at import
    raise RuntimeError("every InterlockId needs exactly one definition in the registry")


@dataclass(frozen=True)
class InterlockStatus:
    """What the UI shows for one interlock: never just a code."""

    id: InterlockId
    title: str
    active: bool
    condition_present: bool
    latching: Latching
    effect: Effect
    message: str
    remediation: str
    detail: str                      # the specific values, e.g. "mounted 3.5 cm, plan 3.0 cm"
    clearable_by: tuple[str, ...]
    tripped_at_s: float | None       # monotonic time it last tripped

    @property
    def text(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.title}: {self.message}{detail} {self.remediation}"


@dataclass(frozen=True)
class ClearResult:
    ok: bool
    reason: str


class InterlockBank:
    """The live state of every interlock. Owned by one thread (the supervisor's); not thread-safe."""

    def __init__(self, registry: Mapping[InterlockId, InterlockDefinition] = REGISTRY) -> None:
        self._registry = registry
        self._present: dict[InterlockId, bool] = {i: False for i in registry}
        self._latched: dict[InterlockId, bool] = {i: False for i in registry}
        self._detail: dict[InterlockId, str] = {i: "" for i in registry}
        self._tripped_at: dict[InterlockId, float | None] = {i: None for i in registry}

    def update(self, interlock: InterlockId, condition_present: bool, *, now_s: float, detail: str = "") -> bool:
        """Report whether the condition is present now. Returns True if this update newly tripped it."""
        definition = self._registry[interlock]
        was_active = self.is_active(interlock)
        self._present[interlock] = bool(condition_present)
        if condition_present:
            self._detail[interlock] = detail
            if definition.latching is Latching.LATCHED:
                self._latched[interlock] = True
            if not was_active:
                self._tripped_at[interlock] = now_s
        elif definition.latching is Latching.SELF_CLEARING:
            self._detail[interlock] = ""
        return condition_present and not was_active

    def trip(self, interlock: InterlockId, *, now_s: float, detail: str = "") -> bool:
        """An event that is over as soon as it happened (e.g. journal write failed): present, then gone."""
        newly = self.update(interlock, True, now_s=now_s, detail=detail)
        if self._registry[interlock].latching is Latching.LATCHED:
            self._present[interlock] = False
        return newly

    def clear(self, interlock: InterlockId, *, role: ClearRole | str, acknowledgement: str) -> ClearResult:
        """A person clears a latched interlock. Refused (with the reason) when not allowed."""
        definition = self._registry[interlock]
        try:
            role = ClearRole(role)
        except ValueError:
            return ClearResult(False, f"unknown role {role!r}: sign in as one of "
                                      f"{', '.join(r.value for r in ClearRole)}")
        if definition.latching is Latching.SELF_CLEARING:
            return ClearResult(False, f"'{definition.title}' clears itself when its cause is removed: "
                                      f"{definition.remediation}")
        if not self._latched[interlock]:
            return ClearResult(False, f"'{definition.title}' is not active: nothing to clear")
        if role not in definition.clearable_by:
            allowed = " or ".join(sorted(r.value for r in definition.clearable_by))
            return ClearResult(False, f"'{definition.title}' may be cleared only by the {allowed}; "
                                      f"a {role.value} cannot clear it")
        if self._present[interlock]:
            return ClearResult(False, f"'{definition.title}' cannot be cleared while its cause is still present "
                                      f"({self._detail[interlock] or definition.condition}): "
                                      f"{definition.remediation}")
        if not acknowledgement or not acknowledgement.strip():
            return ClearResult(False, f"clearing '{definition.title}' needs a written acknowledgement of what "
                                      "was checked")
        self._latched[interlock] = False
        self._detail[interlock] = ""
        return ClearResult(True, f"'{definition.title}' cleared by the {role.value}: {acknowledgement.strip()}")

    def is_active(self, interlock: InterlockId) -> bool:
        return self._present[interlock] or self._latched[interlock]

    def status(self, interlock: InterlockId) -> InterlockStatus:
        d = self._registry[interlock]
        return InterlockStatus(
            id=interlock, title=d.title, active=self.is_active(interlock),
            condition_present=self._present[interlock], latching=d.latching, effect=d.effect,
            message=d.message, remediation=d.remediation, detail=self._detail[interlock],
            clearable_by=tuple(sorted(r.value for r in d.clearable_by)),
            tripped_at_s=self._tripped_at[interlock])

    def statuses(self) -> tuple[InterlockStatus, ...]:
        return tuple(self.status(i) for i in self._registry)

    def active(self, effect: Effect | None = None) -> tuple[InterlockStatus, ...]:
        """Active interlocks; with `effect=TERMINATES_BEAM` only those that stop a running beam."""
        return tuple(s for s in self.statuses()
                     if s.active and (effect is None or s.effect is effect))

    def start_blockers(self) -> tuple[InterlockStatus, ...]:
        """Every active interlock blocks arming and beam on, whatever its effect during beam."""
        return self.active()


# --------------------------------------------------------------------------------------------
# Conditions: pure functions from device status and delivery figures to interlock conditions.
# The supervisor feeds their results to InterlockBank.update(); tests feed them fake statuses.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    interlock: InterlockId
    present: bool
    detail: str = ""


def device_conditions(status: XrsStatus, *, plan_applicator_cm: float | None, plan_source_serial: str | None,
                      device_source_serial: str) -> tuple[Condition, ...]:
    """Conditions read from one status reply of the X-ray unit."""
    mounted = status.applicator_diameter_cm
    applicator_wrong = plan_applicator_cm is not None and mounted != plan_applicator_cm
    mounted_text = "no applicator sensed" if mounted is None else f"mounted {mounted:.1f} cm"
    open_bits = status.interlocks & (XrsInterlock.EXTERNAL_INTERLOCK_OPEN | XrsInterlock.KEY_SWITCH_OFF
                                     | XrsInterlock.NO_APPLICATOR)
    estop = bool(status.interlocks & XrsInterlock.EMERGENCY_STOP) or bool(status.faults & XrsFault.EMERGENCY_STOP)
    faults = status.faults & ~XrsFault.EMERGENCY_STOP
    fault_present = bool(faults) or status.state is XrsState.FAULT
    serial_wrong = plan_source_serial is not None and device_source_serial != plan_source_serial
    return (
        Condition(InterlockId.APPLICATOR_MISMATCH, applicator_wrong,
                  f"{mounted_text}, plan requires {plan_applicator_cm} cm" if applicator_wrong else ""),
        Condition(InterlockId.DEVICE_INTERLOCK_OPEN, bool(open_bits), _flag_names(open_bits)),
        Condition(InterlockId.EMERGENCY_STOP, estop, "emergency stop reported by the unit" if estop else ""),
        Condition(InterlockId.DEVICE_FAULT, fault_present,
                  (_flag_names(faults) or f"unit state {status.state.value}") if fault_present else ""),
        Condition(InterlockId.SOURCE_SERIAL_MISMATCH, serial_wrong,
                  f"connected {device_source_serial}, plan and calibration {plan_source_serial}" if serial_wrong else ""),
    )


def _flag_names(flags: enum.Flag) -> str:
    return ", ".join(f.name.lower().replace("_", " ") for f in type(flags) if f.value and f in flags)


def beam_conditions(status: XrsStatus, *, config: SiteConfig, since_beam_start_s: float,
                    expected_rate_gy_per_s: float, measured_rate_gy_per_s: float | None,
                    primary_dose_gy: float, secondary_dose_gy: float,
                    primary_dose_at_request_gy: float | None = None) -> tuple[Condition, ...]:
    """Conditions checked while the beam is on. Technique and dose rate only after the ramp-up time.

    `primary_dose_gy`: console timer × planned rate for this delivery when the status reply was evaluated;
    `primary_dose_at_request_gy`: the same when the status was requested. The unit sampled its IRM somewhere
    in between (a retransmitted request is answered from the unit's cache), so the channels disagree only by
    the distance from the secondary to that interval: a late reply is not a disagreement.
    `secondary_dose_gy`: the IRM's.
    """
    d = config.delivery
    # technique and dose rate mean something only while the unit irradiates at its setpoint: once the unit
    # has switched HV off by itself (its fault or interlock), 0 kV / 0 µA would only raise duplicate alarms
    irradiating = status.hv_on and status.state is XrsState.BEAM_ON
    settled = since_beam_start_s >= d.ramp_up_s and irradiating
    kv_dev = abs(status.kv - d.nominal_kv) / d.nominal_kv
    ua_dev = abs(status.ua - d.nominal_ua) / d.nominal_ua
    kv_bad = settled and kv_dev > d.kv_tolerance_fraction + 1e-12
    ua_bad = settled and ua_dev > d.ua_tolerance_fraction + 1e-12
    rate_bad, rate_detail = False, ""
    if settled and measured_rate_gy_per_s is not None:
        rate_dev = abs(measured_rate_gy_per_s - expected_rate_gy_per_s) / expected_rate_gy_per_s
        rate_bad = rate_dev > d.dose_rate_tolerance_fraction + 1e-12
        rate_detail = (f"measured {measured_rate_gy_per_s * 60:.3f} Gy/min, expected "
                       f"{expected_rate_gy_per_s * 60:.3f} Gy/min ({rate_dev * 100:.1f} %)") if rate_bad else ""
    earliest_gy = primary_dose_gy if primary_dose_at_request_gy is None else min(primary_dose_at_request_gy,
                                                                                 primary_dose_gy)
    gap_gy = max(earliest_gy - secondary_dose_gy, secondary_dose_gy - primary_dose_gy, 0.0)
    allowed_gy = max(d.channel_agreement_fraction * max(primary_dose_gy, secondary_dose_gy),
                     d.channel_agreement_floor_gy)
    channels_bad = gap_gy > allowed_gy
    return (
        Condition(InterlockId.KV_OUT_OF_TOLERANCE, kv_bad,
                  f"{status.kv:.2f} kV, nominal {d.nominal_kv:g} kV ± {d.kv_tolerance_fraction * 100:g} %" if kv_bad else ""),
        Condition(InterlockId.UA_OUT_OF_TOLERANCE, ua_bad,
                  f"{status.ua:.2f} µA, nominal {d.nominal_ua:g} µA ± {d.ua_tolerance_fraction * 100:g} %" if ua_bad else ""),
        Condition(InterlockId.DOSE_RATE_OUT_OF_TOLERANCE, rate_bad, rate_detail),
        Condition(InterlockId.DOSE_CHANNELS_DISAGREE, channels_bad,
                  f"primary {primary_dose_gy:.3f} Gy, secondary (IRM) {secondary_dose_gy:.3f} Gy, "
                  f"allowed difference {allowed_gy:.3f} Gy" if channels_bad else ""),
    )


def cumulative_dose_condition(*, prescription_dose_gy: float, previously_delivered_gy: float,
                              delivered_now_gy: float, still_preset_gy: float, config: SiteConfig) -> Condition:
    """Would the delivered total plus what is still preset exceed the prescription (or the ceiling)?

    `delivered_now_gy` is the larger of the two channels for this delivery. Slack: the record/hardware
    agreement fraction (0.5 %), so the normal end of a delivery does not trip it.
    """
    limit_gy = min(prescription_dose_gy, config.prescription.hard_ceiling_dose_gy)
    total_gy = previously_delivered_gy + delivered_now_gy + max(0.0, still_preset_gy)
    bad = total_gy > limit_gy * (1 + config.delivery.record_hardware_agreement_fraction)
    return Condition(InterlockId.CUMULATIVE_DOSE_EXCEEDS_PRESCRIPTION, bad,
                     f"{previously_delivered_gy:.3f} Gy before + {delivered_now_gy:.3f} Gy now + "
                     f"{still_preset_gy:.3f} Gy preset = {total_gy:.3f} Gy > {limit_gy:g} Gy" if bad else "")


def render_markdown(registry: Mapping[InterlockId, InterlockDefinition] = REGISTRY) -> str:
    """docs/interlocks.md, generated from the registry (a test checks the file matches)."""
    lines = [
        "# Interlocks",
        "",
        "Generated from `orconsole/interlocks.py` by `python -m orconsole.interlocks > docs/interlocks.md`;",
        "a test fails when this file and the registry differ. Every active interlock blocks arming and beam on;",
        "those marked *terminates beam* also stop a running beam (IEC termination: the remainder needs a",
        "continuation). A latched interlock stays active after its cause is gone until a person in one of the",
        "listed roles clears it with a written acknowledgement; it cannot be cleared while the cause is present.",
        "",
        "| id | title | condition | message | remediation | latching | effect | cleared by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in registry.values():
        who = ", ".join(sorted(r.value for r in d.clearable_by)) or "(clears itself)"
        lines.append(f"| `{d.id.value}` | {d.title} | {d.condition} | {d.message} | {d.remediation} | "
                     f"{d.latching.value} | {d.effect.value} | {who} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
