"""The coupled bench: one simulated X-ray unit and one electrometer sharing a physical world.

The ion chamber on the electrometer sits in the QA holder and sees the source's output, so an
output check measures what the X-ray model really emits. Benches are kept by name so that
`sim://xrs` and `sim://unidos` opened separately reach the same world. Never imports drivers/.
"""
from __future__ import annotations

import os
import pty
import socket
import threading
import tty
from typing import Callable

from simulators.clock import MonotonicClock
from simulators.runner import FdRunner, LineFaults
from simulators.world import Room

EventSink = Callable[[dict], None]


class Bench:
    """One X-ray unit + one electrometer + the room, served over socketpairs or ptys."""

    def __init__(self, *, clock=None, source: str = "fast", applicator_cm: float | None = 3.0,
                 room: Room | None = None, seed: int | None = None,
                 on_event: EventSink | None = None, constant_field_a: float | None = None) -> None:
        from simulators.sources import load_source
        from simulators.unidos_device import UnidosDevice
        from simulators.unidos_model import UnidosModel
        from simulators.xrs_device import XrsDevice
        from simulators.xrs_model import XrsModel

        self.clock = clock or MonotonicClock()
        self.room = room or Room()
        self.source = load_source(source)
        self._on_event = on_event
        self.xrs_model = XrsModel(self.clock, self.source, applicator_cm=applicator_cm, seed=seed,
                                  on_event=lambda e: self._emit("xrs", e))
        field_charge = None
        if constant_field_a is None:
            field = lambda now_s: self.xrs_model.output_fraction(now_s) * self.source.qa_chamber_current_a  # noqa: E731
            field_charge = lambda now_s: self.xrs_model.output_integral_s(now_s) * self.source.qa_chamber_current_a  # noqa: E731
        else:
            field = lambda now_s: constant_field_a  # noqa: E731
        # the fast test bench runs the electrometer's slow procedures (warm-up, zeroing, self test)
        # at the same speed factor as the source, so a whole output check takes seconds
        speed = self.source.speed_factor
        self.unidos_model = UnidosModel(self.clock, field_current_a=field, field_charge_c=field_charge, room=self.room,
                                        seed=None if seed is None else seed + 1,
                                        on_event=lambda e: self._emit("unidos", e),
                                        warmup_s=300.0 / speed, zero_duration_s=82.0 / speed,
                                        self_test_duration_s=89.0 / speed, hv_ramp_v_per_s=50.0 * speed)
        self.devices = {"xrs": XrsDevice(self.xrs_model), "unidos": UnidosDevice(self.unidos_model)}
        self.faults = {"xrs": LineFaults(seed=seed), "unidos": LineFaults(seed=seed)}
        self.xrs_model.attach_line_faults(self.faults["xrs"])  # silent / bit_errors / byte_drops
        self._runners: list[FdRunner] = []
        self._lock = threading.Lock()

    def _emit(self, device: str, event: dict) -> None:
        if self._on_event is not None:
            self._on_event({"device": device, **event})

    def serve_socket(self, kind: str) -> socket.socket:
        """Serve device `kind` on a fresh socketpair; return the host's end."""
        host_end, device_end = socket.socketpair()
        device_end.setblocking(False)
        fd = device_end.detach()
        self._start(kind, fd)
        return host_end

    def serve_pty(self, kind: str) -> str:
        """Serve device `kind` on a new pseudo-terminal; return the path a console opens."""
        master_fd, slave_fd = pty.openpty()
        tty.setraw(slave_fd)
        path = os.ttyname(slave_fd)
        os.close(slave_fd)  # the master keeps the pty alive; the console opens the path
        os.set_blocking(master_fd, False)
        self._start(kind, master_fd)
        return path

    def _start(self, kind: str, fd: int) -> FdRunner:
        if kind not in self.devices:
            raise ValueError(f"unknown simulated device {kind!r}: expected 'xrs' or 'unidos'")
        runner = FdRunner(self.devices[kind], fd, name=kind, faults=self.faults[kind]).start()
        with self._lock:
            self._runners.append(runner)
        return runner

    def stop(self) -> None:
        with self._lock:
            runners, self._runners = self._runners, []
        for runner in runners:
            runner.stop()


_benches: dict[str, Bench] = {}
_benches_lock = threading.Lock()


def get_bench(name: str = "default", **options: str) -> Bench:
    """Return the named in-process bench, creating it with `options` on first use."""
    with _benches_lock:
        bench = _benches.get(name)
        if bench is None:
            kwargs: dict = {}
            if "source" in options:
                kwargs["source"] = options["source"]
            if "applicator" in options:
                kwargs["applicator_cm"] = None if options["applicator"] in ("", "none") else float(options["applicator"])
            if "seed" in options:
                kwargs["seed"] = int(options["seed"])
            bench = Bench(**kwargs)
            _benches[name] = bench
        return bench


def reset_benches() -> None:
    """Stop and forget every in-process bench (tests call this between cases)."""
    with _benches_lock:
        benches = list(_benches.values())
        _benches.clear()
    for bench in benches:
        bench.stop()
