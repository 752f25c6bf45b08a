"""What each networked sink does beyond the contract, read back with the backend's client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import unquote

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis

from telemetry.config import (
    MqttSinkConfig,
    NatsSinkConfig,
    PostgresSinkConfig,
    RedisSinkConfig,
)
from telemetry.sinks.base import PermanentSinkError, TransientSinkError
from telemetry.sinks.mqtt import MqttSink
from telemetry.sinks.nats import NatsSink
from telemetry.sinks.postgres import PostgresSink, table_ddl, timescaledb_installed
from telemetry.sinks.redis import RedisSink
from tests.integration.sinks.conftest import MqttCollector, record, records

# --- postgres -------------------------------------------------------------------------------


@pytest.fixture
async def pg_schema(postgres_service: str, uid: str) -> AsyncIterator[str]:
    """A schema name of this test's own, dropped afterwards."""
    schema = f"t_{uid}"
    yield schema
    conn = await asyncpg.connect(postgres_service)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


async def test_postgres_creates_the_sqlite_columns_in_postgres_types(postgres_service, pg_schema):
    """The table has the sqlite sink's columns, typed for PostgreSQL, and rows read back."""
    sink = PostgresSink(
        PostgresSinkConfig(type="postgres", dsn=postgres_service, schema=pg_schema, table="r")
    )
    await sink.start()
    await sink.write([record(0)])
    await sink.close()
    conn = await asyncpg.connect(postgres_service)
    try:
        columns = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'r' ORDER BY ordinal_position",
            pg_schema,
        )
        row = await conn.fetchrow(f"SELECT * FROM {pg_schema}.r")
    finally:
        await conn.close()
    assert [(c["column_name"], c["data_type"]) for c in columns] == [
        ("id", "text"),
        ("agent", "text"),
        ("sensor", "text"),
        ("metric", "text"),
        ("value", "double precision"),
        ("unit", "text"),
        ("ts", "timestamp with time zone"),
        ("tags", "jsonb"),
        ("received_at", "timestamp with time zone"),
    ]
    assert row["id"] == "agent-1:0:0"
    assert row["value"] == 0.25
    assert row["ts"] == record(0).ts
    assert json.loads(row["tags"]) == {"site": "nörth"}


async def test_postgres_sinks_starting_together_all_create_or_find_the_table(
    postgres_service, pg_schema
):
    """Several collectors starting at once do not trip over each other's CREATE TABLE."""
    sinks = [
        PostgresSink(
            PostgresSinkConfig(type="postgres", dsn=postgres_service, schema=pg_schema, table="r")
        )
        for _ in range(6)
    ]
    await asyncio.gather(*(sink.start() for sink in sinks))
    await asyncio.gather(*(sink.write(records(2 * n, 2 * n + 2)) for n, sink in enumerate(sinks)))
    await asyncio.gather(*(sink.close() for sink in sinks))
    conn = await asyncpg.connect(postgres_service)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {pg_schema}.r") == 12
    finally:
        await conn.close()


async def test_postgres_detects_that_timescaledb_is_absent(postgres_service, pg_schema):
    """Without the TimescaleDB extension the table stays a plain table keyed on id alone."""
    conn = await asyncpg.connect(postgres_service)
    try:
        installed = await timescaledb_installed(conn)
        available = await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
    finally:
        await conn.close()
    assert installed is False
    assert available == 0  # this machine has no TimescaleDB: the hypertable path is DDL only
    sink = PostgresSink(PostgresSinkConfig(type="postgres", dsn=postgres_service, schema=pg_schema))
    await sink.start()
    await sink.close()
    assert sink.hypertable is False
    hyper = "\n".join(table_ddl(pg_schema, "readings", hypertable=True))
    assert "UNIQUE (id, ts)" in hyper
    assert "create_hypertable" in hyper
    assert "create_hypertable" not in "\n".join(table_ddl(pg_schema, "readings", hypertable=False))


async def test_postgres_refuses_bad_data_as_a_permanent_error(postgres_service, pg_schema):
    """A value PostgreSQL cannot store (NUL in jsonb) is a permanent error; the batch is
    rolled back whole."""
    sink = PostgresSink(PostgresSinkConfig(type="postgres", dsn=postgres_service, schema=pg_schema))
    await sink.start()
    bad = record(1)
    bad.tags["x"] = "nul\u0000byte"
    with pytest.raises(PermanentSinkError, match="22"):
        await sink.write([record(0), bad])
    await sink.write([record(2)])  # the connection is still good
    await sink.close()
    conn = await asyncpg.connect(postgres_service)
    try:
        ids = [r[0] for r in await conn.fetch(f"SELECT id FROM {pg_schema}.readings")]
    finally:
        await conn.close()
    assert ids == ["agent-1:0:2"]


async def test_postgres_unreachable_is_a_transient_error_at_start():
    """A server that refuses connections makes start() raise a transient error, quickly."""
    sink = PostgresSink(
        PostgresSinkConfig(
            type="postgres", dsn="postgresql://postgres@127.0.0.1:1/x", connect_timeout=2
        )
    )
    with pytest.raises(TransientSinkError, match="connect"):
        await sink.start()
    await sink.close()


async def test_postgres_dsn_comes_from_the_environment(monkeypatch, postgres_service, pg_schema):
    """Without ``dsn`` the sink uses TELEMETRY_POSTGRES_DSN."""
    monkeypatch.setenv("TELEMETRY_POSTGRES_DSN", postgres_service)
    sink = PostgresSink(PostgresSinkConfig(type="postgres", schema=pg_schema))
    assert sink.dsn() == postgres_service
    await sink.start()
    await sink.write(records(0, 3))
    await sink.close()


# --- nats -----------------------------------------------------------------------------------


async def test_nats_escapes_subjects_and_sets_the_message_id(nats_service, uid):
    """Dots, spaces, wildcards and non-ASCII in names stay inside one subject token, and each
    message carries its reading id as Nats-Msg-Id."""
    stream = f"T_{uid}"
    config = NatsSinkConfig(
        type="nats",
        servers=[nats_service],
        stream=stream,
        subjects=[f"t{uid}.>"],
        subject=f"t{uid}.{{agent}}.{{sensor}}",
        duplicate_window=30,
    )
    sink = NatsSink(config)
    rec = record(0)
    odd = type(rec)(**{**{f: getattr(rec, f) for f in rec.__slots__}, "sensor": "gh.2 *>/é"})
    await sink.start()
    try:
        await sink.write([odd])
        await sink.write([odd])  # a resend
        assert sink.duplicates == 1
        nc = await nats.connect(nats_service)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            msg = await js.get_msg(stream, 1)
        finally:
            await nc.close()
    finally:
        await sink.close()
        nc = await nats.connect(nats_service)
        await nc.jetstream().delete_stream(stream)
        await nc.close()
    assert info.state.messages == 1
    assert info.config.duplicate_window == 30
    assert msg.subject == f"t{uid}.agent-1.gh%2E2%20%2A%3E%2F%C3%A9"
    assert unquote(msg.subject.split(".")[2]) == "gh.2 *>/é"
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == "agent-1:0:0"
    assert json.loads(msg.data or b"") == odd.to_dict()


async def test_nats_refuses_a_subject_outside_the_stream(nats_service, uid):
    """A subject template the stream would not capture is refused at start, not lost later."""
    config = NatsSinkConfig(
        type="nats",
        servers=[nats_service],
        stream=f"T_{uid}",
        subjects=[f"t{uid}.>"],
        subject="elsewhere.{sensor}",
    )
    with pytest.raises(PermanentSinkError, match="outside the stream"):
        await NatsSink(config).start()


# --- mqtt -----------------------------------------------------------------------------------


async def test_mqtt_publishes_each_reading_and_retains_the_latest(mqtt_service, uid):
    """Every reading goes to its escaped topic at QoS 1; the newest per sensor is retained
    on {topic}/latest, and an older reading never replaces it."""
    host, port = mqtt_service
    subscriber = await MqttCollector(host, port, f"t{uid}/#").start()
    sink = MqttSink(
        MqttSinkConfig(
            type="mqtt",
            host=host,
            port=port,
            topic=f"t{uid}/{{agent}}/{{sensor}}",
            retain_latest=True,
        )
    )
    first, second = record(0), record(7)  # same sensor ("soil 0"), different readings
    later = type(second)(
        **{
            **{f: getattr(second, f) for f in second.__slots__},
            "ts": second.ts.replace(year=2027),
            "value": 99.0,
        }
    )
    await sink.start()
    try:
        await sink.write([first, later])
        await sink.write([second])  # older than `later`: not retained over it
        await subscriber.wait_for(5)
    finally:
        await sink.close()
        await subscriber.close()
    latest_topic = f"t{uid}/agent-1/greenhouse-2%2Fsoil%200/latest"
    plain = [(t, json.loads(p)["value"]) for t, p, _ in subscriber.messages if t != latest_topic]
    latest = [json.loads(p)["value"] for t, p, _ in subscriber.messages if t == latest_topic]
    assert sorted(v for _, v in plain) == [0.25, 7.25, 99.0]
    assert latest == [99.0]
    # A new subscriber gets the retained value at once; then clear it.
    late = await MqttCollector(host, port, latest_topic).start()
    await late.wait_for(1)
    await late.close()
    assert [(json.loads(p)["value"], retained) for _, p, retained in late.messages] == [
        (99.0, True)
    ]
    import aiomqtt

    async with aiomqtt.Client(host, port) as client:
        await client.publish(latest_topic, b"", qos=1, retain=True)


# --- redis ----------------------------------------------------------------------------------


@pytest.fixture
async def redis_key(redis_service: str, uid: str) -> AsyncIterator[str]:
    """A stream key of this test's own, deleted afterwards."""
    key = f"telemetry-test-{uid}"
    yield key
    client = aioredis.Redis.from_url(redis_service)
    await client.delete(key)
    await client.aclose()


async def test_redis_appends_json_entries_and_trims_approximately(redis_service, redis_key):
    """Each reading is one XADD with field data = the record's JSON; MAXLEN ~ bounds the
    stream near maxlen."""
    sink = RedisSink(RedisSinkConfig(type="redis", url=redis_service, stream=redis_key, maxlen=500))
    await sink.start()
    for start in range(0, 5000, 1000):
        await sink.write(records(start, start + 1000))
    await sink.close()
    client = aioredis.Redis.from_url(redis_service)
    try:
        length = await client.xlen(redis_key)
        last = await client.xrevrange(redis_key, count=1)
    finally:
        await client.aclose()
    assert 500 <= length < 5000  # approximate trimming keeps whole nodes
    assert json.loads(last[0][1][b"data"]) == record(4999).to_dict()


async def test_redis_wrong_key_type_is_a_permanent_error(redis_service, redis_key):
    """A key holding another type (WRONGTYPE) will never take the batch: permanent."""
    client = aioredis.Redis.from_url(redis_service)
    await client.set(redis_key, "not a stream")
    await client.aclose()
    sink = RedisSink(RedisSinkConfig(type="redis", url=redis_service, stream=redis_key))
    await sink.start()
    try:
        with pytest.raises(PermanentSinkError, match="WRONGTYPE"):
            await sink.write([record(0)])
    finally:
        await sink.close()
