"""``telemetry collect --workers N``: N collector processes sharing one ingest port.

How this works: the process the user started becomes a supervisor. It listens on the ingest
port and starts N workers, each a whole collector (``telemetry collect`` with environment
overrides) that listens on no port of its own: the supervisor accepts each connection and
hands it to the next worker in turn (:mod:`telemetry.collector.handoff`), so the connections,
and every core's share of the work, stay even. Each worker's HTTP side port is private
(127.0.0.1, a port chosen by the supervisor); :func:`worker_overrides` is the one place that
says how a worker's config differs from the supervisor's. The supervisor serves the configured
HTTP port, every worker's answers merged into one (:mod:`telemetry.collector.workers_http`).

SIGHUP is checked here first (a config that does not load is refused once, not by every
worker), then forwarded: each worker reloads as a single collector does.
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
from pathlib import Path
from typing import Any

import aiohttp

from telemetry.collector.handoff import (
    HANDOFF_FD_ENV,
    handoff_pair,
    try_send_connection,
    wait_writable,
)
from telemetry.collector.reload import load_checked
from telemetry.collector.server import listen_error
from telemetry.collector.workers_http import WorkersHttp
from telemetry.config import CollectorConfig, ConfigError, env_overrides
from telemetry.log import get_logger
from telemetry.tls import TlsError

log = get_logger("telemetry.workers")

#: Set in a worker's environment: its index, bound into its log lines as ``worker``.
WORKER_ENV = "TELEMETRY_WORKER_INDEX"
STARTUP_TIMEOUT = 30.0
RESTART_DELAY = 1.0


def free_port(host: str) -> int:
    """A port the kernel considers free now (a worker binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def worker_overrides(
    config: CollectorConfig, index: int, *, ingest_port: int, http_port: int
) -> dict[str, dict[str, Any]]:
    """How worker ``index``'s config differs from the supervisor's ``config``: the ingest port
    the supervisor bound (so a port 0 is the one it got), a private HTTP port on 127.0.0.1,
    and an id of its own."""
    return {
        "ingest": {"port": ingest_port},
        "http": {"enabled": True, "host": "127.0.0.1", "port": http_port},
        "collector": {"id": f"{config.collector.id}-w{index}"},
    }


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
        self._http: WorkersHttp | None = None
        self._session: aiohttp.ClientSession | None = None

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "telemetry.cli", "collect"]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        return command

    def _environment(self, worker: Worker) -> dict[str, str]:
        """The worker's environment: the supervisor's, its index, and its config overrides
        as the ``TELEMETRY_*`` variables the worker's config loader applies over the file."""
        overrides = worker_overrides(
            self.config, worker.index, ingest_port=self.ingest_port, http_port=worker.http_port
        )
        return {
            **os.environ,
            WORKER_ENV: str(worker.index),
            **env_overrides(CollectorConfig, overrides),
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

    def _reload_workers(self) -> None:
        """SIGHUP: validate the config once here, then each worker re-reads and applies it
        itself (see :mod:`telemetry.collector.reload`). A config that does not load is
        refused here, in one line, and no worker is signalled."""
        log.info("reload_requested", workers=len(self.workers))
        try:
            config = load_checked(self.config_path)
            if self._http is not None:  # the public HTTP port is this process's own
                self._http.reload_tls(config)
        except (ConfigError, TlsError) as exc:
            log.error("reload_refused", errors=str(exc))
            return
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGHUP)

    async def run(self) -> int:
        """Run the group until a signal; the exit status of the collector."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_workers)
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
            try:
                self._http = WorkersHttp(self, self._session)
            except TlsError as exc:  # the workers loaded these files; changed since?
                log.error("tls_error", error=str(exc))
                return await self._stop_all() or 1
            await self._http.start()
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
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self._http is not None:
                await self._http.close()
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
