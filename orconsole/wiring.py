"""Builds a console's collaborators from the command line: store, identity, devices, treatment service.

The composition root for the bedside window (ui.app.run_console) — the one place that constructs
drivers, the store and the service for it. Must never hold safety logic or choose a configuration
silently: the site configuration comes from --config, ORCONSOLE_CONFIG, or the safe defaults.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.unidos import UnidosDriver
from drivers.xrs import XrsDriver
from logs.crypto import InstallationKey
from logs.store import Store, default_installation_key_path
from orconsole.config import SiteConfig, load_config
from orconsole.identity import IdentityService
from orconsole.paths import journal_dir
from orconsole.treatment import TreatmentService


class MonotonicClock:
    """The supervisor's time source: the system monotonic clock, never the wall clock."""

    @staticmethod
    def now_s() -> float:
        return time.monotonic()


@dataclass
class ConsoleParts:
    """What the window needs; `bench` is the in-process simulator bench in --dev mode, else None."""

    service: TreatmentService
    identity: IdentityService
    store: Store
    config: SiteConfig
    bench: Any = None


def site_config(args) -> SiteConfig:
    """--config FILE, else ORCONSOLE_CONFIG, else the safe defaults (never the simulator's file)."""
    path = getattr(args, "config", None) or os.environ.get("ORCONSOLE_CONFIG")
    return load_config(Path(path) if path else None)


def _bench_of(url: str):
    """The in-process bench behind a sim:// URL (developer mode's fault panel), else None."""
    if not url.startswith("sim://"):
        return None
    from urllib.parse import parse_qs, urlsplit

    from simulators.bench import get_bench  # developer mode only: the fault panel drives the simulator

    name = parse_qs(urlsplit(url).query).get("bench", ["default"])[-1]
    return get_bench(name)


def build_treatment_service(args) -> ConsoleParts:
    """Connect to the devices named in args (.xrs, .readout, .db, .config, .dev) and start the service.

    Raises orconsole.config.ConfigError, drivers.errors.DeviceError or treatment.WorkflowRefused with a
    message that says what to do; nothing is left open when it raises.
    """
    config = site_config(args)
    store = Store(getattr(args, "db", None))
    try:
        key = InstallationKey.load_or_create(default_installation_key_path())
        identity = IdentityService(store, key)
        xrs, readout = XrsDriver(args.xrs), UnidosDriver(args.readout)
        service = TreatmentService(store=store, identity=identity, config=config, xrs=xrs, readout=readout,
                                   journal_dir=journal_dir(), clock=MonotonicClock(),
                                   realtime_priority=True)  # granted with CAP_SYS_NICE; logged if refused
        try:
            service.connect_devices()
            service.start()
        except BaseException:
            service.close()
            raise
    except BaseException:
        store.close()
        raise
    bench = _bench_of(args.xrs) if getattr(args, "dev", False) else None
    return ConsoleParts(service=service, identity=identity, store=store, config=config, bench=bench)
