"""The simulated UNIDOS as a byte device for simulators.runner: cuts the host's bytes into CR LF
lines, asks the model for each reply, and releases replies when they are due (ping-pong).

One runner thread serves one connection; when several connections share the device (a reconnect
opens a new one while the old runner still ticks), each reply goes back on the connection that
asked. Pure plumbing between the wire and UnidosModel; never imports the console.
"""
from __future__ import annotations

import threading
from collections import deque

from protocol import unidos as u
from simulators.unidos_model import UnidosModel


class _Connection:
    def __init__(self, max_request_bytes: int) -> None:
        self.splitter = u.LineSplitter(max_request_bytes, ascii_only=True)
        self.outbox: deque[tuple[float, bytes]] = deque()


class UnidosDevice:
    """Implements simulators.runner.ByteDevice for one UnidosModel."""

    def __init__(self, model: UnidosModel) -> None:
        self.model = model
        self._connections: dict[threading.Thread, _Connection] = {}
        self._lock = threading.Lock()

    def _connection(self) -> _Connection:
        """The connection served by the calling runner thread."""
        key = threading.current_thread()          # not the ident: idents are reused, threads are not
        with self._lock:
            conn = self._connections.get(key)
            if conn is None:
                for stale in [t for t in self._connections if not t.is_alive()]:
                    del self._connections[stale]
                conn = self._connections[key] = _Connection(self.model.max_request_bytes)
            return conn

    @property
    def bad_lines(self) -> int:
        """Lines refused before parsing (over-long, not ASCII, control characters), all connections."""
        with self._lock:
            return sum(c.splitter.bad_lines for c in self._connections.values())

    def receive(self, data: bytes) -> None:
        conn = self._connection()
        for item in conn.splitter.feed(data):
            conn.outbox.extend(self.model.respond(item))

    def transmit(self) -> bytes:
        conn = self._connection()
        now = self.model.clock.now_s()
        out = bytearray()
        while conn.outbox and conn.outbox[0][0] <= now:
            out += conn.outbox.popleft()[1]
        return bytes(out)

    def tick(self) -> None:
        self.model.tick()
