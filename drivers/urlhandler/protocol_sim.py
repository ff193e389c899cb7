"""pyserial handler for `sim://xrs` and `sim://unidos`: a port wired to an in-process simulator.

URL: sim://<xrs|unidos>[?bench=NAME&source=fast|clinical&applicator=CM&seed=N]. Devices with the
same bench name share one simulated world (the coupled bench). Production code opens it like any
other port; this handler is the only place the drivers touch the simulators.
"""
from __future__ import annotations

import socket
import urllib.parse

from serial.serialutil import SerialException
from serial.urlhandler.protocol_socket import Serial as _SocketSerial

KINDS = ("xrs", "unidos")


def parse_sim_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "sim":
        raise SerialException(f"expected a sim:// URL, got {url!r}")
    kind = (parts.netloc or parts.path.lstrip("/")).lower()
    if kind not in KINDS:
        raise SerialException(f"sim:// device must be one of {', '.join(KINDS)}, got {kind!r} in {url!r}")
    options = {}
    for key, values in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items():
        if key not in ("bench", "source", "applicator", "seed"):
            raise SerialException(f"unknown sim:// option {key!r} in {url!r}")
        options[key] = values[-1]
    return kind, options


class Serial(_SocketSerial):
    """A socket-backed port whose peer is an in-process simulated device."""

    def open(self) -> None:
        self.logger = None
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        kind, options = parse_sim_url(self.portstr)
        from simulators import bench as bench_mod  # the one crossing from drivers to simulators

        bench = bench_mod.get_bench(options.get("bench", "default"), **{
            k: v for k, v in options.items() if k != "bench"})
        self._socket = bench.serve_socket(kind)
        self._socket.setblocking(False)
        self.is_open = True
        self.reset_input_buffer()

    def close(self) -> None:
        if self.is_open and self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._socket.close()
            self._socket = None
        self.is_open = False

    def from_url(self, url: str):  # pragma: no cover - not used: open() parses the URL itself
        return parse_sim_url(url)

    def _reconfigure_port(self, *args, **kwargs) -> None:
        """Baud rate and framing mean nothing on an in-process link."""

    def _update_dtr_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass
