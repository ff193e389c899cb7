"""Property tests of the UNIDOS codec: every request and reply kind round-trips; random or mutated
bytes never crash the decoders (they return a value or raise a UnidosDecodeError, nothing else).
"""
from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import unidos as u
from protocol.unidos import (AutostartLevel, Flag, Identity, MeasuredValue, ParamKind, Quantity, Range,
                             RangeMaximum, RangeResolution, ReplyKind, Request, SelfTestCharge, SelfTestStatus,
                             Status, ZeroCorrectionStatus)

TEXT = st.text(alphabet=string.ascii_letters + string.digits + " ._-,µ", min_size=1, max_size=20)


def fixed_text(n: int):
    return st.text(alphabet=string.ascii_uppercase + string.digits, min_size=n, max_size=n)


mantissas = st.integers(-10**7, 10**7).map(lambda i: i / 1000)


@st.composite
def quantities(draw, units=u.UNITS):
    exponent = draw(st.sampled_from(sorted(u.PREFIX_OF_EXPONENT)))
    return Quantity(draw(mantissas), exponent, u.PREFIX_OF_EXPONENT[exponent], draw(st.sampled_from(units)))


def param_values(kind: ParamKind):
    return {
        ParamKind.INT: st.integers(-10**8, 10**8),
        ParamKind.BOOL: st.booleans(),
        ParamKind.RANGE: st.sampled_from(list(Range)),
        ParamKind.LEVEL: st.sampled_from(list(AutostartLevel)),
        ParamKind.TOKEN_ARG: st.sampled_from([0, 1]),
        ParamKind.GUID: st.text(alphabet=string.ascii_letters + string.digits + "_.{}-", min_size=1, max_size=64),
    }[kind]


@st.composite
def requests(draw):
    spec = draw(st.sampled_from(list(u.COMMANDS.values())))
    if spec.param is None:
        return Request(spec.mnemonic)
    if spec.param_required or draw(st.booleans()):
        return Request(spec.mnemonic, (draw(param_values(spec.param)),))
    return Request(spec.mnemonic)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), TEXT)
json_docs = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=10).filter(
    lambda d: isinstance(d, (dict, list)))


def reply_values(req: Request):
    kind = req.spec.reply
    if req.spec.setter and req.params:
        return st.just(req.params[0])
    return {
        ReplyKind.IDENTITY: st.builds(Identity, TEXT, fixed_text(7), TEXT, fixed_text(3)),
        ReplyKind.SERIAL: st.integers(0, 10**10 - 1),
        ReplyKind.MAC: st.lists(st.integers(0, 255), min_size=6, max_size=6).map(
            lambda b: "-".join(f"{x:02x}" for x in b)),
        ReplyKind.TOKEN: st.booleans(),
        ReplyKind.STATUS: st.sampled_from(list(Status)),
        ReplyKind.ACK: st.none(),
        ReplyKind.INT: st.integers(-10**8, 10**8),
        ReplyKind.RANGE: st.sampled_from(list(Range)),
        ReplyKind.BOOL: st.booleans(),
        ReplyKind.LEVEL: st.sampled_from(list(AutostartLevel)),
        ReplyKind.ZERO: st.builds(ZeroCorrectionStatus, TEXT, st.integers(0, 10**9), st.integers(0, 10**9)),
        ReplyKind.SELF_TEST: st.builds(SelfTestStatus, TEXT, st.integers(0, 10**9), st.integers(0, 10**9),
                                       st.lists(st.builds(SelfTestCharge, TEXT, quantities()),
                                                max_size=4).map(tuple)),
        ReplyKind.MV: st.builds(MeasuredValue, st.sampled_from(list(Status)), quantities(), quantities(),
                                st.sampled_from(u.TIMEBASES), st.integers(0, 10**9).map(lambda i: i / 10),
                                st.integers(-4000, 4000).map(lambda i: i / 10),
                                st.integers(0, 0xFFFF).map(Flag)),
        ReplyKind.RANGE_MAXIMUM: st.builds(RangeMaximum, st.sampled_from(list(Range)), quantities(),
                                           st.sampled_from(u.TIMEBASES)),
        ReplyKind.RANGE_RESOLUTION: st.builds(RangeResolution, st.sampled_from(list(Range)), quantities(),
                                              quantities(), st.sampled_from(u.TIMEBASES)),
        ReplyKind.FAILED_TELEGRAM: st.lists(TEXT, max_size=4).map(tuple).filter(lambda t: t != ("-",)),
        ReplyKind.JSON: json_docs,
    }[kind]


@given(requests())
def test_every_request_round_trips_through_its_bytes(req):
    data = u.encode_request(req)
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == 1
    assert u.decode_request(data) == req


@st.composite
def exchanges(draw):
    req = draw(requests())
    return req, draw(reply_values(req))


@given(exchanges())
@settings(max_examples=400)
def test_every_reply_round_trips_through_its_bytes(exchange):
    req, value = exchange
    data = u.encode_reply(req, value)
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == 1
    assert u.decode_reply(req, data) == value


@given(quantities())
def test_quantity_value_is_mantissa_times_power_of_ten(q):
    assert abs(q.value - q.mantissa * 10.0 ** q.exponent) <= 1e-12 * abs(q.value) + 1e-300


@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_request_decoder(data):
    try:
        req = u.decode_request(data)
    except u.UnidosDecodeError as exc:
        assert exc.reason and exc.device_code.startswith("E")
    else:
        assert u.decode_request(u.encode_request(req)) == req  # whatever decodes can be re-sent


@given(requests(), st.binary(max_size=300))
def test_random_bytes_never_crash_the_reply_decoder(req, data):
    try:
        u.decode_reply(req, data)
    except u.UnidosDecodeError as exc:
        assert exc.reason


@st.composite
def mutated_replies(draw):
    req, value = draw(exchanges())
    data = bytearray(u.encode_reply(req, value))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "drop" and data:
            del data[pos]
        elif op == "insert":
            data.insert(pos, draw(st.integers(0, 255)))
        elif op == "truncate":
            del data[pos:]
    return req, bytes(data)


@given(mutated_replies())
@settings(max_examples=400)
def test_mutated_replies_decode_or_raise_a_decode_error(case):
    req, data = case
    try:
        u.decode_reply(req, data)
    except u.UnidosDecodeError as exc:
        assert exc.reason


@given(st.lists(st.binary(max_size=50), max_size=20), st.lists(requests(), min_size=1, max_size=5))
def test_the_splitter_recovers_every_clean_line_after_garbage(garbage_chunks, reqs):
    splitter = u.LineSplitter(u.MAX_REQUEST_LINE_BYTES, ascii_only=True)
    for chunk in garbage_chunks:
        for item in splitter.feed(chunk):
            assert isinstance(item, (str, u.BadLine))
    splitter.feed(b"\r\n")  # the resynchronisation point
    out = splitter.feed(b"".join(u.encode_request(r) for r in reqs))
    assert [u.decode_request(line) for line in out] == reqs
    assert len(splitter.pending) <= u.MAX_REQUEST_LINE_BYTES + 1


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_the_splitter_keeps_memory_bounded(data, chunk):
    splitter = u.LineSplitter(32)
    for i in range(0, len(data), chunk):
        splitter.feed(data[i:i + chunk])
        assert len(splitter.pending) <= 33
