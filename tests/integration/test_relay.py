"""``telemetry relay`` against the NATS JetStream server on this machine: each test has its own
stream (uuid), filled through the real ``nats`` sink and deleted afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from telemetry.config import NatsSinkConfig, RelayConfig
from telemetry.relay import Relay
from telemetry.sinks.base import DeadLetter, Record, TransientSinkError
from telemetry.sinks.nats import NatsSink
from tests.integration.sinks.conftest import NATS_URL, records
from tests.support import RecordingSink, http_get, timeout


def _require_nats() -> None:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"NATS is not reachable: {exc} (CI=true: a missing service fails)")
        pytest.skip(f"NATS is not reachable: {exc}")


class Stream:
    """A uuid-named stream, filled through the nats sink."""

    def __init__(self) -> None:
        self.uid = uuid.uuid4().hex[:12]
        self.name = f"RELAYTEST_{self.uid}"
        self.subjects = [f"relaytest.{self.uid}.>"]
        self.sink = NatsSink(
            NatsSinkConfig(
                type="nats",
                servers=[NATS_URL],
                stream=self.name,
                subjects=self.subjects,
                subject=f"relaytest.{self.uid}.{{agent}}.{{sensor}}",
            )
        )

    async def publish(self, batch: list[Record]) -> None:
        await self.sink.write(batch)

    async def publish_raw(self, payload: bytes) -> None:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().publish(f"relaytest.{self.uid}.raw", payload, stream=self.name)
        finally:
            await nc.close()

    async def consumer(self, durable: str) -> tuple[int, int]:
        nc = await nats.connect(NATS_URL)
        try:
            info = await nc.jetstream().consumer_info(self.name, durable)
            return info.num_pending or 0, info.num_ack_pending or 0
        finally:
            await nc.close()

    async def delete(self) -> None:
        await self.sink.close()
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_stream(self.name)
        finally:
            await nc.close()


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    _require_nats()
    made = Stream()
    await made.sink.start()
    yield made
    await made.delete()


def relay_config(stream: Stream, durable: str = "relay", **relay: Any) -> dict[str, Any]:
    return {
        "relay": {
            "servers": [NATS_URL],
            "stream": stream.name,
            "durable": durable,
            "fetch_timeout": 0.2,
            **relay,
        },
        "http": {"port": 0},
        "log": {"level": "warning"},
    }


async def until(check: Callable[[], bool], seconds: float = 15.0) -> None:
    """Poll ``check`` (the relay's books, read by the test) until it holds; fail after
    ``seconds`` (scaled)."""
    for _ in range(int(timeout(seconds) / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout(seconds)} s")


@pytest.fixture
async def start_relay() -> AsyncIterator[Callable[..., Any]]:
    started: list[Relay] = []

    async def start(config: dict[str, Any], sinks: list[Any], **sink_options: Any) -> Relay:
        entries = [
            {"type": "null", "name": s.name, "flush_interval": 0.005, **sink_options} for s in sinks
        ]
        for entry, sink in zip(entries, sinks, strict=True):
            if getattr(sink, "dead_letter", False):
                entry["dead_letter"] = True
        relay = Relay(RelayConfig(**config, sinks=entries), sinks=sinks)
        await relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.shutdown()


async def test_every_message_is_written_then_acked(stream: Stream, start_relay: Any) -> None:
    """Every reading in the stream reaches the sink with its id, and the consumer is left
    with nothing pending or unacked."""
    sent = records(0, 500)
    await stream.publish(sent)
    sink = RecordingSink()
    relay = await start_relay(relay_config(stream), [sink])
    await until(lambda: relay.ledger.acked == 500)
    assert sorted(sink.ids) == sorted(r.id for r in sent)  # type: ignore[type-var]
    assert sink.records[0].to_dict() == next(r for r in sent if r.id == sink.ids[0]).to_dict()
    assert (await stream.consumer("relay")) == (0, 0)
    assert relay.ledger.balanced
    assert relay.ledger.redelivered == 0
    status, body = await http_get(relay.http.port or 0, "/readyz")
    assert status == 200
    assert body["nats"] is True


async def test_a_transient_failure_is_redelivered_and_stored(
    stream: Stream, start_relay: Any
) -> None:
    """A sink that fails for now gets the batch again after the nak's delay; nothing is lost."""
    await stream.publish(records(0, 50))
    sink = RecordingSink()
    sink.failures = [TransientSinkError("store down")] * 3
    relay = await start_relay(
        relay_config(stream, redelivery_delay=0.2, fetch_batch=50), [sink], retry_deadline=0
    )
    await until(lambda: relay.ledger.acked >= 50)
    assert sorted(set(sink.ids)) == sorted(r.id for r in records(0, 50))  # type: ignore[type-var]
    assert relay.ledger.nacked >= 50
    assert relay.ledger.redelivered >= 50
    assert relay.metrics.base.value("telemetry_relay_redeliveries_total") >= 50
    assert relay.ledger.balanced
    assert (await stream.consumer("relay")) == (0, 0)


class DeadLetters(RecordingSink):
    dead_letter = True

    @property
    def letters(self) -> list[DeadLetter]:
        return self.records  # type: ignore[return-value]


async def test_a_refused_reading_is_dead_lettered_then_acked(
    stream: Stream, start_relay: Any
) -> None:
    """A permanent refusal: that reading goes to the dead-letter sink, the others are written,
    and every message is acked (none comes back)."""
    await stream.publish(records(0, 20))
    await stream.publish_raw(b"not a reading")
    sink = RecordingSink()
    sink.refuse = lambda record: record.id == "agent-1:0:7"
    letters = DeadLetters("dead")
    relay = await start_relay(relay_config(stream), [sink, letters])
    await until(lambda: relay.ledger.acked + relay.ledger.dead_lettered == 21)
    await until(lambda: len(letters.records) == 2)
    assert len(sink.records) == 19
    assert "agent-1:0:7" not in sink.ids
    reasons = sorted(letter.reason for letter in letters.letters)
    assert reasons[0].startswith("sink recording:")
    assert reasons[1].startswith("undecodable message: not JSON")
    assert relay.ledger.dead_lettered == 2
    assert (await stream.consumer("relay")) == (0, 0)


async def test_relays_on_one_durable_share_the_work(stream: Stream, start_relay: Any) -> None:
    """Two relays with one durable each take a part of the stream; together, all of it."""
    sent = records(0, 2000)
    first, second = RecordingSink("first"), RecordingSink("second")
    config = relay_config(stream, fetch_batch=100, max_in_flight=1)
    one = await start_relay(config, [first])
    two = await start_relay(config, [second])
    for start in range(0, 2000, 200):
        await stream.publish(sent[start : start + 200])
    await until(lambda: one.ledger.acked + two.ledger.acked >= 2000)
    assert first.records
    assert second.records
    assert sorted(first.ids + second.ids) == sorted(r.id for r in sent)  # type: ignore[type-var]


async def test_separate_durables_each_get_everything(stream: Stream, start_relay: Any) -> None:
    """A relay per store (its own durable) gets every reading, whatever the other does."""
    await stream.publish(records(0, 100))
    slow, fast = RecordingSink("slow"), RecordingSink("fast")
    slow.gate = asyncio.Event()  # the slow store takes nothing yet
    await start_relay(relay_config(stream, durable="slow"), [slow])
    fast_relay = await start_relay(relay_config(stream, durable="fast"), [fast])
    await until(lambda: fast_relay.ledger.acked == 100)
    assert not slow.records
    slow.gate.set()
    await until(lambda: len(slow.records) == 100)


async def _metrics(port: int) -> str:
    """The relay's /metrics text, or "" while it does not answer."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            return await resp.text() if resp.status == 200 else ""
    except aiohttp.ClientError:
        return ""


def test_the_relay_command_serves_and_drains(tmp_path: Path) -> None:
    """``telemetry relay --config`` writes to SQLite, serves its metrics, outlives a SIGHUP,
    and exits 0 on SIGTERM after its drain."""
    asyncio.run(_relay_command(tmp_path))


async def _relay_command(tmp_path: Path) -> None:
    _require_nats()
    stream = Stream()
    await stream.sink.start()
    try:
        await stream.publish(records(0, 300))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        db = tmp_path / "relay.db"
        config = tmp_path / "relay.toml"
        config.write_text(
            f'[relay]\nservers = ["{NATS_URL}"]\nstream = "{stream.name}"\n'
            f'durable = "cli"\n[http]\nport = {port}\n[log]\nformat = "json"\n'
            f'[[sinks]]\ntype = "sqlite"\npath = "{db}"\n'
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "telemetry.cli",
            "relay",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            for _ in range(int(timeout(30) / 0.2)):
                if proc.returncode is not None:
                    break
                text = await _metrics(port)
                if 'telemetry_relay_messages_total{outcome="acked"} 300.0' in text:
                    break
                await asyncio.sleep(0.2)
            else:
                if proc.returncode is None:
                    proc.kill()
                assert proc.stderr is not None
                raise AssertionError((await proc.stderr.read()).decode()[-3000:])
            assert "telemetry_sink_written_readings_total" in text
            proc.send_signal(signal.SIGHUP)  # no reload: logged, and the relay goes on
            await asyncio.sleep(0.3)
            assert await _metrics(port)
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(timeout(30)):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert '"event": "relay_stopped"' in log or '"event":"relay_stopped"' in log
        assert "reload_unsupported_restart_instead" in log
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(DISTINCT id) FROM readings").fetchone() == (300,)
    finally:
        await stream.delete()


async def test_in_flight_messages_are_bounded(stream: Stream, start_relay: Any) -> None:
    """With a stalled sink, the relay holds at most fetch_batch * max_in_flight messages."""
    await stream.publish(records(0, 500))
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    relay = await start_relay(relay_config(stream, fetch_batch=50, max_in_flight=2), [sink])
    await until(lambda: relay.ledger.in_flight == 100)
    await asyncio.sleep(0.5)  # time for a third fetch, which must not happen
    assert relay.ledger.delivered == 100
    assert (await stream.consumer("relay")) == (400, 100)
    sink.gate.set()
    await until(lambda: relay.ledger.acked == 500)


async def test_a_slow_sink_causes_no_redelivery(stream: Stream, start_relay: Any) -> None:
    """A batch that waits for its sink longer than ack_wait is kept "in progress": the server
    does not deliver it again."""
    await stream.publish(records(0, 20))
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    relay = await start_relay(relay_config(stream, ack_wait=1.5), [sink], write_timeout=20)
    await until(lambda: relay.ledger.in_flight == 20)
    await asyncio.sleep(timeout(5))  # over three ack_waits
    sink.gate.set()
    await until(lambda: relay.ledger.acked == 20)
    assert relay.ledger.redelivered == 0
    assert relay.ledger.delivered == 20


async def test_the_drain_settles_the_batches_in_flight(stream: Stream, start_relay: Any) -> None:
    """On shutdown, batches in the pipeline finish and are acked before the relay stops."""
    await stream.publish(records(0, 100))
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    relay = await start_relay(relay_config(stream), [sink])
    await until(lambda: relay.ledger.in_flight == 100)
    asyncio.get_running_loop().call_later(0.3, sink.gate.set)
    await relay.shutdown()
    assert relay.ledger.acked == 100
    assert relay.state == "stopped"
    assert (await stream.consumer("relay")) == (0, 0)


async def test_a_drain_out_of_time_nacks_what_is_left(stream: Stream, start_relay: Any) -> None:
    """A batch still waiting when shutdown_timeout runs out is nacked at once: the next relay
    of the durable gets it without waiting for ack_wait."""
    await stream.publish(records(0, 30))
    stuck = RecordingSink()
    stuck.gate = asyncio.Event()  # never opens
    config = relay_config(stream, shutdown_timeout=1.0, ack_wait=60)
    relay = await start_relay(config, [stuck], write_timeout=60)
    await until(lambda: relay.ledger.in_flight == 30)
    await relay.shutdown()
    assert relay.ledger.nacked == 30
    assert relay.ledger.balanced
    after = RecordingSink("after")
    second = await start_relay(config, [after])
    await until(lambda: second.ledger.acked == 30, seconds=10)
    assert second.ledger.redelivered == 30
