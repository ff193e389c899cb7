"""Example delivery records (fictitious patients) for tests, benchmarks, docs and demos.

Never used for a real patient: every name here is invented and marked as an example.
"""
from __future__ import annotations

import hashlib

from logs.records import BeamSession, CalibrationUsed, ConsoleIdentity, DeliveryRecord, DeviceIdentity, \
    DoseByChannel, InterlockEvent, Interruption, PatientIdentity, PlanSummary, QaUsed, TerminationCause


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def example_record(*, installation_key_id: str = "ed25519:example", mrn: str = "EX-000123",
                   software_version: str = "0.1.0") -> DeliveryRecord:
    """A draft record for a 3.0 cm applicator, 20 Gy at the surface, no sessions yet."""
    return DeliveryRecord(
        treatment_date="2026-11-26",
        patient=PatientIdentity(medical_record_number=mrn, full_name="Example, Erika (fictitious)",
                                date_of_birth="1961-04-12", trial_subject_id="IORT-BM-007",
                                identity_verified_by=["wristband scan", "stated name and date of birth"]),
        plan=PlanSummary(plan_id="PLAN-007-1", plan_hash=_h("plan"), site="left frontal resection cavity",
                         lesion_label="metastasis 1 (NSCLC)", prescription_gy=20.0, dose_per_fraction_gy=20.0,
                         applicator_diameter_cm=3.0, applicator_id="SPH-30-0042", source_serial="XRS-5521",
                         surface_dose_rate_gy_per_min=0.87, planned_time_s=1379.3, irm_preset_counts=1379300),
        calibration=CalibrationUsed(calibration_digest=_h("calibration"), source_serial="XRS-5521",
                                    calibration_date="2026-09-01", calibrated_by="Dr. Pia Physicist"),
        qa=QaUsed(qa_id="QA-2026-11-26-XRS-5521", qa_hash=_h("qa"), performed_on="2026-11-26", k_out=1.0042),
        devices=[DeviceIdentity(role="x-ray source", manufacturer="ExampleMed", model="XRS-50",
                                serial_number="XRS-5521", firmware_version="4.2.1"),
                 DeviceIdentity(role="electrometer", manufacturer="PTW", model="UNIDOS Tango",
                                serial_number="T10023-0815", firmware_version="1.6")],
        software_version=software_version,
        console=ConsoleIdentity(installation_key_id=installation_key_id, hostname="or-console-2", room="OR 2"),
    )


def example_sessions() -> tuple[list[BeamSession], list[Interruption], list[InterlockEvent]]:
    """An interrupted treatment: session 1 stopped by an interlock, session 2 a continuation."""
    s1 = BeamSession(index=1, delivery_type="TREATMENT", preset_time_s=1379.3,
                     beam_on_utc="2026-11-26T09:12:03.120000Z", beam_off_utc="2026-11-26T09:20:45.620000Z",
                     monotonic_start_s=81234.5, monotonic_stop_s=81757.0, console_beam_on_s=522.5,
                     device_beam_on_s=522.4, dose_gy=DoseByChannel(primary_timer_gy=7.5763, secondary_irm_gy=7.5701),
                     irm_counts=522400, termination_cause=TerminationCause.INTERLOCK,
                     termination_detail="heartbeat from the control unit lost for 1.2 s", raw_device_log_sha256=_h("log1"))
    s2 = BeamSession(index=2, delivery_type="CONTINUATION", preset_time_s=856.8,
                     beam_on_utc="2026-11-26T09:24:10.000000Z", beam_off_utc="2026-11-26T09:38:26.800000Z",
                     monotonic_start_s=81961.9, monotonic_stop_s=82818.7, console_beam_on_s=856.8,
                     device_beam_on_s=856.8, dose_gy=DoseByChannel(primary_timer_gy=12.4237, secondary_irm_gy=12.4301),
                     irm_counts=856900, termination_cause=TerminationCause.PRESET_TIME_REACHED,
                     raw_device_log_sha256=_h("log2"))
    interruptions = [Interruption(session_index=1, utc="2026-11-26T09:20:45.620000Z", monotonic_s=81757.0,
                                  reason="heartbeat lost: beam stopped by interlock; link restored, remainder delivered "
                                         "as a continuation", initiated_by="interlock", delivered_so_far_gy=7.5763)]
    interlocks = [InterlockEvent(utc="2026-11-26T09:20:45.500000Z", monotonic_s=81756.9, session_index=1,
                                 interlock="heartbeat watchdog", state="raised", detail="no heartbeat for 1.2 s"),
                  InterlockEvent(utc="2026-11-26T09:22:01.000000Z", monotonic_s=81832.4, session_index=1,
                                 interlock="heartbeat watchdog", state="cleared", detail="link re-established")]
    return [s1, s2], interruptions, interlocks
