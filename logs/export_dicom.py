"""DICOM RT Beams Treatment Record (SOP class 1.2.840.10008.5.1.4.1.1.481.4) from a signed delivery
record: one Treatment Session Beam item per beam session, Primary Dosimeter Unit MINUTE, Treatment
Termination Status NORMAL/OPERATOR/MACHINE/UNKNOWN, Treatment Delivery Type TREATMENT/CONTINUATION.

Never exports an unsigned or damaged record: it is verified first. UIDs derive from the record id and
content hash, so exporting the same record twice gives the same SOP Instance UID.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from logs.records import DeliveryRecord, TerminationCause
from logs.store import Store, StoreError

RT_BEAMS_TREATMENT_RECORD_STORAGE = "1.2.840.10008.5.1.4.1.1.481.4"

_TERMINATION_CODE = {  # Treatment Termination Code (SH, 16 chars max): our cause, machine-readable
    TerminationCause.PRESET_TIME_REACHED: "PRESET_TIME", TerminationCause.MONITOR_PRESET_REACHED: "PRESET_MONITOR",
    TerminationCause.OPERATOR_STOP: "OPERATOR_STOP", TerminationCause.INTERLOCK: "INTERLOCK",
    TerminationCause.DEVICE_FAULT: "DEVICE_FAULT", TerminationCause.CONSOLE_FAULT: "CONSOLE_FAULT",
    TerminationCause.UNKNOWN: "UNKNOWN",
}


def _ds(value: float, decimals: int = 4) -> str:
    text = f"{value:.{decimals}f}"
    return text[:16]


def _da_tm(utc: str) -> tuple[str, str]:
    t = datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S.%f")


def _pn(full_name: str) -> str:
    """'Example, Erika (fictitious)' -> 'Example^Erika (fictitious)' (family^given)."""
    if "," in full_name:
        family, given = full_name.split(",", 1)
        return f"{family.strip()}^{given.strip()}"
    parts = full_name.split()
    return f"{parts[-1]}^{' '.join(parts[:-1])}" if len(parts) > 1 else full_name


def build_dataset(record: DeliveryRecord, *, content_hash: str, operators: list[str],
                  institution: str = "", trial_protocol_id: str = "IORT-BM") -> Dataset:
    """The RT Beams Treatment Record dataset (no file meta). operators: printed names of 'performed delivery' signers."""
    def uid(*parts: str) -> str:
        return generate_uid(entropy_srcs=[record.record_id, content_hash, *parts])

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_BEAMS_TREATMENT_RECORD_STORAGE
    ds.SOPInstanceUID = uid("sop")
    first_on = record.sessions[0].beam_on_utc if record.sessions else record.created_utc
    da, tm = _da_tm(first_on)
    ds.InstanceCreationDate, ds.InstanceCreationTime = _da_tm(record.created_utc)
    # Patient
    ds.PatientName = _pn(record.patient.full_name)
    ds.PatientID = record.patient.medical_record_number
    ds.PatientBirthDate = record.patient.date_of_birth.replace("-", "")
    ds.PatientSex = ""
    # Clinical Trial Subject
    ds.ClinicalTrialSponsorName = ""
    ds.ClinicalTrialProtocolID = trial_protocol_id
    ds.ClinicalTrialProtocolName = ""
    ds.ClinicalTrialSiteID = ""
    ds.ClinicalTrialSiteName = institution
    ds.ClinicalTrialSubjectID = record.patient.trial_subject_id
    # General Study / RT Series / Equipment
    ds.StudyInstanceUID = uid("study")
    ds.StudyDate, ds.StudyTime = da, tm
    ds.ReferringPhysicianName = ""
    ds.StudyID = record.plan.plan_id[:16]
    ds.AccessionNumber = ""
    ds.Modality = "RTRECORD"
    ds.SeriesInstanceUID = uid("series")
    ds.SeriesNumber = 1
    ds.SeriesDescription = "IORT delivery record"
    source = next((d for d in record.devices if d.serial_number == record.plan.source_serial), None)
    ds.Manufacturer = (source.manufacturer if source else "") or "ORConsole"
    ds.ManufacturerModelName = source.model if source else ""
    ds.DeviceSerialNumber = record.plan.source_serial
    ds.SoftwareVersions = [f"ORConsole {record.software_version}"] + \
        [f"{d.role} {d.firmware_version}" for d in record.devices if d.firmware_version]
    ds.StationName = record.console.hostname[:16]
    ds.InstitutionName = institution
    ds.OperatorsName = [_pn(n) for n in operators]
    # RT General Treatment Record
    ds.InstanceNumber = 1
    ds.TreatmentDate, ds.TreatmentTime = da, tm
    ds.ReferencedRTPlanSequence = Sequence()  # type 2: the plan lives in ORConsole, not as an RT Plan instance
    # Treatment Machine Record
    machine = Dataset()
    machine.TreatmentMachineName = (record.console.room or "IORT")[:16]
    machine.Manufacturer = ds.Manufacturer
    machine.InstitutionName = institution
    machine.ManufacturerModelName = ds.ManufacturerModelName
    machine.DeviceSerialNumber = record.plan.source_serial
    ds.TreatmentMachineSequence = Sequence([machine])
    # Calculated and measured dose references: applicator surface, timer channel and IRM channel
    calc = Dataset()
    calc.CalculatedDoseReferenceNumber = 1
    calc.CalculatedDoseReferenceDescription = (f"{record.plan.prescription_point}, {record.plan.applicator_diameter_cm:.1f} cm "
                                               "sphere; primary channel (timer x dose rate x k_out)")
    calc.CalculatedDoseReferenceDoseValue = _ds(record.totals.dose_gy.primary_timer_gy if record.totals else 0.0)
    ds.CalculatedDoseReferenceSequence = Sequence([calc])
    meas = Dataset()
    meas.MeasuredDoseReferenceNumber = 1
    meas.MeasuredDoseDescription = "secondary channel: internal radiation monitor (IRM) of the source"
    meas.MeasuredDoseType = "ION_CHAMBER"
    meas.MeasuredDoseValue = _ds(record.totals.dose_gy.secondary_irm_gy if record.totals else 0.0)
    ds.MeasuredDoseReferenceSequence = Sequence([meas])
    # RT Beams Session Record
    ds.PrimaryDosimeterUnit = "MINUTE"
    ds.ReferencedFractionGroupNumber = 1
    ds.NumberOfFractionsPlanned = record.plan.fractions
    items = []
    cumulative_primary = cumulative_irm = 0.0
    for s in record.sessions:
        b = Dataset()
        b.ReferencedBeamNumber = 1
        b.BeamName = f"IORT {record.plan.applicator_diameter_cm:.1f} cm"[:64]
        b.BeamDescription = f"50 kV spherical applicator, session {s.index}"
        b.BeamType = "STATIC"
        b.RadiationType = "PHOTON"
        b.TreatmentDeliveryType = s.delivery_type
        b.NumberOfWedges = 0
        b.NumberOfCompensators = 0
        b.NumberOfBoli = 0
        b.NumberOfBlocks = 0
        app = Dataset()
        app.ApplicatorID = (record.plan.applicator_id or f"SPH{record.plan.applicator_diameter_cm:.1f}")[:16]
        app.ApplicatorType = "INTRAOPERATIVE"
        app.ApplicatorDescription = f"spherical applicator, {record.plan.applicator_diameter_cm:.1f} cm diameter"
        b.ApplicatorSequence = Sequence([app])
        b.CurrentFractionNumber = 1
        b.TreatmentTerminationStatus = s.termination_cause.dicom_status
        b.TreatmentTerminationCode = _TERMINATION_CODE[s.termination_cause]
        b.TreatmentVerificationStatus = "VERIFIED"
        b.SpecifiedPrimaryMeterset = _ds(s.preset_time_s / 60.0)
        b.DeliveredPrimaryMeterset = _ds(s.console_beam_on_s / 60.0)
        b.SpecifiedSecondaryMeterset = _ds(s.preset_time_s / 60.0)
        b.DeliveredSecondaryMeterset = _ds(s.device_beam_on_s / 60.0)
        b.SpecifiedTreatmentTime = _ds(s.preset_time_s, 1)
        b.DeliveredTreatmentTime = _ds(s.console_beam_on_s, 1)
        b.NumberOfControlPoints = 2
        cps = []
        for idx, (utc, meterset) in enumerate(((s.beam_on_utc, 0.0), (s.beam_off_utc, s.console_beam_on_s / 60.0))):
            cp = Dataset()
            cp.ReferencedControlPointIndex = idx
            cp.TreatmentControlPointDate, cp.TreatmentControlPointTime = _da_tm(utc)
            cp.SpecifiedMeterset = _ds(0.0 if idx == 0 else s.preset_time_s / 60.0)
            cp.DeliveredMeterset = _ds(meterset)
            cp.NominalBeamEnergy = "0.05"  # MV: 50 kV
            if idx == 1:
                cumulative_primary += s.dose_gy.primary_timer_gy
                cumulative_irm += s.dose_gy.secondary_irm_gy
                rc = Dataset()
                rc.ReferencedCalculatedDoseReferenceNumber = 1
                rc.CalculatedDoseReferenceDoseValue = _ds(cumulative_primary)
                cp.ReferencedCalculatedDoseReferenceSequence = Sequence([rc])
                rm = Dataset()
                rm.ReferencedMeasuredDoseReferenceNumber = 1
                rm.MeasuredDoseValue = _ds(cumulative_irm)
                cp.ReferencedMeasuredDoseReferenceSequence = Sequence([rm])
            cps.append(cp)
        b.ControlPointDeliverySequence = Sequence(cps)
        items.append(b)
    ds.TreatmentSessionBeamSequence = Sequence(items)
    # Treatment Summary Record
    ds.CurrentTreatmentStatus = "TREATING" if record.completion == "in progress" else (
        "POST_TREATMENT" if record.completion == "complete" else "OFF_TREATMENT")
    ds.TreatmentStatusComment = (f"ORConsole record {record.record_id}; content sha256 {content_hash}")[:1024]
    if record.sessions:
        ds.FirstTreatmentDate = _da_tm(record.sessions[0].beam_on_utc)[0]
        ds.MostRecentTreatmentDate = _da_tm(record.sessions[-1].beam_off_utc)[0]
    return ds


def export_dicom(store: Store, record_id: str, path: Path | str, *, exported_by: str, institution: str = "") -> Path:
    """Verify the stored record, write it as a DICOM Part 10 file, audit the export."""
    from logs.verify import verify_stored

    verdict = verify_stored(store, record_id)
    if not verdict.ok:
        raise StoreError(f"record {record_id} does not verify and is not exported: " + "; ".join(verdict.problems or
                         ["a signature does not verify"]) + ". Run 'orconsole records verify' for details.")
    doc = store.get_document(record_id)
    record = DeliveryRecord.model_validate(doc.data)
    operators = [s.printed_name for s in store.signatures_for(record_id) if s.meaning == "performed delivery"]
    ds = build_dataset(record, content_hash=doc.content_hash, operators=operators, institution=institution)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(str(path), enforce_file_format=True)
    data = Path(path).read_bytes()
    store.audit(exported_by, "export", {"record_id": record_id, "format": "dicom", "file": str(path),
                                        "sop_instance_uid": ds.SOPInstanceUID, "sha256": hashlib.sha256(data).hexdigest()})
    return Path(path)
