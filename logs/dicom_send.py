"""Send a DICOM file to the oncology information system by C-STORE (pynetdicom).

Reports the outcome in words (accepted, rejected with status, no association); never retries
silently and never deletes the local file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread


@dataclass(frozen=True)
class SendResult:
    ok: bool
    status: int | None
    message: str


def send_dicom(path: Path | str, *, host: str, port: int, called_aet: str, calling_aet: str = "ORCONSOLE",
               timeout_s: float = 30.0) -> SendResult:
    from pynetdicom import AE

    ds = dcmread(str(path))
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        return SendResult(False, None, f"could not open a DICOM association with {called_aet}@{host}:{port}: check "
                                       "address, port and AE titles; the record stays stored here")
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        return SendResult(False, None, f"{called_aet}@{host}:{port} did not answer the C-STORE (timeout or abort)")
    if code == 0x0000:
        return SendResult(True, code, f"sent to {called_aet}@{host}:{port}: accepted (status 0x0000)")
    if code in (0xB000, 0xB007, 0xB006):
        return SendResult(True, code, f"sent to {called_aet}@{host}:{port}: accepted with warning status 0x{code:04X}")
    return SendResult(False, code, f"{called_aet}@{host}:{port} refused the record (status 0x{code:04X}): "
                                   "ask the OIS administrator; the record stays stored here")
