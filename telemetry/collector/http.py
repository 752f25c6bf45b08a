"""The HTTP side port: ``/healthz`` (alive), ``/readyz`` (serving, healthy sinks), ``/metrics``,
and the live routes (:mod:`.live_http`).

The port is bounded (:mod:`.http_guard`): at most ``[http] max_connections`` open, a request
head within ``header_timeout``, idle keep-alive connections closed after
``keepalive_timeout``; and, with ``[http] tokens``, everything but the probes needs a token
(:mod:`.http_auth`).
"""

from __future__ import annotations

import ssl

from aiohttp import web

from telemetry.collector.http_auth import HttpAuth
from telemetry.collector.http_guard import (
    ConnectionGuard,
    HttpMetrics,
    ensure_descriptors,
    serve_guarded,
)
from telemetry.collector.live_http import LiveRoutes
from telemetry.collector.metrics import CONTENT_TYPE
from telemetry.collector.served import Served
from telemetry.config import CollectorConfig


def check_descriptors(config: CollectorConfig) -> int:
    """Make sure the collector's connection limits fit in its file descriptors (raising the
    soft limit when needed); raise :class:`~.http_guard.DescriptorLimitError` naming the
    numbers when they cannot. Call it first thing in the collector's start."""
    http = config.http.max_connections if config.http.enabled else 0
    return ensure_descriptors(http, config.ingest.max_connections)


class HttpServer:
    """aiohttp on its own port, beside the ingest listener."""

    def __init__(self, collector: Served) -> None:
        self.collector = collector
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.http_metrics: HttpMetrics | None = None
        self.guard: ConnectionGuard | None = None

    def app(self) -> web.Application:
        http = self.collector.config.http
        if self.http_metrics is None:
            self.http_metrics = HttpMetrics(self.collector.metrics.registry)
        metrics = self.http_metrics
        app = web.Application()
        HttpAuth(
            http.tokens, metrics_auth=http.metrics_auth, refused=metrics.unauthorized.inc
        ).add_to(app)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        LiveRoutes(self.collector, metrics).add_to(app)  # /, /live, /api/live, /api/tail
        return app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        http = self.collector.config.http
        app = self.app()
        assert self.http_metrics is not None
        self.guard = ConnectionGuard(http.max_connections, http.header_timeout, self.http_metrics)
        self._runner, self.port = await serve_guarded(
            app,
            host,
            port,
            self.guard,
            http.keepalive_timeout,
            ssl_context=ssl_context,
            handler_cancellation=True,  # a tail stream whose client left ends (and frees its slot)
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "state": self.collector.state})

    async def readyz(self, request: web.Request) -> web.Response:
        collector = self.collector
        sinks = {runner.name: runner.healthy for runner in collector.pipeline.runners}
        ready = collector.ready
        body = {"ready": ready, "state": collector.state, "sinks": sinks}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.collector.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
