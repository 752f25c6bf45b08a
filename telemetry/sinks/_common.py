"""What the built-in sinks would otherwise each repeat: a sink's name, the not-started guard,
JSON lines, and closing a client without letting its errors out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from structlog.typing import FilteringBoundLogger

from telemetry.config.sinks import SinkConfig
from telemetry.sinks import encoding
from telemetry.sinks.base import Batch, Record, TransientSinkError

T = TypeVar("T")

#: The columns of a readings table, in the order of ``encoding.table_rows``.
COLUMNS = ("id", "agent", "sensor", "metric", "value", "unit", "ts", "tags", "received_at")


def sink_name(config: SinkConfig) -> str:
    """The sink's name in logs and metrics: ``name``, else its type."""
    return config.name or config.type


def not_started(kind: str) -> TransientSinkError:
    """The error of a ``write()`` before ``start()`` (or after ``close()``)."""
    return TransientSinkError(f"{kind} sink is not started")


def started(handle: T | None, kind: str) -> T:
    """``handle`` (a file, a connection, a pool) once ``start()`` set it; else raise
    :func:`not_started`."""
    if handle is None:
        raise not_started(kind)
    return handle


def json_lines(batch: Batch) -> bytes:
    """The batch as JSON lines (UTF-8): records in bulk (:func:`encoding.json_lines`), dead
    letters each by its ``to_json()``."""
    if batch and isinstance(batch[0], Record):
        return encoding.json_lines(cast(Sequence[Record], batch))
    return "".join([item.to_json() + "\n" for item in batch]).encode("utf-8")


async def close_quietly(
    close: Callable[[], Awaitable[object]],
    *,
    errors: tuple[type[BaseException], ...],
    timeout: float,
    log: FilteringBoundLogger | None = None,
    event: str = "sink_close_failed",
    **context: Any,
) -> None:
    """Await ``close()`` for at most ``timeout`` seconds; a timeout or one of ``errors`` is
    logged at debug level (with ``log``) and swallowed: a client that fails to say goodbye
    is closed anyway."""
    caught: tuple[type[BaseException], ...] = (TimeoutError, *errors)
    try:
        async with asyncio.timeout(timeout):
            await close()
    except caught as exc:
        if log is not None:
            log.debug(event, **context, error=repr(exc))
