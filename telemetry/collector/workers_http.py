"""The ``--workers`` supervisor's HTTP port: every worker's answers merged into one.

How this works: each worker is a whole collector with a private HTTP port; this server, on
the configured ``[http]`` port, asks them all and answers as a single collector would:

- ``/healthz``: 200 while every worker process is alive;
- ``/readyz``: 200 while every worker is ready (each is asked);
- ``/metrics``: every worker's metrics, each sample labelled ``worker="<i>"``;
- ``/api/live``: every worker's live state merged (agents, sensors, rejections, sinks);
- ``/api/tail``: every worker's stream of readings, interleaved event by event;
- anything else (the live page itself): passed to worker 0.

The port has the same limits as a collector's (:mod:`.http_guard`: ``max_connections``,
``header_timeout``, ``keepalive_timeout``; ``max_tail_subscribers``, ``tail_write_timeout``)
and the same tokens (:mod:`.http_auth`); its calls to the workers carry a configured token,
since the workers read the same ``[http] tokens``. With ``[http.tls]`` it serves HTTPS with
those files (re-read on SIGHUP, :meth:`WorkersHttp.reload_tls`); the workers' own ports are
private, on 127.0.0.1, and plain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector as PromCollector

from telemetry.collector.http_auth import HttpAuth
from telemetry.collector.http_guard import ConnectionGuard, HttpMetrics, serve_guarded
from telemetry.collector.metrics import CONTENT_TYPE
from telemetry.config import CollectorConfig
from telemetry.tls import ServerTls, TlsError


class Worker(Protocol):
    """What the aggregating port reads of one worker process."""

    @property
    def index(self) -> int: ...
    @property
    def alive(self) -> bool: ...
    @property
    def base_url(self) -> str: ...


class Supervisor(Protocol):
    """What the aggregating port reads of the supervisor (no import of it: no cycle)."""

    @property
    def config(self) -> CollectorConfig: ...
    @property
    def workers(self) -> Sequence[Worker]: ...
    @property
    def stopping(self) -> bool: ...


MAX_MERGED_REJECTIONS = 100
#: Headers of worker 0's answers passed on with them (the page's CSP among them).
_FORWARDED_HEADERS = (
    "Content-Type",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Cache-Control",
    "Retry-After",
)


class WorkerMetrics(PromCollector):
    """Re-exports the metrics text of every worker with a ``worker`` label."""

    def __init__(self) -> None:
        #: Metrics text by ``worker`` label: a worker's index, or ``supervisor``.
        self.texts: dict[str, str] = {}

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, text in self.texts.items():
            for family in text_string_to_metric_families(text):
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    out.add_sample(
                        sample.name, {**sample.labels, "worker": str(index)}, sample.value
                    )
        yield from merged.values()


def merge_live(
    states: list[dict[str, Any]], *, collector_id: str, draining: bool, workers: int
) -> dict[str, Any]:
    """One live state from the workers' (``/api/live``): what a single collector would show."""
    sensors: dict[str, dict[str, Any]] = {}
    for state in states:
        for sensor in state.get("sensors", []):
            known = sensors.get(sensor["sensor"])
            if known is None or sensor.get("seen", 0) > known.get("seen", 0):
                sensors[sensor["sensor"]] = sensor
    sinks: dict[str, dict[str, Any]] = {}
    for state in states:
        for sink in state.get("sinks", []):
            total = sinks.setdefault(
                sink["name"],
                {"name": sink["name"], "healthy": True, "queued": 0, "written": 0, "dropped": 0},
            )
            total["healthy"] = total["healthy"] and sink.get("healthy", False)
            for key in ("queued", "written", "dropped"):
                total[key] += sink.get(key) or 0
    rejections = sorted(
        (r for state in states for r in state.get("rejections", [])),
        key=lambda r: r.get("at", 0),
        reverse=True,
    )
    return {
        "now": max(state.get("now", 0) for state in states),
        "history_seconds": states[0].get("history_seconds"),
        "agents": sorted(
            (a for state in states for a in state.get("agents", [])),
            key=lambda a: (a.get("agent", ""), a.get("peer", "")),
        ),
        "sensors": [sensors[name] for name in sorted(sensors)],
        "sensors_total": len(sensors),
        "sensors_untracked": sum(s.get("sensors_untracked", 0) for s in states),
        "rejected_total": sum(state.get("rejected_total", 0) for state in states),
        "rejections": rejections[:MAX_MERGED_REJECTIONS],
        "tail_subscribers": sum(state.get("tail_subscribers", 0) for state in states),
        "collector": {
            "id": collector_id,
            "state": "draining" if draining else "serving",
            "ready": all(s.get("collector", {}).get("ready", False) for s in states)
            and len(states) == workers,
            "workers": workers,
        },
        "sinks": list(sinks.values()),
    }


class WorkersHttp:
    """The public HTTP port of a group of workers (see the module docstring)."""

    def __init__(self, supervisor: Supervisor, session: aiohttp.ClientSession) -> None:
        self.supervisor = supervisor
        self._session = session
        self._worker_metrics = WorkerMetrics()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._worker_metrics)
        #: The supervisor's own HTTP counters (not labelled by worker).
        self._own = CollectorRegistry(auto_describe=True)
        self.http_metrics = HttpMetrics(self._own)
        http = supervisor.config.http
        self._auth = HttpAuth(
            http.tokens, metrics_auth=http.metrics_auth, refused=self.http_metrics.unauthorized.inc
        )
        #: Headers of every call to a worker (its token, when the port has tokens).
        self._headers = self._auth.headers()
        #: The port's TLS (``[http.tls]``); TlsError here when its files do not load.
        self.tls = ServerTls(http.tls, "http.tls") if http.tls is not None else None
        self._tails: set[asyncio.Task[object]] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        """Serve the configured HTTP port (when ``[http] enabled``)."""
        http = self.supervisor.config.http
        if not http.enabled:
            return
        app = web.Application()
        self._auth.add_to(app)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/api/live", self._live)
        app.router.add_get("/api/tail", self._tail)
        app.router.add_route("GET", "/{tail:.*}", self._to_worker_0)
        guard = ConnectionGuard(http.max_connections, http.header_timeout, self.http_metrics)
        self._runner, self.port = await serve_guarded(
            app,
            http.host,
            http.port,
            guard,
            http.keepalive_timeout,
            ssl_context=self.tls.context if self.tls is not None else None,
            handler_cancellation=True,  # a tail stream whose client left ends (and frees its slot)
        )

    def reload_tls(self, config: CollectorConfig) -> None:
        """Re-read ``[http.tls]``'s files into the live context (new handshakes use them);
        :class:`~telemetry.tls.TlsError`, old files kept, when they do not load or when TLS
        would be turned on or off (a restart)."""
        new = config.http.tls
        if (self.tls is None) != (new is None):
            raise TlsError("[http.tls] cannot be turned on or off by a reload: restart")
        if self.tls is not None and new is not None:
            self.tls.reload(new)

    async def close(self) -> None:
        """Stop serving (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        alive = {str(w.index): w.alive for w in self.supervisor.workers}
        ok = all(alive.values())
        return web.json_response(
            {"status": "ok" if ok else "degraded", "workers": alive}, status=200 if ok else 503
        )

    async def _readyz(self, request: web.Request) -> web.Response:
        async def ready(worker: Worker) -> bool:
            try:
                async with self._session.get(
                    f"{worker.base_url}/readyz", headers=self._headers
                ) as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        answers = await asyncio.gather(*(ready(w) for w in self.supervisor.workers))
        workers = {str(w.index): ok for w, ok in zip(self.supervisor.workers, answers, strict=True)}
        is_ready = all(answers) and not self.supervisor.stopping
        state = "draining" if self.supervisor.stopping else "serving"
        return web.json_response(
            {"ready": is_ready, "state": state, "workers": workers}, status=200 if is_ready else 503
        )

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        async def fetch(worker: Worker) -> tuple[int, str | None]:
            try:
                async with self._session.get(
                    f"{worker.base_url}/metrics", headers=self._headers
                ) as resp:
                    return worker.index, await resp.text()
            except aiohttp.ClientError:
                return worker.index, None

        texts = await asyncio.gather(*(fetch(w) for w in self.supervisor.workers))
        merged = {str(index): text for index, text in texts if text is not None}
        merged["supervisor"] = generate_latest(self._own).decode()
        self._worker_metrics.texts = merged
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _live(self, request: web.Request) -> web.Response:
        async def fetch(worker: Worker) -> dict[str, Any] | None:
            url = f"{worker.base_url}/api/live?{request.query_string}"
            try:
                async with self._session.get(url, headers=self._headers) as resp:
                    if resp.status != 200:
                        return None
                    state: dict[str, Any] = await resp.json()
                    return state
            except (aiohttp.ClientError, ValueError):
                return None

        states = [
            s for s in await asyncio.gather(*(fetch(w) for w in self.supervisor.workers)) if s
        ]
        if not states:
            return web.json_response({"error": "no worker answered"}, status=502)
        return web.json_response(
            merge_live(
                states,
                collector_id=self.supervisor.config.collector.id,
                draining=self.supervisor.stopping,
                workers=len(self.supervisor.workers),
            ),
            headers={"Cache-Control": "no-cache"},
        )

    async def _tail(self, request: web.Request) -> web.StreamResponse:
        """Every worker's tail stream, forwarded event by event (never half an event)."""
        http = self.supervisor.config.http
        if len(self._tails) >= http.max_tail_subscribers:
            self.http_metrics.tail.labels("refused").inc()
            raise web.HTTPServiceUnavailable(
                text=f"too many tail subscribers (max_tail_subscribers = "
                f"{http.max_tail_subscribers}); try again later\n",
                headers={"Retry-After": "5"},
            )
        task = asyncio.current_task()
        assert task is not None
        self._tails.add(task)
        try:
            return await self._relay_tails(request, http.tail_write_timeout)
        finally:
            self._tails.discard(task)

    async def _relay_tails(self, request: web.Request, write_timeout: float) -> web.StreamResponse:
        self.http_metrics.tail.labels("opened").inc()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        lock = asyncio.Lock()
        no_timeout = aiohttp.ClientTimeout(total=None)

        async def relay(worker: Worker) -> None:
            url = f"{worker.base_url}/api/tail?{request.query_string}"
            async with self._session.get(
                url, timeout=no_timeout, headers=self._headers
            ) as upstream:
                event: list[bytes] = []
                async for line in upstream.content:
                    event.append(line)
                    if line in (b"\n", b"\r\n"):  # an event (or a comment) is complete
                        async with lock, asyncio.timeout(write_timeout):
                            await response.write(b"".join(event))
                        event = []

        relays = [asyncio.create_task(relay(w)) for w in self.supervisor.workers]
        try:
            done, _ = await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
            if any(not t.cancelled() and isinstance(t.exception(), TimeoutError) for t in done):
                # The client read nothing for write_timeout: end the stream, free the slot.
                self.http_metrics.tail.labels("stalled").inc()
                if request.transport is not None:
                    request.transport.abort()
        except (ConnectionError, aiohttp.ClientError):
            pass
        finally:
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
        return response

    async def _to_worker_0(self, request: web.Request) -> web.StreamResponse:
        url = f"{self.supervisor.workers[0].base_url}{request.rel_url}"
        no_timeout = aiohttp.ClientTimeout(total=None)
        try:
            async with self._session.get(url, timeout=no_timeout, headers=self._headers) as up:
                response = web.StreamResponse(status=up.status)
                for name in _FORWARDED_HEADERS:
                    if name in up.headers:
                        response.headers[name] = up.headers[name]
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientError:
            return web.json_response({"error": "worker 0 unavailable"}, status=502)
