"""The latest reading of each sensor, read back from a SQL sink (the live view's seed).

A sink that can answer implements the optional method ``async def latest(limit: int) ->
list[Record]`` (:class:`LatestSource`): at most ``limit`` sensors, in name order, each with
its reading of the greatest ``ts``. The live view asks the first sink that has it after a
restart (docs/live-view.md).

Both queries are a "loose index scan" over the ``(sensor, ts)`` index: a recursive query
jumps from one sensor to the next (one index lookup each) and reads each one's newest row
(one more), so the cost grows with ``limit``, not with the rows stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from telemetry.sinks.base import Record

#: Columns of the rows the queries return, in order.
LATEST_COLUMNS = ("id", "agent", "sensor", "metric", "value", "unit", "ts", "tags", "received_at")

#: SQLite: ``?`` is the limit.
SQLITE_LATEST = """
WITH RECURSIVE sensors(sensor) AS (
    SELECT min(sensor) FROM readings
    UNION ALL
    SELECT (SELECT min(sensor) FROM readings WHERE sensor > sensors.sensor)
    FROM sensors WHERE sensors.sensor IS NOT NULL
)
SELECT r.id, r.agent, r.sensor, r.metric, r.value, r.unit, r.ts, r.tags, r.received_at
FROM (SELECT sensor FROM sensors WHERE sensor IS NOT NULL LIMIT ?) AS s
JOIN readings AS r ON r.rowid = (
    SELECT rowid FROM readings WHERE sensor = s.sensor ORDER BY ts DESC LIMIT 1
)
ORDER BY r.sensor
"""


def postgres_latest(qualified: str) -> str:
    """PostgreSQL, for the table ``qualified`` (quoted ``schema.table``): ``$1`` is the limit."""
    return f"""
WITH RECURSIVE sensors(sensor) AS (
    (SELECT sensor FROM {qualified} ORDER BY sensor LIMIT 1)
    UNION ALL
    SELECT (SELECT t.sensor FROM {qualified} t WHERE t.sensor > sensors.sensor
            ORDER BY t.sensor LIMIT 1)
    FROM sensors WHERE sensors.sensor IS NOT NULL
)
SELECT r.id, r.agent, r.sensor, r.metric, r.value, r.unit, r.ts, r.tags::text, r.received_at
FROM (SELECT sensor FROM sensors WHERE sensor IS NOT NULL LIMIT $1) AS s
CROSS JOIN LATERAL (
    SELECT * FROM {qualified} t WHERE t.sensor = s.sensor ORDER BY t.ts DESC LIMIT 1
) AS r
ORDER BY r.sensor
"""


def _instant(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def record_of(row: Sequence[Any]) -> Record:
    """A :class:`Record` from a row of :data:`LATEST_COLUMNS` (timestamps as datetimes or
    RFC 3339 text, tags as JSON text)."""
    rid, agent, sensor, metric, value, unit, ts, tags, received_at = row
    tag_dict = json.loads(tags) if isinstance(tags, str) else dict(tags or {})
    return Record(
        rid,
        agent,
        sensor,
        float(value),
        _instant(ts),
        _instant(received_at),
        metric=metric,
        unit=unit,
        tags={str(k): str(v) for k, v in tag_dict.items()},
    )


@runtime_checkable
class LatestSource(Protocol):
    """A sink that can say the latest reading of each sensor it stored."""

    name: str

    async def latest(self, limit: int) -> list[Record]: ...
