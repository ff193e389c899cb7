"""Hardware abstraction layer: what the treatment and QA workflows may ask of the devices.

Domain units only (kV, µA, seconds, gray, coulomb). The core programs against these interfaces;
real serial devices and simulators sit behind them. Nothing here does I/O or imports Qt.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

# --------------------------------------------------------------------------------------------
# X-ray source (XRS)
# --------------------------------------------------------------------------------------------

APPLICATOR_DIAMETERS_CM: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)


class XrsState(enum.Enum):
    """What the X-ray unit says it is doing."""

    STANDBY = "standby"          # HV off, not warmed up
    WARMING_UP = "warming_up"    # warm-up in progress, HV cycling
    READY = "ready"              # warmed up, HV off, not armed
    ARMED = "armed"              # preset loaded (time, IRM limit, plan hash), HV off
    RAMP_UP = "ramp_up"          # HV rising after beam on
    BEAM_ON = "beam_on"          # HV at nominal, irradiating
    RAMP_DOWN = "ramp_down"      # HV falling after beam off
    FAULT = "fault"              # latched fault: beam off, needs reset with acknowledgement


class XrsInterlock(enum.IntFlag):
    """Interlock inputs of the unit, as reported (set bit = open / not satisfied)."""

    NONE = 0
    EXTERNAL_INTERLOCK_OPEN = 1 << 0   # OR door / external chain
    EMERGENCY_STOP = 1 << 1            # e-stop button pressed
    NO_APPLICATOR = 1 << 2             # no applicator sensed on the probe
    KEY_SWITCH_OFF = 1 << 3


class XrsFault(enum.IntFlag):
    """Latched faults of the unit (set bit = fault present)."""

    NONE = 0
    HV_ARC = 1 << 0
    HV_FAILURE = 1 << 1                 # HV cannot reach or hold its setpoint
    WATCHDOG_EXPIRED = 1 << 2           # console silent longer than the watchdog time during beam
    EMERGENCY_STOP = 1 << 3             # beam was stopped by the e-stop
    INTERLOCK_OPENED = 1 << 4           # interlock chain opened during beam
    APPLICATOR_REMOVED = 1 << 5         # applicator lost during beam
    IRM_FAILURE = 1 << 6                # internal radiation monitor implausible
    LINK_ERRORS = 1 << 7                # too many bad frames in a row
    OVER_TEMPERATURE = 1 << 8


class BeamOffReason(enum.IntEnum):
    """Why the console switches the beam off (sent with the beam-off command, logged by the unit)."""

    PRESET_TIME_REACHED = 1      # console primary timer
    DOSE_MONITOR_REACHED = 2     # console's secondary dose channel
    OPERATOR_PAUSE = 3
    OPERATOR_STOP = 4
    CONSOLE_INTERLOCK = 5
    QA_EXPOSURE_END = 6
    CONSOLE_SHUTDOWN = 7
    CONSOLE_FAULT = 8


class BeamOffCause(enum.Enum):
    """Who or what ended the last beam, as reported by the unit."""

    NONE = "none"                       # no beam since power-up / arm
    CONSOLE_COMMAND = "console_command"   # see last_beam_off_reason
    BACKUP_TIMER = "backup_timer"         # device's own timer reached the armed backup time
    IRM_LIMIT = "irm_limit"               # device's IRM dose reached the armed limit
    WATCHDOG = "watchdog"                 # console went silent
    FAULT = "fault"                       # a fault (see faults)
    EMERGENCY_STOP = "emergency_stop"
    INTERLOCK = "interlock"


@dataclass(frozen=True)
class XrsIdentity:
    serial_number: str
    model: str
    firmware: str
    protocol_version: int
    schema_hash: str                    # hex digest of the message schema the device speaks


@dataclass(frozen=True)
class XrsStatus:
    """One status reply, in domain units. `host_time_s` is the console's monotonic receive time."""

    state: XrsState
    kv: float
    ua: float
    hv_on: bool
    irm_counts: int
    irm_dose_gy: float                  # dose integrated by the IRM since the last arm
    applicator_diameter_cm: float | None  # None when no applicator is sensed
    interlocks: XrsInterlock
    faults: XrsFault
    device_time_s: float                # the unit's own monotonic clock
    beam_on_time_s: float               # device-measured beam-on time since the last arm
    last_beam_off_cause: BeamOffCause
    last_beam_off_reason: BeamOffReason | None
    armed_plan_hash: bytes | None       # the plan hash the unit was armed with, if any
    host_time_s: float = 0.0


@dataclass(frozen=True)
class IsotropyReading:
    """Photodiode readings around the probe tip, relative units (1.0 = the source's baseline)."""

    plus_x: float
    minus_x: float
    plus_y: float
    minus_y: float
    plus_z: float


@dataclass(frozen=True)
class LinkStats:
    frames_sent: int = 0
    frames_received: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    retries: int = 0
    timeouts: int = 0
    duplicates: int = 0
    rtt_p50_ms: float | None = None
    rtt_p99_ms: float | None = None


class LinkEventKind(enum.Enum):
    LOST = "lost"            # no valid answer after bounded retries: treat as beam state unknown
    DEGRADED = "degraded"    # retries or CRC errors above normal
    RESTORED = "restored"    # reconnected through the explicit reconnect() call


@dataclass(frozen=True)
class LinkEvent:
    device: str              # "xrs" or "readout"
    kind: LinkEventKind
    message: str             # what happened and what to do
    host_time_s: float


LinkListener = Callable[[LinkEvent], None]


@runtime_checkable
class XraySource(Protocol):
    """The IORT X-ray unit. Every call blocks until the unit answered or raises DeviceError.

    Calls must come from one thread (the supervisor's). The calling thread writes its request
    itself (beam off must not wait for a read timeout); the driver's own I/O thread reads, decodes
    and matches replies. The driver never sends traffic on its own: the device watchdog must see
    the caller's silence.
    """

    def connect(self) -> XrsIdentity: ...
    def reconnect(self) -> XrsIdentity: ...
    def close(self) -> None: ...
    def status(self) -> XrsStatus: ...
    def heartbeat(self) -> float: ...                       # returns device time in s
    def set_technique(self, kv: float, ua: float) -> None: ...
    def warm_up(self) -> None: ...
    def arm(self, *, backup_time_s: float, irm_limit_gy: float, plan_hash: bytes) -> None: ...
    def beam_on(self, *, plan_hash: bytes) -> None: ...
    def beam_off(self, reason: BeamOffReason) -> None: ...
    def reset_fault(self, *, operator_acknowledgement: str) -> None: ...
    def read_isotropy(self) -> IsotropyReading: ...
    def link_stats(self) -> LinkStats: ...
    def subscribe(self, listener: LinkListener) -> None: ...


# --------------------------------------------------------------------------------------------
# Dose readout (electrometer)
# --------------------------------------------------------------------------------------------


class ReadoutFlag(enum.IntFlag):
    """Error flags of a measured value (UNIDOS `MV` flags field)."""

    NONE = 0
    OVERLOAD_CURRENT = 1 << 0
    OVERLOAD_CHARGE = 1 << 1
    HV_ERROR_CURRENT = 1 << 2
    HV_ERROR_CHARGE = 1 << 3
    LOW_SIGNAL_CURRENT = 1 << 4
    LOW_SIGNAL_CHARGE = 1 << 5
    LOW_AUTOSTART_SIGNAL = 1 << 6
    RADIATION_SAFETY_CURRENT = 1 << 8
    RADIATION_SAFETY_CHARGE = 1 << 9
    INTERNAL = 1 << 10
    UNCALIBRATED = 1 << 11


@dataclass(frozen=True)
class ReadoutIdentity:
    name: str
    type_number: str
    firmware: str
    hardware_revision: str
    serial_number: str


@dataclass(frozen=True)
class MeasuredValues:
    """One `MV` reading in SI units. `integrated` is in C (or Gy), `rate` in A (or Gy/timebase)."""

    status: str
    integrated: float
    integrated_unit: str            # "C" or "Gy"
    rate: float
    rate_unit: str                  # "A" or "Gy"
    timebase: str                   # "" in electrical units, else e.g. "min"
    measuring_time_s: float
    hv_v: float
    flags: ReadoutFlag
    host_time_s: float = 0.0


@dataclass(frozen=True)
class ZeroStatus:
    result: str                     # e.g. "Passed", "Failed", "Running"
    remaining_s: float
    total_s: float


@runtime_checkable
class DoseReadout(Protocol):
    """The electrometer (PTW UNIDOS current ASCII dialect). Calls block until the reply."""

    def connect(self) -> ReadoutIdentity: ...
    def close(self) -> None: ...
    def acquire_write_permission(self) -> None: ...
    def release_write_permission(self) -> None: ...
    def status(self) -> str: ...
    def start(self) -> None: ...
    def hold(self) -> None: ...
    def reset(self) -> None: ...
    def set_integration_time(self, seconds: int) -> None: ...
    def start_interval(self) -> None: ...
    def start_zero_correction(self) -> None: ...
    def zero_status(self) -> ZeroStatus: ...
    def set_range(self, range_name: str) -> None: ...
    def get_range(self) -> str: ...
    def set_hv(self, volts: int) -> None: ...
    def get_hv(self) -> int: ...
    def measured_values(self) -> MeasuredValues: ...
    def link_stats(self) -> LinkStats: ...
    def subscribe(self, listener: LinkListener) -> None: ...
