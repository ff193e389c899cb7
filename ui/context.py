"""What every screen shares: the treatment service, the identity service, the logged-in session, and
`run()`, which executes a (possibly slow) service call on one worker thread and calls back on the GUI
thread with the result or the refusal text.

The GUI thread never waits on the service; service calls happen on one thread, in order, as the
service asks. No safety logic here.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from ui.bridge import FutureBridge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """The end of one service call: `ok` and `value`, or the reason a person reads."""

    ok: bool
    value: Any = None
    message: str = ""


def refusal_text(exc: BaseException) -> str:
    """The readable text of a refusal (WorkflowRefused, Refused, PermissionDenied, validation errors)."""
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic ValidationError: field and message, no URLs
        try:
            return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())) or 'value'}: {e.get('msg')}"
                             for e in errors())
        except Exception:  # pragma: no cover - fall back to str()
            pass
    return str(exc) or exc.__class__.__name__


class Context(QObject):
    """Shared state of the console window. `session_changed` fires on login, logout and lock."""

    session_changed = Signal(object)

    def __init__(self, *, service: Any, identity: Any, store: Any, dev_bench: Any = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.identity = identity
        self.store = store
        self.dev_bench = dev_bench
        self.futures = FutureBridge(self)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ThreadPoolExecutor-ui-service")
        self._stop_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ThreadPoolExecutor-ui-stop")
        self.session = None
        self.status = None        # latest WorkflowStatus
        self.snapshot = None      # latest Supervisor Snapshot

    def set_session(self, session: Any) -> None:
        self.session = session
        self.session_changed.emit(session)

    def submit(self, fn: Callable[..., Any], *args: Any, urgent: bool = False, **kwargs: Any) -> Future:
        """Run `fn` on the service worker (or, for `urgent` stops, on a thread of their own)."""
        return (self._stop_executor if urgent else self._executor).submit(fn, *args, **kwargs)

    def run(self, fn: Callable[..., Any], on_done: Callable[[Outcome], None], *args: Any,
            urgent: bool = False, **kwargs: Any) -> None:
        """Call `fn(*args, **kwargs)` off the GUI thread; `on_done(Outcome)` runs on the GUI thread."""
        def call() -> Outcome:
            try:
                return Outcome(True, fn(*args, **kwargs))
            except Exception as exc:
                log.info("service call %s refused: %s", getattr(fn, "__name__", fn), exc)
                return Outcome(False, None, refusal_text(exc))
        self.futures.when_done(self.submit(call, urgent=urgent), on_done)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
        self._stop_executor.shutdown(wait=True, cancel_futures=False)
