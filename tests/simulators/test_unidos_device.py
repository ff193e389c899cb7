"""The UNIDOS byte device: CR LF lines in, one reply per line out, in order; over-long lines earn E16;
reply faults (late, garbage, wrong_reply, silent) shape what goes back on the wire.
"""
from __future__ import annotations

import socket
import time

import pytest

from simulators.clock import ManualClock
from simulators.runner import FdRunner
from simulators.unidos_device import UnidosDevice
from simulators.unidos_model import UnidosModel
from simulators.world import Room


def make_device(**kw):
    clock = ManualClock(0.0)
    model = UnidosModel(clock, field_current_a=lambda now_s: 100e-12, room=Room(), seed=3, warmup_s=0.0,
                        noise_fraction=0.0, **kw)
    return clock, model, UnidosDevice(model)


def exchange(device, data: bytes) -> bytes:
    device.receive(data)
    device.tick()
    return device.transmit()


def test_lines_split_across_chunks_get_one_reply_each_in_order():
    clock, model, device = make_device()
    out = b""
    for chunk in (b"PT", b"W\r", b"\nSER\r\nS", b"\r\n"):
        out += exchange(device, chunk)
    assert out == b"PTW;UNIDOS Tango;TM10052;1.2.4;SIM\r\nSER;123456\r\nS;RES\r\n"


def test_an_overlong_request_is_refused_with_e16_and_the_device_resynchronises():
    clock, model, device = make_device()
    out = exchange(device, b"S" * 500)
    assert out == b"E16\r\n"
    assert exchange(device, b"S" * 500 + b"\r\n") == b""           # the rest of the same line
    assert exchange(device, b"SER\r\n") == b"SER;123456\r\n"
    assert device.bad_lines == 1
    assert exchange(device, b"TFI\r\n") == b"TFI;E16;?\r\n"


def test_garbage_bytes_get_e01_and_do_not_stop_the_device():
    clock, model, device = make_device()
    assert exchange(device, b"\xff\x00\x13garbage\r\n") == b"E01\r\n"
    assert exchange(device, b"PTW\r\n").startswith(b"PTW;")


def test_late_fault_holds_the_reply_for_the_delay():
    clock, model, device = make_device()
    model.inject("late", delay_ms=1500)
    assert exchange(device, b"SER\r\n") == b""
    clock.advance(1.499)
    assert device.transmit() == b""
    clock.advance(0.001)
    assert device.transmit() == b"SER;123456\r\n"
    model.clear("late")
    assert exchange(device, b"SER\r\n") == b"SER;123456\r\n"


def test_garbage_fault_replaces_the_reply_by_bytes_that_are_not_utf8():
    clock, model, device = make_device()
    model.inject("garbage")
    out = exchange(device, b"SER\r\n")
    assert out.endswith(b"\r\n") and out.count(b"\r\n") == 1 and out.startswith(b"\xff")
    with pytest.raises(UnicodeDecodeError):
        out.decode("utf-8")
    model.clear("garbage")
    assert exchange(device, b"SER\r\n") == b"SER;123456\r\n"


def test_wrong_reply_fault_answers_each_request_with_the_previous_reply():
    clock, model, device = make_device()
    assert exchange(device, b"SER\r\n") == b"SER;123456\r\n"
    model.inject("wrong_reply")
    assert exchange(device, b"RGE\r\n") == b"SER;123456\r\n"
    assert exchange(device, b"HV\r\n") == b"RGE;LOW\r\n"
    model.clear("wrong_reply")
    assert exchange(device, b"S\r\n") == b"S;RES\r\n"


def test_silent_fault_answers_nothing_and_executes_nothing():
    clock, model, device = make_device()
    model.inject("silent")
    assert exchange(device, b"TOK\r\n") == b""
    model.clear("silent")
    assert exchange(device, b"TOK;1\r\n") == b"TOK;1;false\r\n"


def test_overload_fault_latches_the_overload_while_measuring():
    clock, model, device = make_device()
    exchange(device, b"TOK\r\nSTA\r\n")
    model.inject("overload", which="charge")
    clock.advance(0.1)
    out = exchange(device, b"MV\r\n")
    assert out.startswith(b"MV;ERROR;") and out.endswith(b";0x2\r\n")


def test_served_on_a_socketpair_by_the_runner_it_answers_like_on_a_wire():
    from simulators.clock import MonotonicClock
    model = UnidosModel(MonotonicClock(), field_current_a=lambda now_s: 100e-12, room=Room(), seed=1)
    host, dev = socket.socketpair()
    dev.setblocking(False)
    runner = FdRunner(UnidosDevice(model), dev.detach(), name="unidos-test").start()
    try:
        host.settimeout(5.0)
        host.sendall(b"PTW\r\nSER\r\n")
        data = b""
        deadline = time.monotonic() + 5.0
        while data.count(b"\r\n") < 2 and time.monotonic() < deadline:
            data += host.recv(4096)
        assert data == b"PTW;UNIDOS Tango;TM10052;1.2.4;SIM\r\nSER;123456\r\n"
    finally:
        runner.stop()
        host.close()
    assert runner.error is None and not runner.alive
