"""The HTTP side port: ``/healthz`` (alive), ``/readyz`` (serving, healthy sinks), ``/metrics``."""

from __future__ import annotations

import ssl

from aiohttp import web

from telemetry.collector.live_http import LiveRoutes
from telemetry.collector.metrics import CONTENT_TYPE
from telemetry.collector.served import Served


class HttpServer:
    """aiohttp on its own port, beside the ingest listener."""

    def __init__(self, collector: Served) -> None:
        self.collector = collector
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        LiveRoutes(self.collector).add_to(app)  # /, /live, /api/live, /api/tail
        return app

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        server = site._server  # the bound port, when port 0 was asked for
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

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
