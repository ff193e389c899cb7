"""Logging is configured once: JSON lines to the log file, text to the terminal, and with --spy every
byte on each device link in the file as evidence."""
from __future__ import annotations

import json
import logging

import pytest
import structlog

from drivers.xrs import XrsDriver
from orconsole.logging_setup import configure_logging
from simulators.bench import reset_benches


@pytest.fixture
def restore_logging():
    yield
    configure_logging(log_file=None)
    logging.getLogger("orconsole.spy").setLevel(logging.INFO)


def read_lines(path):
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_spy_log_records_every_byte_on_the_link_as_json(tmp_path, restore_logging):
    log_file = tmp_path / "console.jsonl"
    configure_logging(log_file=log_file, spy=True)
    driver = XrsDriver("sim://xrs?bench=spy-test")
    try:
        driver.connect()
        driver.status()
    finally:
        driver.close()
        reset_benches()
    lines = read_lines(log_file)
    spy = [line for line in lines if line.get("logger") == "orconsole.spy"]
    assert {line["event"] for line in spy} >= {"tx", "rx"}
    assert all(bytes.fromhex(line["hex"]) for line in spy)
    assert all(line["url"] == "sim://xrs?bench=spy-test" for line in spy)


def test_without_spy_the_file_holds_events_but_no_bytes(tmp_path, restore_logging):
    log_file = tmp_path / "console.jsonl"
    configure_logging(log_file=log_file, spy=False)
    structlog.get_logger("orconsole.test").info("treatment_started", planned_time_s=22.99)
    driver = XrsDriver("sim://xrs?bench=nospy-test")
    try:
        driver.connect()
    finally:
        driver.close()
        reset_benches()
    lines = read_lines(log_file)
    assert not [line for line in lines if line.get("logger") == "orconsole.spy"]
    started = [line for line in lines if line.get("event") == "treatment_started"]
    assert started and started[0]["planned_time_s"] == 22.99 and started[0]["level"] == "info"
    assert "timestamp" in started[0]
