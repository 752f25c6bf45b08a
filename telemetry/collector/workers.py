"""``telemetry collect --workers N``: N collector processes sharing one ingest port.

How this works: the process the user started becomes a supervisor. It listens on the ingest
port and starts N workers, each a whole collector (``telemetry collect`` with environment
overrides) that listens on no port of its own: the supervisor accepts each connection and
hands it to the next worker in turn (:mod:`telemetry.collector.handoff`), so the connections,
and every core's share of the work, stay even. Each worker's HTTP side port is private
(127.0.0.1, a port chosen by the supervisor). The supervisor serves the configured HTTP port:

- ``/healthz``: 200 while every worker process is alive;
- ``/readyz``: 200 while every worker is ready (each is asked);
- ``/metrics``: every worker's metrics, each sample labelled ``worker="<i>"``;
- ``/api/live``: every worker's live state merged (agents, sensors, rejections, sinks);
- ``/api/tail``: every worker's stream of readings, interleaved event by event;
- anything else (the live page itself): passed to worker 0.

SIGTERM/SIGINT close the ingest port and are forwarded to every worker, which drains as a
single collector does; the supervisor exits 0 when every worker did. A worker that dies after
start-up is restarted after a short backoff (connections go to the others meanwhile); one that
fails during start-up (a sink that cannot start) stops the whole collector with its exit
status, and so does a busy ingest port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector as PromCollector

from telemetry.collector.handoff import (
    HANDOFF_FD_ENV,
    handoff_pair,
    try_send_connection,
    wait_writable,
)
from telemetry.collector.metrics import CONTENT_TYPE
from telemetry.collector.server import listen_error
from telemetry.config import CollectorConfig
from telemetry.log import get_logger

log = get_logger("telemetry.workers")

#: Set in a worker's environment: its index, bound into its log lines as ``worker``.
WORKER_ENV = "TELEMETRY_WORKER_INDEX"
STARTUP_TIMEOUT = 30.0
MAX_MERGED_REJECTIONS = 100
RESTART_DELAY = 1.0


def free_port(host: str) -> int:
    """A port the kernel considers free now (a worker binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Worker:
    """One collector process of the group."""

    def __init__(self, index: int, http_port: int) -> None:
        self.index = index
        self.http_port = http_port
        self.process: asyncio.subprocess.Process | None = None
        #: The supervisor's end of this worker's connection hand-off.
        self.channel: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


class _WorkerMetrics(PromCollector):
    """Re-exports the metrics text of every worker with a ``worker`` label."""

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, text in sorted(self.texts.items()):
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


def merge_live(states: list[dict[str, Any]], supervisor: Supervisor) -> dict[str, Any]:
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
            "id": supervisor.config.collector.id,
            "state": "draining" if supervisor.stopping else "serving",
            "ready": all(s.get("collector", {}).get("ready", False) for s in states)
            and len(states) == len(supervisor.workers),
            "workers": len(supervisor.workers),
        },
        "sinks": list(sinks.values()),
    }


class Supervisor:
    """Starts, watches and stops the worker processes; serves the public HTTP port."""

    def __init__(self, config: CollectorConfig, config_path: Path | None, workers: int) -> None:
        self.config = config
        self.config_path = config_path
        self.ingest_port = config.ingest.port
        self._listener: socket.socket | None = None
        self._turn = 0  # the worker the next connection goes to
        self.workers = [Worker(i, free_port("127.0.0.1")) for i in range(workers)]
        self.stopping = False
        self._metrics = _WorkerMetrics()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._metrics)
        self._http: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "telemetry.cli", "collect"]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        return command

    def _environment(self, worker: Worker) -> dict[str, str]:
        return {
            **os.environ,
            WORKER_ENV: str(worker.index),
            "TELEMETRY_INGEST__PORT": str(self.ingest_port),
            "TELEMETRY_HTTP__ENABLED": "true",
            "TELEMETRY_HTTP__HOST": "127.0.0.1",
            "TELEMETRY_HTTP__PORT": str(worker.http_port),
            "TELEMETRY_COLLECTOR__ID": f"{self.config.collector.id}-w{worker.index}",
        }

    async def _spawn(self, worker: Worker) -> None:
        if worker.channel is not None:
            worker.channel.close()
        worker.channel, theirs = handoff_pair()
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self._command(),
                env={**self._environment(worker), HANDOFF_FD_ENV: str(theirs.fileno())},
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        log.info("worker_started", worker=worker.index, pid=worker.process.pid)

    def _listen(self) -> None:
        """Bind the ingest port; raise :class:`ListenError` (a busy port, a bad host)."""
        ingest = self.config.ingest
        family = socket.AF_INET6 if ":" in ingest.host else socket.AF_INET
        try:
            self._listener = socket.create_server(
                (ingest.host, ingest.port), family=family, backlog=1024
            )
        except OSError as exc:
            raise listen_error(exc, f"{ingest.host}:{ingest.port}") from None
        self._listener.setblocking(False)
        self.ingest_port = self._listener.getsockname()[1]

    async def _accept_loop(self) -> None:
        """Accept every connection and hand it to a worker."""
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError as exc:  # e.g. out of file descriptors: keep the port open
                log.error("accept_failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            with conn:  # the worker holds its own copy once passed
                await self._hand_off(conn)

    async def _hand_off(self, conn: socket.socket) -> None:
        """Pass ``conn`` to the next live worker, round robin. A worker whose hand-off queue is
        full (its loop is busy) is skipped; only when every one is full does this wait."""
        count = len(self.workers)
        while True:
            full: list[socket.socket] = []
            for offset in range(count):
                index = (self._turn + offset) % count
                worker = self.workers[index]
                if not worker.alive or worker.channel is None:
                    continue
                try:
                    if try_send_connection(worker.channel, conn):
                        self._turn = index + 1
                        return
                except OSError as exc:
                    log.warning("handoff_failed", worker=worker.index, error=str(exc))
                    continue
                full.append(worker.channel)
            if not full:
                log.warning("connection_refused", code="no_worker", detail="no worker alive")
                return
            await wait_writable(full[0])

    async def _wait_ready(self, worker: Worker) -> bool:
        """Poll the worker's /readyz until 200; False if it exits first or times out."""
        assert self._session is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        delay = 0.02
        while loop.time() < deadline:
            if not worker.alive:
                return False
            try:
                async with self._session.get(f"{worker.base_url}/readyz") as resp:
                    if resp.status == 200:
                        return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(delay)  # a child process has no event to wait on here
            delay = min(delay * 2, 0.5)
        return False

    async def run(self) -> int:
        """Run the group until a signal; the exit status of the collector."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self._listen()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        accepting: asyncio.Task[None] | None = None
        try:
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
            ready = await asyncio.gather(*(self._wait_ready(w) for w in self.workers))
            if not all(ready):
                failed = [w.index for w, ok in zip(self.workers, ready, strict=True) if not ok]
                log.error("worker_start_failed", workers=failed)
                return await self._stop_all() or 1
            await self._start_http()
            accepting = asyncio.create_task(self._accept_loop())
            log.info(
                "collector_started",
                workers=len(self.workers),
                ingest=f"{self.config.ingest.host}:{self.ingest_port}",
                http=f"{self.config.http.host}:{self.config.http.port}",
            )
            watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]
            await stop.wait()
            log.info("drain_started", workers=len(self.workers))
            self.stopping = True
            for task in watchers:
                task.cancel()
            return await self._stop_all()
        finally:
            if accepting is not None:
                accepting.cancel()
            if self._listener is not None:
                self._listener.close()
            for worker in self.workers:
                if worker.channel is not None:
                    worker.channel.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self._http is not None:
                await self._http.cleanup()
            await self._session.close()

    async def _watch(self, worker: Worker) -> None:
        """Restart the worker when it dies outside a shutdown."""
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            log.error("worker_exited", worker=worker.index, status=code, restart_in=RESTART_DELAY)
            await asyncio.sleep(RESTART_DELAY)
            await self._spawn(worker)

    async def _stop_all(self) -> int:
        """Close the ingest port, SIGTERM every worker, wait for their drains; 0 when every
        one exited 0."""
        self.stopping = True
        if self._listener is not None:
            self._listener.close()
        timeout = self.config.collector.shutdown_timeout + 5
        for worker in self.workers:
            if worker.alive and worker.process is not None:
                worker.process.send_signal(signal.SIGTERM)
        codes: list[int] = []
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                codes.append(await asyncio.wait_for(worker.process.wait(), timeout))
            except TimeoutError:
                log.error("worker_kill", worker=worker.index, after=timeout)
                worker.process.kill()
                codes.append(await worker.process.wait())
        status = next((code for code in codes if code != 0), 0)
        log.info("collector_stopped", workers=len(self.workers), status=status)
        return status

    # --- the public HTTP port ---------------------------------------------------------------

    async def _start_http(self) -> None:
        if not self.config.http.enabled:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/api/live", self._live)
        app.router.add_get("/api/tail", self._tail)
        app.router.add_route("GET", "/{tail:.*}", self._to_worker_0)
        self._http = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._http.setup()
        site = web.TCPSite(self._http, self.config.http.host, self.config.http.port)
        await site.start()

    async def _healthz(self, request: web.Request) -> web.Response:
        alive = {str(w.index): w.alive for w in self.workers}
        ok = all(alive.values())
        return web.json_response(
            {"status": "ok" if ok else "degraded", "workers": alive}, status=200 if ok else 503
        )

    async def _readyz(self, request: web.Request) -> web.Response:
        async def ready(worker: Worker) -> bool:
            assert self._session is not None
            try:
                async with self._session.get(f"{worker.base_url}/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        answers = await asyncio.gather(*(ready(w) for w in self.workers))
        workers = {str(w.index): ok for w, ok in zip(self.workers, answers, strict=True)}
        is_ready = all(answers) and not self.stopping
        state = "draining" if self.stopping else "serving"
        return web.json_response(
            {"ready": is_ready, "state": state, "workers": workers}, status=200 if is_ready else 503
        )

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        async def fetch(worker: Worker) -> tuple[int, str | None]:
            assert self._session is not None
            try:
                async with self._session.get(f"{worker.base_url}/metrics") as resp:
                    return worker.index, await resp.text()
            except aiohttp.ClientError:
                return worker.index, None

        texts = await asyncio.gather(*(fetch(w) for w in self.workers))
        self._metrics.texts = {index: text for index, text in texts if text is not None}
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _live(self, request: web.Request) -> web.Response:
        async def fetch(worker: Worker) -> dict[str, Any] | None:
            assert self._session is not None
            url = f"{worker.base_url}/api/live?{request.query_string}"
            try:
                async with self._session.get(url) as resp:
                    if resp.status != 200:
                        return None
                    state: dict[str, Any] = await resp.json()
                    return state
            except (aiohttp.ClientError, ValueError):
                return None

        states = [s for s in await asyncio.gather(*(fetch(w) for w in self.workers)) if s]
        if not states:
            return web.json_response({"error": "no worker answered"}, status=502)
        return web.json_response(merge_live(states, self), headers={"Cache-Control": "no-cache"})

    async def _tail(self, request: web.Request) -> web.StreamResponse:
        """Every worker's tail stream, forwarded event by event (never half an event)."""
        assert self._session is not None
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
            assert self._session is not None
            url = f"{worker.base_url}/api/tail?{request.query_string}"
            async with self._session.get(url, timeout=no_timeout) as upstream:
                event: list[bytes] = []
                async for line in upstream.content:
                    event.append(line)
                    if line in (b"\n", b"\r\n"):  # an event (or a comment) is complete
                        async with lock:
                            await response.write(b"".join(event))
                        event = []

        relays = [asyncio.create_task(relay(w)) for w in self.workers]
        try:
            await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        except (ConnectionError, aiohttp.ClientError):
            pass
        finally:
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
        return response

    async def _to_worker_0(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        url = f"{self.workers[0].base_url}{request.rel_url}"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as up:
                response = web.StreamResponse(status=up.status)
                content_type = up.headers.get("Content-Type")
                if content_type:
                    response.headers["Content-Type"] = content_type
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientError:
            return web.json_response({"error": "worker 0 unavailable"}, status=502)
