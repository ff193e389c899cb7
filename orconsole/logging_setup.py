"""Configures structlog once for the whole process: JSON lines to a log file, readable text to the terminal.

The device links log every byte at debug level under the logger "orconsole.spy" (the spy log), which
goes to the file when spy logging is enabled. Must never be called from library code: only the
composition root (orconsole.cli / orconsole.app) and orconsole-sim call configure_logging().
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

_configured = False


def configure_logging(*, log_file: Path | None, console_level: str = "WARNING",
                      spy: bool = False) -> None:
    """Route structlog through stdlib logging: JSON lines to `log_file`, console text to stderr."""
    global _configured
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not _configured:
        structlog.configure(
            processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=True,
        )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_orconsole", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG)

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(console_level)
    console.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=structlog.dev.ConsoleRenderer(colors=False), foreign_pre_chain=shared))
    console.addFilter(lambda record: not record.name.startswith("orconsole.spy"))
    console._orconsole = True  # type: ignore[attr-defined]
    root.addHandler(console)

    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=50_000_000, backupCount=20,
                                                            encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(), foreign_pre_chain=shared))
        file_handler._orconsole = True  # type: ignore[attr-defined]
        root.addHandler(file_handler)
    # the spy log costs a formatted line per read; only on when asked for, and only into the file
    logging.getLogger("orconsole.spy").setLevel(logging.DEBUG if (spy and log_file) else logging.INFO)
    _configured = True
