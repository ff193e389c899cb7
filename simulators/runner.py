"""Serves a simulated byte device over a file descriptor (pty master, TCP socket, socketpair end).

One thread per device: it moves bytes between the wire and the device model, applies injected
line faults (silence, bit errors, dropped bytes), and ticks the model so time-driven behaviour
(backup timer, watchdog, ramps) happens on time even when the host says nothing.
It must never import the console's code (orconsole/, drivers/): a simulator that shared the
console's code paths would hide the console's bugs.
"""
from __future__ import annotations

import os
import random
import select
import threading
from dataclasses import dataclass, field
from typing import Protocol

TICK_PERIOD_S = 0.001  # the model is ticked at least this often


class ByteDevice(Protocol):
    """What a simulated device offers the runner. All calls come from the runner's thread."""

    def receive(self, data: bytes) -> None:
        """Bytes that arrived from the host."""

    def transmit(self) -> bytes:
        """Bytes the device wants to send to the host now (may be empty)."""

    def tick(self) -> None:
        """Advance time-driven behaviour to the clock's current time."""


@dataclass
class LineFaults:
    """Faults applied on the wire, in both directions. Changed from any thread via the methods."""

    silent: bool = False              # device stops answering (and hears nothing)
    bit_error_rate: float = 0.0       # probability that any one bit is flipped
    byte_drop_rate: float = 0.0       # probability that any one byte is lost
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        for name in ("bit_error_rate", "byte_drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value!r}")

    def damage(self, data: bytes) -> bytes:
        """Return data as the wire would deliver it under the current fault settings."""
        if self.silent:
            return b""
        if self.bit_error_rate == 0.0 and self.byte_drop_rate == 0.0:
            return data
        out = bytearray()
        rng = self._rng
        for byte in data:
            if self.byte_drop_rate and rng.random() < self.byte_drop_rate:
                continue
            if self.bit_error_rate:
                for bit in range(8):
                    if rng.random() < self.bit_error_rate:
                        byte ^= 1 << bit
            out.append(byte)
        return bytes(out)


class FdRunner:
    """Pumps one ByteDevice over one file descriptor in its own thread until stop() or EOF."""

    def __init__(self, device: ByteDevice, fd: int, name: str, faults: LineFaults | None = None,
                 close_fd: bool = True) -> None:
        self.device = device
        self.fd = fd
        self.name = name
        self.faults = faults or LineFaults()
        self._close_fd = close_fd
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"sim-{name}", daemon=True)
        self.error: BaseException | None = None
        self.host_closed = threading.Event()

    def start(self) -> "FdRunner":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        self._thread.join(timeout_s)
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                readable, _, _ = select.select([self.fd, self._stop_r], [], [], TICK_PERIOD_S)
                if self._stop_r in readable:
                    break
                if self.fd in readable:
                    try:
                        data = os.read(self.fd, 4096)
                    except OSError:  # pty master reports EIO when the slave side is closed
                        data = b""
                    if not data:
                        self.host_closed.set()
                        # a pty slave may be reopened later; keep ticking, poll less eagerly
                        select.select([self._stop_r], [], [], 0.01)
                    else:
                        self.host_closed.clear()
                        data = self.faults.damage(data)
                        if data:
                            self.device.receive(data)
                self.device.tick()
                out = self.device.transmit()
                if out:
                    out = self.faults.damage(out)
                    if out:
                        self._write_all(out)
        except BaseException as exc:  # reported, never swallowed silently
            self.error = exc
            raise
        finally:
            if self._close_fd:
                try:
                    os.close(self.fd)
                except OSError:
                    pass

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 0.01)
                continue
            except OSError:
                return  # host side gone; the bytes are lost as on a real unplugged cable
            view = view[n:]
