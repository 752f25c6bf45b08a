"""Limits of an HTTP port that aiohttp does not have: a cap on open connections and a
deadline for the request head (slowloris); and the check that HTTP and ingest together fit
in the process's file descriptors.

How this works: :class:`GuardedSite` listens like aiohttp's ``TCPSite``, but the protocol
factory it gives ``loop.create_server`` is :meth:`ConnectionGuard.protocol`, which wraps
aiohttp's own: every accepted connection is a :class:`_Guarded` protocol that counts itself
while open, closes itself at once when :attr:`ConnectionGuard.max_connections` are already
open (a short ``503`` first), and otherwise hands the transport to an aiohttp
``RequestHandler`` it creates then and forwards every protocol call to. While a request head
is coming in (from the first byte of a request, or from connect, until the blank line that
ends the head) a timer runs; when it fires before the head is complete the connection is
closed. A response that lasts (the tail stream) has no timer running: its head came long
ago. Idle keep-alive connections are aiohttp's ``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import re
import resource
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from telemetry.log import get_logger

log = get_logger("telemetry.http")

#: The end of a request head (a blank line; bare LF tolerated as aiohttp's parser does).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
#: Descriptors kept for everything but connections: listeners, sink sockets and files, logs.
DESCRIPTOR_MARGIN = 256
#: Seconds between two log events about refused connections (the rest are counted).
LOG_EVERY = 10.0

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 39\r\n"
    b"Connection: close\r\n\r\ntoo many HTTP connections, retry later\n"
)


class DescriptorLimitError(RuntimeError):
    """The connection limits need more file descriptors than the process may open."""


def ensure_descriptors(
    http_connections: int, ingest_connections: int, *, margin: int = DESCRIPTOR_MARGIN
) -> int:
    """Make sure ``http_connections + ingest_connections + margin`` descriptors can be open.

    Raises the soft ``RLIMIT_NOFILE`` up to the hard limit when needed; raises
    :class:`DescriptorLimitError` naming the numbers when even the hard limit is too low.
    Returns the soft limit now in effect. Call it before listening (the collector's start;
    for a collector call it with ``config.http.max_connections`` (0 when ``[http]`` is
    disabled) and ``config.ingest.max_connections``).
    """
    needed = http_connections + ingest_connections + margin
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise DescriptorLimitError(
            f"[http] max_connections ({http_connections}) + [ingest] max_connections "
            f"({ingest_connections}) + {margin} for listeners, sinks and logs = {needed} file "
            f"descriptors, but this process may open at most {hard} (RLIMIT_NOFILE hard "
            f"limit): lower the limits or raise it (ulimit -n, LimitNOFILE=, --ulimit nofile=)"
        )
    target = needed if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        raise DescriptorLimitError(
            f"{needed} file descriptors needed ([http] max_connections {http_connections} + "
            f"[ingest] max_connections {ingest_connections} + {margin}); raising the soft "
            f"limit from {soft} to {target} failed: {exc}"
        ) from None
    log.info("descriptor_limit_raised", soft=target, was=soft, needed=needed)
    return target


class HttpMetrics:
    """The HTTP port's own counters, in the registry of the process it serves."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "telemetry_http_open_connections", "Open HTTP connections.", registry=registry
        )
        self.buffered = Gauge(
            "telemetry_http_write_buffer_bytes",
            "Bytes written to HTTP connections that their clients have not read yet.",
            registry=registry,
        )
        self.refused = Counter(
            "telemetry_http_connections_refused",
            "HTTP connections closed at once: max_connections were open.",
            registry=registry,
        )
        self.head_timeouts = Counter(
            "telemetry_http_header_timeouts",
            "HTTP connections closed for not sending a request head within header_timeout.",
            registry=registry,
        )
        self.unauthorized = Counter(
            "telemetry_http_unauthorized",
            "HTTP requests refused for a missing or wrong token.",
            registry=registry,
        )
        self.tail = Counter(
            "telemetry_tail_streams",
            "Tail streams by outcome (opened, refused: too many; stalled: the client read "
            "nothing for tail_write_timeout).",
            ["outcome"],
            registry=registry,
        )


class ConnectionGuard:
    """Counts a port's open connections, refuses those over the cap, times request heads."""

    def __init__(
        self, max_connections: int, header_timeout: float, metrics: HttpMetrics | None = None
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.metrics = metrics
        self.open = 0
        #: Transports of the open connections (for :meth:`buffered_bytes`).
        self._transports: set[asyncio.Transport] = set()
        self.refused = 0
        self.head_timeouts = 0
        if metrics is not None:
            metrics.buffered.set_function(self.buffered_bytes)
        self._last_log = -LOG_EVERY
        self._unlogged = 0

    def buffered_bytes(self) -> int:
        """Bytes written to the open connections that their clients have not taken yet."""
        return sum(t.get_write_buffer_size() for t in self._transports if not t.is_closing())

    def protocol(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``create_server`` wrapping aiohttp's ``inner`` one."""

        def factory() -> asyncio.Protocol:
            return _Guarded(self, inner)

        return factory

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.refused += 1
        if self.metrics is not None:
            self.metrics.refused.inc()
        now = time.monotonic()
        self._unlogged += 1
        if now - self._last_log >= LOG_EVERY:
            log.warning(
                "http_connections_refused",
                refused=self._unlogged,
                max_connections=self.max_connections,
                peer=_peer(transport),
            )
            self._last_log = now
            self._unlogged = 0
        transport.write(_REFUSED)
        transport.close()

    def _head_timeout(self, transport: asyncio.Transport) -> None:
        self.head_timeouts += 1
        if self.metrics is not None:
            self.metrics.head_timeouts.inc()
        log.debug("http_header_timeout", peer=_peer(transport), timeout=self.header_timeout)
        transport.abort()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class _Guarded(asyncio.Protocol):
    """One accepted connection: admitted (then aiohttp's protocol does the work) or refused."""

    __slots__ = ("_factory", "_guard", "_head", "_inner", "_tail", "_timer", "_transport")

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: A request head is coming in (its end not seen yet).
        self._head = True
        #: The last bytes of the head so far (a blank line split across two reads).
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        guard = self._guard
        if guard.open >= guard.max_connections:
            guard._refuse(transport)
            return
        self._transport = transport
        guard._transports.add(transport)
        guard.open += 1
        if guard.metrics is not None:
            guard.metrics.open.inc()
        self._start_timer()
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        inner, self._inner = self._inner, None
        if self._transport is not None:
            self._guard._transports.discard(self._transport)
            self._transport = None
            self._guard.open -= 1
            if self._guard.metrics is not None:
                self._guard.metrics.open.dec()
        if inner is not None:
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: whatever it sends is dropped with the connection
        if self._guard.header_timeout > 0:
            self._watch(data)
        self._inner.data_received(data)

    def _watch(self, data: bytes) -> None:
        """Follow request heads in ``data``: stop the timer at a head's end, start it when
        bytes of a next request arrive."""
        view = self._tail + data if self._head else data
        while view:
            if not self._head:
                self._head = True
                self._start_timer()
            found = _HEAD_END.search(view)
            if found is None:
                self._tail = view[-3:]
                return
            self._head = False
            self._tail = b""
            self._stop_timer()
            view = view[found.end() :]

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def _start_timer(self) -> None:
        timeout = self._guard.header_timeout
        if timeout <= 0 or self._transport is None:
            return
        self._stop_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout, self._expired)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._transport is not None and self._head:
            self._guard._head_timeout(self._transport)


class GuardedSite(web.BaseSite):
    """aiohttp's ``TCPSite``, with every connection going through a :class:`ConnectionGuard`."""

    __slots__ = ("_guard", "_host", "_port", "_reuse_address", "bound_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        backlog: int = 128,
        reuse_address: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._guard = guard
        self._reuse_address = reuse_address
        self.bound_port: int | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self.bound_port or self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {"backlog": self._backlog, "reuse_address": self._reuse_address}
        if self._ssl_context is not None:
            options["ssl"] = self._ssl_context
        created = await loop.create_server(
            self._guard.protocol(server), self._host, self._port, **options
        )
        self._server = created
        self.bound_port = created.sockets[0].getsockname()[1] if created.sockets else self._port


async def serve_guarded(
    app: web.Application,
    host: str,
    port: int,
    guard: ConnectionGuard,
    keepalive_timeout: float,
    *,
    ssl_context: ssl.SSLContext | None = None,
    handler_cancellation: bool = False,
) -> tuple[web.AppRunner, int | None]:
    """Serve ``app`` on ``host:port`` through ``guard``, without access log or signal
    handlers: what the collector's, the relay's and the ``--workers`` supervisor's ports
    share. Returns the runner (``cleanup()`` stops it) and the port bound; when the port
    cannot be bound, the runner is cleaned up and the OSError raised."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=keepalive_timeout,
        handler_cancellation=handler_cancellation,
    )
    await runner.setup()
    site = GuardedSite(runner, host, port, guard, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site.bound_port
