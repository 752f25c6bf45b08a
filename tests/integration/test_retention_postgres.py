"""The postgres sink on the local PostgreSQL: ``latest()`` per sensor, and retention keys
on a server without TimescaleDB (ignored with a warning; the sink starts and writes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import structlog

from telemetry.config import PostgresSinkConfig
from telemetry.sinks.base import Record
from telemetry.sinks.postgres import PostgresSink
from tests.integration.sinks.conftest import postgres_service  # noqa: F401 (a fixture)
from tests.support import timeout


@pytest.fixture
async def schema(postgres_service: str) -> AsyncIterator[tuple[str, str]]:  # noqa: F811
    """A schema of this test's own, dropped afterwards."""
    name = f"ret_{uuid.uuid4().hex}"
    yield postgres_service, name
    conn = await asyncpg.connect(postgres_service, timeout=timeout(10))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def test_latest_is_the_newest_row_of_each_sensor(schema: tuple[str, str]) -> None:
    """latest(limit) gives each sensor's reading of the greatest ts, in name order, bounded."""
    dsn, name = schema
    sink = PostgresSink(
        PostgresSinkConfig.model_validate({"type": "postgres", "dsn": dsn, "schema": name})
    )
    await sink.start()
    base = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
    try:
        batch = [
            Record(
                f"a:1:{i}",
                "a",
                f"s{i % 4}",
                float(i),
                base + timedelta(seconds=(i * 7) % 41),
                base + timedelta(minutes=1),
                unit="%",
                tags={"site": "nörth"},
            )
            for i in range(40)
        ]
        await sink.write(batch)
        latest = await sink.latest(10)
        assert [r.sensor for r in latest] == ["s0", "s1", "s2", "s3"]
        for record in latest:
            newest = max((r for r in batch if r.sensor == record.sensor), key=lambda r: r.ts)
            assert (record.id, record.value, record.ts) == (newest.id, newest.value, newest.ts)
            assert (record.unit, record.tags) == ("%", {"site": "nörth"})
        assert [r.sensor for r in await sink.latest(3)] == ["s0", "s1", "s2"]
    finally:
        await sink.close()


async def test_policies_without_timescaledb_are_ignored_with_a_warning(
    schema: tuple[str, str],
) -> None:
    """retention/compress_after on a plain table: a warning, and the sink works as before."""
    dsn, name = schema
    config = PostgresSinkConfig.model_validate(
        {"type": "postgres", "dsn": dsn, "schema": name, "retention": 86400, "compress_after": 60}
    )
    sink = PostgresSink(config)
    with structlog.testing.capture_logs() as logs:
        await sink.start()
    try:
        assert not sink.hypertable
        assert {"event": "timescale_policies_ignored", "sink": "postgres"}.items() <= next(
            e for e in logs if e["event"] == "timescale_policies_ignored"
        ).items()
        now = datetime.now(UTC)
        await sink.write([Record("a:0:0", "a", "s", 1.0, now, now)])
        assert [r.id for r in await sink.latest(5)] == ["a:0:0"]
    finally:
        await sink.close()
