"""The composition root for the bedside window: from command-line options to a started service, and
the window opened on it — against the in-process simulators, offscreen."""
from __future__ import annotations

import argparse

import pytest

from orconsole.cli import build_parser
from orconsole.config import ConfigError
from orconsole.wiring import build_treatment_service, site_config
from simulators.bench import reset_benches


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCONSOLE_HOME", str(tmp_path))
    monkeypatch.delenv("ORCONSOLE_DB", raising=False)
    monkeypatch.delenv("ORCONSOLE_CONFIG", raising=False)
    monkeypatch.delenv("ORCONSOLE_INSTALLATION_KEY", raising=False)
    yield tmp_path
    reset_benches()


def test_window_options_build_a_connected_service_on_a_fresh_installation(home, qtbot):
    args = build_parser().parse_args(["--dev", "--xrs", "sim://xrs?bench=wiring", "--readout", "sim://unidos?bench=wiring"])
    parts = build_treatment_service(args)
    try:
        assert parts.bench is not None and parts.bench.xrs_model is not None
        assert parts.service.xrs_identity.serial_number.startswith("XRS-SIM-FAST")
        assert (home / "installation-key.pem").exists()
        assert parts.identity.has_users() is False  # no default account: the first administrator is explicit
        from ui.app import ConsoleWindow

        window = ConsoleWindow(service=parts.service, identity=parts.identity, store=parts.store,
                               dev_bench=parts.bench)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        assert window.isVisible()
        window.shutdown()
    finally:
        parts.service.close()
        parts.store.close()


def test_the_site_configuration_is_never_chosen_silently(tmp_path, monkeypatch):
    monkeypatch.delenv("ORCONSOLE_CONFIG", raising=False)
    defaults = site_config(argparse.Namespace(config=None))
    assert defaults.planning.treatment_time_min_s == 60.0
    bad = tmp_path / "site.toml"
    bad.write_text("[planning]\ntreatment_time_min_s = -5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        site_config(argparse.Namespace(config=bad))
    assert "treatment_time_min_s" in str(refused.value.message)
