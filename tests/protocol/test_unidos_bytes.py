"""Byte-exact pins of the UNIDOS current ASCII dialect: every command of the reference table, the
request bytes and the reply bytes, both directions (build/parse on the host, parse/format on the device).
"""
from __future__ import annotations

import pytest

from protocol import unidos as u
from protocol.unidos import (AutostartLevel, Flag, Identity, MeasuredValue, Quantity, Range, RangeMaximum,
                             RangeResolution, SelfTestCharge, SelfTestStatus, Status, ZeroCorrectionStatus,
                             request)

# The command column of shared/reference/unidos-tango.md, in its order.
REFERENCE_MNEMONICS = ["PTW", "SER", "MAC", "TOK", "S", "STA", "HLD", "RES", "INT", "IT", "CHR", "NUL", "NUS",
                       "AST", "ASS", "RGE", "HV", "UEL", "ASE", "ASR", "ASL", "MV", "MVM", "MVR", "TFI", "RDA",
                       "RDR", "RMR", "RIR", "RSR", "REC", "RHR"]

MV_MEAS = MeasuredValue(Status.MEAS, Quantity(2.6, -3, "m", "Gy"), Quantity(5.6, -9, "n", "Gy"), "min",
                        3000.0, 300.0, Flag.NONE)
MV_RES = MeasuredValue(Status.RES, Quantity(0.0, -12, "p", "C"), Quantity(0.0, -12, "p", "A"), "", 0.0, 200.0,
                       Flag.NONE)
MV_FLAGS = MeasuredValue(Status.ERROR, Quantity(301.2, -9, "n", "C"), Quantity(35.0, -9, "n", "A"), "",
                         12345.6, -300.0, Flag.OVERLOAD_CURRENT | Flag.OVERLOAD_CHARGE | Flag.HV_ERROR_CHARGE
                         | Flag.UNCALIBRATED)

# (request, request bytes, reply value, reply bytes) — the reply bytes are what our simulator sends
CASES = [
    (request("PTW"), b"PTW\r\n", Identity("UNIDOS Tango", "TM10052", "1.2.4", "A16"),
     b"PTW;UNIDOS Tango;TM10052;1.2.4;A16\r\n"),
    (request("SER"), b"SER\r\n", 123456, b"SER;123456\r\n"),
    (request("MAC"), b"MAC\r\n", "00-1a-2b-3c-4d-5e", b"MAC;00-1a-2b-3c-4d-5e\r\n"),
    (request("TOK"), b"TOK\r\n", True, b"TOK;true\r\n"),
    (request("TOK", 0), b"TOK;0\r\n", True, b"TOK;0;true\r\n"),
    (request("TOK", 1), b"TOK;1\r\n", True, b"TOK;1;true\r\n"),
    (request("TOK", 1), b"TOK;1\r\n", False, b"TOK;1;false\r\n"),
    (request("S"), b"S\r\n", Status.RES, b"S;RES\r\n"),
    (request("S"), b"S\r\n", Status.INTHLD, b"S;INTHLD\r\n"),
    (request("STA"), b"STA\r\n", None, b"STA\r\n"),
    (request("HLD"), b"HLD\r\n", None, b"HLD\r\n"),
    (request("RES"), b"RES\r\n", None, b"RES\r\n"),
    (request("INT"), b"INT\r\n", None, b"INT\r\n"),
    (request("IT"), b"IT\r\n", 60, b"IT;60\r\n"),
    (request("IT", 60), b"IT;60\r\n", 60, b"IT;60\r\n"),
    (request("IT", 3599999), b"IT;3599999\r\n", 3599999, b"IT;3599999\r\n"),
    (request("CHR"), b"CHR\r\n", None, b"CHR\r\n"),
    (request("NUL"), b"NUL\r\n", None, b"NUL\r\n"),
    (request("NUS"), b"NUS\r\n", ZeroCorrectionStatus("Passed", 0, 82000), b"NUS;Passed;0;82000\r\n"),
    (request("AST"), b"AST\r\n", None, b"AST\r\n"),
    (request("ASS"), b"ASS\r\n",
     SelfTestStatus("Passed", 0, 89000, (SelfTestCharge("Low", Quantity(136.6, -12, "p", "C")),
                                         SelfTestCharge("Med", Quantity(1.5, -9, "n", "C")),
                                         SelfTestCharge("High", Quantity(13.5, -9, "n", "C")))),
     b"ASS;Passed;0;89000;Low;136.6;E-12;p;C;Med;1.5;E-09;n;C;High;13.5;E-09;n;C\r\n"),
    (request("ASS"), b"ASS\r\n", SelfTestStatus("Running", 41000, 89000), b"ASS;Running;41000;89000\r\n"),
    (request("RGE"), b"RGE\r\n", Range.LOW, b"RGE;LOW\r\n"),
    (request("RGE", Range.VERY_LOW), b"RGE;VERY_LOW\r\n", Range.VERY_LOW, b"RGE;VERY_LOW\r\n"),
    (request("HV"), b"HV\r\n", 300, b"HV;300\r\n"),
    (request("HV", -400), b"HV;-400\r\n", -400, b"HV;-400\r\n"),
    (request("UEL"), b"UEL\r\n", False, b"UEL;false\r\n"),
    (request("UEL", True), b"UEL;true\r\n", True, b"UEL;true\r\n"),
    (request("ASE"), b"ASE\r\n", False, b"ASE;false\r\n"),
    (request("ASE", True), b"ASE;true\r\n", True, b"ASE;true\r\n"),
    (request("ASR"), b"ASR\r\n", False, b"ASR;false\r\n"),
    (request("ASR", False), b"ASR;false\r\n", False, b"ASR;false\r\n"),
    (request("ASL"), b"ASL\r\n", AutostartLevel.MEDIUM, b"ASL;MEDIUM\r\n"),
    (request("ASL", AutostartLevel.HIGH), b"ASL;HIGH\r\n", AutostartLevel.HIGH, b"ASL;HIGH\r\n"),
    (request("MV"), b"MV\r\n", MV_MEAS, b"MV;MEAS;2.6;E-03;m;Gy;5.6;E-09;n;Gy;min;3000.0;ms;300.0;V;0x0\r\n"),
    (request("MV"), b"MV\r\n", MV_RES, b"MV;RES;0.0;E-12;p;C;0.0;E-12;p;A;;0.0;ms;200.0;V;0x0\r\n"),
    (request("MV"), b"MV\r\n", MV_FLAGS,
     b"MV;ERROR;301.2;E-09;n;C;35.0;E-09;n;A;;12345.6;ms;-300.0;V;0x80B\r\n"),
    (request("MVM"), b"MVM\r\n", RangeMaximum(Range.MEDIUM, Quantity(1.65, -6, "µ", "Gy"), "min"),
     "MVM;MEDIUM;1.65;E-06;µ;Gy;min\r\n".encode()),
    (request("MVR"), b"MVR\r\n",
     RangeResolution(Range.MEDIUM, Quantity(0.5, -12, "p", "Gy"), Quantity(0.003, -9, "n", "Gy"), "min"),
     b"MVR;MEDIUM;0.5;E-12;p;Gy;0.003;E-09;n;Gy;min\r\n"),
    (request("TFI"), b"TFI\r\n", (), b"TFI;-\r\n"),
    (request("TFI"), b"TFI\r\n", ("E20", "STA"), b"TFI;E20;STA\r\n"),
    (request("RDA"), b"RDA\r\n", [{"guid": "d-1", "type": "34013"}],
     b'RDA;[{"guid":"d-1";"type":"34013"}]\r\n'),
    (request("RDR", "d-1"), b"RDR;d-1\r\n", {"guid": "d-1", "volume_cm3": 0.0025},
     b'RDR;d-1;{"guid":"d-1";"volume_cm3":0.0025}\r\n'),
    (request("RMR"), b"RMR\r\n", {"range": "LOW", "it_s": 60}, b'RMR;{"range":"LOW";"it_s":60}\r\n'),
    (request("RIR"), b"RIR\r\n", {"name": "UNIDOS Tango", "fw": "1.2.4"},
     b'RIR;{"name":"UNIDOS Tango";"fw":"1.2.4"}\r\n'),
    (request("RSR"), b"RSR\r\n", {"uel": True}, b'RSR;{"uel":true}\r\n'),
    (request("REC"), b"REC\r\n", {"dhcp": False, "port": 8123}, b'REC;{"dhcp":false;"port":8123}\r\n'),
    (request("RHR"), b"RHR\r\n", [], b"RHR;[]\r\n"),
]


def _case_id(case) -> str:
    return case[1].decode().strip()


def test_every_command_of_the_reference_table_is_in_the_codec_and_pinned_here():
    assert sorted(u.COMMANDS) == sorted(REFERENCE_MNEMONICS)
    assert {case[0].mnemonic for case in CASES} == set(REFERENCE_MNEMONICS)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_host_builds_the_exact_request_bytes(case):
    req, req_bytes, _, _ = case
    assert u.encode_request(req) == req_bytes


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_device_parses_the_exact_request_bytes(case):
    req, req_bytes, _, _ = case
    assert u.decode_request(req_bytes) == req


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_device_formats_the_exact_reply_bytes(case):
    req, _, value, reply_bytes = case
    assert u.encode_reply(req, value) == reply_bytes


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_host_parses_the_exact_reply_bytes(case):
    req, _, value, reply_bytes = case
    assert u.decode_reply(req, reply_bytes) == value


# The reference's own examples (their formatting differs from ours in places: `E-3`, ` 136.6`, `200`)
REFERENCE_EXAMPLES = [
    ("MV", "MV;MEAS;2.6;E-3;m;Gy;5.6;E-09;n;Gy;min;3000.0;ms;300.0;V;0x0", MV_MEAS),
    ("MV", "MV;RES;0.0;E-12;p;C;0.0;E-12;p;A;;0.0;ms;200;V;0x0", MV_RES),
    ("ASS", "ASS;Passed;0;89000;Low; 136.6;E-12;p;C;Med; 1.500;E-09;n;C;High; 13.50;E-09;n;C",
     CASES[20][2]),
    ("PTW", "PTW;UNIDOS Tango;TM10052;1.2.4;A16", Identity("UNIDOS Tango", "TM10052", "1.2.4", "A16")),
    ("SER", "SER;123456", 123456),
    ("NUS", "NUS;Passed;0;82000", ZeroCorrectionStatus("Passed", 0, 82000)),
    ("TFI", "TFI;-", ()),
]


@pytest.mark.parametrize("mnemonic,line,value", REFERENCE_EXAMPLES, ids=[e[0] for e in REFERENCE_EXAMPLES])
def test_the_reference_examples_decode(mnemonic, line, value):
    assert u.decode_reply(request(mnemonic), line.encode() + b"\r\n") == value


def test_mv_value_is_mantissa_times_ten_to_the_exponent():
    mv = u.decode_reply(request("MV"), b"MV;MEAS;2.6;E-3;m;Gy;5.6;E-09;n;Gy;min;3000.0;ms;300.0;V;0x0\r\n")
    assert mv.integrated.value == pytest.approx(2.6e-3, rel=1e-15)
    assert mv.rate.value == pytest.approx(5.6e-9, rel=1e-15)
    assert mv.time_ms == 3000.0 and mv.hv_v == 300.0 and mv.timebase == "min"


def test_mv_flags_are_decoded_bit_by_bit():
    mv = u.decode_reply(request("MV"), b"MV;MEAS;1.0;E-09;n;C;1.0;E-12;p;A;;1.0;ms;300;V;0xC\r\n")
    assert mv.flags == Flag.HV_ERROR_CURRENT | Flag.HV_ERROR_CHARGE


@pytest.mark.parametrize("code", sorted(u.ERROR_MEANINGS))
def test_error_replies_of_the_reference_table_map_to_their_meaning(code):
    assert u.encode_error(code) == code.encode() + b"\r\n"
    reply = u.decode_reply(request("STA"), code.encode() + b"\r\n")
    assert reply == u.ErrorReply(code)
    assert reply.meaning == u.ERROR_MEANINGS[code]


def test_error_meanings_match_the_reference_wording():
    assert u.ERROR_MEANINGS["E20"] == "no write permission"
    assert u.ERROR_MEANINGS["E03"] == "command not allowed at this moment"
    assert u.ERROR_MEANINGS["E16"] == "command too long"
    assert len(u.ERROR_MEANINGS) == 16


def test_an_error_reply_written_with_a_separator_is_read_as_the_same_code():
    assert u.decode_reply(request("HV", 300), b"E;20\r\n") == u.ErrorReply("E20")
    with pytest.raises(u.MnemonicMismatch):
        u.decode_reply(request("HV"), b"E;2\r\n")


def test_an_error_code_outside_the_table_is_still_an_error_reply():
    reply = u.decode_reply(request("MV"), b"E55\r\n")
    assert reply.code == "E55" and "not in the UNIDOS reference table" in reply.meaning


# ---- device side: which error each malformed request earns -----------------------------------

@pytest.mark.parametrize("line,error,code", [
    (b"XYZ\r\n", u.UnknownCommand, "E01"),
    (b"ptw\r\n", u.UnknownCommand, "E01"),
    (b"\r\n", u.UnknownCommand, "E01"),
    (b" PTW\r\n", u.UnknownCommand, "E01"),
    (b"PT\x00W\r\n", u.ForbiddenCharacter, "E01"),
    (b"PTW\rSER\r\n", u.ForbiddenCharacter, "E01"),
    (b"PTW\n", u.MissingTerminator, "E01"),
    (b"HV;\xb5\r\n", u.BadEncoding, "E01"),
    (b"HV;\r\n", u.EmptyParameter, "E18"),
    (b"HV;300;1\r\n", u.TooManyParameters, "E17"),
    (b"STA;1\r\n", u.TooManyParameters, "E17"),
    (b"RDR\r\n", u.WrongParameterCount, "E19"),
    (b"HV;abc\r\n", u.WrongParameterType, "E29"),
    (b"HV;300.5\r\n", u.WrongParameterType, "E29"),
    (b"UEL;yes\r\n", u.WrongParameterType, "E29"),
    (b"RGE;HUGE\r\n", u.UnknownParameter, "E28"),
    (b"ASL;VERY_LOW\r\n", u.UnknownParameter, "E28"),
    (b"TOK;2\r\n", u.ParameterOutOfRange, "E08"),
    (b"S" * 129 + b"\r\n", u.LineTooLong, "E16"),
])
def test_a_malformed_request_raises_a_specific_error_carrying_the_device_code(line, error, code):
    with pytest.raises(error) as info:
        u.decode_request(line)
    assert info.value.device_code == code
    assert isinstance(info.value, u.UnidosDecodeError) and info.value.reason


# ---- host side: malformed replies ------------------------------------------------------------

@pytest.mark.parametrize("req,line,error", [
    (request("HV"), b"RGE;LOW\r\n", u.MnemonicMismatch),
    (request("MV"), b"MVM;LOW;20.0;E-09;n;A;\r\n", u.MnemonicMismatch),
    (request("MV"), b"MV;MEAS;2.6;E-3;m;Gy\r\n", u.WrongFieldCount),
    (request("MV"), b"MV;MEAS;2.6;E-3;m;Gy;5.6;E-09;n;Gy;min;3000.0;s;300.0;V;0x0\r\n", u.BadField),
    (request("MV"), b"MV;MEAS;2.6;E-3;n;Gy;5.6;E-09;n;Gy;min;3000.0;ms;300.0;V;0x0\r\n", u.BadField),
    (request("MV"), b"MV;MEAS;2.6;E-3;m;Gy;5.6;E-09;n;Gy;min;3000.0;ms;300.0;V;12\r\n", u.BadField),
    (request("MV"), b"MV;WALKING;2.6;E-3;m;Gy;5.6;E-09;n;Gy;min;3000.0;ms;300.0;V;0x0\r\n", u.BadField),
    (request("MV"), b"MV;MEAS;2.6e1;E-3;m;Gy;5.6;E-09;n;Gy;min;3000.0;ms;300.0;V;0x0\r\n", u.BadField),
    (request("MV"), b"MV;MEAS;2.6;E-3;m;Gy;5.6;E-09;n;Gy;min;-1.0;ms;300.0;V;0x0\r\n", u.BadField),
    (request("TOK", 1), b"TOK;0;true\r\n", u.EchoMismatch),
    (request("RGE", Range.LOW), b"RGE;HIGH\r\n", u.EchoMismatch),
    (request("HV", 300), b"HV;200\r\n", u.EchoMismatch),
    (request("SER"), b"SER;12a\r\n", u.BadField),
    (request("SER"), b"SER\r\n", u.WrongFieldCount),
    (request("STA"), b"STA;1\r\n", u.WrongFieldCount),
    (request("PTW"), b"PTW;UNIDOS;TM1;1.2.4;A16\r\n", u.BadField),
    (request("RIR"), b"RIR;{\"a\":\r\n", u.BadField),
    (request("RIR"), b"RIR;hello\r\n", u.BadField),
    (request("S"), b"S;RES\r", u.MissingTerminator),
    (request("S"), b"S;R\xffES\r\n", u.BadEncoding),
    (request("S"), b"S;R\x07ES\r\n", u.ForbiddenCharacter),
    (request("S"), b"\r\n", u.WrongFieldCount),
])
def test_a_malformed_reply_raises_a_specific_error(req, line, error):
    with pytest.raises(error) as info:
        u.decode_reply(req, line)
    assert info.value.reason


# ---- host side: what cannot be sent is never built ------------------------------------------

@pytest.mark.parametrize("mnemonic,params", [
    ("HV", ("300",)), ("HV", (300.0,)), ("HV", (True,)), ("IT", (float("nan"),)), ("RGE", ("HUGE",)),
    ("TOK", (2,)), ("RDR", ()), ("RDR", ("a;b",)), ("STA", (1,)), ("XYZ", ()), ("IT", (10**10,)),
])
def test_an_invalid_request_is_never_built(mnemonic, params):
    with pytest.raises(u.UnidosEncodeError):
        request(mnemonic, *params)


def test_a_setter_reply_must_echo_what_was_set():
    with pytest.raises(u.UnidosEncodeError):
        u.encode_reply(request("RGE", Range.LOW), Range.HIGH)


def test_a_json_document_containing_a_semicolon_is_refused():
    with pytest.raises(u.UnidosEncodeError):
        u.encode_reply(request("RIR"), {"note": "a;b"})


def test_quantity_from_value_uses_engineering_prefixes():
    q = Quantity.from_value(-6.0123456e-9, "C")
    assert (q.mantissa, q.exponent, q.prefix, q.unit) == (-6.0123, -9, "n", "C")
    assert Quantity.from_value(0.0, "A") == Quantity(0.0, -12, "p", "A")
    with pytest.raises(u.UnidosEncodeError):
        Quantity.from_value(float("inf"), "C")


# ---- line splitter ---------------------------------------------------------------------------

def test_splitter_cuts_lines_across_arbitrary_chunks():
    splitter = u.LineSplitter(64)
    out = []
    for b in b"PTW\r\nSER;1\r\nS":
        out += splitter.feed(bytes([b]))
    assert out == ["PTW", "SER;1"] and splitter.pending == b"S"


def test_splitter_resynchronises_on_crlf_and_counts_bad_lines():
    splitter = u.LineSplitter(16)
    out = splitter.feed(b"\xff\xfe\x00garbage\r\nPTW\r\n" + b"X" * 40 + b"\r\nSER\r\n")
    texts = [o for o in out if isinstance(o, str)]
    bad = [o for o in out if isinstance(o, u.BadLine)]
    assert texts == ["PTW", "SER"]
    assert [type(b.error) for b in bad] == [u.BadEncoding, u.LineTooLong]
    assert splitter.bad_lines == 2 and splitter.lines == 2


def test_splitter_refuses_an_overlong_line_once_and_skips_to_the_next_crlf():
    splitter = u.LineSplitter(8)
    first = splitter.feed(b"A" * 9)
    assert len(first) == 1 and isinstance(first[0].error, u.LineTooLong)
    assert splitter.feed(b"B" * 1000) == []
    assert splitter.feed(b"\r") == []
    assert splitter.feed(b"\nPTW\r\n") == ["PTW"]


def test_splitter_accepts_a_line_of_exactly_the_limit_split_before_its_lf():
    splitter = u.LineSplitter(8)
    assert splitter.feed(b"12345678\r") == []
    assert splitter.feed(b"\n") == ["12345678"]
