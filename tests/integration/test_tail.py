"""``telemetry tail`` and /api/tail: server-side filters, bounded queues, the CLI's output."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp

from telemetry.collector import Collector
from telemetry.collector.live import LiveView, TailFilter
from telemetry.sinks.base import Record
from telemetry.tail import Event, RowFormatter, SseParser, format_value
from tests.conftest import StartCollector
from tests.support import WireClient, timeout


def record(sensor: str, agent: str = "a1", **tags: str) -> Record:
    """A record as the connection code hands it to the hooks."""
    now = datetime.now(UTC)
    return Record(None, agent, sensor, 1.0, now, now, tags=tags)


def test_filter_sensor_agent_and_tag_globs() -> None:
    """Sensor and agent globs match any of theirs; every tag filter must match."""
    f = TailFilter(["greenhouse-*", "shed"], ["pi-?"], ["site=north", "rack=r*"])
    assert f.matches(record("greenhouse-2/soil", "pi-1", site="north", rack="r7"))
    assert not f.matches(record("greenhouse-2/soil", "pi-1", site="south", rack="r7"))
    assert not f.matches(record("greenhouse-2/soil", "pi-1", site="north"))
    assert not f.matches(record("barn", "pi-1", site="north", rack="r7"))
    assert not f.matches(record("shed", "pi-10", site="north", rack="r7"))
    assert TailFilter().matches(record("anything"))


def test_full_queue_drops_and_counts_for_that_subscriber_only() -> None:
    """A subscriber's full queue drops and counts; another subscriber still gets everything."""
    live = LiveView()
    slow = live.subscribe(TailFilter(), maxsize=2)
    fast = live.subscribe(TailFilter(), maxsize=100)
    live.accepted(1, [record(f"s{i}") for i in range(5)])
    assert (len(slow.queue), slow.dropped) == (2, 3)
    assert (len(fast.queue), fast.dropped) == (5, 0)


def test_sse_parser_events_split_anywhere() -> None:
    """Events come out whole however the bytes are split; comments are skipped."""
    stream = b': hi\n\ndata: {"a": 1}\n\nevent: dropped\ndata: {"dropped": 3}\r\n\r\n'
    for size in (1, 5, len(stream)):
        parser = SseParser()
        events: list[Event] = []
        for start in range(0, len(stream), size):
            events += parser.feed(stream[start : start + size])
        assert events == [Event("message", '{"a": 1}'), Event("dropped", '{"dropped": 3}')]


def test_terminal_rows_are_aligned_and_colored_on_request() -> None:
    """Rows align their columns; colors only when asked; values print for people."""
    rows = RowFormatter(color=False)
    base = {"ts": "2026-11-27T07:15:02.123Z", "unit": "°C"}
    first = rows.row({**base, "agent": "pi-1", "sensor": "greenhouse-2/soil-3", "value": 41.25})
    second = rows.row({**base, "agent": "pi-1", "sensor": "shed", "value": 7.0})
    assert first.index("41.25") + len("41.25") == second.index(" 7 ") + 2  # right-aligned
    assert first.index("°C") == second.index("°C")
    assert first.endswith("°C")
    assert "\x1b[" not in first
    assert "\x1b[" in RowFormatter(color=True).row(
        {**base, "agent": "a", "sensor": "s", "value": 1}
    )
    assert [format_value(v) for v in (3.0, 0.1 + 0.2, 2.5e10, 1e-5)] == [
        "3",
        "0.3",
        "25000000000",
        "1e-05",
    ]


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    parser = SseParser()
    async for chunk in resp.content.iter_any():
        for event in parser.feed(chunk):
            yield event


async def _subscribed(collector: Collector, count: int = 1) -> None:
    """Wait until ``count`` tail subscribers are registered."""
    for _ in range(int(timeout(5) / 0.01)):
        if len(collector.live.subscriptions) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no tail subscriber registered")


async def _batch(collector: Collector, readings: list[dict[str, Any]], agent: str = "pi-1") -> None:
    client = await WireClient.connect(collector.ingest_port)
    await client.hello(agent)
    await client.send({"type": "batch", "seq": 0, "readings": readings})
    assert (await client.recv())["type"] == "ack"
    await client.close()


async def test_stream_is_filtered_by_the_collector(start_collector: StartCollector) -> None:
    """/api/tail sends only the readings matching sensor glob, agent and tag, as records."""
    collector = await start_collector()
    url = f"http://127.0.0.1:{collector.http.port}/api/tail"
    params = [("sensor", "greenhouse-*"), ("agent", "pi-*"), ("tag", "site=north")]
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await _subscribed(collector)
        await _batch(
            collector,
            [
                {"sensor": "greenhouse-1", "value": 1, "tags": {"site": "north"}},
                {"sensor": "greenhouse-2", "value": 2, "tags": {"site": "south"}},
                {"sensor": "shed", "value": 3, "tags": {"site": "north"}},
                {"sensor": "greenhouse-3", "value": 4, "tags": {"site": "north"}},
            ],
        )
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout(5)):
            async for event in _events(resp):
                got.append(json.loads(event.data))
                if len(got) == 2:
                    break
    assert [(r["sensor"], r["value"], r["agent"]) for r in got] == [
        ("greenhouse-1", 1, "pi-1"),
        ("greenhouse-3", 4, "pi-1"),
    ]
    assert got[0]["id"] == "pi-1:0:0"


async def test_slow_subscriber_loses_readings_not_the_collector(
    start_collector: StartCollector,
) -> None:
    """A subscriber with a full queue gets a dropped count; the batch is acked regardless."""
    collector = await start_collector()
    url = f"http://127.0.0.1:{collector.http.port}/api/tail?buffer=2"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        await _subscribed(collector)
        await _batch(collector, [{"sensor": f"s{i}", "value": i} for i in range(10)])
        events: list[Event] = []
        async with asyncio.timeout(timeout(5)):
            async for event in _events(resp):
                events.append(event)
                if event.type == "dropped":
                    break
    assert [json.loads(e.data)["sensor"] for e in events[:-1]] == ["s0", "s1"]
    assert json.loads(events[-1].data) == {"dropped": 8}


async def test_open_stream_does_not_hold_up_the_drain(start_collector: StartCollector) -> None:
    """Stopping the collector ends open tail streams at once instead of waiting for them."""
    collector = await start_collector()
    url = f"http://127.0.0.1:{collector.http.port}/api/tail"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        await _subscribed(collector)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(collector.shutdown(), timeout(5))
        assert loop.time() - started < 3
        async with asyncio.timeout(timeout(5)):
            rest = [event async for event in _events(resp)]
    assert rest == []
    assert collector.live.subscriptions == set()


async def test_tail_command_prints_json_lines_when_piped(start_collector: StartCollector) -> None:
    """`telemetry tail` piped prints one JSON record per line and exits 0 after --count."""
    collector = await start_collector()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetry.cli",
        "tail",
        "--url",
        f"http://127.0.0.1:{collector.http.port}",
        "--sensor",
        "g*",
        "--count",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await _subscribed(collector)
    await _batch(collector, [{"sensor": n, "value": 1.5, "unit": "%"} for n in ("g1", "x", "g2")])
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout(10))
    assert proc.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [(r["sensor"], r["value"], r["unit"]) for r in lines] == [
        ("g1", 1.5, "%"),
        ("g2", 1.5, "%"),
    ]


async def test_tail_command_unreachable_exits_2() -> None:
    """With no collector at --url, tail says so on stderr and exits 2."""
    from tests.integration.fake_collector import unused_endpoint

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetry.cli",
        "tail",
        "--url",
        f"http://{unused_endpoint()}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout(10))
    assert proc.returncode == 2
    assert b"cannot connect to" in stderr


async def test_tail_prints_control_characters_escaped() -> None:
    """Whatever a collector sends, `tail` prints no raw control or format character: rows
    show ``\\x1b[2J`` in a unit as text, JSON lines carry ``\\u`` escapes."""
    from aiohttp import web

    from telemetry.tail import tail

    record = {"agent": "a\u202e", "sensor": "s\x07", "value": 1, "unit": "\x1b[2J"}
    raw = json.dumps({"sensor": "s", "value": 1}, ensure_ascii=False)[:-1] + ', "x": "\x9b"}'

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'event: dropped\ndata: {"dropped": "\\u001b[31m"}\n\n')
        await response.write(f"data: {json.dumps(record)}\n\ndata: {raw}\n\n".encode())
        await asyncio.sleep(timeout(5))
        return response

    app = web.Application()
    app.router.add_get("/api/tail", stream)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{site.port}"
        rows, err = io.StringIO(), io.StringIO()
        assert await tail(base, count=2, json_lines=False, out=rows, err=err) == 0
        lines, err2 = io.StringIO(), io.StringIO()
        assert await tail(base, count=2, json_lines=True, out=lines, err=err2) == 0
    finally:
        await runner.cleanup()
    printed = rows.getvalue() + lines.getvalue() + err.getvalue()
    assert "\\x1b[31m readings dropped" in err.getvalue()
    assert "\\x1b[2J" in rows.getvalue()
    assert "\\u202e" in rows.getvalue()
    assert "\\x07" in rows.getvalue()
    assert all(ch == "\n" or ch.isprintable() for ch in printed), repr(printed)
    [_, second] = lines.getvalue().splitlines()
    assert json.loads(second)["x"] == "\x9b"  # the same JSON value, escaped
