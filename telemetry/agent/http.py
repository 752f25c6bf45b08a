"""``[agent.http]``: the agent's ``/metrics`` and ``/healthz``, over a small asyncio server.

How this works: the agent must stay lean (no aiohttp on a Raspberry Pi), and two GET routes
need little: :class:`AgentHttp` reads one request head (at most :data:`MAX_HEAD_BYTES`, within
``request_timeout``), answers it and closes the connection (``Connection: close``, no
keep-alive, no request body). At most ``max_connections`` are served at once; one more is
answered ``503`` and closed at once, and counted (``telemetry_agent_http_refused_total``).
A client that sends nothing, or reads nothing, is cut at ``request_timeout``.

- ``GET /metrics``: Prometheus text (:mod:`telemetry.agent.metrics`).
- ``GET /healthz``: ``200 ok`` while the agent runs and its sender task is alive, else
  ``503``. Being connected to a collector is not health: an agent that spools through a
  collector outage is doing its job (``telemetry_agent_connected`` says it).

``HEAD`` is answered like ``GET`` without the body; other methods get ``405``.
"""

from __future__ import annotations

import asyncio
import contextlib

from telemetry.agent.agent import Agent
from telemetry.agent.metrics import CONTENT_TYPE, AgentMetrics
from telemetry.agent.reload import SourceSet
from telemetry.config.agent import AgentHttpConfig
from telemetry.log import get_logger

log = get_logger("telemetry.agent.http")

#: Longest request head (request line and headers) read; a longer one is answered 431.
MAX_HEAD_BYTES = 8192
#: After an error answer, the client's unread bytes are read and discarded for at most this
#: long and this much before closing ("lingering close"): closing a socket with unread input
#: sends a reset, which can destroy the answer before the client reads it.
LINGER_SECONDS = 0.5
LINGER_MAX_BYTES = 64 * 1024

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def response(status: int, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    headers = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return headers if head else headers + body


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """``(method, path)`` of a request head, the query string dropped; None if malformed."""
    line, _, _ = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return method, target.partition("?")[0]


class AgentHttp:
    """The agent's HTTP port: ``/metrics`` and ``/healthz``, bounded (see the module doc)."""

    def __init__(self, config: AgentHttpConfig, agent: Agent, sources: SourceSet) -> None:
        self.config = config
        self._agent = agent
        self.refused = 0
        self.metrics = AgentMetrics(agent, sources, http_refused=lambda: self.refused)
        self._server: asyncio.Server | None = None
        self._active = 0
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; an address in use raises ``OSError`` (the agent does not start)."""
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=MAX_HEAD_BYTES
        )
        log.info("agent_http_listening", host=self.config.host, port=self.port)

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when ``port`` is 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the agent's HTTP port is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end the connections being served."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def answer(self, method: str, path: str) -> bytes:
        """The response to one request (no I/O)."""
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return response(405, b"only GET and HEAD\n", "text/plain", head=head)
        if path == "/metrics":
            return response(200, self.metrics.render(), CONTENT_TYPE, head=head)
        if path == "/healthz":
            if self._agent.running:
                return response(200, b"ok\n", "text/plain", head=head)
            return response(503, b"agent not running\n", "text/plain", head=head)
        return response(404, b"/metrics or /healthz\n", "text/plain", head=head)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._active >= self.config.max_connections:
                self.refused += 1
                await self._reply(writer, response(503, b"busy\n", "text/plain"))
                await _linger(reader, writer)
                return
            self._active += 1
            try:
                await self._serve(reader, writer)
            finally:
                self._active -= 1
        except asyncio.CancelledError:
            raise
        except Exception:  # a connection's task root: one bad client never ends the port
            log.exception("agent_http_failed")
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.config.request_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            await self._reply(writer, response(408, b"request timeout\n", "text/plain"))
            await _linger(reader, writer)
            return
        except asyncio.LimitOverrunError:
            await self._reply(writer, response(431, b"request head too large\n", "text/plain"))
            await _linger(reader, writer)
            return
        except (asyncio.IncompleteReadError, OSError):
            return  # the client went away
        request = parse_request_line(head)
        if request is None:
            await self._reply(writer, response(400, b"bad request\n", "text/plain"))
            await _linger(reader, writer)
            return
        await self._reply(writer, self.answer(*request))

    async def _reply(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write ``data`` within ``request_timeout``; a client that reads nothing is cut."""
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(self.config.request_timeout):
                writer.write(data)
                await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read and discard what the client still sends, bounded in time and
    bytes (:data:`LINGER_SECONDS`, :data:`LINGER_MAX_BYTES`), so the answer is not reset."""
    with contextlib.suppress(OSError, TimeoutError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
        discarded = 0
        async with asyncio.timeout(LINGER_SECONDS):
            while discarded < LINGER_MAX_BYTES:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                discarded += len(chunk)
