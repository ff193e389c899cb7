"""Property tests of the simulated UNIDOS: any sequence of requests, time steps, faults and garbage
leaves the model answering every line with one decodable reply, never crashing, and keeping its
rules (no state change without the token, zero charge after a reset, replies in order).
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol import unidos as u
from protocol.unidos import AutostartLevel, Range, Request, Status
from simulators.clock import ManualClock
from simulators.unidos_device import UnidosDevice
from simulators.unidos_model import UnidosModel
from simulators.world import Room

STATE_CHANGING = {"STA", "HLD", "RES", "INT", "CHR", "NUL", "AST"}
SETTERS = {"IT", "RGE", "HV", "UEL", "ASE", "ASR", "ASL"}

param_for = {
    "IT": st.integers(-5, 4_000_000), "HV": st.integers(-600, 600), "RGE": st.sampled_from(list(Range)),
    "UEL": st.booleans(), "ASE": st.booleans(), "ASR": st.booleans(),
    "ASL": st.sampled_from(list(AutostartLevel)), "TOK": st.sampled_from([0, 1]),
    "RDR": st.sampled_from(["34013-SIM-0001", "nope"]),
}


@st.composite
def requests(draw):
    mnemonic = draw(st.sampled_from(sorted(u.COMMANDS)))
    spec = u.COMMANDS[mnemonic]
    if spec.param and (spec.param_required or draw(st.booleans())):
        return Request(mnemonic, (draw(param_for[mnemonic]),))
    return Request(mnemonic)


class UnidosMachine(RuleBasedStateMachine):
    @initialize(field_pa=st.floats(0, 50_000), seed=st.integers(0, 10))
    def build(self, field_pa, seed):
        self.clock = ManualClock(0.0)
        self.model = UnidosModel(self.clock, field_current_a=lambda now_s: field_pa * 1e-12, room=Room(),
                                 seed=seed, warmup_s=5.0, zero_duration_s=3.0, self_test_duration_s=3.0)
        self.device = UnidosDevice(self.model)
        self.token = False

    @rule(req=requests())
    def send(self, req):
        status_before = self.model.status
        reply = self._exchange(u.encode_request(req))
        value = u.decode_reply(req, reply)                    # always decodable for what was sent
        changes = req.mnemonic in STATE_CHANGING or (req.mnemonic in SETTERS and req.params)
        if changes and not self.token:
            assert value == u.ErrorReply("E20")
            assert self.model.status == status_before
        if req.mnemonic == "TOK" and not isinstance(value, u.ErrorReply):
            if not req.params:
                self.token = True
            elif req.params == (0,):
                self.token = False
            else:
                assert value is self.token
        if req.mnemonic == "RES" and value is None:
            assert self.model.charge_c == 0.0 and self.model.status == Status.RES

    @rule(data=st.binary(max_size=60))
    def garbage(self, data):
        reply = self._exchange(data.replace(b"\r\n", b"") + b"\r\n")
        assert len(u.split_reply(reply)[0]) >= 1 and reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1

    @rule(seconds=st.floats(0, 20))
    def wait(self, seconds):
        self.clock.advance(seconds)
        self.device.tick()

    @rule(kind=st.sampled_from(["overload", "hv_fault"]))
    def fault(self, kind):
        self.model.inject(kind)

    @rule(kind=st.sampled_from(["overload", "hv_fault"]))
    def clear(self, kind):
        self.model.clear(kind)

    def _exchange(self, data: bytes) -> bytes:
        self.device.receive(data)
        out = self.device.transmit()
        assert out.count(b"\r\n") == 1, out
        return out

    @invariant()
    def status_is_one_the_model_reaches(self):
        if hasattr(self, "model"):
            assert self.model.status in {Status.RES, Status.MEAS, Status.HOLD, Status.INT, Status.INTHLD,
                                         Status.ZERO, Status.SELF_TEST, Status.ERROR}


UnidosMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
TestUnidosMachine = UnidosMachine.TestCase


@given(st.lists(st.binary(max_size=80), max_size=30))
@settings(deadline=None)
def test_the_device_answers_garbage_with_one_error_reply_per_line_and_never_crashes(chunks):
    clock = ManualClock(0.0)
    model = UnidosModel(clock, field_current_a=lambda now_s: 1e-10, room=Room(), seed=1)
    device = UnidosDevice(model)
    out = b""
    for chunk in chunks:
        device.receive(chunk)
        out += device.transmit()
    expected_lines = u.LineSplitter(model.max_request_bytes, ascii_only=True)
    items = [item for chunk in chunks for item in expected_lines.feed(chunk)]
    replies = out.split(b"\r\n")[:-1]
    assert len(replies) == len(items)                      # one reply per line, good or bad
    for item, reply in zip(items, replies):
        text = reply.decode("utf-8")
        if isinstance(item, u.BadLine):
            assert text == item.error.device_code
        else:
            assert text.split(";")[0] in u.COMMANDS or (text[0] == "E" and text[1:].isdigit())
