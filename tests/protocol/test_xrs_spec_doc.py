"""docs/protocol/xrs-link.md stays true: every message type, error code and status field of the code is in it."""
import re
from pathlib import Path

import pytest

from protocol import xrs

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol" / "xrs-link.md").read_text(encoding="utf-8")


def table_rows(heading: str) -> list[list[str]]:
    section = DOC.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows[1:]  # without the header row


@pytest.mark.parametrize("message_type", list(xrs.MessageType), ids=lambda t: t.name)
def test_every_message_type_is_in_the_spec_with_its_code(message_type):
    rows = table_rows("### Requests") + table_rows("### Replies")
    assert [f"0x{message_type.value:02X}", message_type.name] in [row[:2] for row in rows]


@pytest.mark.parametrize("code", list(xrs.ErrorCode), ids=lambda c: c.name)
def test_every_nak_error_code_is_in_the_spec(code):
    assert [str(code.value), code.name] in [row[:2] for row in table_rows("## 7. NAK error codes")]


def test_status_reply_fields_are_listed_in_wire_order():
    documented = [row[0] for row in table_rows("`STATUS_REPLY` fields, in order:")]
    assert documented == [f.name for f in xrs.StatusReply.FIELDS]


def test_request_field_names_appear_in_the_request_table():
    rows = {row[1]: row[2] for row in table_rows("### Requests")}
    for type_, cls in xrs.MESSAGES.items():
        if type_ in xrs.REQUEST_TYPES:
            for field in cls.FIELDS:
                assert re.search(rf"\b{field.name}\b", rows[type_.name]), (type_.name, field.name)


def test_spec_states_the_crc_check_value_and_the_status_payload_size():
    assert "0xCBF43926" in DOC
    sample = xrs.StatusReply(xrs.DeviceState.READY, 0, 0, False, 0, 0, 0, xrs.InterlockBit(0), xrs.FaultBit(0), 0, 0,
                             xrs.BeamOffCauseCode.NONE, xrs.BeamOffReasonCode.NONE, False, bytes(32))
    assert f"({len(sample.encode_payload())} bytes)" in DOC
