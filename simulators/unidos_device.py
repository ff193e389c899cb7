"""The simulated UNIDOS as a byte device for simulators.runner: cuts the host's bytes into CR LF
lines, asks the model for each reply, and releases replies when they are due (ping-pong).

Pure plumbing between the wire and UnidosModel: no behaviour of its own, never imports the console.
"""
from __future__ import annotations

import threading
from collections import deque

from protocol import unidos as u
from simulators.unidos_model import UnidosModel


class UnidosDevice:
    """Implements simulators.runner.ByteDevice for one UnidosModel."""

    def __init__(self, model: UnidosModel) -> None:
        self.model = model
        self._splitter = u.LineSplitter(model.max_request_bytes, ascii_only=True)
        self._outbox: deque[tuple[float, bytes]] = deque()
        self._lock = threading.Lock()

    @property
    def bad_lines(self) -> int:
        """Lines refused before parsing (over-long, not ASCII, control characters)."""
        return self._splitter.bad_lines

    def receive(self, data: bytes) -> None:
        for item in self._splitter.feed(data):
            replies = self.model.respond(item)
            with self._lock:
                self._outbox.extend(replies)

    def transmit(self) -> bytes:
        now = self.model.clock.now_s()
        out = bytearray()
        with self._lock:
            while self._outbox and self._outbox[0][0] <= now:
                out += self._outbox.popleft()[1]
        return bytes(out)

    def tick(self) -> None:
        self.model.tick()
