"""Simulated PTW UNIDOS electrometer: a model that behaves in time (states, HV ramp, warm-up, zero
correction, self test, charge integration with k_TP, leakage and noise, range overload, faults).

Speaks through protocol.unidos only; reads time from its injected clock, never from time.*. It must
never import the console's code (orconsole/, drivers/): a simulator sharing the console's code
paths would hide the console's bugs.
"""
from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from typing import Callable, Union

from protocol import unidos as u
from protocol.unidos import (AutostartLevel, BadLine, Flag, Identity, MeasuredValue, Quantity, Range,
                             RangeMaximum, RangeResolution, Request, SelfTestCharge, SelfTestStatus, Status,
                             ZeroCorrectionStatus)


@dataclass(frozen=True)
class RangeLimits:
    """Maxima and resolutions of one measuring range, in electrical units."""

    charge_max_c: float
    current_max_a: float
    charge_resolution_c: float
    current_resolution_a: float


# Simulator's ranges (modelled on a reference-class electrometer; documented in docs/protocol/unidos.md).
RANGE_LIMITS: dict[Range, RangeLimits] = {
    Range.VERY_LOW: RangeLimits(3e-9, 300e-12, 1e-15, 0.1e-15),
    Range.LOW: RangeLimits(300e-9, 30e-9, 10e-15, 1e-15),
    Range.MEDIUM: RangeLimits(15e-6, 1.5e-6, 0.5e-12, 3e-12),
    Range.HIGH: RangeLimits(150e-6, 15e-6, 5e-12, 30e-12),
}

HV_LIMIT_V = 400                  # |HV| the instrument (and the PTW 34013 chamber) accepts
INTEGRATION_TIME_MAX_S = 3_599_999
FULL_COLLECTION_HV_V = 100.0      # below this |HV| the chamber collects proportionally less charge
DETECTOR_GUID = "34013-SIM-0001"
SELF_TEST_CHARGES = (("Low", Quantity(136.6, -12, "p", "C")), ("Med", Quantity(1.5, -9, "n", "C")),
                     ("High", Quantity(13.5, -9, "n", "C")))

FAULT_KINDS = ("overload", "hv_fault", "garbage", "late", "wrong_reply", "silent")
EventSink = Callable[[dict], None]
Reply = tuple[float, bytes]       # (due time on the model's clock, bytes)


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class UnidosModel:
    """The electrometer's behaviour. Thread-safe: the runner thread calls respond()/tick(), tests and
    the fault scheduler call inject()/clear() from elsewhere.

    field_current_a(now_s): ionisation current the chamber would deliver at reference air density
    (20 °C, 101.325 kPa); the reading is that divided by room.air_density_factor(), plus leakage."""

    def __init__(self, clock, *, field_current_a: Callable[[float], float], room,
                 field_charge_c: Callable[[float], float] | None = None, seed: int | None = None,
                 on_event: EventSink | None = None, serial_number: int = 123456, warmup_s: float = 300.0,
                 zero_duration_s: float = 82.0, self_test_duration_s: float = 89.0, hv_nominal_v: int = 300,
                 hv_ramp_v_per_s: float = 50.0, hv_tolerance_v: float = 1.0,
                 leakage_current_a: float = 10e-15, noise_fraction: float = 0.001,
                 initial_range: Range = Range.LOW, integration_time_s: int = 60,
                 detector_calibration_gy_per_c: float = 1.13e10, electrical_units: bool = True,
                 max_request_bytes: int = u.MAX_REQUEST_LINE_BYTES) -> None:
        for name, value in (("warmup_s", warmup_s), ("zero_duration_s", zero_duration_s),
                            ("self_test_duration_s", self_test_duration_s), ("hv_ramp_v_per_s", hv_ramp_v_per_s),
                            ("hv_tolerance_v", hv_tolerance_v), ("noise_fraction", noise_fraction)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
        if not abs(hv_nominal_v) <= HV_LIMIT_V:
            raise ValueError(f"hv_nominal_v must be within ±{HV_LIMIT_V} V, got {hv_nominal_v!r}")
        if not 1 <= integration_time_s <= INTEGRATION_TIME_MAX_S:
            raise ValueError(f"integration_time_s must be 1…{INTEGRATION_TIME_MAX_S}, got {integration_time_s!r}")
        self.clock = clock
        self.room = room
        self.serial_number = serial_number
        self.warmup_s = warmup_s
        self.zero_duration_s = zero_duration_s
        self.self_test_duration_s = self_test_duration_s
        self.hv_ramp_v_per_s = hv_ramp_v_per_s
        self.hv_tolerance_v = hv_tolerance_v
        self.leakage_current_a = leakage_current_a
        self.noise_fraction = noise_fraction
        self.detector_calibration_gy_per_c = detector_calibration_gy_per_c
        self.max_request_bytes = max_request_bytes
        self.identity = Identity("UNIDOS Tango", "TM10052", "1.2.4", "SIM")
        self.mac = "00-00-5e-00-53-2a"     # documentation range (RFC 7042)
        self._field = field_current_a
        # optional cumulative charge (reference air density) from the field's source: when given,
        # charge is integrated exactly between ticks, so a late tick cannot lose or add charge
        self._field_charge = field_charge_c
        self._field_charge_last_c = field_charge_c(clock.now_s()) if field_charge_c else 0.0
        self._on_event = on_event
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._events: list[dict] = []

        now = clock.now_s()
        self._power_on_s = now
        self._last_s = now
        self._status = Status.RES
        self._range = Range(initial_range)
        self._integration_time_s = int(integration_time_s)
        self._hv_set_v = int(hv_nominal_v)
        self._hv_actual_v = float(hv_nominal_v)
        self._electrical_units = electrical_units
        self._autostart = False
        self._autoreset = False
        self._autostart_level = AutostartLevel.MEDIUM
        self._token = False
        self._charge_c = 0.0
        self._time_s = 0.0
        self._current_a = 0.0
        self._latched = Flag.NONE
        self._frozen: tuple[float, float] | None = None   # (charge reading, current reading) at hold
        self._zero_end_s: float | None = None
        self._zero_result = "None"
        self._self_test_end_s: float | None = None
        self._self_test_result = "None"
        self._last_failed: tuple[str, ...] = ()
        self._history: list[dict] = []
        self._history_id = 1
        self._faults: dict[str, dict] = {}
        self._previous_reply: bytes | None = None
        self.requests_handled = 0
        self.bad_requests = 0

    # ------------------------------------------------------------------ public, for the device/tests

    @property
    def status(self) -> Status:
        with self._lock:
            self._advance()
            return self._status

    @property
    def charge_c(self) -> float:
        """The true integrated charge (no reading noise): for tests."""
        with self._lock:
            self._advance()
            return self._charge_c

    @property
    def hv_actual_v(self) -> float:
        with self._lock:
            self._advance()
            return self._hv_actual_v

    @property
    def warmed_up(self) -> bool:
        return self.clock.now_s() - self._power_on_s >= self.warmup_s

    @property
    def faults(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._faults.items()}

    def tick(self) -> None:
        with self._lock:
            self._advance()
        self._flush_events()

    def inject(self, kind: str, **params) -> None:
        """Inject a fault until clear(kind). Kinds and parameters:
        overload (which="current"|"charge"), hv_fault (value=volts the HV sags to, default 0),
        garbage, late (delay_ms or value, default 2000), wrong_reply, silent."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown UNIDOS fault {kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if kind == "overload":
            which = params.get("which", "current")
            if which not in ("current", "charge"):
                raise ValueError(f"overload which= must be 'current' or 'charge', got {which!r}")
            params = {"which": which}
        elif kind == "hv_fault":
            volts = float(params.get("value", params.get("volts", 0.0)))
            if not math.isfinite(volts):
                raise ValueError(f"hv_fault volts must be finite, got {volts!r}")
            params = {"volts": volts}
        elif kind == "late":
            delay_ms = float(params.get("delay_ms", params.get("value", 2000.0)))
            if not (math.isfinite(delay_ms) and delay_ms >= 0):
                raise ValueError(f"late delay_ms must be a finite number ≥ 0, got {delay_ms!r}")
            params = {"delay_ms": delay_ms}
        else:
            params = {}
        with self._lock:
            self._advance()
            self._faults[kind] = params
            self._emit({"event": "fault_injected", "kind": kind, **params})
        self._flush_events()

    def clear(self, kind: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown UNIDOS fault {kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._advance()
            if self._faults.pop(kind, None) is not None:
                self._emit({"event": "fault_cleared", "kind": kind})
        self._flush_events()

    def respond(self, item: Union[str, BadLine]) -> list[Reply]:
        """One line from the splitter → the replies to send, each with its due time. Applies the
        reply faults (silent, garbage, late, wrong_reply)."""
        with self._lock:
            self._advance()
            if "silent" in self._faults:
                return []
            reply = self._reply_bytes(item)
            out = reply
            if "wrong_reply" in self._faults:
                out = self._previous_reply
            self._previous_reply = reply
            if out is None:
                return []
            if "garbage" in self._faults:
                out = self._garbage()
            due = self.clock.now_s() + self._faults.get("late", {}).get("delay_ms", 0.0) / 1000.0
        self._flush_events()
        return [(due, out)]

    def handle(self, line: bytes) -> bytes:
        """The undisturbed reply to one request line with its CR LF (faults not applied): for tests."""
        items = u.LineSplitter(self.max_request_bytes, ascii_only=True).feed(line)
        if len(items) != 1:
            raise ValueError(f"handle() takes exactly one CR LF-terminated line, got {line!r}")
        with self._lock:
            self._advance()
            reply = self._reply_bytes(items[0])
        self._flush_events()
        return reply

    # ------------------------------------------------------------------ request handling

    def _reply_bytes(self, item: Union[str, BadLine]) -> bytes:
        self.requests_handled += 1
        if isinstance(item, BadLine):
            self.bad_requests += 1
            return self._error(item.error.device_code, "?")
        try:
            req = u.decode_request(item, max_bytes=self.max_request_bytes)
        except u.UnidosDecodeError as exc:
            self.bad_requests += 1
            mnemonic = item.split(u.SEPARATOR, 1)[0]
            return self._error(exc.device_code, mnemonic if mnemonic in u.COMMANDS else "?")
        try:
            value = self._execute(req)
        except _Refused as refusal:
            return self._error(refusal.code, req.mnemonic)
        return u.encode_reply(req, value)

    def _error(self, code: str, mnemonic: str) -> bytes:
        self._last_failed = (code, mnemonic)
        self._emit({"event": "error_reply", "code": code, "command": mnemonic})
        return u.encode_error(code)

    def _require_token(self) -> None:
        if not self._token:
            raise _Refused("E20")

    def _require_idle(self) -> None:
        """Settings and actions that need the instrument neither busy (E03) nor measuring (E02)."""
        if self._status in (Status.ZERO, Status.SELF_TEST):
            raise _Refused("E03")
        if self._status in (Status.MEAS, Status.INT):
            raise _Refused("E02")

    def _execute(self, req: Request):
        m, p = req.mnemonic, req.param
        changes_state = m in ("STA", "HLD", "RES", "INT", "CHR", "NUL", "AST") or (
            p is not None and m in ("IT", "RGE", "HV", "UEL", "ASE", "ASR", "ASL"))
        if changes_state:
            self._require_token()
        handler = getattr(self, f"_cmd_{m.lower()}")
        return handler(p)

    def _cmd_ptw(self, _):
        return self.identity

    def _cmd_ser(self, _):
        return self.serial_number

    def _cmd_mac(self, _):
        return self.mac

    def _cmd_tok(self, p):
        if p is None:
            self._token = True
            self._emit({"event": "token_granted"})
            return True
        if p == 0:
            if self._token:
                self._emit({"event": "token_released"})
            self._token = False
            return True
        return self._token

    def _cmd_s(self, _):
        return self._status

    def _cmd_sta(self, _):
        if self._status in (Status.ZERO, Status.SELF_TEST):
            raise _Refused("E03")
        if self._status == Status.MEAS:
            return None
        if self._status not in (Status.RES, Status.HOLD):
            raise _Refused("E02")
        continued = self._status == Status.HOLD
        self._status = Status.MEAS
        self._frozen = None
        self._emit({"event": "measure_start", "continued": continued})
        return None

    def _cmd_hld(self, _):
        if self._status in (Status.ZERO, Status.SELF_TEST):
            raise _Refused("E03")
        if self._status == Status.HOLD:
            return None
        if self._status not in (Status.MEAS, Status.INT):
            raise _Refused("E02")
        aborted_interval = self._status == Status.INT
        self._status = Status.HOLD
        self._freeze()
        self._emit({"event": "hold", "charge_c": self._charge_c, "time_s": self._time_s,
                    "interval_aborted": aborted_interval})
        return None

    def _cmd_res(self, _):
        if self._status in (Status.ZERO, Status.SELF_TEST):
            raise _Refused("E03")
        self._reset_values()
        self._status = Status.RES
        self._emit({"event": "reset"})
        return None

    def _cmd_int(self, _):
        if self._status in (Status.ZERO, Status.SELF_TEST):
            raise _Refused("E03")
        if self._status not in (Status.RES, Status.HOLD, Status.INTHLD):
            raise _Refused("E02")
        self._reset_values()
        self._status = Status.INT
        self._emit({"event": "interval_start", "integration_time_s": self._integration_time_s})
        return None

    def _cmd_it(self, p):
        if p is None:
            return self._integration_time_s
        if not 1 <= p <= INTEGRATION_TIME_MAX_S:
            raise _Refused("E08")
        self._require_idle()
        self._integration_time_s = p
        return p

    def _cmd_chr(self, _):
        self._history.clear()
        self._emit({"event": "history_cleared"})
        return None

    def _cmd_nul(self, _):
        if not self.warmed_up:
            raise _Refused("E03")
        self._require_idle()
        self._reset_values()
        self._status = Status.ZERO
        self._zero_end_s = self.clock.now_s() + self.zero_duration_s
        self._zero_result = "Running"
        self._emit({"event": "zero_start", "duration_s": self.zero_duration_s})
        return None

    def _cmd_nus(self, _):
        total_ms = round(self.zero_duration_s * 1000)
        remaining_ms = 0
        if self._status == Status.ZERO and self._zero_end_s is not None:
            remaining_ms = max(0, math.ceil((self._zero_end_s - self.clock.now_s()) * 1000))
        return ZeroCorrectionStatus(self._zero_result, remaining_ms, total_ms)

    def _cmd_ast(self, _):
        self._require_idle()
        self._reset_values()
        self._status = Status.SELF_TEST
        self._self_test_end_s = self.clock.now_s() + self.self_test_duration_s
        self._self_test_result = "Running"
        self._emit({"event": "self_test_start", "duration_s": self.self_test_duration_s})
        return None

    def _cmd_ass(self, _):
        total_ms = round(self.self_test_duration_s * 1000)
        remaining_ms = 0
        if self._status == Status.SELF_TEST and self._self_test_end_s is not None:
            remaining_ms = max(0, math.ceil((self._self_test_end_s - self.clock.now_s()) * 1000))
        charges = ()
        if self._self_test_result == "Passed":
            charges = tuple(SelfTestCharge(label, q) for label, q in SELF_TEST_CHARGES)
        return SelfTestStatus(self._self_test_result, remaining_ms, total_ms, charges)

    def _cmd_rge(self, p):
        if p is None:
            return self._range
        self._require_idle()
        self._range = Range(p)
        self._emit({"event": "range_set", "range": self._range.value})
        return self._range

    def _cmd_hv(self, p):
        if p is None:
            return self._hv_set_v
        if not -HV_LIMIT_V <= p <= HV_LIMIT_V:
            raise _Refused("E08")
        self._require_idle()
        self._hv_set_v = p
        self._emit({"event": "hv_set", "hv_v": p})
        return p

    def _cmd_uel(self, p):
        if p is None:
            return self._electrical_units
        self._require_idle()
        self._electrical_units = p
        return p

    def _cmd_ase(self, p):
        if p is None:
            return self._autostart
        self._autostart = p
        return p

    def _cmd_asr(self, p):
        if p is None:
            return self._autoreset
        self._autoreset = p
        return p

    def _cmd_asl(self, p):
        if p is None:
            return self._autostart_level
        self._autostart_level = AutostartLevel(p)
        return self._autostart_level

    def _cmd_mv(self, _):
        return self._measured_value()

    def _cmd_mvm(self, _):
        limits = RANGE_LIMITS[self._range]
        if self._electrical_units:
            return RangeMaximum(self._range, Quantity.from_value(limits.current_max_a, "A"), "")
        return RangeMaximum(self._range, Quantity.from_value(
            limits.current_max_a * self.detector_calibration_gy_per_c * 60.0, "Gy"), "min")

    def _cmd_mvr(self, _):
        limits = RANGE_LIMITS[self._range]
        if self._electrical_units:
            return RangeResolution(self._range, Quantity.from_value(limits.charge_resolution_c, "C"),
                                   Quantity.from_value(limits.current_resolution_a, "A"), "")
        n = self.detector_calibration_gy_per_c
        return RangeResolution(self._range, Quantity.from_value(limits.charge_resolution_c * n, "Gy"),
                               Quantity.from_value(limits.current_resolution_a * n * 60.0, "Gy"), "min")

    def _cmd_tfi(self, _):
        return self._last_failed

    # JSON documents: key names as independent clients of real instruments read them; the values are
    # fixed and plausible (dates are constants: the model never reads the wall clock).

    def _detector(self) -> dict:
        return {"guid": DETECTOR_GUID, "name": "Soft X-ray chamber 0.0025 cm3 (simulated)", "manufacturer": "PTW",
                "type": "SOFT_XRAY", "typeNumber": "TM34013", "serialNumber": "000001",
                "measuredQuantity": "AIR_KERMA", "radiationQuality": "T50", "polarity": "POSITIVE",
                "nominalHv": 300, "minHv": -HV_LIMIT_V, "maxHv": HV_LIMIT_V, "range": self._range.value,
                "timebase": "min", "calibrationFactor": self.detector_calibration_gy_per_c,
                "calibrationFactorUnit": "Gy/C", "calibrationLab": "simulated", "calibrationType": "FACTORY",
                "calibrationProcedure": "none", "calibrationTemp": 20.0, "calibrationUser": "simulator",
                "comment": "simulated detector", "testDate": "2026-01-15", "testLimits": 0.5,
                "testResult": "PASSED", "testTarget": 0.0}

    def _cmd_rda(self, _):
        return [self._detector()]

    def _cmd_rdr(self, guid):
        if guid != DETECTOR_GUID:
            raise _Refused("E21")
        return self._detector()

    def _cmd_rmr(self, _):
        return {"detectorGuid": DETECTOR_GUID, "range": self._range.value, "hv": self._hv_set_v,
                "integrationTime": self._integration_time_s, "isElectrical": self._electrical_units,
                "correction": 1.0, "highResolution": False, "limitDose": 0.0, "limitDoseEnabled": False,
                "limitDoseRate": 0.0, "limitDoseRateEnabled": False, "triggerAuto": self._autostart,
                "triggerReset": self._autoreset, "triggerSensitivity": self._autostart_level.value}

    def _cmd_rir(self, _):
        return {"typeNumber": self.identity.type_number, "serialNumber": self.serial_number,
                "softwareVersion": self.identity.firmware, "hardwareVersion": self.identity.hardware_revision,
                "macAddress": self.mac, "hostname": f"unidos-sim-{self.serial_number}", "debugBuild": False,
                "features": ["SIMULATED"], "calibrationDate": "2026-01-15", "nextCalibration": "2028-01-15",
                "lastTest": "2026-01-15", "testTemperature": 20.0,
                "uptimeS": round(self.clock.now_s() - self._power_on_s, 1)}

    def _cmd_rsr(self, _):
        return {"brightness": 80, "keyboardSound": False, "volume": 0, "locale": "en", "mark": "",
                "startAsMaster": False, "timezone": "UTC", "date": "2026-01-15", "time": "00:00:00"}

    def _cmd_rec(self, _):
        return {"dhcp": False, "ipv4": {"address": "192.0.2.10", "netmask": "255.255.255.0",
                                        "gateway": "192.0.2.1"}, "ipv6": {"enabled": False},
                "dns": "192.0.2.1", "port": 8123, "macAddress": self.mac}

    def _cmd_rhr(self, _):
        return list(self._history)

    # ------------------------------------------------------------------ physics in time

    def _signal_current_a(self, now_s: float) -> float:
        hv = self._hv_actual_v
        collection = min(1.0, abs(hv) / FULL_COLLECTION_HV_V)
        polarity = 1.0 if hv >= 0 else -1.0
        field = float(self._field(now_s))
        return polarity * collection * field / self.room.air_density_factor() + self.leakage_current_a

    def _hv_error(self) -> bool:
        return "hv_fault" in self._faults or abs(self._hv_actual_v - self._hv_set_v) > self.hv_tolerance_v

    def _advance(self) -> None:
        now = self.clock.now_s()
        dt = now - self._last_s
        if dt <= 0:
            return
        self._last_s = now
        # HV ramps towards its set value (or sags to the fault value)
        target = self._faults["hv_fault"]["volts"] if "hv_fault" in self._faults else float(self._hv_set_v)
        step = self.hv_ramp_v_per_s * dt
        if abs(target - self._hv_actual_v) <= step:
            self._hv_actual_v = target
        else:
            self._hv_actual_v += step if target > self._hv_actual_v else -step
        # the source's cumulative charge is read once per advance, so consecutive advances telescope
        field_total_c = self._field_charge(now) if self._field_charge is not None else 0.0
        if self._status in (Status.MEAS, Status.INT):
            self._integrate(now, dt, field_total_c)
        elif self._status == Status.ZERO and self._zero_end_s is not None and now >= self._zero_end_s:
            self._status = Status.RES
            self._zero_result = "Passed"
            self._zero_end_s = None
            self._reset_values()
            self._emit({"event": "zero_done", "result": "Passed"})
        elif (self._status == Status.SELF_TEST and self._self_test_end_s is not None
              and now >= self._self_test_end_s):
            self._status = Status.RES
            self._self_test_result = "Passed"
            self._self_test_end_s = None
            self._emit({"event": "self_test_done", "result": "Passed"})
        self._field_charge_last_c = field_total_c

    def _integrate(self, now: float, dt: float, field_total_c: float = 0.0) -> None:
        current = self._signal_current_a(now)
        step = dt
        if self._status == Status.INT:
            step = max(0.0, min(dt, self._integration_time_s - self._time_s))
        if self._field_charge is not None:
            hv = self._hv_actual_v
            collection = min(1.0, abs(hv) / FULL_COLLECTION_HV_V) * (1.0 if hv >= 0 else -1.0)
            field_c = field_total_c - self._field_charge_last_c
            collected_c = (collection * field_c / self.room.air_density_factor()) * (step / dt)
            current = collected_c / step + self.leakage_current_a if step > 0 else self.leakage_current_a
            self._charge_c += collected_c + self.leakage_current_a * step
        else:
            self._charge_c += current * step
        self._current_a = current
        self._time_s += step
        if self._hv_error():
            self._latched |= Flag.HV_ERROR_CHARGE
        limits = RANGE_LIMITS[self._range]
        forced = self._faults.get("overload", {}).get("which")
        overload = Flag.NONE
        if abs(current) > limits.current_max_a or forced == "current":
            overload |= Flag.OVERLOAD_CURRENT
        if abs(self._charge_c) > limits.charge_max_c or forced == "charge":
            overload |= Flag.OVERLOAD_CHARGE
        if overload:
            self._latched |= overload
            self._status = Status.ERROR
            self._freeze()
            self._emit({"event": "overload", "flags": int(overload), "range": self._range.value,
                        "current_a": current, "charge_c": self._charge_c})
            return
        if self._status == Status.INT and self._time_s >= self._integration_time_s:
            self._status = Status.INTHLD
            self._freeze()
            self._emit({"event": "interval_done", "charge_c": self._charge_c, "time_s": self._time_s})

    def _noisy(self, value: float) -> float:
        if self.noise_fraction == 0:
            return value
        return value * (1.0 + self._rng.gauss(0.0, self.noise_fraction))

    def _freeze(self) -> None:
        self._frozen = (self._noisy(self._charge_c), self._noisy(self._current_a))
        self._history.append({"id": self._history_id, "detector": DETECTOR_GUID, "dose": self._frozen[0],
                              "kTotal": 1.0, "flags": f"0x{int(self._latched):X}",
                              "date": f"t+{self.clock.now_s() - self._power_on_s:.1f}s"})
        self._history_id += 1
        del self._history[:-20]

    def _reset_values(self) -> None:
        self._charge_c = 0.0
        self._time_s = 0.0
        self._current_a = 0.0
        self._latched = Flag.NONE
        self._frozen = None

    def _measured_value(self) -> MeasuredValue:
        if self._status in (Status.MEAS, Status.INT):
            charge, current = self._noisy(self._charge_c), self._noisy(self._current_a)
        elif self._frozen is not None:
            charge, current = self._frozen
        else:
            charge, current = 0.0, 0.0
        flags = self._latched
        if self._hv_error():
            flags |= Flag.HV_ERROR_CURRENT | Flag.HV_ERROR_CHARGE
        if self._electrical_units:
            integrated, rate, timebase = Quantity.from_value(charge, "C"), Quantity.from_value(current, "A"), ""
        else:
            n = self.detector_calibration_gy_per_c
            integrated = Quantity.from_value(charge * n, "Gy")
            rate, timebase = Quantity.from_value(current * n * 60.0, "Gy"), "min"
        return MeasuredValue(self._status, integrated, rate, timebase, round(self._time_s * 1000.0, 1),
                             round(self._hv_actual_v, 1), flags)

    # ------------------------------------------------------------------ faults and events

    def _garbage(self) -> bytes:
        body = bytes(self._rng.choice(range(256)) for _ in range(self._rng.randint(4, 24)))
        body = body.replace(b"\r", b"\xfe").replace(b"\n", b"\xfe")
        return b"\xff" + body + u.CRLF    # never valid UTF-8: 0xFF cannot occur in it

    def _emit(self, event: dict) -> None:
        self._events.append(event)

    def _flush_events(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        if self._on_event is not None:
            for event in events:
                self._on_event(event)
