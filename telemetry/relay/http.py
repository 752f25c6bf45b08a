"""The relay's side port: ``/healthz`` (alive), ``/readyz`` (consuming, healthy sinks) and
``/metrics``, bounded as the collector's (:mod:`telemetry.collector.http_guard`)."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from telemetry.collector.http_auth import HttpAuth
from telemetry.collector.http_guard import ConnectionGuard, HttpMetrics, serve_guarded
from telemetry.collector.metrics import CONTENT_TYPE
from telemetry.collector.pipeline import Pipeline
from telemetry.config import RelayConfig
from telemetry.relay.books import RelayMetrics
from telemetry.relay.consumer import Consumer


class Served(Protocol):
    """What the side port reads of the relay it serves."""

    config: RelayConfig
    metrics: RelayMetrics
    pipeline: Pipeline
    consumer: Consumer

    @property
    def state(self) -> str: ...
    @property
    def ready(self) -> bool: ...


class RelayHttp:
    """aiohttp on the relay's ``[http]`` port."""

    def __init__(self, relay: Served) -> None:
        self.relay = relay
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        http = self.relay.config.http
        metrics = HttpMetrics(self.relay.metrics.base.registry)
        app = web.Application()
        HttpAuth(
            http.tokens, metrics_auth=http.metrics_auth, refused=metrics.unauthorized.inc
        ).add_to(app)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        guard = ConnectionGuard(http.max_connections, http.header_timeout, metrics)
        self._runner, self.port = await serve_guarded(
            app, http.host, http.port, guard, http.keepalive_timeout
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "state": self.relay.state})

    async def readyz(self, request: web.Request) -> web.Response:
        relay = self.relay
        ready = relay.ready
        body = {
            "ready": ready,
            "state": relay.state,
            "nats": relay.consumer.connected,
            "sinks": {runner.name: runner.healthy for runner in relay.pipeline.runners},
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.relay.metrics.base.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
