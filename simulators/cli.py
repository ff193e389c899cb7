"""`orconsole-sim`: serve the simulated X-ray unit, electrometer, or the coupled bench on a pty or TCP.

Prints exactly one first line `READY <port>` (bench: `READY xrs=<port> unidos=<port>`), then one JSON
object per line for each device event, and serves until SIGTERM/SIGINT. Fault times count from the
first beam on. Must never import the console's code (orconsole/, drivers/).
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from dataclasses import dataclass

from simulators.bench import Bench
from simulators.runner import FdRunner
from simulators.world import Room



@dataclass(frozen=True)
class FaultSpec:
    """`KIND[:VALUE]@SECONDS` — e.g. `hv_arc@5`, `output_drop:0.15@3`, `bit_errors:1e-3@0`."""

    kind: str
    value: float | None
    after_beam_on_s: float

    @classmethod
    def parse(cls, text: str) -> "FaultSpec":
        if "@" not in text:
            raise argparse.ArgumentTypeError(
                f"fault {text!r} must look like KIND@SECONDS or KIND:VALUE@SECONDS, e.g. hv_arc@5")
        head, _, when = text.rpartition("@")
        kind, _, value = head.partition(":")
        try:
            seconds = float(when)
            number = float(value) if value else None
        except ValueError:
            raise argparse.ArgumentTypeError(f"fault {text!r}: time and value must be numbers") from None
        if not seconds >= 0 or seconds == float("inf"):
            raise argparse.ArgumentTypeError(f"fault {text!r}: time must be a finite number ≥ 0 s")
        if not kind:
            raise argparse.ArgumentTypeError(f"fault {text!r}: kind is empty")
        return cls(kind, number, seconds)


class EventPrinter:
    """Writes one JSON object per line to stdout; safe from any thread."""

    def __init__(self, stream=sys.stdout) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def print_line(self, line: str) -> None:
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def event(self, event: dict) -> None:
        self.print_line(json.dumps(event, sort_keys=True, default=str))


class FaultScheduler:
    """Arms the requested faults at the first beam on, each after its delay."""

    def __init__(self, bench: Bench, faults: list[FaultSpec], printer: EventPrinter) -> None:
        self.bench = bench
        self.faults = faults
        self.printer = printer
        self._started = False
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()

    def on_event(self, event: dict) -> None:
        if event.get("event") == "beam_on" and event.get("device", "xrs") == "xrs":
            with self._lock:
                if self._started:
                    return
                self._started = True
                for spec in self.faults:
                    timer = threading.Timer(spec.after_beam_on_s, self.apply, args=(spec,))
                    timer.daemon = True
                    self._timers.append(timer)
                    timer.start()

    def start_now(self) -> None:
        """For a device without beam (electrometer alone): count from start."""
        self.on_event({"event": "beam_on", "device": "xrs"})

    def apply(self, spec: FaultSpec) -> None:
        params = {} if spec.value is None else {"value": spec.value}
        if spec.kind.startswith("unidos_"):
            kind = spec.kind.removeprefix("unidos_")
            if kind == "silent":
                self.bench.faults["unidos"].silent = True
            else:
                self.bench.unidos_model.inject(kind, **params)
        else:
            self.bench.xrs_model.inject(spec.kind, **params)  # device and line faults alike
        self.printer.event({"event": "fault_injected", "kind": spec.kind, "value": spec.value,
                            "after_beam_on_s": spec.after_beam_on_s})

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orconsole-sim",
                                     description="Simulated IORT X-ray unit and UNIDOS electrometer.")
    sub = parser.add_subparsers(dest="device", required=True, metavar="DEVICE")
    for name, text in (("xrs", "the X-ray unit alone"),
                       ("unidos", "the electrometer alone, measuring a constant field"),
                       ("bench", "both, coupled: the chamber in the QA holder sees the source")):
        p = sub.add_parser(name, help=text)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
        where.add_argument("--tcp", type=int, metavar="PORT",
                           help="serve on 127.0.0.1:PORT (bench: PORT and PORT+1)")
        p.add_argument("--source", default="fast", help="simulated source: fast (default) or clinical")
        p.add_argument("--applicator", default="3.0", metavar="CM",
                       help="mounted applicator diameter in cm, or 'none' (default 3.0)")
        p.add_argument("--fault", action="append", default=[], type=FaultSpec.parse, metavar="KIND@SECONDS",
                       help="inject a fault N s after the first beam on; repeatable")
        p.add_argument("--temperature", type=float, default=20.0, metavar="C", help="room temperature")
        p.add_argument("--pressure", type=float, default=101.325, metavar="KPA", help="room pressure")
        p.add_argument("--seed", type=int, default=None, help="seed for noise and line faults")
        if name == "unidos":
            p.add_argument("--field-pa", type=float, default=100.0,
                           help="constant ionisation current at reference air density, pA (default 100)")
    cal = sub.add_parser("calibration", help="print the source's calibration document (JSON) dated today")
    cal.add_argument("--source", default="fast")
    return parser


def _serve_tcp(bench: Bench, kind: str, port: int, stop: threading.Event) -> tuple[str, threading.Thread]:
    server = socket.create_server(("127.0.0.1", port), reuse_port=False)
    server.settimeout(0.2)
    runners: list[FdRunner] = []

    def accept_loop() -> None:
        with server:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                conn.setblocking(False)
                for old in runners:  # one host at a time, like a serial line
                    old.stop()
                runners.clear()
                runners.append(bench._start(kind, conn.detach()))

    thread = threading.Thread(target=accept_loop, name=f"tcp-{kind}", daemon=True)
    thread.start()
    return f"socket://127.0.0.1:{server.getsockname()[1]}", thread


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "calibration":
        from datetime import date

        from simulators.sources import calibration_document

        print(json.dumps(calibration_document(args.source, calibrated_on=date.today()), indent=2, sort_keys=True))
        return 0

    printer = EventPrinter()
    scheduler_box: list[FaultScheduler] = []

    def on_event(event: dict) -> None:
        printer.event(event)
        if scheduler_box:
            scheduler_box[0].on_event(event)

    applicator = None if args.applicator.lower() == "none" else float(args.applicator)
    bench = Bench(source=args.source, applicator_cm=applicator,
                  room=Room(args.temperature, args.pressure), seed=args.seed, on_event=on_event,
                  constant_field_a=(args.field_pa * 1e-12) if args.device == "unidos" else None)
    scheduler = FaultScheduler(bench, args.fault, printer)
    scheduler_box.append(scheduler)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    kinds = ["xrs", "unidos"] if args.device == "bench" else [args.device]
    ports = {}
    for i, kind in enumerate(kinds):
        if args.pty:
            ports[kind] = bench.serve_pty(kind)
        else:
            ports[kind], _ = _serve_tcp(bench, kind, args.tcp + i if args.tcp else 0, stop)
    if args.device == "bench":
        printer.print_line(f"READY xrs={ports['xrs']} unidos={ports['unidos']}")
    else:
        printer.print_line(f"READY {ports[args.device]}")
    if args.device == "unidos":
        scheduler.start_now()
    try:
        while not stop.wait(0.1):
            pass
    finally:
        scheduler.cancel()
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
