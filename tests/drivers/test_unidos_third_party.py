"""Conformance: a third-party script written for the real UNIDOS, using plain pyserial on the port
path (write b"PTW\\r\\n", readline), talks to our simulator unchanged. Deliberately uses none of our
protocol or driver code on the client side: only str.split, as such scripts do.
"""
from __future__ import annotations

import json
import os
import pty
import time
import tty

import pytest
import serial

from simulators.clock import MonotonicClock
from simulators.runner import FdRunner
from simulators.unidos_device import UnidosDevice
from simulators.unidos_model import UnidosModel
from simulators.world import Room


@pytest.fixture
def instrument_path():
    model = UnidosModel(MonotonicClock(), field_current_a=lambda now_s: 150e-12, room=Room(), seed=5,
                        warmup_s=0.0, zero_duration_s=5.0, self_test_duration_s=0.2)
    master_fd, slave_fd = pty.openpty()
    tty.setraw(slave_fd)
    path = os.ttyname(slave_fd)
    os.close(slave_fd)
    os.set_blocking(master_fd, False)
    runner = FdRunner(UnidosDevice(model), master_fd, name="sim-unidos-3rd-party").start()
    yield path
    runner.stop()
    assert runner.error is None


@pytest.fixture
def port(instrument_path):
    ser = serial.serial_for_url(instrument_path, baudrate=115200, timeout=2.0)
    yield ser
    ser.close()


def ask(ser: serial.Serial, command: str) -> str:
    ser.write(command.encode("ascii") + b"\r\n")
    line = ser.readline()
    assert line.endswith(b"\r\n"), f"reply to {command!r} not CR LF terminated: {line!r}"
    return line[:-2].decode("utf-8")


def test_identity_exactly_as_the_reference_shows_it(port):
    port.write(b"PTW\r\n")
    assert port.readline() == b"PTW;UNIDOS Tango;TM10052;1.2.4;SIM\r\n"
    name, type_number, firmware, hw = ask(port, "PTW").split(";")[1:]
    assert name.startswith("UNIDOS") and len(type_number) == 7 and len(hw) == 3 and firmware
    assert ask(port, "SER").split(";")[1].isdigit()


def test_a_typical_measurement_script(port):
    assert ask(port, "STA") == "E20"                       # no token yet
    assert ask(port, "TOK") == "TOK;true"
    assert ask(port, "TOK;1") == "TOK;1;true"
    assert ask(port, "RGE;LOW") == "RGE;LOW"
    assert ask(port, "HV") == "HV;300"
    assert ask(port, "IT;2") == "IT;2"
    assert ask(port, "RES") == "RES"
    assert ask(port, "INT") == "INT"
    assert ask(port, "S") == "S;INT"
    deadline = time.monotonic() + 10.0
    while ask(port, "S") != "S;INTHLD" and time.monotonic() < deadline:
        time.sleep(0.05)
    fields = ask(port, "MV").split(";")
    assert len(fields) == 16 and fields[0] == "MV" and fields[1] == "INTHLD"
    charge_c = float(fields[2]) * 10 ** int(fields[3][1:])
    assert fields[5] == "C" and fields[9] == "A" and fields[10] == ""
    assert fields[12] == "ms" and float(fields[11]) == 2000.0
    assert fields[14] == "V" and float(fields[13]) == 300.0
    assert fields[15].startswith("0x") and int(fields[15], 16) == 0
    assert charge_c == pytest.approx(150e-12 * 2.0, rel=0.01)
    assert ask(port, "TOK;0") == "TOK;0;true"
    assert ask(port, "RES") == "E20"


def test_zero_correction_status_reports_remaining_and_total_milliseconds(port):
    ask(port, "TOK")
    assert ask(port, "NUL") == "NUL"
    result, remaining_ms, total_ms = ask(port, "NUS").split(";")[1:]
    assert result == "Running" and 0 < int(remaining_ms) <= 5000 and total_ms == "5000"


def test_errors_are_e_and_two_digits(port):
    assert ask(port, "XYZ") == "E01"
    assert ask(port, "HV;") == "E18"
    assert ask(port, "TOK") == "TOK;true"
    assert ask(port, "HV;500") == "E08"
    assert ask(port, "TFI") == "TFI;E08;HV"


def test_json_documents_use_semicolons_for_commas(port):
    reply = ask(port, "RIR")
    assert reply.startswith("RIR;{") and "," not in reply
    assert json.loads(reply[4:].replace(";", ","))["typeNumber"] == "TM10052"


def values_after_mnemonic(reply: str) -> list[str]:
    """How instrument-library clients read a reply: drop the mnemonic, `;` → `,`, split on `,`."""
    _mnemonic, _, rest = reply.partition(";")
    return rest.replace(";", ",").split(",")


def test_replies_parse_the_way_instrument_library_clients_parse_them(port):
    assert ask(port, "TOK") == "TOK;true"
    assert values_after_mnemonic(ask(port, "TOK;1"))[1] == "true"
    ask(port, "STA")
    v = values_after_mnemonic(ask(port, "MV"))
    assert v[0] == "MEAS"
    charge_c, current_a = float(v[1] + v[2]), float(v[5] + v[6])     # mantissa and exponent glued
    assert charge_c >= 0 and current_a == pytest.approx(150e-12, rel=0.01)
    assert v[12] != "" and int(v[14], 0) == 0
    assert values_after_mnemonic(ask(port, "MVM"))[0] == "LOW"
    assert float("".join(values_after_mnemonic(ask(port, "MVM"))[1:3])) == pytest.approx(30e-9)
    ask(port, "HLD")
    ask(port, "RES")
    ask(port, "AST")
    time.sleep(0.25)
    deadline = time.monotonic() + 5.0
    while values_after_mnemonic(ask(port, "ASS"))[0] != "Passed" and time.monotonic() < deadline:
        time.sleep(0.05)
    v = values_after_mnemonic(ask(port, "ASS"))
    assert (v[0], v[1]) == ("Passed", "0")
    assert float(v[4] + v[5]) == pytest.approx(136.6e-12) and float(v[14] + v[15]) == pytest.approx(13.5e-9)
    detectors = json.loads(",".join(values_after_mnemonic(ask(port, "RDA"))))
    guid = detectors[0]["guid"]
    echoed, _, document = ",".join(values_after_mnemonic(ask(port, f"RDR;{guid}"))).partition(",")
    assert echoed == guid and json.loads(document)["guid"] == guid
    history = json.loads(",".join(values_after_mnemonic(ask(port, "RHR"))))
    assert isinstance(history, list) and history and "dose" in history[0]
