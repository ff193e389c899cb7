"""DICOM RT Beams Treatment Record export and C-STORE to a real DICOM receiver on loopback."""
from __future__ import annotations

import socket

import pytest
from pydicom import dcmread

from logs.dicom_send import send_dicom
from logs.export_dicom import RT_BEAMS_TREATMENT_RECORD_STORAGE, export_dicom
from logs.store import StoreError
from tests.logs.conftest import drop_protection
from tests.logs.helpers import make_cast, signed_record


@pytest.fixture
def exported(tmp_path):
    from logs.store import Store

    store = Store(f"sqlite:///{tmp_path / 'd.sqlite3'}")
    cast = make_cast(store)
    record_id = signed_record(store, cast)
    path = export_dicom(store, record_id, tmp_path / "record.dcm", exported_by="pia", institution="Example Hospital")
    yield store, record_id, path
    store.close()


def test_dicom_export_is_an_rt_beams_treatment_record_with_minutes_and_statuses(exported):
    store, record_id, path = exported
    ds = dcmread(str(path))
    assert ds.SOPClassUID == RT_BEAMS_TREATMENT_RECORD_STORAGE == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "RTRECORD"
    assert ds.PrimaryDosimeterUnit == "MINUTE"
    assert ds.PatientID == "EX-000123" and ds.ClinicalTrialSubjectID == "IORT-BM-007"
    assert str(ds.PatientName) == "Example^Erika (fictitious)"
    beams = ds.TreatmentSessionBeamSequence
    assert [b.TreatmentDeliveryType for b in beams] == ["TREATMENT", "CONTINUATION"]
    assert [b.TreatmentTerminationStatus for b in beams] == ["MACHINE", "NORMAL"]
    assert [b.TreatmentTerminationCode for b in beams] == ["INTERLOCK", "PRESET_TIME"]
    assert float(beams[0].DeliveredPrimaryMeterset) == pytest.approx(522.5 / 60, abs=1e-4)
    assert float(beams[1].DeliveredTreatmentTime) == pytest.approx(856.8)
    assert float(ds.CalculatedDoseReferenceSequence[0].CalculatedDoseReferenceDoseValue) == pytest.approx(20.0)
    assert ds["OperatorsName"].VM == 1 and str(ds.OperatorsName) == "Therapist^Tom"
    assert beams[0].ApplicatorSequence[0].ApplicatorType == "INTRAOPERATIVE"
    assert "export" in [e.action for e in store.audit_entries()]


def test_dicom_export_is_deterministic_for_the_same_record(exported, tmp_path):
    store, record_id, path = exported
    again = export_dicom(store, record_id, tmp_path / "again.dcm", exported_by="pia")
    assert dcmread(str(again)).SOPInstanceUID == dcmread(str(path)).SOPInstanceUID


def test_dicom_export_of_a_tampered_record_is_refused(exported, tmp_path):
    from sqlalchemy import text

    store, record_id, _ = exported
    drop_protection(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE documents SET content=replace(content, '7.576300', '5.576300') WHERE doc_id=:d"),
                     {"d": record_id})
    with pytest.raises(StoreError, match="does not verify and is not exported"):
        export_dicom(store, record_id, tmp_path / "bad.dcm", exported_by="pia")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_c_store_to_a_dicom_receiver_on_loopback_succeeds(exported):
    from pynetdicom import AE, evt

    _, _, path = exported
    received = []

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    scp = AE(ae_title="TEST_OIS")
    scp.add_supported_context(RT_BEAMS_TREATMENT_RECORD_STORAGE)
    port = _free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        result = send_dicom(path, host="127.0.0.1", port=port, called_aet="TEST_OIS", timeout_s=10)
    finally:
        server.shutdown()
    assert result.ok, result.message
    assert len(received) == 1
    assert received[0].SOPClassUID == RT_BEAMS_TREATMENT_RECORD_STORAGE
    assert received[0].TreatmentSessionBeamSequence[1].TreatmentDeliveryType == "CONTINUATION"


def test_c_store_to_nobody_reports_what_to_check(exported):
    _, _, path = exported
    result = send_dicom(path, host="127.0.0.1", port=_free_port(), called_aet="NOBODY", timeout_s=3)
    assert not result.ok and "could not open a DICOM association" in result.message
