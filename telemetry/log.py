"""The one ``structlog.configure()`` call.

JSON lines (ISO timestamps, level, event, logger, bound context) when stderr is not a
terminal, as in a container; colored key=value on a terminal. Event names are short
``snake_case`` facts; data goes in keyword arguments. Payloads and tokens are never logged.

Until a command calls :func:`configure_logging`, importing this module (every ``telemetry``
module does) sets a quiet default for library users: warnings and errors only, on stderr.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


def _configure_library_default() -> None:
    """Quiet logging for library users, until :func:`configure_logging` runs.

    structlog's own default prints every event, debug ones too, on stdout: an application
    that only imports :class:`telemetry.agent.Agent` would get the agent's chatter mixed into
    its output. Instead, events below ``warning`` cost a no-op, and warnings and errors go to
    stdlib logging as one rendered line (with no handler configured, Python's last-resort
    handler writes them to stderr; an application's own logging config receives them). An
    application that configured structlog itself before importing us is left alone.
    """
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


_configure_library_default()


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog (and stdlib logging, for libraries) to write to stderr."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    # structlog renders the line; stdlib logging only writes it (and carries library logs).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger whose events carry ``logger=name``."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
