"""Opens a byte link to a device from any pyserial URL, and logs every byte (the "spy" log).

`/dev/ttyUSB0` (opened exclusively), `socket://host:port`, or `sim://xrs` / `sim://unidos` for the
in-process simulators — the same code path for all. Never interprets the bytes it carries.
"""
from __future__ import annotations

import logging

import serial

if "drivers.urlhandler" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("drivers.urlhandler")

XRS_BAUDRATE = 115200
UNIDOS_BAUDRATE = 115200

# stdlib logger on purpose: checked once per port open, so a disabled spy costs nothing per byte
_spy = logging.getLogger("orconsole.spy")


def open_port(url: str, *, baudrate: int, read_timeout_s: float = 0.002) -> "SpyPort":
    """Open the link named by `url`. Raises serial.SerialException with the port's own reason."""
    kwargs: dict = {"baudrate": baudrate, "timeout": read_timeout_s, "write_timeout": 1.0}
    if "://" not in url:  # a device path: nobody else may hold it (a second console, a terminal)
        kwargs["exclusive"] = True
    port = serial.serial_for_url(url, **kwargs)
    return SpyPort(port, url)


class SpyPort:
    """A pyserial port that logs every byte at debug level, as evidence of what crossed the wire."""

    def __init__(self, port: serial.SerialBase, url: str) -> None:
        self.port = port
        self.url = url
        self.spy_enabled = _spy.isEnabledFor(logging.DEBUG)

    def write(self, data: bytes) -> None:
        if self.spy_enabled:
            _spy.debug("tx", extra={"url": self.url, "hex": data.hex()})
        self.port.write(data)

    def read_available(self, max_bytes: int = 4096) -> bytes:
        """Wait up to the port's short read timeout for at least one byte; return what is there."""
        waiting = self.port.in_waiting
        data = self.port.read(min(max(waiting, 1), max_bytes))
        if data and self.spy_enabled:
            _spy.debug("rx", extra={"url": self.url, "hex": data.hex()})
        return data

    def reset_input_buffer(self) -> None:
        self.port.reset_input_buffer()

    def close(self) -> None:
        self.port.close()

    @property
    def is_open(self) -> bool:
        return bool(self.port.is_open)
