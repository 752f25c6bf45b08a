"""The agent's link to one collector: bytes moved by asyncio, framing by the sans-I/O decoder.

How this works: :meth:`CollectorLink.open` resolves the endpoint (falling back to the
addresses it last resolved to, see :func:`resolve`) and connects. :meth:`CollectorLink.send`
writes one frame then drains, so a slow collector slows the agent instead of growing a
buffer; :meth:`CollectorLink.receive` feeds what it reads to a
:class:`~telemetry.protocol.FrameDecoder` and returns the next collector message.
:meth:`CollectorLink.handshake` performs ``hello`` -> ``welcome``. Both the long-lived sender
and :func:`~telemetry.agent.oneshot.send_once` use it; what to send when is decided elsewhere
(:mod:`telemetry.agent.session`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections import deque

from telemetry.config import parse_endpoint
from telemetry.log import get_logger
from telemetry.protocol import (
    Error,
    FrameDecoder,
    Hello,
    ProtocolViolation,
    Welcome,
    encode_frame,
    parse_server_message,
)
from telemetry.protocol.messages import DEFAULT_MAX_BATCH, ServerMessage
from telemetry.tls import ClientTls, TlsHandshakeError, closed_hint, explain_client_error

log = get_logger("telemetry.agent.connection")

# Collector messages are small, but an ack listing thousands of rejected readings is not.
MAX_SERVER_FRAME_BYTES = 64 * 1024 * 1024
_READ_SIZE = 65536
#: Payloads larger than this are looked at before the (much slower) model validation.
_PRECHECK_BYTES = 256 * 1024


def _precheck(payload: bytes) -> None:
    """Refuse an ack listing more rejected readings than any batch holds before validating
    it: 200,000 entries would block the event loop for seconds (fast ``json`` only here)."""
    with contextlib.suppress(ValueError, RecursionError):
        obj = json.loads(payload)
        rejected = obj.get("rejected") if isinstance(obj, dict) else None
        if isinstance(rejected, list) and len(rejected) > DEFAULT_MAX_BATCH:
            raise ProtocolViolation(
                f"ack lists {len(rejected)} rejected readings, more than a batch holds"
            )


#: The addresses each ``(host, port)`` last resolved to: a collector that stopped makes some
#: container DNS servers answer slowly for a while, for the other names too.
_last_good: dict[tuple[str, int], list[tuple[str, int]]] = {}
#: Seconds a lookup may take when last good addresses are there to fall back on.
FALLBACK_AFTER = 1.0


async def _getaddrinfo(host: str, port: int) -> list[tuple[str, int]]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys((str(info[4][0]), port) for info in infos))


async def resolve(host: str, port: int, timeout: float) -> list[tuple[str, int]]:
    """The addresses of ``host``; when the lookup fails, or takes more than
    :data:`FALLBACK_AFTER` seconds, those it resolved to last time (if it did)."""
    key = (host, port)
    cached = _last_good.get(key)
    try:
        async with asyncio.timeout(FALLBACK_AFTER if cached else timeout):
            addresses = await _getaddrinfo(host, port)
    except (OSError, TimeoutError) as exc:
        if not cached:
            raise
        log.warning("resolve_failed_using_last_good", host=host, error=repr(exc))
        return cached
    if addresses:
        _last_good[key] = addresses
    return addresses


async def remember(endpoints: list[str], timeout: float) -> None:
    """Resolve every endpoint once, so that a later failed lookup has a fallback."""
    for endpoint in endpoints:
        host, port = parse_endpoint(endpoint)
        with contextlib.suppress(OSError, TimeoutError):
            await resolve(host, port, timeout)


class CollectorError(Exception):
    """The collector sent an ``error`` message; the connection is over."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(
            f"collector error {code}: {detail}" if detail else f"collector error {code}"
        )
        self.code = code
        self.detail = detail


class ConnectionClosed(Exception):
    """The collector closed the connection."""


class CollectorLink:
    """A connected stream to one collector endpoint."""

    def __init__(
        self,
        endpoint: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        tls: bool = False,
    ) -> None:
        self.endpoint = endpoint
        #: Is the link TLS? (A plaintext link hung up on before ``welcome`` hints at a TLS port.)
        self.tls = tls
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(MAX_SERVER_FRAME_BYTES)
        self._frames: deque[bytes] = deque()

    @classmethod
    async def open(
        cls, endpoint: str, timeout: float, tls: ClientTls | None = None
    ) -> CollectorLink:
        """Connect to ``host:port``; OSError or TimeoutError when that fails.

        When the name lookup fails or is slow and the host resolved before, its last good
        addresses are used (see :func:`resolve`). With ``tls`` the TLS handshake is part of
        connecting (its deadline is ``timeout`` too); a failed one raises
        :class:`~telemetry.tls.TlsHandshakeError` (an OSError) naming the likely cause.
        """
        host, port = parse_endpoint(endpoint)
        secure = tls.connect_kwargs(host, timeout) if tls is not None else {}
        async with asyncio.timeout(timeout):
            addresses = await resolve(host, port, timeout)
            error: OSError | None = None
            for address in addresses:
                try:
                    reader, writer = await asyncio.open_connection(address[0], port, **secure)
                except ssl.SSLError as exc:
                    error = _tls_failed(exc, endpoint)
                    continue
                except OSError as exc:
                    error = exc
                    continue
                return cls(endpoint, reader, writer, tls=tls is not None)
        raise error or OSError(f"{endpoint}: no address")

    async def send(self, frame: bytes) -> None:
        """Write one complete frame and wait until the transport accepts more."""
        self._writer.write(frame)
        await self._writer.drain()

    async def receive(self) -> ServerMessage:
        """The next collector message; heartbeats are skipped.

        Raises :class:`ConnectionClosed` at EOF, a ``ProtocolError`` on a broken stream or
        message, and OSError when the connection breaks.
        """
        while True:
            while self._frames:
                payload = self._frames.popleft()
                if payload:
                    if len(payload) > _PRECHECK_BYTES:
                        _precheck(payload)
                    return parse_server_message(payload)
            data = await self._reader.read(_READ_SIZE)
            if not data:
                self._decoder.feed_eof()
                raise ConnectionClosed(f"collector {self.endpoint} closed the connection")
            self._frames.extend(self._decoder.feed(data))

    async def handshake(self, hello: Hello, timeout: float) -> Welcome:
        """Send ``hello`` and return the ``welcome``; :class:`CollectorError` on ``error``."""
        try:
            await self.send(encode_frame(hello.encode()))
            async with asyncio.timeout(timeout):
                message = await self.receive()
        except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate shows up here
            raise _tls_failed(exc, self.endpoint) from None
        except (ConnectionClosed, ConnectionResetError) as exc:
            hint = closed_hint(self.endpoint, self.tls)
            log.error("closed_before_welcome", endpoint=self.endpoint, error=str(exc), hint=hint)
            raise ConnectionClosed(hint) from None
        if isinstance(message, Error):
            raise CollectorError(message.code, message.detail)
        if not isinstance(message, Welcome):
            raise ProtocolViolation(f"expected welcome, got {message.type}")
        return message

    async def close(self) -> None:
        """Close the stream; never raises. A peer that does not read what is still buffered
        gets the connection aborted after a second, instead of holding it open."""
        self._writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
        except (TimeoutError, OSError):
            self._writer.transport.abort()


def _tls_failed(exc: ssl.SSLError, endpoint: str) -> TlsHandshakeError:
    """Log a failed TLS handshake with its likely cause; the error to raise."""
    explained = explain_client_error(exc, endpoint)
    log.error("tls_handshake_failed", endpoint=endpoint, error=explained)
    return TlsHandshakeError(explained)
