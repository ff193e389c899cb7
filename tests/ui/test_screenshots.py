"""The demo's screenshot of the treatment screen mid-treatment: a real PNG of a real snapshot, taken
without sending any command."""
from __future__ import annotations

import os
import shutil

import pytest
from PySide6.QtGui import QImage

from orconsole.statemachine import State
from ui.screenshots import capture_treatment_screenshot, treatment_view


def test_treatment_screenshot_mid_treatment_is_written(styled, ready_supervisor, tmp_path):
    sup, box = ready_supervisor
    for future in (sup.arm(), sup.beam_on()):
        assert future.result(timeout=5).ok
    snap = box.wait_for(lambda s: s.state is State.BEAM_ON and s.elapsed_s > 3.0, 15)
    assert snap is not None
    path = capture_treatment_screenshot(box, tmp_path / "treatment.png")
    image = QImage(str(path))
    assert not image.isNull() and image.width() == 1600 and image.height() == 1000
    if os.environ.get("ORCONSOLE_KEEP_SCREENSHOT"):
        shutil.copy(path, os.environ["ORCONSOLE_KEEP_SCREENSHOT"])
    view = treatment_view(box.latest())
    latest = box.latest()
    assert "BEAM ON" in view.banner.text(), (latest.last_message, [i.text for i in latest.interlocks])
    assert view.screen.remaining.text() != "--:--.-"
    with pytest.raises(AttributeError):
        view.screen.controller.beam_on     # a screenshot view cannot command the beam
    view.close()
    assert sup.stop().result(timeout=5).ok
