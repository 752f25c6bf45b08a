"""Service fixtures and one :class:`Backend` per built-in sink, for the contract suite.

A service that does not answer skips its tests, except under ``CI=true`` where it fails them:
CI must not turn green by skipping. Every test gets its own table (in its own schema), stream,
topic and key, with a uuid suffix, and removes them afterwards. Stored readings are read back
with each backend's own client, never through the sink under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from telemetry.config import SinkBase
from telemetry.sinks.base import Record, Sink
from telemetry.sinks.registry import build_sink
from telemetry.sinks.stdout import StdoutSink
from tests.integration.sinks.proxy import CuttableProxy
from tests.support import timeout

POSTGRES_DSN = os.environ.get(
    "TELEMETRY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TELEMETRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("TELEMETRY_TEST_NATS_URL", "nats://127.0.0.1:4222")
MQTT_HOST = os.environ.get("TELEMETRY_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("TELEMETRY_TEST_MQTT_PORT", "1883"))

NOW = datetime(2026, 11, 27, 7, 15, 2, 123000, tzinfo=UTC)
#: When the test readings were received: after their ``ts`` (a ts equal to the receive time
#: would be one the collector stamped on a reading without one).
RECEIVED = NOW + timedelta(milliseconds=178)


def record(i: int, agent: str = "agent-1", rid: str | None = "auto") -> Record:
    """Reading number ``i``, with the reading id ``"<agent>:0:<i>"`` unless given."""
    return Record(
        id=f"{agent}:0:{i}" if rid == "auto" else rid,
        agent=agent,
        sensor=f"greenhouse-2/soil {i % 7}",
        value=i + 0.25,
        ts=NOW,
        received_at=RECEIVED,
        metric="moisture",
        unit="%",
        tags={"site": "nörth"},
    )


def records(start: int, stop: int, agent: str = "agent-1") -> list[Record]:
    """Readings ``start`` .. ``stop - 1``."""
    return [record(i, agent) for i in range(start, stop)]


# --- services --------------------------------------------------------------------------------


def _require(service: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        message = f"{service} is not reachable on {host}:{port}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: a missing service fails the run)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_service() -> str:
    """The PostgreSQL DSN of the test server (skips, or fails under CI, when it is down)."""
    _require("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_DSN


@pytest.fixture(scope="session")
def redis_service() -> str:
    """The Redis URL of the test server."""
    _require("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def nats_service() -> str:
    """The NATS URL of the test server (JetStream enabled)."""
    _require("NATS", "127.0.0.1", 4222)
    return NATS_URL


@pytest.fixture(scope="session")
def mqtt_service() -> tuple[str, int]:
    """Host and port of the test MQTT broker."""
    _require("Mosquitto", MQTT_HOST, MQTT_PORT)
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def uid() -> str:
    """A short unique suffix for this test's table, stream, topic and key names."""
    return uuid.uuid4().hex[:10]


# --- backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    """A built-in sink type bound to a fresh destination, with a way to read it back."""

    type: str
    options: dict[str, Any]  # the sink's config keys (type and name included)
    #: Ids of the readings the backend holds (one entry per stored copy), waiting until at
    #: least ``expected`` are visible where delivery is asynchronous.
    stored: Callable[[int], Awaitable[list[str | None]]]
    #: True when the backend stores a reading id once however often it is written.
    dedupes: bool
    #: Drops the sink's connections from the backend's side (None: no connection to drop).
    drop: Callable[[], Awaitable[int]] | None = None
    #: The stored values by reading id, one entry per stored copy (the deduping backends).
    values: Callable[[], Awaitable[dict[str | None, list[float]]]] | None = None
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stdout: io.StringIO | None = None
    _null_sinks: list[Any] = field(default_factory=list)

    def config(self, **overrides: Any) -> SinkBase:
        """The validated config model of this sink (pipeline options overridable)."""
        from pydantic import TypeAdapter

        from telemetry.config import SinkConfig

        model: SinkBase = TypeAdapter(SinkConfig).validate_python({**self.options, **overrides})
        return model

    def make(self, **overrides: Any) -> Sink:
        """A new sink instance writing to this backend's destination."""
        config = self.config(**overrides)
        if self.type == "stdout":
            assert self._stdout is not None
            return StdoutSink(config, stream=self._stdout)  # type: ignore[arg-type]
        sink = build_sink(config)
        if self.type == "null":
            self._null_sinks.append(sink)
        return sink


BACKENDS = ["null", "stdout", "jsonl", "sqlite", "postgres", "nats", "mqtt", "redis"]
DEDUPING = {"sqlite", "postgres", "nats"}


def _by_id(rows: Iterable[Any]) -> dict[str | None, list[float]]:
    """``(id, value)`` rows as id -> the values stored under it."""
    found: dict[str | None, list[float]] = {}
    for rid, value in rows:
        found.setdefault(rid, []).append(value)
    return found


async def _ids_from_lines(lines: list[str]) -> list[str | None]:
    return [json.loads(line)["id"] for line in lines if line]


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, uid: str
) -> AsyncIterator[Backend]:
    """Every built-in sink in turn, against its real service."""
    made = await make_backend(request.param, request, tmp_path, uid)
    try:
        yield made
    finally:
        for cleanup in reversed(made.cleanups):
            with contextlib.suppress(Exception):
                await cleanup()


async def make_backend(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    uid: str,
    *,
    proxy: bool = True,
    subscribe: bool = True,
) -> Backend:
    """A :class:`Backend` of type ``kind`` with a fresh, unique destination."""
    name = f"{kind}-{uid}"
    base: dict[str, Any] = {"type": kind, "name": name}
    if kind == "null":
        holder: Backend

        async def null_stored(expected: int) -> list[str | None]:
            return [None] * sum(s.written for s in holder._null_sinks)

        holder = Backend(kind, base, null_stored, dedupes=False)
        return holder
    if kind == "stdout":
        stream = io.StringIO()

        async def stdout_stored(expected: int) -> list[str | None]:
            return await _ids_from_lines(stream.getvalue().splitlines())

        return Backend(kind, base, stdout_stored, dedupes=False, _stdout=stream)
    if kind == "jsonl":
        path = tmp_path / f"{uid}.jsonl"

        async def jsonl_stored(expected: int) -> list[str | None]:
            if not path.exists():
                return []
            return await _ids_from_lines(path.read_text(encoding="utf-8").splitlines())

        return Backend(kind, {**base, "path": str(path)}, jsonl_stored, dedupes=False)
    if kind == "sqlite":
        db = tmp_path / f"{uid}.db"

        async def sqlite_stored(expected: int) -> list[str | None]:
            if not db.exists():
                return []
            conn = sqlite3.connect(db)
            try:
                return [row[0] for row in conn.execute("SELECT id FROM readings")]
            finally:
                conn.close()

        async def sqlite_values() -> dict[str | None, list[float]]:
            conn = sqlite3.connect(db)
            try:
                return _by_id(conn.execute("SELECT id, value FROM readings ORDER BY rowid"))
            finally:
                conn.close()

        return Backend(
            kind, {**base, "path": str(db)}, sqlite_stored, dedupes=True, values=sqlite_values
        )
    if kind == "postgres":
        return await _postgres_backend(request.getfixturevalue("postgres_service"), base, uid)
    if kind == "nats":
        return await _nats_backend(request.getfixturevalue("nats_service"), base, uid, proxy)
    if kind == "mqtt":
        service = request.getfixturevalue("mqtt_service")
        return await _mqtt_backend(service, base, uid, proxy, subscribe)
    if kind == "redis":
        return await _redis_backend(request.getfixturevalue("redis_service"), base, uid, proxy)
    raise AssertionError(kind)


async def terminate_backends(dsn: str, application_name: str) -> int:
    """``pg_terminate_backend`` every connection with that application_name; return how many."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()",
            application_name,
        )
        return sum(1 for row in rows if row[0])
    finally:
        await conn.close()


async def _postgres_backend(dsn: str, base: dict[str, Any], uid: str) -> Backend:
    import asyncpg

    schema = f"t_{uid}"

    async def stored(expected: int) -> list[str | None]:
        conn = await asyncpg.connect(dsn)
        try:
            exists = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.readings")
            if exists is None:
                return []
            return [row[0] for row in await conn.fetch(f"SELECT id FROM {schema}.readings")]
        finally:
            await conn.close()

    async def values() -> dict[str | None, list[float]]:
        conn = await asyncpg.connect(dsn)
        try:
            return _by_id(await conn.fetch(f"SELECT id, value FROM {schema}.readings"))
        finally:
            await conn.close()

    async def drop() -> int:
        return await terminate_backends(dsn, f"telemetry-sink-{base['name']}")

    async def cleanup() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()

    options = {**base, "dsn": dsn, "schema": schema, "connect_timeout": timeout(5)}
    return Backend(
        "postgres", options, stored, dedupes=True, drop=drop, cleanups=[cleanup], values=values
    )


async def _proxied(url_host: str, port: int, use: bool) -> tuple[int, CuttableProxy | None]:
    if not use:
        return port, None
    proxy = await CuttableProxy(url_host, port).start()
    return proxy.port, proxy


async def _nats_backend(url: str, base: dict[str, Any], uid: str, proxy: bool) -> Backend:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    port, cut = await _proxied("127.0.0.1", int(url.rsplit(":", 1)[1]), proxy)
    stream = f"T_{uid}"

    async def documents() -> list[dict[str, Any]]:
        # Every message of the stream, through an ephemeral ordered pull of the whole stream.
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            total = (await js.stream_info(stream)).state.messages
            docs: list[dict[str, Any]] = []
            if not total:
                return docs
            sub = await js.pull_subscribe(
                f"t{uid}.>",
                stream=stream,
                config=ConsumerConfig(ack_policy=AckPolicy.NONE, max_ack_pending=-1),
            )
            while len(docs) < total:
                for msg in await sub.fetch(min(5000, total - len(docs)), timeout=timeout(5)):
                    docs.append(json.loads(msg.data))
            await sub.unsubscribe()
            return docs
        finally:
            await nc.close()

    async def stored(expected: int) -> list[str | None]:
        return [doc["id"] for doc in await documents()]

    async def values() -> dict[str | None, list[float]]:
        return _by_id((doc["id"], doc["value"]) for doc in await documents())

    async def cleanup() -> None:
        nc = await nats.connect(url)
        try:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    options = {
        **base,
        "servers": [f"nats://127.0.0.1:{port}"],
        "stream": stream,
        "subjects": [f"t{uid}.>"],
        "subject": f"t{uid}.{{agent}}.{{sensor}}",
        "ack_timeout": timeout(2),
    }
    backend = Backend("nats", options, stored, dedupes=True, cleanups=[cleanup], values=values)
    if cut is not None:
        backend.drop = _drop_via(cut)
        backend.cleanups.insert(0, cut.close)
    return backend


def _drop_via(proxy: CuttableProxy) -> Callable[[], Awaitable[int]]:
    async def drop() -> int:
        return proxy.cut()

    return drop


class MqttCollector:
    """A subscriber of the backend's own client that keeps every message it receives."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> MqttCollector:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(timeout(5)):
            await self._ready.wait()
        return self

    async def _run(self) -> None:
        import aiomqtt

        async with aiomqtt.Client(self.host, self.port) as client:
            # QoS 0: the broker writes straight to the socket. At QoS 1 Mosquitto queues at
            # most 1000 messages per slow subscriber and drops the rest (max_queued_messages).
            await client.subscribe(self.topic, qos=0)
            self._ready.set()
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                self.messages.append((str(message.topic), payload, bool(message.retain)))
                self._changed.set()

    def distinct(self) -> int:
        """Distinct (topic, payload) pairs received: resent copies count once."""
        return len({(topic, payload) for topic, payload, _ in self.messages})

    async def wait_for(self, count: int, wait: float = 5.0) -> None:
        """Wait until ``count`` distinct messages arrived (or ``wait`` seconds passed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout(wait)):
                while self.distinct() < count:
                    self._changed.clear()
                    await self._changed.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


async def _mqtt_backend(
    service: tuple[str, int], base: dict[str, Any], uid: str, proxy: bool, subscribe: bool
) -> Backend:
    host, real_port = service
    port, cut = await _proxied(host, real_port, proxy)
    subscriber = MqttCollector(host, real_port, f"t{uid}/#")
    if subscribe:
        await subscriber.start()

    async def stored(expected: int) -> list[str | None]:
        if not subscribe:
            raise RuntimeError("this mqtt backend was made without a subscriber")
        await subscriber.wait_for(expected)
        await asyncio.sleep(0.05 * (1 if expected else 0))  # a late duplicate would show now
        return [json.loads(p)["id"] for _, p, retained in subscriber.messages if not retained]

    options = {
        **base,
        "host": host,
        "port": port,
        "topic": f"t{uid}/{{agent}}/{{sensor}}",
        "ack_timeout": timeout(2),
    }
    backend = Backend("mqtt", options, stored, dedupes=False, cleanups=[subscriber.close])
    if cut is not None:
        backend.drop = _drop_via(cut)
        backend.cleanups.insert(0, cut.close)
    return backend


async def _redis_backend(url: str, base: dict[str, Any], uid: str, proxy: bool) -> Backend:
    import redis.asyncio as aioredis

    host_port = url.split("//", 1)[1].split("/", 1)[0]
    real_port = int(host_port.rsplit(":", 1)[1])
    port, cut = await _proxied("127.0.0.1", real_port, proxy)
    key = f"telemetry-test-{uid}"

    async def stored(expected: int) -> list[str | None]:
        client = aioredis.Redis.from_url(url)
        try:
            entries = await client.xrange(key)
            return [json.loads(fields[b"data"])["id"] for _, fields in entries]
        finally:
            await client.aclose()

    async def cleanup() -> None:
        client = aioredis.Redis.from_url(url)
        try:
            await client.delete(key)
        finally:
            await client.aclose()

    options = {**base, "url": f"redis://127.0.0.1:{port}/0", "stream": key, "timeout": timeout(2)}
    backend = Backend("redis", options, stored, dedupes=False, cleanups=[cleanup])
    if cut is not None:
        backend.drop = _drop_via(cut)
        backend.cleanups.insert(0, cut.close)
    return backend
