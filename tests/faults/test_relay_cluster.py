"""Nothing lost between the tiers: agents -> collector -> 3-node JetStream -> relay -> PostgreSQL,
under faults (docs/relay.md).

Real processes throughout: ``telemetry agent`` (fed on stdin), ``telemetry collect`` writing the
``nats`` sink (R3 stream, every node in ``servers``), a 3-node ``nats-server`` cluster on free
ports (:mod:`tests.nats_cluster`), and ``telemetry relay`` writing PostgreSQL through a TCP
proxy the test can take away. While the agents stream, the stream's leader node, the relay and
the collector are each SIGKILLed and brought back, and PostgreSQL is away for 10 s. Then every
reading is in PostgreSQL exactly once (own schema, dropped after) and the books add up: each
agent acked all it produced, the stream holds each reading once, the durable consumer has
acked the whole stream, and the last relay's and collector's ledgers balance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest

from tests.faults.harness import (
    COMMAND,
    SEED,
    Agent,
    Collector,
    check_ledger,
    events,
    free_port,
    process_env,
    split,
    wait_until,
)
from tests.nats_cluster import NatsCluster
from tests.support import timeout

pytestmark = pytest.mark.slow

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
AGENTS = 3
READINGS = 9_000
#: Readings per second each agent is fed: the feed lasts READINGS / AGENTS / RATE = 20 s.
RATE = 150


class Gate:
    """A TCP proxy in front of PostgreSQL that the test takes away (every connection reset,
    new ones refused) and brings back; its own event loop in a thread."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.open = True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> Gate:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for end in (writer, up_writer):
            end.transport.abort()
            self._writers.discard(end)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    def set_open(self, open_: bool) -> None:
        async def apply() -> None:
            self.open = open_
            if not open_:
                for writer in list(self._writers):
                    writer.transport.abort()

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


class NatsCollector(Collector):
    """``telemetry collect`` whose only sink is the nats sink, into the cluster's R3 stream."""

    def __init__(self, tmp_path: Path, cluster: NatsCluster, stream: str, uid: str) -> None:
        super().__init__(tmp_path, "collector")
        self.config.write_text(
            '[collector]\nid = "collector"\nshutdown_timeout = 20\nledger_interval = 1\n'
            f"[ingest]\nport = {self.port}\n[http]\nenabled = false\n"
            f'[[sinks]]\ntype = "nats"\nservers = {json.dumps(cluster.urls)}\n'
            f'stream = "{stream}"\nsubjects = ["relayfault.{uid}.>"]\n'
            f'subject = "relayfault.{uid}.{{agent}}.{{sensor}}"\n'
            # Every resend of the run lands within the window: each id is stored once.
            "replicas = 3\nduplicate_window = 600\nack_timeout = 5\nretry_deadline = 20\n"
        )


class Relay:
    """``telemetry relay`` from the cluster into PostgreSQL (through the gate)."""

    def __init__(
        self, tmp_path: Path, cluster: NatsCluster, stream: str, gate: Gate, schema: str
    ) -> None:
        self.http = free_port()
        self.config = tmp_path / "relay.toml"
        self.config.write_text(
            f'[relay]\nservers = {json.dumps(cluster.urls)}\nstream = "{stream}"\n'
            'durable = "pg"\nfetch_batch = 500\nfetch_timeout = 0.5\nack_wait = 5\n'
            "redelivery_delay = 1\nledger_interval = 1\nshutdown_timeout = 20\n"
            f"[http]\nport = {self.http}\n"
            f'[[sinks]]\ntype = "postgres"\n'
            f'dsn = "postgresql://postgres@127.0.0.1:{gate.port}/test"\n'
            f'schema = "{schema}"\nconnect_timeout = 3\nretry_deadline = 5\nwrite_timeout = 10\n'
        )
        self.log = tmp_path / "relay.log"
        self.proc: Any = None
        self.starts = 0

    def start(self) -> Relay:
        import subprocess

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*COMMAND, "relay", "--config", str(self.config)], stderr=log, env=process_env()
            )
        self.starts += 1
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout(10))

    def terminate(self) -> int:
        import signal

        self.proc.send_signal(signal.SIGTERM)
        return int(self.proc.wait(timeout(40)))

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _pg(query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def stored_count(schema: str) -> int:
    rows = asyncio.run(_pg("SELECT to_regclass($1) AS t", f"{schema}.readings"))
    if rows[0]["t"] is None:
        return 0
    return int(asyncio.run(_pg(f"SELECT count(*) AS n FROM {schema}.readings"))[0]["n"])


async def _stream_books(urls: list[str], stream: str) -> tuple[int, int, int, int, int]:
    nc = await nats.connect(urls)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        consumer = await js.consumer_info(stream, "pg")
        return (
            info.state.messages,
            info.state.last_seq,
            consumer.ack_floor.stream_seq if consumer.ack_floor else 0,
            consumer.num_pending or 0,
            consumer.num_ack_pending or 0,
        )
    finally:
        await nc.close()


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"relayfault_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg("SELECT 1"))
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable: {exc}")
    yield name
    asyncio.run(_pg(f"DROP SCHEMA IF EXISTS {name} CASCADE"))


def test_faults_between_the_tiers_lose_nothing(tmp_path: Path, schema: str) -> None:
    """A NATS node, the relay and the collector SIGKILLed and restarted, PostgreSQL away for
    10 s, while agents stream: every reading stored once, and the books add up."""
    uid = uuid.uuid4().hex[:10]
    stream = f"RELAYFAULT_{uid}"
    cluster = NatsCluster(tmp_path)
    gate = Gate(5432)
    started: list[Any] = []
    try:
        cluster.start()
        gate.start()
        collector = NatsCollector(tmp_path, cluster, stream, uid).start()
        started.append(collector)
        relay = Relay(tmp_path, cluster, stream, gate, schema).start()
        started.append(relay)
        agents = [
            Agent(tmp_path, n, [collector.endpoint], count)
            for n, count in enumerate(split(READINGS, AGENTS))
        ]
        started.extend(agents)
        for agent in agents:
            agent.start(rate=RATE)

        def progress(share: float) -> None:
            wait_until(lambda: stored_count(schema) >= READINGS * share, 60, f"{share:.0%} stored")

        progress(0.1)
        leader = cluster.stream_leader(stream)
        cluster.kill(leader)  # the stream's leader: publishes and fetches wait for a new one
        time.sleep(2)
        cluster.start_node(leader)

        progress(0.3)
        relay.kill()  # its unacked messages come back after ack_wait
        time.sleep(1)
        relay.start()

        progress(0.45)
        collector.kill()  # the agents resend its unacked batches; the stream drops the copies
        time.sleep(0.5)
        collector.start()

        progress(0.55)
        gate.set_open(False)  # PostgreSQL away: the relay nacks, the stream holds the rest
        time.sleep(10)
        gate.set_open(True)

        for agent in agents:
            assert agent.wait(180) == 0, f"{agent.id}:\n{agent.log.read_text()[-3000:]}"
        wait_until(lambda: stored_count(schema) >= READINGS, 120, "every reading stored")
        wait_until(
            lambda: asyncio.run(_stream_books(cluster.urls, stream))[3:] == (0, 0),
            60,
            "the durable consumer to ack everything",
        )
        assert collector.terminate() == 0, collector.log.read_text()[-3000:]
        assert relay.terminate() == 0, relay.log.read_text()[-3000:]

        # Every reading stored exactly once, with its own value under its own id.
        rows = asyncio.run(_pg(f"SELECT id, agent, value FROM {schema}.readings"))
        ids = [row["id"] for row in rows]
        assert len(ids) == len(set(ids)) == READINGS, f"{len(ids)} rows, {len(set(ids))} ids"
        for agent in agents:
            values = sorted(int(row["value"]) for row in rows if row["agent"] == agent.id)
            assert values == agent.values, f"{agent.id}: stored values differ (seed {SEED})"

        # The books: agents acked everything; the stream holds each reading once; the
        # durable acked the whole stream; the last collector's and relay's ledgers balance.
        for agent in agents:
            check_ledger(agent)
        messages, last_seq, ack_floor, pending, ack_pending = asyncio.run(
            _stream_books(cluster.urls, stream)
        )
        assert messages == READINGS, f"the stream holds {messages} messages"
        assert (ack_floor, pending, ack_pending) == (last_seq, 0, 0)
        final = events(collector.log, "ledger")[-1]
        assert final["balanced"], final
        assert final["pending"] == 0, final
        relay_final = events(relay.log, "relay_stopped")[-1]
        assert relay_final["in_flight"] == 0
        assert relay_final["dead_lettered"] == 0
        assert events(relay.log, "relay_ledger")[-1]["balanced"]
        redelivered = sum(e["redelivered"] for e in events(relay.log, "relay_stopped"))
        assert redelivered > 0, "no fault made the server deliver a message again"
        assert events(relay.log, "relay_delivery_failed"), "PostgreSQL's absence went unseen"
        assert (collector.starts, relay.starts, cluster.starts[leader]) == (2, 2, 2)
    finally:
        for process in started:
            process.cleanup()
        gate.stop()
        cluster.stop()
