"""The HTTP side port on a real network: connection cap, request-head deadline, tail
subscriber cap, clients that never read, tokens (issue 14)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from telemetry.collector import Collector
from telemetry.collector.http_guard import DescriptorLimitError, ensure_descriptors
from telemetry.collector.live_http import WRITE_CHUNK
from telemetry.config import CollectorConfig
from telemetry.config.sinks import NullSinkConfig
from telemetry.sinks.null import NullSink
from tests.conftest import StartCollector
from tests.support import WireClient, timeout

TOKEN = "s3cret-token"


def url(collector: Collector, path: str) -> str:
    return f"http://127.0.0.1:{collector.http.port}{path}"


async def raw_get(port: int, path: str, wait: float = 5.0) -> bytes:
    """A GET over a fresh socket; everything the server sends until it closes (or ``wait``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    try:
        async with asyncio.timeout(timeout(wait)):
            return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def eventually(check: Any, what: str, wait: float = 5.0) -> None:
    for _ in range(int(timeout(wait) / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(what)


async def test_connections_over_the_cap_are_closed_at_once(start_collector: StartCollector) -> None:
    """While max_connections idle clients hold the port, the next one is refused at once."""
    collector = await start_collector(http={"max_connections": 3, "header_timeout": 0})
    assert collector.http.port is not None
    assert collector.http.guard is not None
    held = [await asyncio.open_connection("127.0.0.1", collector.http.port) for _ in range(3)]
    await eventually(lambda: collector.http.guard.open == 3, "the 3 clients are not counted")
    started = asyncio.get_running_loop().time()
    answer = await raw_get(collector.http.port, "/healthz")
    assert asyncio.get_running_loop().time() - started < 2
    assert answer == b"" or answer.startswith(b"HTTP/1.1 503")
    assert collector.metrics.value("telemetry_http_connections_refused_total") == 1
    held[0][1].close()  # one slot frees: the port answers again
    await eventually(lambda: collector.http.guard.open == 2, "the slot did not free")
    assert b" 200 OK" in await raw_get(collector.http.port, "/healthz")
    for _, writer in held[1:]:
        writer.close()


async def test_a_trickled_request_head_is_closed_a_tail_stream_is_not(
    start_collector: StartCollector,
) -> None:
    """A client sending its request head byte by byte is cut at header_timeout; a tail stream
    open for longer than that still gets its readings."""
    collector = await start_collector(http={"header_timeout": 0.5, "keepalive_timeout": 60})
    assert collector.http.port is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(url(collector, "/api/tail")) as tail,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", collector.http.port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        closed = False
        for _ in range(int(timeout(5) / 0.1)):  # one header byte every 0.1 s: never done
            try:
                writer.write(b"X")
                await writer.drain()
                async with asyncio.timeout(0.1):
                    if await reader.read(100) == b"":
                        closed = True
                        break
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
                break
        writer.close()
        assert closed, "a trickling request head was not cut"
        assert collector.metrics.value("telemetry_http_header_timeouts_total") >= 1
        await asyncio.sleep(0.6)  # the tail stream is now older than the header timeout
        client = await WireClient.connect(collector.ingest_port)
        await client.hello("pi-1")
        await client.send({"type": "batch", "seq": 0, "readings": [{"sensor": "s", "value": 1}]})
        assert (await client.recv())["type"] == "ack"
        await client.close()
        async with asyncio.timeout(timeout(5)):
            while True:
                line = await tail.content.readline()
                assert line, "the tail stream was cut"
                if line.startswith(b"data: "):
                    assert json.loads(line[6:])["sensor"] == "s"
                    break


async def test_tail_subscribers_over_the_cap_get_503(start_collector: StartCollector) -> None:
    """Past max_tail_subscribers a tail request is answered 503 with a reason; a slot frees
    when a stream ends."""
    collector = await start_collector(http={"max_tail_subscribers": 2})
    async with aiohttp.ClientSession() as session:
        first = await session.get(url(collector, "/api/tail"))
        second = await session.get(url(collector, "/api/tail"))
        assert (first.status, second.status) == (200, 200)
        async with session.get(url(collector, "/api/tail")) as third:
            assert third.status == 503
            assert "too many tail subscribers" in await third.text()
        first.close()
        await eventually(lambda: len(collector.live.subscriptions) == 1, "slot not freed")
        async with session.get(url(collector, "/api/tail")) as again:
            assert again.status == 200
        second.close()


async def test_a_tail_client_that_never_reads_is_bounded_then_dropped(
    start_collector: StartCollector,
) -> None:
    """A tail client that reads nothing costs the collector a clamped queue and a bounded
    socket buffer however many readings flow, and its stream ends after tail_write_timeout."""
    collector = await start_collector(
        http={"tail_max_buffer": 2000, "tail_write_timeout": 1.0},
        sinks=[NullSink(NullSinkConfig(type="null"))],
    )
    assert collector.http.port is not None
    assert collector.http.guard is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", collector.http.port))
    await loop.sock_sendall(sock, b"GET /api/tail?buffer=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await eventually(lambda: len(collector.live.subscriptions) == 1, "no subscriber")
    [subscription] = collector.live.subscriptions
    assert subscription.maxsize == 2000
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("pi-1")
    tags = {f"k{i}": "v" * 250 for i in range(8)}
    most_buffered = most_queued = 0
    for seq in range(40):  # 16,000 readings of ~2 KB: tens of MB of events
        readings = [{"sensor": f"s{i}", "value": i, "tags": tags} for i in range(400)]
        await client.send({"type": "batch", "seq": seq, "readings": readings})
        assert (await client.recv(wait=timeout(10)))["type"] == "ack"
        most_buffered = max(most_buffered, collector.http.guard.buffered_bytes())
        most_queued = max(most_queued, len(subscription.queue))
        if not collector.live.subscriptions:
            break
    await client.close()
    assert most_queued <= 2000
    assert most_buffered <= 3 * WRITE_CHUNK, most_buffered  # high water + one chunk
    assert subscription.dropped > 0
    await eventually(lambda: not collector.live.subscriptions, "the stalled stream holds on")
    assert collector.metrics.value("telemetry_tail_streams_total", outcome="stalled") == 1
    sock.close()


# --- tokens ---------------------------------------------------------------------------------


async def test_reads_need_a_token_probes_do_not(start_collector: StartCollector) -> None:
    """With [http] tokens the page, /api/* and the tail answer 401 without or with a wrong
    token and 200 with a right one; /healthz and /readyz stay open, /metrics too by default."""
    collector = await start_collector(http={"tokens": ["other", TOKEN]})
    good = {"Authorization": f"Bearer {TOKEN}"}
    bad = {"Authorization": "Bearer nope"}
    async with aiohttp.ClientSession() as session:
        for path in ("/api/live", "/api/tail", "/live"):
            for headers in ({}, bad):
                async with session.get(url(collector, path), headers=headers) as resp:
                    assert resp.status == 401, (path, headers)
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with session.get(url(collector, "/api/live"), headers=good) as resp:
            assert resp.status == 200
        async with session.get(url(collector, "/api/tail"), headers=good) as resp:
            assert resp.status == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            async with session.get(url(collector, path)) as resp:
                assert resp.status == 200, path
    assert collector.metrics.value("telemetry_http_unauthorized_total") >= 6


async def test_metrics_need_a_token_with_metrics_auth(start_collector: StartCollector) -> None:
    """metrics_auth = true puts /metrics behind the tokens too."""
    collector = await start_collector(http={"tokens": [TOKEN], "metrics_auth": True})
    async with aiohttp.ClientSession() as session:
        async with session.get(url(collector, "/metrics")) as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.get(url(collector, "/metrics"), headers=headers) as resp:
            assert resp.status == 200


async def test_browser_signs_in_with_a_cookie(start_collector: StartCollector) -> None:
    """A browser gets a sign-in form, posts the token, gets an HttpOnly SameSite=Strict
    cookie and the page, whose /api/live polls then pass; ?token= works once too."""
    collector = await start_collector(http={"tokens": [TOKEN]})
    async with browser_session() as browser:
        async with browser.get(url(collector, "/")) as resp:
            assert resp.status == 401
            form = await resp.text()
            assert 'action="/login"' in form
            assert "form-action 'self'" in resp.headers["Content-Security-Policy"]
        async with browser.post(url(collector, "/login"), data={"token": "wrong"}) as resp:
            assert resp.status == 401
        login = browser.post(url(collector, "/login"), data={"token": TOKEN, "next": "/live"})
        async with login as resp:
            assert resp.status == 200  # followed the 303 to the page
            assert resp.url.path == "/live"
            assert "<title>telemetry · live</title>" in await resp.text()
            cookie = resp.history[0].headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        async with browser.get(url(collector, "/api/live")) as resp:
            assert resp.status == 200
    async with browser_session() as browser:
        async with browser.get(url(collector, f"/?token={TOKEN}"), allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/"
        async with browser.get(url(collector, "/api/live")) as resp:
            assert resp.status == 200


def browser_session() -> aiohttp.ClientSession:
    """A client that keeps cookies as a browser does (also for an IP address)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def test_empty_http_token_is_a_config_error() -> None:
    """An empty string in [http] tokens is refused when the config loads."""
    with pytest.raises(ValueError, match="token"):
        CollectorConfig(http={"tokens": [""]})


async def test_tail_command_sends_its_token(start_collector: StartCollector) -> None:
    """`telemetry tail` is refused (exit 2) without a token and prints readings with
    TELEMETRY_TAIL_TOKEN."""
    collector = await start_collector(http={"tokens": [TOKEN]})
    command = [sys.executable, "-m", "telemetry.cli", "tail", "--url", url(collector, "")]
    refused = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(refused.communicate(), timeout(10))
    assert refused.returncode == 2
    assert b"HTTP 401" in stderr
    assert TOKEN.encode() not in stderr
    proc = await asyncio.create_subprocess_exec(
        *command,
        "--count",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TELEMETRY_TAIL_TOKEN": TOKEN},
    )
    await eventually(lambda: len(collector.live.subscriptions) == 1, "tail did not subscribe", 10)
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("pi-1")
    await client.send({"type": "batch", "seq": 0, "readings": [{"sensor": "g", "value": 2}]})
    assert (await client.recv())["type"] == "ack"
    await client.close()
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout(10))
    assert proc.returncode == 0, stderr.decode()
    assert json.loads(stdout)["sensor"] == "g"


# --- descriptors ----------------------------------------------------------------------------


def test_descriptor_check_raises_the_soft_limit_or_names_the_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check raises a low soft limit up to what is needed, and refuses limits beyond the
    hard one with a message naming them."""
    import resource

    limits = {"now": (1024, 4096)}
    monkeypatch.setattr(resource, "getrlimit", lambda _: limits["now"])

    def setrlimit(_: int, value: tuple[int, int]) -> None:
        limits["now"] = value

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert ensure_descriptors(256, 1000) == 4096
    assert limits["now"] == (4096, 4096)
    with pytest.raises(DescriptorLimitError, match=r"\(256\).*\(10000\).*4096"):
        ensure_descriptors(256, 10_000)


async def test_workers_port_needs_the_token_and_passes_it_on(
    start_collector: StartCollector, tmp_path: Path
) -> None:
    """The --workers port refuses reads without a token, and with one merges the workers'
    answers (which it could only get by sending them the token)."""
    from dataclasses import dataclass

    from telemetry.collector.workers_http import WorkersHttp
    from tests.support import collector_config

    http = {"tokens": [TOKEN]}
    workers = [await start_collector(http=http) for _ in range(2)]

    @dataclass
    class FakeWorker:
        index: int
        base_url: str
        alive: bool = True

    @dataclass
    class FakeSupervisor:
        config: CollectorConfig
        workers: list[FakeWorker]
        stopping: bool = False

    supervisor = FakeSupervisor(
        collector_config(tmp_path, http=http),
        [FakeWorker(i, url(w, "")) for i, w in enumerate(workers)],
    )
    async with aiohttp.ClientSession() as session:
        port = WorkersHttp(supervisor, session)
        await port.start()
        try:
            base = f"http://127.0.0.1:{port.port}"
            good = {"Authorization": f"Bearer {TOKEN}"}
            for path in ("/api/live", "/api/tail", "/"):
                async with session.get(base + path) as resp:
                    assert resp.status == 401, path
            async with session.get(base + "/api/live", headers=good) as resp:
                assert resp.status == 200
                assert (await resp.json())["collector"]["workers"] == 2
            async with session.get(base + "/live", headers=good) as resp:
                assert resp.status == 200  # worker 0's page, fetched with the token
                assert "script-src 'sha256-" in resp.headers["Content-Security-Policy"]
            for path in ("/healthz", "/readyz", "/metrics"):
                async with session.get(base + path) as resp:
                    assert resp.status == 200, path
        finally:
            await port.close()
