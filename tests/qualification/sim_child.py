"""The simulated bench in its own process for faults `orconsole-sim --fault` cannot express (an output step or
drift with an explicit duration at constant tube current): same READY line and JSON events as orconsole-sim,
plus `--schedule KIND:PARAM=VALUE[,PARAM=VALUE]@SECONDS` (device time after the first beam on).
Imports only simulators/ (never the console's code). Tests and benchmarks.qualify only.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    from simulators.bench import Bench
    from simulators.cli import EventPrinter

    parser = argparse.ArgumentParser(prog="sim_child")
    parser.add_argument("--applicator", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--schedule", action="append", default=[])
    args = parser.parse_args(argv)
    printer = EventPrinter()
    bench = Bench(source="fast", applicator_cm=args.applicator, seed=args.seed, on_event=printer.event)
    for spec in args.schedule:
        head, _, when = spec.rpartition("@")
        kind, _, rest = head.partition(":")
        params = {k: float(v) for k, v in (p.split("=") for p in rest.split(",") if p)}
        bench.xrs_model.schedule_fault(kind, float(when), **params)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    xrs, unidos = bench.serve_pty("xrs"), bench.serve_pty("unidos")
    printer.print_line(f"READY xrs={xrs} unidos={unidos}")
    try:
        while not stop.wait(0.1):
            pass
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
