"""Test-session rules for the whole suite: headless Qt, and no thread, pty or process left behind.

A test that leaves a simulator thread, an open pseudo-terminal or a child process running fails,
because in production such a leftover is a link nobody watches.
"""
from __future__ import annotations

import gc
import os
import threading
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _open_ptys() -> set[str]:
    """Paths of pseudo-terminals this process holds open (master or slave)."""
    held = set()
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        return held
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target == "/dev/ptmx" or target.startswith("/dev/pts/"):
            held.add(f"{fd}->{target}")
    return held


def _child_pids() -> set[int]:
    """Live (non-zombie) processes whose parent is this test process."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == me:
            found.add(int(entry))
    return found


def _live_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


@pytest.fixture(scope="session", autouse=True)
def one_qt_application():
    """One QApplication for the whole session, created first: code that only needs a
    QGuiApplication (the PDF renderer) reuses it, and widget tests find the class they need."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    yield app


@pytest.fixture(autouse=True)
def qt_garbage_on_the_gui_thread(request):
    """In widget tests, cyclic garbage is collected on this (the GUI) thread only: a collection that a
    worker thread happens to trigger and that frees a Qt object crashes the process (ui/gc_guard.py).
    Other tests keep Python's automatic collection (a collection per test would cost minutes)."""
    if "qtbot" not in request.fixturenames:
        yield
        return
    from ui.gc_guard import GuiThreadGarbageCollector

    collector = GuiThreadGarbageCollector()      # collects, then freezes what exists (ui/gc_guard.py)
    yield
    collector.stop()


@pytest.fixture(autouse=True)
def no_leftovers(request):
    """Fail the test if it leaves a thread, a pty or a child process behind (after a short grace)."""
    # what earlier tests left is frozen out of the cyclic collector: a full collection during this test scans
    # only this test's objects (one that scanned the whole session's heap stalled every thread for 0.3 s,
    # long enough to end a beam late or time out a device link)
    gc.freeze()
    threads_before = _live_threads()
    ptys_before = _open_ptys()
    children_before = _child_pids()
    yield
    deadline = time.monotonic() + 2.0
    while True:
        threads = {t for t in _live_threads() - threads_before
                   if not t.name.startswith(("QDBus", "Dummy-", "asyncio_", "ThreadPoolExecutor"))}
        ptys = _open_ptys() - ptys_before
        children = _child_pids() - children_before
        if not (threads or ptys or children) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    problems = []
    if threads:
        problems.append("threads still running: " + ", ".join(sorted(t.name for t in threads)))
    if ptys:
        problems.append("pseudo-terminals still open: " + ", ".join(sorted(ptys)))
    if children:
        problems.append("child processes still running: " + ", ".join(map(str, sorted(children))))
    if problems:
        pytest.fail(f"{request.node.nodeid} left things behind — " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def installation(tmp_path_factory):
    """Demo users, approved calibration and today's output check — made once per session by `orconsole demo
    --setup-only` (tests/support/installation.py); tests copy it (`installation.copy_to`)."""
    from tests.support.installation import make_installation
    home = tmp_path_factory.mktemp("installation") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORCONSOLE_HOME", str(home))
        mp.delenv("ORCONSOLE_INSTALLATION_KEY", raising=False)
        return make_installation(home)
