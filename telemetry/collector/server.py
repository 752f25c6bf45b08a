"""The collector: a TCP listener for agents, the pipeline, the HTTP side port, and the drain.

How this works: :meth:`Collector.start` starts the sinks, then the listeners. Each accepted
connection is served by a :class:`Connection` task. :meth:`Collector.shutdown` (on SIGTERM or
SIGINT) drains: readiness turns 503, the listener stops accepting, every connection gets
``goaway`` and stops reading, in-flight batches are written and acked, then the sinks are
flushed and closed, all within ``shutdown_timeout``. SIGHUP reloads the config without
dropping a connection (:mod:`telemetry.collector.reload`).
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from telemetry.collector.agents import AgentSessions
from telemetry.collector.auth import authorizer
from telemetry.collector.connection import Connection, peer_host, peer_name
from telemetry.collector.events import ConnectionEvents
from telemetry.collector.gauges import scrape_families
from telemetry.collector.handoff import Receiver
from telemetry.collector.http import HttpServer, check_descriptors
from telemetry.collector.ledger import Ledger
from telemetry.collector.live import LiveView
from telemetry.collector.metrics import Metrics
from telemetry.collector.pipeline import Pipeline
from telemetry.collector.reload import Reloader
from telemetry.collector.runner import SinkRunner
from telemetry.collector.session import Session
from telemetry.config import CollectorConfig
from telemetry.log import get_logger
from telemetry.protocol import Error, TooManyConnections, encode_frame
from telemetry.ratelog import RateLimitedLog
from telemetry.sinks.base import Sink
from telemetry.sinks.registry import build_sink
from telemetry.tls import CollectorTls, certificate_names

log = get_logger("telemetry.collector")

State = Literal["starting", "serving", "draining", "stopped"]


class ListenError(OSError):
    """A listener could not bind its address (busy port, bad host)."""


class Collector:
    """Receives readings from agents and hands them to the sinks."""

    def __init__(
        self,
        config: CollectorConfig,
        sinks: list[Sink] | None = None,
        *,
        handoff: socket.socket | None = None,
        config_path: Path | None = None,
    ) -> None:
        """``handoff``: a ``--workers`` worker's end of the supervisor's connection hand-off
        (see :mod:`telemetry.collector.handoff`); it then listens on no port of its own."""
        self.config = config
        #: The file :meth:`reload` re-reads (SIGHUP); ``None``: defaults and environment only.
        self.config_path = config_path
        self.metrics = Metrics()
        self.ledger = Ledger()
        self.live = LiveView()
        built = sinks if sinks is not None else [build_sink(c) for c in config.sinks]
        self.pipeline = Pipeline(
            [
                SinkRunner(sink, cfg, self.metrics)
                for sink, cfg in zip(built, config.sinks, strict=True)
            ],
            metrics=self.metrics,
            dead_letter_max_bytes=config.collector.dead_letter_max_bytes,
        )
        self.state: State = "starting"
        self.connections: dict[int, Connection] = {}
        self.agents = AgentSessions(self._drain_connection, self.metrics.takeovers.inc)
        #: The TLS contexts of the ingest and HTTP ports; ``self.tls.reload()`` re-reads
        #: their files (docs/security.md).
        self.tls = CollectorTls(config)
        #: Who may speak for which agent id; swapped whole when the config is reloaded.
        self.auth = authorizer(config.ingest, certificates=self.tls.client_certificates)
        #: Open connections per peer IP address (``max_connections_per_ip``).
        self._per_ip: dict[str, int] = {}
        #: A connection flood logs its refusals at a bounded rate.
        self._refusals = RateLimitedLog(log, 10.0)
        self.http = HttpServer(self)
        self.ingest_port: int | None = None
        self._server: asyncio.Server | None = None
        self._handoff = handoff
        self._receiver: Receiver | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshakes: set[asyncio.Task[Any]] = set()
        self._next_id = 0
        self._stop: asyncio.Event | None = None
        self.reloads = Reloader(self)
        self.metrics.watch(lambda: scrape_families(self.pipeline.runners, self.ledger, self.ready))

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the HTTP side port, the sinks, then the ingest listener; raise
        :class:`ListenError` when a port cannot be bound.

        The side port comes first: while the sinks start (a backend may take a while to
        answer), ``/healthz`` says the process is alive and ``/readyz`` answers 503.
        """
        # HTTP can never take the descriptors ingest needs: both limits must fit.
        check_descriptors(self.config)
        self._stop = asyncio.Event()
        http = self.config.http
        if http.enabled:
            try:
                # A --workers worker's HTTP port is the supervisor's private one: plain.
                tls = self.tls.http_context if self._handoff is None else None
                await self.http.start(http.host, http.port, ssl_context=tls)
            except OSError as exc:
                raise listen_error(exc, f"{http.host}:{http.port}") from None
        try:
            await self.pipeline.start()
        except BaseException:
            await self.http.stop()
            self.state = "stopped"
            raise
        ingest = self.config.ingest
        try:
            if self._handoff is not None:
                self._receiver = Receiver(self._handoff, self._serve_passed, self.request_stop)
                self._receiver.start()
                self.ingest_port = ingest.port
            else:
                self._server = await asyncio.start_server(
                    self._accept,
                    ingest.host,
                    ingest.port,
                    reuse_address=True,
                    reuse_port=ingest.reuse_port or None,
                    backlog=1024,
                    **self.tls.ingest_server_kwargs(),
                )
                self.ingest_port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            await self._abort()
            raise listen_error(exc, f"{ingest.host}:{ingest.port}") from None
        self.state = "serving"
        self.reloads.serving()
        log.info(
            "collector_started",
            collector=self.config.collector.id,
            ingest=f"{ingest.host}:{self.ingest_port}",
            http=f"{http.host}:{self.http.port}" if http.enabled else None,
            tls={"ingest": self.tls.ingest is not None, "http": self.tls.http is not None},
            sinks=[runner.name for runner in self.pipeline.runners],
        )

    async def _abort(self) -> None:
        self._stop_listening()
        await self.http.stop()
        await self.pipeline.close(timeout=1.0)
        self.state = "stopped"

    def request_stop(self) -> None:
        """Begin the drain (what SIGTERM and SIGINT do)."""
        if self._stop is not None:
            self._stop.set()

    async def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Start, serve until SIGTERM/SIGINT or :meth:`request_stop`, then drain.

        ``on_started`` runs once the listeners are up (the CLI tunes the GC there).
        """
        loop = asyncio.get_running_loop()
        # Before the listeners open: a SIGHUP that comes as soon as the port answers reloads
        # (one during start-up waits until the collector serves).
        loop.add_signal_handler(signal.SIGHUP, self.reloads.request)
        try:
            await self.start()
        except BaseException:
            loop.remove_signal_handler(signal.SIGHUP)
            raise
        if on_started is not None:
            on_started()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        ledger_task = asyncio.create_task(
            self._log_ledger_every(self.config.collector.ledger_interval)
        )
        try:
            assert self._stop is not None
            await self._stop.wait()
        finally:
            ledger_task.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            try:
                await self.shutdown()
            finally:
                loop.remove_signal_handler(signal.SIGHUP)  # after the drain: never kills it

    async def reload(self) -> bool:
        """Re-read the config (SIGHUP) and apply it without dropping a connection: sinks and
        routes, credentials, TLS files, the ingest limits of new connections, the log level
        (:mod:`telemetry.collector.reload`). A config that does not load or a sink that does
        not start is refused and the running config kept; ``False`` then."""
        return await self.reloads.reload()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal_received", signal=sig.name)
        self.request_stop()

    async def shutdown(self) -> None:
        """Drain: stop accepting, ``goaway``, finish in-flight batches, flush sinks."""
        if self.state in ("draining", "stopped"):
            return
        self.state = "draining"
        self.reloads.cancel()
        timeout = self.config.collector.shutdown_timeout
        deadline = time.monotonic() + timeout
        log.info("drain_started", connections=len(self.connections), timeout=timeout)
        self._stop_listening()
        for conn in list(self.connections.values()):
            conn.drain("collector shutting down")
        if self._tasks:
            # Leave a fifth of the time for flushing the sinks.
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout * 0.8)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("drain_connections_cancelled", connections=len(pending))
                await asyncio.wait(pending, timeout=1.0)
        await self.pipeline.close(timeout=max(0.5, deadline - time.monotonic()))
        await self.http.stop()
        self.state = "stopped"
        self.log_ledger()
        log.info(
            "collector_stopped",
            connections=int(self.metrics.value("telemetry_connections_total", outcome="accepted")),
            batches=int(self.metrics.value("telemetry_batches_total")),
            acks=int(self.metrics.value("telemetry_acks_total")),
        )

    def log_ledger(self) -> None:
        """One ``ledger`` event: where every reading received so far is, drops by reason."""
        dropped = {
            f"dropped_{sample.labels['reason']}": int(sample.value)
            for family in self.metrics.drops.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        }
        log.info("ledger", balanced=self.ledger.balanced, **self.ledger.as_dict(), **dropped)

    async def _log_ledger_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.log_ledger()

    @property
    def ready(self) -> bool:
        """Serving, and every sink healthy: what ``/readyz`` reports."""
        return self.state == "serving" and self.pipeline.healthy

    # --- connections ------------------------------------------------------------------------

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._receiver is not None:
            self._receiver.close()

    def _serve_passed(self, sock: socket.socket) -> None:
        """Serve a connection the supervisor accepted, as :meth:`_accept` serves our own."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, self._accept, loop=loop)
        task = loop.create_task(
            loop.connect_accepted_socket(lambda: protocol, sock, **self.tls.ingest_server_kwargs())
        )
        self._handshakes.add(task)
        task.add_done_callback(self._handshake_done)

    def _handshake_done(self, task: asyncio.Task[Any]) -> None:
        self._handshakes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("connection_lost", error=str(task.exception()))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        ingest = self.config.ingest
        ip = peer_host(writer)
        detail = None
        if self.state != "serving":
            detail = "collector is draining"
        elif len(self.connections) >= ingest.max_connections:
            detail = f"limit max_connections {ingest.max_connections}"
        elif self._per_ip.get(ip, 0) >= ingest.max_connections_per_ip:
            detail = f"limit max_connections_per_ip {ingest.max_connections_per_ip}"
        if detail is not None:
            self.metrics.connections.labels("refused").inc()
            code = TooManyConnections.code
            self._refusals.warning("connection_refused", code=code, detail=detail, ip=ip)
            writer.write(encode_frame(Error(code=code, detail=detail).encode()))
            writer.close()
            return
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._next_id += 1
        self.metrics.connections.labels("accepted").inc()
        self.metrics.open_connections.inc()
        conn = self._connection(reader, writer, self._next_id)
        self.connections[conn.conn_id] = conn
        self._tasks.add(task)
        try:
            await conn.run()
        except Exception:  # a task root: log, and let the other connections go on
            log.exception("connection_crashed", conn_id=conn.conn_id)
        finally:
            del self.connections[conn.conn_id]
            self._tasks.discard(task)
            self.metrics.open_connections.dec()
            left = self._per_ip[ip] - 1
            if left:
                self._per_ip[ip] = left
            else:
                del self._per_ip[ip]

    def _drain_connection(self, conn_id: int, reason: str) -> None:
        conn = self.connections.get(conn_id)
        if conn is not None:
            conn.drain(reason)

    def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int
    ) -> Connection:
        """A connection with its session, wired to this collector's pipeline and books."""
        events = ConnectionEvents(self.metrics, self.live, conn_id, self.agents)
        session = Session(
            self.config.ingest,
            collector_id=self.config.collector.id,
            peer=peer_name(writer),
            auth=self.auth,
            certificate_names=certificate_names(writer.get_extra_info("peercert")),
            ledger=self.ledger,
            events=events,
            would_wait=self.pipeline.would_wait,
            dead_letters=bool(self.pipeline.dead_letter_runners),
            dead_letter_max_bytes=self.config.collector.dead_letter_max_bytes,
        )
        return Connection(reader, writer, conn_id, session, self.pipeline, events)


def listen_error(exc: OSError, address: str) -> ListenError:
    """The :class:`ListenError` for a failed bind of ``address``."""
    if exc.errno == errno.EADDRINUSE:
        return ListenError(exc.errno, f"cannot listen on {address}: address already in use")
    return ListenError(exc.errno, f"cannot listen on {address}: {exc.strerror or exc}")
