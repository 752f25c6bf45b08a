"""The live routes of the HTTP side port: the web page, its JSON, and the tail stream.

- ``GET /`` and ``GET /live``: one self-contained HTML page (no build step, no CDN) that
  polls ``/api/live`` every second.
- ``GET /api/live[?sensor=GLOB&limit=N]``: agents, latest values with history, rejections,
  sink health, as JSON.
- ``GET /api/tail?sensor=GLOB&agent=GLOB&tag=KEY=GLOB[&buffer=N]``: server-sent events, one
  ``data:`` line per matching reading (the record as sinks see it); ``event: dropped`` says
  how many readings this subscriber has lost to its full queue so far; a comment line every
  :data:`KEEPALIVE` seconds keeps idle streams open. Filters repeat: any sensor glob, any
  agent glob, every tag.

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

from telemetry.collector.live import TAIL_QUEUE, Subscription, TailFilter
from telemetry.collector.served import Served

#: Seconds between keep-alive comments on an idle tail stream.
KEEPALIVE = 15.0

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

    def __init__(self, collector: Served) -> None:
        self.collector = collector
        self.page, self.csp = load_page()
        self._streams: set[asyncio.Task[object]] = set()

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

    async def tail(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            tail_filter = TailFilter(
                query.getall("sensor", []), query.getall("agent", []), query.getall("tag", [])
            )
            buffer = int(query.get("buffer", str(TAIL_QUEUE)))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        live = self.collector.live
        subscription = live.subscribe(tail_filter, buffer)
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
            await response.write(b": telemetry tail\n\n")
            await self._stream(subscription, response)
        except ConnectionError:
            pass  # the client left
        except asyncio.CancelledError:
            if not subscription.closed:
                raise
            task.uncancel()  # our own close_streams: the collector is stopping, the stream ends
        finally:
            live.unsubscribe(subscription)
            self._streams.discard(task)
        return response

    async def _stream(self, subscription: Subscription, response: web.StreamResponse) -> None:
        reported = 0
        while not subscription.closed:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    records = await subscription.get()
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            chunks = [b"data: " + record.to_json().encode() + b"\n\n" for record in records]
            if subscription.dropped != reported:
                reported = subscription.dropped
                chunks.append(
                    b"event: dropped\ndata: " + json.dumps({"dropped": reported}).encode() + b"\n\n"
                )
            if chunks:
                await response.write(b"".join(chunks))

    async def close_streams(self, app: web.Application) -> None:
        """End every tail stream now (also one stuck writing to a slow client)."""
        self.collector.live.close_subscriptions()
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.gather(*self._streams, return_exceptions=True)
