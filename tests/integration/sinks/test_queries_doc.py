"""docs/queries.md: every query, read from the page, run on readings the sink itself wrote
(SQLite in a temporary file; PostgreSQL in a uuid-named schema, dropped after), and its
results checked against the same answers computed in Python."""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from telemetry.config import PostgresSinkConfig, SqliteSinkConfig
from telemetry.protocol import format_timestamp
from telemetry.sinks.base import Record
from telemetry.sinks.registry import build_sink
from tests.support import timeout

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(minutes=5)
#: greenhouse-1 every 10 s for 5 minutes, silent from 120 s to 210 s; greenhouse-2 3 times.
SERIES = {
    "greenhouse-1": [(s, s / 10) for s in range(0, 300, 10) if not 120 < s < 210],
    "greenhouse-2": [(5, 1.0), (65, 2.0), (125, 3.0)],
}
UNITS = {"greenhouse-1": "°C", "greenhouse-2": "%"}


def queries() -> dict[str, str]:
    text = (ROOT / "docs" / "queries.md").read_text()
    found = dict(re.findall(r"<!-- query: (\S+) -->\s*```sql\n(.*?)```", text, re.DOTALL))
    assert sorted(found) == sorted(
        f"{db}/{q}" for db in ("sqlite", "postgres") for q in ("latest", "minutes", "gaps")
    )
    return found


def records() -> list[Record]:
    out = []
    for sensor, points in SERIES.items():
        for i, (second, value) in enumerate(points):
            ts = T0 + timedelta(seconds=second)
            out.append(
                Record(
                    id=f"agent-1:{sensor}:{i}",
                    agent="agent-1",
                    sensor=sensor,
                    value=value,
                    ts=ts,
                    received_at=ts,
                    unit=UNITS[sensor],
                )
            )
    return out


def expected_latest() -> list[tuple[str, float, str, datetime]]:
    return [
        (sensor, points[-1][1], UNITS[sensor], T0 + timedelta(seconds=points[-1][0]))
        for sensor, points in sorted(SERIES.items())
    ]


def expected_minutes(sensor: str) -> list[tuple[datetime, float, float, float, int]]:
    by_minute: dict[int, list[float]] = defaultdict(list)
    for second, value in SERIES[sensor]:
        by_minute[second // 60].append(value)
    return [
        (T0 + timedelta(minutes=m), sum(v) / len(v), min(v), max(v), len(v))
        for m, v in sorted(by_minute.items())
    ]


async def write(config: Any) -> None:
    sink = build_sink(config)
    await sink.start()
    try:
        await sink.write(records())
    finally:
        await sink.close()


def iso(ts: datetime) -> str:
    return format_timestamp(ts)


async def test_the_sqlite_queries(tmp_path: Path) -> None:
    db_path = tmp_path / "telemetry.db"
    await write(SqliteSinkConfig(type="sqlite", path=db_path))
    sql = queries()
    db = sqlite3.connect(db_path)
    params = {"sensor": "greenhouse-1", "since": iso(SINCE), "until": iso(UNTIL), "gap": 30}

    latest = db.execute(sql["sqlite/latest"]).fetchall()
    assert latest == [(s, v, u, iso(ts)) for s, v, u, ts in expected_latest()]

    minutes = db.execute(sql["sqlite/minutes"], params).fetchall()
    assert [(m, pytest.approx(a), lo, hi, n) for m, a, lo, hi, n in minutes] == [
        (iso(m).replace(":00.000000Z", ":00Z"), a, lo, hi, n)
        for m, a, lo, hi, n in expected_minutes("greenhouse-1")
    ]

    gaps = db.execute(sql["sqlite/gaps"], params).fetchall()
    start, end = T0 + timedelta(seconds=120), T0 + timedelta(seconds=210)
    assert gaps == [("greenhouse-1", iso(start), iso(end), 90.0)]
    # A threshold above the gap finds none; greenhouse-2's 60 s steps are gaps at 30 s.
    assert db.execute(sql["sqlite/gaps"], {**params, "gap": 90}).fetchall() == []
    assert len(db.execute(sql["sqlite/gaps"], {**params, "sensor": "greenhouse-2"}).fetchall()) == 2


@pytest.fixture
async def pg_schema(postgres_service: str) -> AsyncIterator[tuple[str, str]]:
    import asyncpg

    schema = f"q_{uuid.uuid4().hex}"
    yield postgres_service, schema
    conn = await asyncpg.connect(postgres_service, timeout=timeout(10))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_the_postgres_queries(pg_schema: tuple[str, str]) -> None:
    import asyncpg

    dsn, schema = pg_schema
    await write(
        PostgresSinkConfig(
            type="postgres", dsn=dsn, schema=schema, hypertable=False, connect_timeout=timeout(10)
        )
    )
    sql = queries()
    conn = await asyncpg.connect(dsn, timeout=timeout(10), server_settings={"search_path": schema})
    try:
        latest = [tuple(r) for r in await conn.fetch(sql["postgres/latest"])]
        assert latest == expected_latest()

        minutes = await conn.fetch(sql["postgres/minutes"], "greenhouse-1", SINCE, UNTIL)
        assert [tuple(r) for r in minutes] == [
            (m, pytest.approx(a), lo, hi, n) for m, a, lo, hi, n in expected_minutes("greenhouse-1")
        ]

        args = ("greenhouse-1", SINCE, UNTIL)
        gaps = [
            tuple(r) for r in await conn.fetch(sql["postgres/gaps"], *args, timedelta(seconds=30))
        ]
        start, end = T0 + timedelta(seconds=120), T0 + timedelta(seconds=210)
        assert gaps == [("greenhouse-1", start, end, timedelta(seconds=90))]
        assert await conn.fetch(sql["postgres/gaps"], *args, timedelta(seconds=90)) == []
    finally:
        await conn.close()
