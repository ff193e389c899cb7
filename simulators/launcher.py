"""Starts `orconsole-sim` in a separate process and reads its READY line and JSON events.

For tests, benchmarks and the qualification suite: the simulator runs in its own process on a real
pty, like a device on a USB-serial adapter. Never used by the console in production.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time


class SimulatorProcess:
    """`with SimulatorProcess("bench", "--pty") as sim: sim.ports["xrs"]` — stopped on exit."""

    def __init__(self, device: str, *args: str, ready_timeout_s: float = 30.0) -> None:
        self.device = device
        self.args = [device, *args]
        self.ready_timeout_s = ready_timeout_s
        self.ports: dict[str, str] = {}
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.all_events: list[dict] = []
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._err_reader: threading.Thread | None = None
        self.stderr_lines: list[str] = []

    def start(self) -> "SimulatorProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen([sys.executable, "-m", "simulators", *self.args], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first = self._read_ready_line()
        if not first.startswith("READY "):
            err = self._proc.stderr.read() if self._proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"orconsole-sim did not start: first line {first!r}; stderr: {err[-2000:]}")
        for part in first.split()[1:]:
            if "=" in part:
                kind, _, port = part.partition("=")
                self.ports[kind] = port
            else:
                self.ports[self.device] = part
        self._reader = threading.Thread(target=self._read_events, name=f"simproc-{self.device}", daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_stderr, name=f"simproc-err-{self.device}", daemon=True)
        self._err_reader.start()
        return self

    def _read_ready_line(self) -> str:
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self._proc.stdout.readline()), daemon=True)
        t.start()
        t.join(self.ready_timeout_s)
        return box[0].strip() if box else ""

    def _read_events(self) -> None:
        for line in self._proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "unparsed", "line": line}
            self.all_events.append(event)
            self.events.put(event)

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            self.stderr_lines.append(line.rstrip())

    def wait_event(self, name: str, timeout_s: float = 10.0, **match) -> dict:
        """Wait for the next event called `name` (with matching fields); raise TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {name!r} event from orconsole-sim within {timeout_s} s")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                return event

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout_s)
        for reader in (self._reader, self._err_reader):
            if reader is not None:
                reader.join(2.0)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream:
                stream.close()
        return self._proc.returncode

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
