"""The collector over real sockets: framing from the wire, replies, limits, drain."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from telemetry.collector import Collector
from telemetry.sinks.base import TransientSinkError
from telemetry.sinks.jsonl import JsonlSink
from tests.support import RecordingSink, WireClient, collector_config, frame, http_get, timeout


def rows(path: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM readings ORDER BY rowid").fetchall()
    finally:
        db.close()


async def test_tutorial_sender_readings_land_once_with_fields_intact(start_collector, tmp_path):
    """Frames sent in small pieces with pauses, several per send, land once each, '°C' intact."""
    collector = await start_collector()
    readings = [
        {
            "sensor": f"greenhouse-{i}",
            "value": i + 0.25,
            "unit": "°C",
            "metric": "température",
            "ts": "2026-11-27T07:15:02.123+01:00",
            "tags": {"site": "nörth"},
        }
        for i in range(20)
    ]
    stream = b"".join(frame(r) for r in readings)
    client = await WireClient.connect(collector.ingest_port)
    for start in range(0, len(stream), 7):
        await client.send_raw(stream[start : start + 7])
        if start % 70 == 0:
            await asyncio.sleep(0.005)
    await client.close()
    await collector.shutdown()
    stored = rows(tmp_path / "telemetry.db")
    assert [r["sensor"] for r in stored] == [r["sensor"] for r in readings]
    first = stored[0]
    assert first["unit"] == "°C"
    assert first["metric"] == "température"
    assert first["value"] == 0.25
    assert first["ts"] == "2026-11-27T06:15:02.123000Z"
    assert json.loads(first["tags"]) == {"site": "nörth"}
    assert first["id"] is None
    assert first["agent"] == "127.0.0.1"  # no hello: the host


async def test_batch_with_bad_readings_is_acked_with_exactly_those_rejected(
    start_collector, tmp_path
):
    """String value, unknown key and missing sensor are rejected by index, naming the field."""
    collector = await start_collector()
    client = await WireClient.connect(collector.ingest_port)
    welcome = await client.hello("greenhouse-2")
    assert welcome["type"] == "welcome"
    assert welcome["window"] == 8
    assert welcome["max_frame_bytes"] == 1048576
    batch = {
        "type": "batch",
        "seq": 7,
        "readings": [
            {"sensor": "a", "value": 1},
            {"sensor": "b", "value": "41.2"},
            {"sensor": "c", "value": 3, "colour": "red"},
            {"sensor": "d", "value": 4.5, "unit": "°C"},
            {"value": 5},
        ],
    }
    await client.send(batch)
    ack = await client.recv()
    assert ack["type"] == "ack"
    assert ack["seq"] == 7
    assert ack["accepted"] == 2
    rejected = {r["index"]: r["errors"] for r in ack["rejected"]}
    assert sorted(rejected) == [1, 2, 4]
    assert any(e.startswith("value:") for e in rejected[1])
    assert any("colour" in e for e in rejected[2])
    assert any(e.startswith("sensor:") for e in rejected[4])
    await client.send(batch)  # resent, e.g. after a lost ack
    assert (await client.recv())["accepted"] == 2
    await client.close()
    stored = rows(tmp_path / "telemetry.db")
    assert [r["id"] for r in stored] == ["greenhouse-2:7:0", "greenhouse-2:7:3"]
    assert stored[1]["unit"] == "°C"
    assert stored[0]["agent"] == "greenhouse-2"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"abcdefghij", "bad_header"),
        (b"2000000000", "frame_too_large"),
        (
            frame({"type": "batch", "seq": 0, "readings": [{"sensor": "a", "value": 1}]}),
            "hello_required",
        ),
        (frame([1, 2, 3]), "not_an_object"),
        (frame({"type": "subscribe"}), "unknown_type"),
        (frame(b'{"type": "hello", "agent": '), "bad_json"),
        (frame({"type": "hello", "agent": "x", "protocol": 2}), "protocol_violation"),
        (frame({"type": "batch", "seq": -1, "readings": []}), "protocol_violation"),
    ],
)
async def test_fatal_errors_close_only_that_connection(start_collector, data, code):
    """A broken stream gets an error with its code and a close within a second; others go on."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink])
    healthy = await WireClient.connect(collector.ingest_port)
    await healthy.hello("steady")
    bad = await WireClient.connect(collector.ingest_port)
    await bad.send_raw(data)
    error = await bad.recv(wait=1.0)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["detail"]
    assert await bad.closed(wait=1.0)
    for seq in range(3):
        await healthy.send(
            {"type": "batch", "seq": seq, "readings": [{"sensor": "s", "value": seq}]}
        )
        ack = await healthy.recv()
        assert (ack["type"], ack["seq"], ack["accepted"]) == ("ack", seq, 1)
    assert sink.ids == ["steady:0:0", "steady:1:0", "steady:2:0"]


async def test_a_malformed_batch_after_hello_is_bad_json(start_collector):
    """A broken batch after hello gets bad_json and a close, as documented; not silence."""
    collector = await start_collector(sinks=[RecordingSink()])
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("p")
    await client.send_raw(frame(b'{"type": "batch", "seq": 1, "readings": [{"sensor": '))
    error = await client.recv(wait=1.0)
    assert (error["type"], error["code"]) == ("error", "bad_json")
    assert await client.closed(wait=1.0)


async def test_frames_before_a_broken_header_are_delivered(start_collector):
    """Readings that precede a broken header in the same read are not lost."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.send_raw(frame({"sensor": "before", "value": 1}) + b"??????????")
    assert (await client.recv())["code"] == "bad_header"
    await collector.shutdown()
    assert [r.sensor for r in sink.records] == ["before"]


async def test_readings_before_a_fatal_message_are_delivered(start_collector):
    """Readings that precede a fatal message (not an object) in the same read are kept."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.send_raw(
        frame({"sensor": "one", "value": 1}) + frame({"sensor": "two", "value": 2}) + frame([3])
    )
    assert (await client.recv())["code"] == "not_an_object"
    await collector.shutdown()
    assert [r.sensor for r in sink.records] == ["one", "two"]


async def test_bad_fire_and_forget_payloads_skip_one_frame(start_collector):
    """Bad JSON or an invalid bare reading is counted and skipped; the connection goes on."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.send_raw(
        frame({"sensor": "a", "value": 1})
        + frame(b"{not json")
        + frame(b"\xff\xfe")
        + frame({"sensor": "b", "value": "high"})
        + frame({"sensor": "c", "value": 3})
    )
    await client.send({"type": "hello", "agent": "ff"})
    assert (await client.recv())["type"] == "welcome"
    await client.close()
    await collector.shutdown()
    assert [r.sensor for r in sink.records] == ["a", "c"]
    assert collector.metrics.value("telemetry_readings_total", outcome="rejected") == 3
    assert collector.metrics.value("telemetry_rejections_total", reason="bad_json") == 2


async def test_eof_mid_frame_is_never_delivered(start_collector):
    """A frame cut by EOF is logged as truncated and not handed to the sinks."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    whole = frame({"sensor": "whole", "value": 1})
    cut = frame({"sensor": "cut", "value": 2})[:-3]
    await client.send_raw(whole + cut)
    client.writer.write_eof()
    assert await client.closed(wait=2.0)
    await collector.shutdown()
    assert [r.sensor for r in sink.records] == ["whole"]


async def test_future_timestamps_are_rejected(start_collector):
    """A reading more than max_clock_skew in the future is rejected; within skew it is kept."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink], ingest={"max_clock_skew": 60})
    client = await WireClient.connect(collector.ingest_port)
    await client.hello()
    now = datetime.now(UTC)
    await client.send(
        {
            "type": "batch",
            "seq": 0,
            "readings": [
                {"sensor": "a", "value": 1, "ts": (now + timedelta(seconds=30)).isoformat()},
                {"sensor": "b", "value": 1, "ts": (now + timedelta(seconds=600)).timestamp()},
            ],
        }
    )
    ack = await client.recv()
    assert ack["accepted"] == 1
    assert ack["rejected"][0]["index"] == 1
    assert ack["rejected"][0]["errors"][0].startswith("ts:")


async def test_heartbeats_keep_a_connection_alive_and_silence_ends_it(start_collector):
    """Empty frames reset the idle timer; with no frame for idle_timeout the collector closes."""
    collector = await start_collector(sinks=[RecordingSink()], ingest={"idle_timeout": 0.4})
    client = await WireClient.connect(collector.ingest_port)
    for _ in range(5):
        await asyncio.sleep(0.2)
        await client.send_raw(b"0         ")
    await client.send({"type": "hello", "agent": "alive"})
    assert (await client.recv())["type"] == "welcome"
    error = await client.recv(wait=2.0)
    assert error["code"] == "idle_timeout"
    assert await client.closed()


async def test_max_connections_refuses_the_one_too_many(start_collector):
    """Past max_connections a new connection gets too_many_connections and is closed."""
    collector = await start_collector(sinks=[RecordingSink()], ingest={"max_connections": 2})
    first = await WireClient.connect(collector.ingest_port)
    second = await WireClient.connect(collector.ingest_port)
    await first.hello("one")
    await second.hello("two")
    third = await WireClient.connect(collector.ingest_port)
    assert (await third.recv())["code"] == "too_many_connections"
    assert await third.closed()
    await first.close()
    await asyncio.sleep(0.1)
    fourth = await WireClient.connect(collector.ingest_port)
    assert (await fourth.hello("four"))["type"] == "welcome"


async def test_tokens_are_checked_when_configured(start_collector):
    """With tokens configured, a hello without a valid token is refused as unauthorized."""
    collector = await start_collector(sinks=[RecordingSink()], ingest={"tokens": ["s3cret"]})
    bad = await WireClient.connect(collector.ingest_port)
    assert (await bad.hello("x", token="guess"))["code"] == "unauthorized"
    assert await bad.closed()
    good = await WireClient.connect(collector.ingest_port)
    assert (await good.hello("x", token="s3cret"))["type"] == "welcome"


async def test_second_hello_and_oversized_batch_are_violations(start_collector):
    """A second hello, or a batch over max_batch, is a protocol_violation."""
    collector = await start_collector(sinks=[RecordingSink()], ingest={"max_batch": 3})
    client = await WireClient.connect(collector.ingest_port)
    await client.hello()
    await client.send({"type": "batch", "seq": 0, "readings": [{"sensor": "a", "value": 1}] * 4})
    error = await client.recv()
    assert error["code"] == "protocol_violation"
    assert "max_batch 3" in error["detail"]
    other = await WireClient.connect(collector.ingest_port)
    await other.hello()
    await other.send({"type": "hello", "agent": "again"})
    assert (await other.recv())["code"] == "protocol_violation"


async def test_ack_waits_for_the_sink_to_accept(start_collector):
    """No ack is sent before the sink's write returns."""
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.hello()
    await client.send({"type": "batch", "seq": 0, "readings": [{"sensor": "a", "value": 1}]})
    with pytest.raises(TimeoutError):
        await client.recv(wait=0.3)
    sink.gate.set()
    ack = await client.recv()
    assert (ack["type"], ack["seq"]) == ("ack", 0)
    assert sink.ids == ["agent-1:0:0"]


async def test_a_sink_that_stays_down_gets_nacks(start_collector):
    """When a sink keeps failing past retry_deadline, the batch is nacked with retry_after_ms."""
    sink = RecordingSink()
    sink.fail_always = TransientSinkError("backend down")
    collector = await start_collector(sinks=[sink], sink_options={"retry_deadline": 0.2})
    client = await WireClient.connect(collector.ingest_port)
    await client.hello()
    await client.send({"type": "batch", "seq": 3, "readings": [{"sensor": "a", "value": 1}]})
    nack = await client.recv()
    assert nack["type"] == "nack"
    assert nack["seq"] == 3
    assert nack["retry_after_ms"] > 0
    sink.fail_always = None
    await client.send({"type": "batch", "seq": 3, "readings": [{"sensor": "a", "value": 1}]})
    assert (await client.recv())["type"] == "ack"
    assert sink.ids == ["agent-1:3:0"]


async def test_transient_failures_are_retried_before_the_ack(start_collector):
    """A sink that fails twice then recovers still gets the batch, and the agent an ack."""
    sink = RecordingSink()
    sink.failures = [TransientSinkError("blip"), ConnectionResetError("reset")]
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.hello()
    await client.send({"type": "batch", "seq": 0, "readings": [{"sensor": "a", "value": 1}]})
    assert (await client.recv(wait=5))["type"] == "ack"
    assert sink.ids == ["agent-1:0:0"]


async def test_drain_sends_goaway_and_acks_in_flight_batches(start_collector):
    """On drain, agents get goaway, in-flight batches are still acked, then the socket closes."""
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.hello()
    await client.send({"type": "batch", "seq": 0, "readings": [{"sensor": "a", "value": 1}]})
    await asyncio.sleep(0.05)
    drain = asyncio.create_task(collector.shutdown())
    goaway = await client.recv()
    assert goaway["type"] == "goaway"
    status, body = await http_get(collector.http.port, "/readyz")
    assert (status, body["state"]) == (503, "draining")
    sink.gate.set()
    ack = await client.recv()
    assert (ack["type"], ack["seq"]) == ("ack", 0)
    assert await client.closed(wait=2.0)
    async with asyncio.timeout(timeout(5)):
        await drain
    assert collector.state == "stopped"
    assert sink.closed == 1


async def test_health_and_readiness(start_collector):
    """/healthz answers while alive; /readyz is 200 while serving with healthy sinks."""
    collector = await start_collector(sinks=[RecordingSink()])
    status, body = await http_get(collector.http.port, "/healthz")
    assert (status, body["status"]) == (200, "ok")
    status, body = await http_get(collector.http.port, "/readyz")
    assert status == 200
    assert body["sinks"] == {"recording": True}


async def test_window_of_batches_is_served_concurrently(start_collector):
    """Several batches sent without waiting are all acked, each with its own seq."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("w")
    await client.send(
        *(
            {"type": "batch", "seq": seq, "readings": [{"sensor": "s", "value": seq}] * 10}
            for seq in range(20)
        )
    )
    acks = [await client.recv() for _ in range(20)]
    assert sorted(a["seq"] for a in acks) == list(range(20))
    assert len(set(sink.ids)) == 200


async def test_metrics_parse_and_count_what_happened(start_collector):
    """/metrics is Prometheus text that prometheus-client parses, with the traffic counted."""
    from prometheus_client.parser import text_string_to_metric_families

    sink = RecordingSink()
    collector = await start_collector(sinks=[sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("metered")
    batch = [{"sensor": "a", "value": 1}, {"sensor": "b"}, {"sensor": "c", "value": 2, "x": 1}]
    await client.send({"type": "batch", "seq": 0, "readings": batch})
    assert (await client.recv())["type"] == "ack"
    bad = await WireClient.connect(collector.ingest_port)
    await bad.send_raw(b"abcdefghij")
    await bad.recv()
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{collector.http.port}/metrics"
        async with session.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("telemetry_readings_total", (("outcome", "accepted"),))] == 1
    assert samples[("telemetry_readings_total", (("outcome", "rejected"),))] == 2
    assert samples[("telemetry_rejections_total", (("reason", "missing_field"),))] == 1
    assert samples[("telemetry_rejections_total", (("reason", "unknown_key"),))] == 1
    assert samples[("telemetry_acks_total", ())] == 1
    assert samples[("telemetry_connection_errors_total", (("code", "bad_header"),))] == 1
    assert samples[("telemetry_agents_connected", ())] == 1
    assert samples[("telemetry_sink_queue_readings", (("sink", "recording"),))] == 0
    assert samples[("telemetry_sink_healthy", (("sink", "recording"),))] == 1
    assert samples[("telemetry_sink_write_seconds_count", (("sink", "recording"),))] == 1
    assert samples[("telemetry_ready", ())] == 1
    assert not [name for name, _ in samples if name.endswith("_created")]
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)
    build = [labels for name, labels in samples if name == "telemetry_build_info"]
    assert len(build) == 1
    assert {key for key, _ in build[0]} == {"version", "python"}


async def test_on_full_nack_answers_at_once_when_a_queue_is_full(start_collector):
    """With on_full = "nack", a batch meeting a full sink queue is nacked with retry_after_ms."""
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    collector = await start_collector(
        sinks=[sink],
        sink_options={"queue_size": 2, "flush_interval": 0},
        ingest={"on_full": "nack", "retry_after_ms": 250},
    )
    client = await WireClient.connect(collector.ingest_port)
    await client.hello()
    two = [{"sensor": "a", "value": 1}, {"sensor": "b", "value": 2}]
    await client.send({"type": "batch", "seq": 0, "readings": two})  # taken by the worker
    await asyncio.sleep(0.05)
    await client.send({"type": "batch", "seq": 1, "readings": two})  # fills the queue
    await client.send({"type": "batch", "seq": 2, "readings": two})  # no room: nack
    nack = await client.recv()
    assert (nack["type"], nack["seq"], nack["retry_after_ms"]) == ("nack", 2, 250)
    sink.gate.set()
    acks = sorted([(await client.recv())["seq"], (await client.recv())["seq"]])
    assert acks == [0, 1]


async def test_readings_a_sink_refuses_are_rejected_in_the_ack_and_dead_lettered(
    start_collector, tmp_path
):
    """A permanent sink refusal rejects just that reading, with the sink's reason, and the
    validation rejections and the refusal land in the dead-letter sink with their raw JSON."""
    sink = RecordingSink()
    sink.refuse = lambda record: record.value > 1e12
    letters = tmp_path / "dead.jsonl"
    config = collector_config(
        tmp_path,
        sinks=[
            {"type": "null", "name": "recording"},
            {"type": "jsonl", "name": "dead", "path": str(letters), "dead_letter": True},
        ],
    )
    collector = Collector(config, sinks=[sink, JsonlSink(config.sinks[1])])
    await collector.start()
    try:
        client = await WireClient.connect(collector.ingest_port)
        await client.hello("dl")
        await client.send(
            {
                "type": "batch",
                "seq": 5,
                "readings": [
                    {"sensor": "ok", "value": 1},
                    {"sensor": "huge", "value": 1e13},
                    {"sensor": "bad", "value": "NaN-ish"},
                ],
            }
        )
        ack = await client.recv()
        await client.send({"sensor": "loose", "value": [1]})  # fire-and-forget, invalid
        await client.close()
    finally:
        await collector.shutdown()
    assert ack["accepted"] == 1
    rejected = {r["index"]: r["errors"] for r in ack["rejected"]}
    assert rejected[1] == ["sink recording: value out of range for the backend"]
    assert rejected[2][0].startswith("value:")
    assert sink.ids == ["dl:5:0"]
    lines = [json.loads(line) for line in letters.read_text().splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert json.loads(by_id["dl:5:2"]["raw"]) == {"sensor": "bad", "value": "NaN-ish"}
    assert by_id["dl:5:2"]["reason"].startswith("value:")
    assert by_id["dl:5:1"]["reason"] == "sink recording: value out of range for the backend"
    assert json.loads(by_id["dl:5:1"]["raw"])["sensor"] == "huge"
    assert json.loads(by_id[None]["raw"]) == {"sensor": "loose", "value": [1]}
    assert all(line["dead_letter"] for line in lines)


async def test_max_connection_age_sends_goaway_to_rebalance(start_collector):
    """A connection older than max_connection_age (+-10%) gets goaway and is closed."""
    collector = await start_collector(sinks=[RecordingSink()], ingest={"max_connection_age": 0.3})
    client = await WireClient.connect(collector.ingest_port)
    await client.hello()
    goaway = await client.recv(wait=2)
    assert goaway == {"type": "goaway", "reason": "max_connection_age"}
    assert await client.closed(wait=3)


async def test_the_ledger_accounts_for_every_batch_reading(start_collector):
    """received = acked + rejected + unacked + pending, through rejections, refusals, nacks."""
    sink = RecordingSink()
    sink.refuse = lambda record: record.sensor == "refused"
    collector = await start_collector(sinks=[sink], sink_options={"retry_deadline": 0.1})
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("ledger")
    good = {"sensor": "ok", "value": 1}
    await client.send(
        {
            "type": "batch",
            "seq": 0,
            "readings": [good, {"sensor": "refused", "value": 2}, {"value": 3}],
        }
    )
    assert (await client.recv())["accepted"] == 1
    sink.fail_always = TransientSinkError("down")
    await client.send({"type": "batch", "seq": 1, "readings": [good, good]})
    assert (await client.recv())["type"] == "nack"
    sink.fail_always = None
    await client.send({"sensor": "loose", "value": 1}, {"sensor": "loose"})
    await client.send({"type": "batch", "seq": 2, "readings": [good]})
    assert (await client.recv())["type"] == "ack"
    ledger = collector.ledger
    assert (ledger.received, ledger.acked, ledger.rejected, ledger.unacked, ledger.pending) == (
        6,
        2,
        2,
        2,
        0,
    )
    assert (ledger.fire_and_forget_received, ledger.fire_and_forget_rejected) == (2, 1)
    assert ledger.balanced
    value = collector.metrics.value
    assert value("telemetry_ledger_readings_total", state="acked") == 2
    assert value("telemetry_ledger_pending_readings") == 0


async def test_fast_and_exact_paths_keep_the_order_of_one_read(start_collector):
    """One read mixing clean and unusual frames: every reading lands in order, each bad one is
    rejected, and each batch is acked as if its frames had come one by one."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink], ingest={"max_clock_skew": 60})
    client = await WireClient.connect(collector.ingest_port)
    ahead = (datetime.now(UTC) + timedelta(seconds=600)).isoformat()

    def reading(sensor: str, **extra: object) -> dict[str, object]:
        return {"sensor": sensor, "value": 1, **extra}

    await client.send_raw(
        frame(reading("loose-1"))
        + frame(reading("loose-ahead", ts=ahead))  # the exact path rejects it
        + frame(reading("loose-2"))
        + frame({"sensor": "loose-bad"})  # no value
        + frame(b"")  # heartbeat
        + frame({"type": "hello", "agent": "mixed"})
        + frame({"type": "batch", "seq": 0, "readings": [reading("batch-0a"), reading("b0b")]})
        + frame({"type": "batch", "seq": 1, "readings": [reading("b1a"), reading("x", ts=ahead)]})
        + frame(reading("loose-3", ts=1764227702.5))
    )
    assert (await client.recv())["type"] == "welcome"
    first, second = await client.recv(), await client.recv()
    assert (first["seq"], first["accepted"], first["rejected"]) == (0, 2, [])
    assert (second["seq"], second["accepted"]) == (1, 1)
    assert [r["index"] for r in second["rejected"]] == [1]
    await collector.shutdown()
    assert [r.sensor for r in sink.records] == [
        "loose-1",
        "loose-2",
        "batch-0a",
        "b0b",
        "b1a",
        "loose-3",
    ]
    assert [r.id for r in sink.records if r.id] == ["mixed:0:0", "mixed:0:1", "mixed:1:0"]
    assert sink.records[0].agent == "127.0.0.1"  # before the hello: the host
    assert sink.records[-1].agent == "mixed"
    ledger = collector.ledger
    assert (ledger.fire_and_forget_received, ledger.fire_and_forget_rejected) == (5, 2)
    assert (ledger.received, ledger.acked, ledger.rejected) == (4, 3, 1)


async def test_health_answers_while_a_sink_is_still_starting(tmp_path):
    """The side port comes up first: /healthz 200 and /readyz 503 until the sinks started."""

    class Gated(RecordingSink):
        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()
            self.release = asyncio.Event()

        async def start(self) -> None:
            self.entered.set()
            await self.release.wait()
            await super().start()

    sink = Gated()
    collector = Collector(collector_config(tmp_path, sinks=[{"type": "null"}]), sinks=[sink])
    starting = asyncio.create_task(collector.start())
    try:
        await asyncio.wait_for(sink.entered.wait(), timeout(5))
        assert collector.http.port is not None
        assert (await http_get(collector.http.port, "/healthz"))[0] == 200
        status, body = await http_get(collector.http.port, "/readyz")
        assert (status, body["state"]) == (503, "starting")
        sink.release.set()
        await asyncio.wait_for(starting, timeout(5))
        assert (await http_get(collector.http.port, "/readyz"))[0] == 200
    finally:
        sink.release.set()
        await asyncio.wait_for(starting, timeout(5))
        await collector.shutdown()


async def test_a_frame_that_trickles_in_is_cut_off(start_collector):
    """A started frame that does not arrive whole within frame_timeout ends the connection
    with an error, even while bytes keep coming (slow loris)."""
    collector = await start_collector(sinks=[RecordingSink()], ingest={"frame_timeout": 0.5})
    client = await WireClient.connect(collector.ingest_port)
    payload = frame({"sensor": "slow", "value": 1})
    for byte in payload[:-1]:
        await client.send_raw(bytes([byte]))
        if client.reader.at_eof():
            break
        await asyncio.sleep(0.02)
    error = await client.recv(wait=2.0)
    assert (error["type"], error["code"]) == ("error", "idle_timeout")
    assert "frame" in error["detail"]
    assert await client.closed(wait=2.0)


async def test_a_second_session_for_an_agent_id_replaces_the_first(start_collector):
    """A hello for a connected agent id takes over: the older connection gets goaway
    'replaced' after its in-flight acks, closes, and the takeover is counted."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink])
    first = await WireClient.connect(collector.ingest_port)
    await first.hello("p")
    await first.send({"type": "batch", "seq": 0, "readings": [{"sensor": "s", "value": 1}]})
    assert (await first.recv())["type"] == "ack"
    second = await WireClient.connect(collector.ingest_port)
    assert (await second.hello("p"))["type"] == "welcome"
    goaway = await first.recv(wait=2.0)
    assert (goaway["type"], goaway["reason"]) == ("goaway", "replaced")
    assert await first.closed(wait=3.0)
    await second.send({"type": "batch", "seq": 1, "readings": [{"sensor": "s", "value": 2}]})
    assert (await second.recv())["accepted"] == 1
    assert collector.metrics.value("telemetry_session_takeovers_total") == 1
    assert collector.agents.holder("p") is not None
    await second.close()


async def test_with_tokens_fire_and_forget_without_hello_is_refused(start_collector, tmp_path):
    """printf | nc with no hello and no token stores nothing once tokens are set."""
    sink = RecordingSink()
    collector = await start_collector(sinks=[sink], ingest={"tokens": ["real"]})
    client = await WireClient.connect(collector.ingest_port)
    await client.send_raw(frame({"sensor": "sneaky", "value": 1}) * 3)
    error = await client.recv(wait=2.0)
    assert (error["type"], error["code"]) == ("error", "unauthorized")
    assert await client.closed(wait=2.0)
    agent = await WireClient.connect(collector.ingest_port)
    assert (await agent.hello("a", token="real"))["type"] == "welcome"
    await agent.send({"type": "batch", "seq": 0, "readings": [{"sensor": "ok", "value": 2}]})
    assert (await agent.recv())["accepted"] == 1
    assert [r.sensor for r in sink.records] == ["ok"]


async def test_connection_churn_leaves_no_live_state_behind(start_collector):
    """Connect, send one reading, close, a hundred times: the live view forgets each peer."""
    collector = await start_collector(sinks=[RecordingSink()])
    for n in range(100):
        client = await WireClient.connect(collector.ingest_port)
        await client.send_raw(frame({"sensor": f"c{n % 5}", "value": n}))
        await client.close()
    for _ in range(100):
        if not collector.connections:
            break
        await asyncio.sleep(0.05)
    assert collector.connections == {}
    assert collector.live.agents == {}


async def test_with_auth_on_a_silent_connection_must_say_hello_in_time(start_collector):
    """With tokens set, a connection that sends no hello within hello_timeout is closed."""
    collector = await start_collector(
        sinks=[RecordingSink()], ingest={"tokens": ["t"], "hello_timeout": 0.5}
    )
    client = await WireClient.connect(collector.ingest_port)
    await client.send_raw(b"0         ")  # a heartbeat is not a hello
    error = await client.recv(wait=3.0)
    assert (error["type"], error["code"]) == ("error", "hello_required")
    assert await client.closed(wait=2.0)


async def test_one_ip_holds_at_most_max_connections_per_ip(start_collector):
    """Past max_connections_per_ip, another connection from that IP is refused at once."""
    collector = await start_collector(sinks=[RecordingSink()], ingest={"max_connections_per_ip": 3})
    held = [await WireClient.connect(collector.ingest_port) for _ in range(3)]
    for client in held:
        await client.hello(f"a{id(client)}")
    extra = await WireClient.connect(collector.ingest_port)
    error = await extra.recv(wait=2.0)
    assert (error["code"], "max_connections_per_ip" in error["detail"]) == (
        "too_many_connections",
        True,
    )
    await held[0].close()
    for _ in range(100):
        if len(collector.connections) < 3:
            break
        await asyncio.sleep(0.02)
    again = await WireClient.connect(collector.ingest_port)
    assert (await again.hello("again"))["type"] == "welcome"


async def test_reload_swaps_credentials_without_dropping_a_connection(tmp_path):
    """After a reload, new hellos meet the new tokens while a connection admitted under the
    old ones keeps delivering; a config that does not load is refused and the old one kept."""
    from telemetry.collector import Collector
    from telemetry.config import CollectorConfig, load_config

    path = tmp_path / "collector.toml"

    def write(token: str) -> None:
        path.write_text(
            '[ingest]\nhost = "127.0.0.1"\nport = 0\n'
            f'tokens = ["{token}"]\n'
            "[http]\nenabled = false\n"
            f'[[sinks]]\ntype = "sqlite"\npath = "{tmp_path / "t.db"}"\n'
        )

    write("old")
    collector = Collector(load_config(CollectorConfig, path), config_path=path)
    await collector.start()
    try:
        port = collector.ingest_port
        kept = await WireClient.connect(port)
        assert (await kept.hello("a", token="old"))["type"] == "welcome"
        write("new")
        assert await collector.reload()
        stale = await WireClient.connect(port)
        await stale.send({"type": "hello", "agent": "b", "token": "old"})
        assert (await stale.recv())["code"] == "unauthorized"
        fresh = await WireClient.connect(port)
        assert (await fresh.hello("c", token="new"))["type"] == "welcome"
        await kept.send({"type": "batch", "seq": 0, "readings": [{"sensor": "s", "value": 1}]})
        assert (await kept.recv())["accepted"] == 1
        path.write_text("[ingest]\ntokens = [\n")  # broken TOML
        assert not await collector.reload()
        again = await WireClient.connect(port)
        assert (await again.hello("d", token="new"))["type"] == "welcome"
    finally:
        await WireClient.close_all()
        await collector.shutdown()
