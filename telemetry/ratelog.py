"""Log events at a bounded rate: a peer sending garbage at full speed costs a line per
interval, not a line per frame.

:class:`RateLimitedLog` logs the first event of an interval whole; the next ones are counted
and summed up in one ``<event>_suppressed`` event (how many, the last one's fields) at the
first event after the interval, or at :meth:`RateLimitedLog.flush`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog


class RateLimitedLog:
    """One logger's warnings, at most one whole event per ``interval`` seconds."""

    def __init__(
        self,
        logger: structlog.typing.FilteringBoundLogger,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._opened: float | None = None
        self._held = 0
        self._last: dict[str, Any] = {}

    def warning(self, event: str, **fields: Any) -> None:
        now = self._clock()
        if self._opened is not None and now - self._opened < self._interval:
            self._held += 1
            self._last = {"event": event, **fields}
            return
        self.flush()
        self._opened = now
        self._log.warning(event, **fields)

    def flush(self) -> None:
        """Log the summary of what is held, if anything."""
        if self._held:
            event = str(self._last.pop("event"))
            self._log.warning(f"{event}_suppressed", count=self._held, last=self._last)
            self._held = 0
