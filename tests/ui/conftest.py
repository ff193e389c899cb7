"""Fixtures for the bedside UI tests: the style sheet, a warmed-up simulated X-ray unit on the fast
source (1.5 cm applicator: ~8 s for 20 Gy, with a site config that explicitly allows short treatments),
and a Supervisor with an approved plan ready to arm."""
from __future__ import annotations

import itertools
import time

import pytest

from orconsole.config import DeliveryConfig, PlanningConfig, SiteConfig

_names = itertools.count()

# Explicit: the simulator's fast source makes treatments of seconds; the default bounds would refuse them.
FAST_CONFIG = SiteConfig(planning=PlanningConfig(treatment_time_min_s=5.0), delivery=DeliveryConfig(ramp_up_s=0.5))
APPLICATOR_CM = 1.5


@pytest.fixture
def styled(qapp):
    from ui import theme
    qapp.setStyleSheet(theme.style_sheet())
    return qapp


def wait_ready(xrs, timeout_s: float = 15.0) -> None:
    from drivers.hal import XrsState
    deadline = time.monotonic() + timeout_s
    while xrs.status().state is not XrsState.READY:
        assert time.monotonic() < deadline, "the simulated unit did not warm up"
        time.sleep(0.05)


@pytest.fixture
def sim_xrs():
    from drivers.xrs import XrsDriver
    from simulators.bench import get_bench, reset_benches
    name = f"ui-{next(_names)}"
    bench = get_bench(name, source="fast", applicator=str(APPLICATOR_CM), seed="7")
    driver = XrsDriver(f"sim://xrs?bench={name}")
    identity = driver.connect()
    driver.set_technique(50.0, 40.0)
    driver.warm_up()
    wait_ready(driver)
    yield driver, identity, bench
    driver.close()
    reset_benches()


@pytest.fixture
def ready_supervisor(sim_xrs, tmp_path):
    """A started Supervisor in READY with an approved 1.5 cm plan for 20 Gy (~8.3 s)."""
    from orconsole.dosecalc import compute_treatment_time, make_plan
    from orconsole.dosecheck import check_plan
    from orconsole.models import ApplicatorDoseRate, Approval, ApprovedPlan, ApproverRole, SourceCalibration
    from orconsole.supervisor import Supervisor
    from simulators.clock import MonotonicClock
    from simulators.sources import load_source
    from tests.core import factories as f

    xrs, identity, bench = sim_xrs
    source = load_source("fast")
    calibration = SourceCalibration(
        source_serial=source.serial, qa_reference_reading_c=source.reference_reading_c,
        dose_rates=tuple(ApplicatorDoseRate(diameter_cm=a.diameter_cm,
                                            surface_dose_rate_gy_per_min=a.surface_dose_rate_gy_per_min,
                                            assumption=a.assumption) for a in source.applicators),
        calibration_date=f.TODAY, valid_until=f.TODAY, calibrated_by="simulator data")
    qa = f.qa(source_serial=identity.serial_number)
    t = compute_treatment_time(prescription_dose_gy=20.0, applicator_cm=APPLICATOR_CM, protocol=f.protocol(),
                               calibration=calibration, qa_results=[qa], device_source_serial=identity.serial_number,
                               today=f.TODAY, config=FAST_CONFIG)
    plan = make_plan(t, plan_id="PLAN-UI-1", patient=f.patient(), cavity=f.cavity(), protocol=f.protocol(),
                     created_at=f.NOW, created_by="test")
    check = check_plan(plan, calibration, agreement_fraction=FAST_CONFIG.planning.independent_check_agreement_fraction)
    approved = (ApprovedPlan(plan=plan).with_approval(f.physician_approval(plan))
                .with_approval(Approval(plan_content_hash=plan.content_hash, role=ApproverRole.PHYSICIST,
                                        approver_id="p", approver_name="P", approved_at=f.NOW, signature_ref="s",
                                        independent_check=check)))
    journal = tmp_path / "journal.jsonl"
    sup = Supervisor(xrs, journal_path=journal, clock=MonotonicClock(), device_source_serial=identity.serial_number,
                     config=FAST_CONFIG, today=lambda: f.TODAY, qa_results=lambda: [qa])
    box = sup.subscribe()
    sup.start()
    try:
        for future in (sup.load_plan(ApprovedPlan(plan=plan)), sup.approve(approved),
                       sup.verify_identity(medical_record_number=f.patient().medical_record_number,
                                           date_of_birth=f.patient().date_of_birth),
                       sup.confirm_ready()):
            result = future.result(timeout=5)
            assert result.ok, result.reason
        sup.test_plan = plan
        sup.test_journal = journal
        sup.test_bench = bench
        yield sup, box
    finally:
        sup.close()


# -- the whole console on a realistic installation (tests/support) ------------------------------------------


@pytest.fixture(scope="session")
def installation_without_qa(tmp_path_factory):
    """Users and the approved calibration, but no output check today."""
    from tests.support.installation import make_installation
    home = tmp_path_factory.mktemp("installation-noqa") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORCONSOLE_HOME", str(home))
        mp.delenv("ORCONSOLE_INSTALLATION_KEY", raising=False)
        return make_installation(home, output_check="none")


class Console:
    """A ConsoleWindow on the service that orconsole.wiring builds from the command line (--dev)."""

    def __init__(self, qtbot, installation, home, monkeypatch, applicator_cm: float = APPLICATOR_CM,
                 bench_name: str | None = None) -> None:
        from orconsole.wiring import build_treatment_service
        from simulators.bench import get_bench
        from tests.support.installation import console_args
        self.qtbot = qtbot
        self.installation = installation.copy_to(home) if installation.home != home else installation
        monkeypatch.setenv("ORCONSOLE_HOME", str(home))
        monkeypatch.delenv("ORCONSOLE_INSTALLATION_KEY", raising=False)
        monkeypatch.delenv("ORCONSOLE_CONFIG", raising=False)
        self.bench_name = bench_name or f"ui-console-{next(_names)}"     # the same bench = the same unit
        self.bench = get_bench(self.bench_name, source="fast", applicator=str(applicator_cm), seed="7")
        self.args = console_args(self.installation, self.bench_name)
        self.parts = build_treatment_service(self.args)
        self.window = None
        self.open_window()

    def open_window(self):
        from ui.app import ConsoleWindow
        self.window = ConsoleWindow(service=self.parts.service, identity=self.parts.identity, store=self.parts.store,
                                    dev_bench=self.parts.bench)
        self.qtbot.addWidget(self.window)
        self.window.resize(1600, 1000)
        self.window.show()
        self.qtbot.waitExposed(self.window)
        return self.window

    @property
    def service(self):
        return self.parts.service

    def password(self, user: str) -> str:
        return self.installation.passwords[user]

    def close(self) -> None:
        if self.window is not None:
            self.window.shutdown()
            self.window.close()
            self.window = None
        if self.parts is not None:
            self.parts.service.close()
            self.parts.store.close()
            self.parts = None


@pytest.fixture
def console_factory(styled, qtbot, tmp_path, monkeypatch):
    """console_factory(installation, applicator_cm=1.5) → Console; everything is closed afterwards."""
    from simulators.bench import reset_benches
    made: list[Console] = []

    def make(installation, applicator_cm: float = APPLICATOR_CM, home=None, bench_name=None) -> Console:
        console = Console(qtbot, installation, home or tmp_path / f"home{len(made)}", monkeypatch, applicator_cm,
                          bench_name)
        made.append(console)
        return console
    yield make
    for console in made:
        console.close()
    reset_benches()
