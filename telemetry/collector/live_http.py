"""The live routes of the HTTP side port: the web page, its JSON, and the tail stream.

- ``GET /`` and ``GET /live``: one self-contained HTML page (no build step, no CDN) that
  polls ``/api/live`` every second.
- ``GET /api/live[?sensor=GLOB&limit=N]``: agents, latest values with history, rejections,
  sink health, as JSON. The first one after start restores the latest values from a sink
  (:mod:`.live_seed`).
- ``GET /api/tail?sensor=GLOB&agent=GLOB&tag=KEY=GLOB[&buffer=N]``: server-sent events, one
  ``data:`` line per matching reading (the record as sinks see it); ``event: dropped`` says
  how many readings this subscriber has lost to its full queue so far; a comment line every
  :data:`KEEPALIVE` seconds keeps idle streams open. Filters repeat: any sensor glob, any
  agent glob, every tag.

Tail streams are bounded: at most ``[http] max_tail_subscribers`` at once (503 beyond);
``buffer`` is clamped to ``tail_max_buffer`` readings; readings are written at most
:data:`WRITE_CHUNK` bytes at a time, so what waits in the socket's buffer stays small; and a
write that blocks for ``tail_write_timeout`` seconds (the client reads nothing) ends the
stream and frees its slot. So a client that never reads costs at most its queue and one
chunk.

The tail streams end when the collector stops (an ``on_shutdown`` hook), so that an open
``telemetry tail`` never holds up a drain.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from importlib import resources

from aiohttp import web

from telemetry.collector.http_guard import HttpMetrics
from telemetry.collector.live_seed import LiveSeed
from telemetry.collector.live_tail import TAIL_QUEUE, Subscription, TailFilter
from telemetry.collector.served import Served
from telemetry.log import get_logger

log = get_logger("telemetry.http")

#: Seconds between keep-alive comments on an idle tail stream.
KEEPALIVE = 15.0
#: Most bytes of events handed to the socket in one write.
WRITE_CHUNK = 64 * 1024

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def load_page() -> tuple[bytes, str]:
    """The live page and its Content-Security-Policy (its inline script allowed by hash)."""
    html = resources.files("telemetry.collector").joinpath("static/live.html").read_text("utf-8")
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _SCRIPT.findall(html)
    )
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
    )
    return html.encode(), csp


class LiveRoutes:
    """Handlers of the live routes for one collector."""

    def __init__(self, collector: Served, metrics: HttpMetrics | None = None) -> None:
        self.collector = collector
        self.metrics = metrics
        self.page, self.csp = load_page()
        self._streams: set[asyncio.Task[object]] = set()
        #: The latest values restored from a sink after a restart (telemetry.collector.live_seed).
        self.seed = LiveSeed(collector.live)

    def add_to(self, app: web.Application) -> None:
        """Register the routes, and the shutdown hook that ends the tail streams."""
        app.router.add_get("/", self.live_page)
        app.router.add_get("/live", self.live_page)
        app.router.add_get("/api/live", self.live_state)
        app.router.add_get("/api/tail", self.tail)
        app.on_shutdown.append(self.close_streams)

    async def live_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.page,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": self.csp,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

    async def live_state(self, request: web.Request) -> web.Response:
        collector = self.collector
        try:
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer") from None
        await self.seed.ensure(collector.pipeline.runners, collector.state == "serving")
        body = collector.live.snapshot(
            collector.connections.keys(),
            sensor_glob=request.query.get("sensor") or None,
            limit=max(0, limit),
        )
        body["collector"] = {
            "id": collector.config.collector.id,
            "state": collector.state,
            "ready": collector.ready,
        }
        body["sinks"] = [
            {
                "name": runner.name,
                "healthy": runner.healthy,
                "queued": runner.queued,
                "written": runner.written,
                "dropped": getattr(runner, "dropped", None),
            }
            for runner in collector.pipeline.runners
        ]
        return web.json_response(body, headers={"Cache-Control": "no-cache"})

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.tail.labels(outcome).inc()

    async def tail(self, request: web.Request) -> web.StreamResponse:
        http = self.collector.config.http
        query = request.query
        try:
            tail_filter = TailFilter(
                query.getall("sensor", []), query.getall("agent", []), query.getall("tag", [])
            )
            buffer = int(query.get("buffer", str(TAIL_QUEUE)))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if len(self._streams) >= http.max_tail_subscribers:
            self._count("refused")
            raise web.HTTPServiceUnavailable(
                text=f"too many tail subscribers (max_tail_subscribers = "
                f"{http.max_tail_subscribers}); try again later\n",
                headers={"Retry-After": "5"},
            )
        live = self.collector.live
        subscription = live.subscribe(tail_filter, max(1, min(buffer, http.tail_max_buffer)))
        self._count("opened")
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            writer = _Writer(response, http.tail_write_timeout)
            await writer.write(b": telemetry tail\n\n")
            await self._stream(subscription, writer)
        except ConnectionError:
            pass  # the client left
        except _Stalled:
            self._count("stalled")
            log.info(
                "tail_stream_stalled",
                peer=request.remote,
                timeout=http.tail_write_timeout,
                dropped=subscription.dropped,
            )
            if request.transport is not None:
                request.transport.abort()  # what is buffered for it would never be read
        except asyncio.CancelledError:
            if not subscription.closed:
                raise
            task.uncancel()  # our own close_streams: the collector is stopping, the stream ends
        finally:
            live.unsubscribe(subscription)
            self._streams.discard(task)
        return response

    async def _stream(self, subscription: Subscription, writer: _Writer) -> None:
        reported = 0
        while not subscription.closed:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    records = await subscription.get()
            except TimeoutError:
                await writer.write(b": keepalive\n\n")
                continue
            chunk: list[bytes] = []
            size = 0
            for record in records:
                event = b"data: " + record.to_json().encode() + b"\n\n"
                chunk.append(event)
                size += len(event)
                if size >= WRITE_CHUNK:
                    await writer.write(b"".join(chunk))
                    chunk, size = [], 0
            if subscription.dropped != reported:
                reported = subscription.dropped
                chunk.append(
                    b"event: dropped\ndata: " + json.dumps({"dropped": reported}).encode() + b"\n\n"
                )
            if chunk:
                await writer.write(b"".join(chunk))

    async def close_streams(self, app: web.Application) -> None:
        """End every tail stream now (also one stuck writing to a slow client)."""
        self.collector.live.close_subscriptions()
        await self.seed.close()
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.gather(*self._streams, return_exceptions=True)


class _Stalled(Exception):
    """A write to a tail stream blocked for longer than ``tail_write_timeout``."""


class _Writer:
    """Writes to a stream response, each within a deadline."""

    def __init__(self, response: web.StreamResponse, timeout: float) -> None:
        self.response = response
        self.timeout = timeout

    async def write(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.response.write(data)
        except TimeoutError:
            raise _Stalled from None
