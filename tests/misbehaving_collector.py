"""A scriptable misbehaving collector, and a proxy that goes silent, for the agent's tests.

:class:`MisbehavingCollector` speaks just enough of protocol v1 to lie in every way the agent
must survive: a welcome with any ``window``/``max_frame_bytes`` (or an ``error``, a
``goaway``, or a close right after it), acks built by a test function (lying counts, acks for
seqs never sent), nacks with any ``retry_after_ms``, and a mode that never reads after the
hello (the agent's writes block). It stores nothing: a test then recovers the agent's spool
into a real collector (:func:`recover`) and checks that every reading fed to the agent is
stored exactly once or counted with a reason.

:class:`BlackholeProxy` forwards bytes both ways until :meth:`BlackholeProxy.blackhole` is
called; from then on it neither reads nor forwards, and keeps the connections open: a path
that went silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from telemetry.agent import Agent, Spool
from telemetry.config import AgentSection
from telemetry.protocol import FrameDecoder, encode_frame
from tests.integration.fake_collector import scaled

#: (seq, readings in the batch, connection number) -> messages to answer (JSON objects).
Answer = Callable[[int, int, int], list[dict[str, Any]]]


def honest(seq: int, readings: int, conn: int) -> list[dict[str, Any]]:
    """Ack the batch as stored (without storing it: use it only when nothing is checked)."""
    return [{"type": "ack", "seq": seq, "accepted": readings}]


def _listening_socket(rcvbuf: int | None) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf is not None:  # inherited by accepted sockets: a small window fills fast
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


class _Listener:
    """A TCP server on a free port of 127.0.0.1 (with a small receive buffer, so that a peer
    that stops reading is felt quickly); subclasses handle the connections."""

    rcvbuf: int
    _server: asyncio.Server | None
    _writers: list[asyncio.StreamWriter]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._handle, sock=_listening_socket(self.rcvbuf))
        return self

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class MisbehavingCollector(_Listener):
    """Set the behaviour fields before or during a test."""

    #: The welcome's fields (``collector``, ``window``, ``max_frame_bytes``).
    welcome: dict[str, Any] = field(
        default_factory=lambda: {"collector": "liar", "window": 8, "max_frame_bytes": 1 << 20}
    )
    #: After the welcome: "serve", "close", "goaway" or "error" (both then close).
    after_welcome: str = "serve"
    #: Detail of that error / reason of that goaway.
    text: str = "told to"
    #: What to answer each batch; None: nothing.
    answer: Answer | None = None
    #: False: never read again after the hello (the agent's writes pile up and block).
    read: bool = True
    #: SO_RCVBUF of accepted sockets (small: a collector that stops reading blocks writes).
    rcvbuf: int | None = None
    # --- what happened
    connections: int = 0
    batches: list[tuple[int, int, int]] = field(default_factory=list)  # (conn, seq, readings)

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def seqs(self) -> list[int]:
        return [seq for _, seq, _ in self.batches]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self._writers.append(writer)
        decoder = FrameDecoder(1 << 30)

        def send(obj: dict[str, Any]) -> None:
            if not writer.is_closing():
                writer.write(encode_frame(json.dumps(obj).encode()))

        try:
            welcomed = False
            while True:
                if welcomed and not self.read:
                    await asyncio.sleep(3600)  # hold the connection, read nothing
                data = await reader.read(65536)
                if not data:
                    return
                for payload in decoder.feed(data):
                    if not payload:
                        continue
                    message = json.loads(payload)
                    if message.get("type") == "hello":
                        send({"type": "welcome", "protocol": 1, **self.welcome})
                        welcomed = True
                        if self.after_welcome == "close":
                            return
                        if self.after_welcome == "goaway":  # then close, as a drain
                            send({"type": "goaway", "reason": self.text})
                            return
                        elif self.after_welcome == "error":
                            send({"type": "error", "code": "told_to", "detail": self.text})
                            return
                    elif message.get("type") == "batch":
                        seq, count = message["seq"], len(message["readings"])
                        self.batches.append((conn, seq, count))
                        if self.answer is not None:
                            for answer in self.answer(seq, count, conn):
                                send(answer)
                    if not self.read:
                        break
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()


class BlackholeProxy(_Listener):
    """A TCP proxy to ``target`` that stops forwarding (and reading) when told to."""

    def __init__(self, target: str, *, rcvbuf: int = 4096) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.rcvbuf = rcvbuf
        self.connections = 0
        self._silent = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    def blackhole(self) -> None:
        """From now on, nothing is read or forwarded; connections stay open."""
        self._silent.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while not self._silent.is_set():
                data = await reader.read(65536)
                if not data or self._silent.is_set():
                    break
                writer.write(data)
                await writer.drain()
        if self._silent.is_set():
            await asyncio.sleep(3600)
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.append(up_writer)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer),
                return_exceptions=True,
            )


def values_fed(count: int) -> list[float]:
    return [float(n) for n in range(count)]


async def recover(
    spool: Spool,
    collector_endpoint: str,
    stored_values: Callable[[], list[float]],
    fed: int,
    **overrides: Any,
) -> None:
    """Deliver what ``spool`` holds to a real collector, then check: every value
    ``0 .. fed-1`` is stored exactly once, or counted (dropped/rejected) with a reason."""
    settings: dict[str, Any] = {
        "id": "test-agent",
        "batch_size": 10,
        "flush_interval": 0.05,
        "reconnect_min": 0.01,
        "reconnect_max": 0.1,
        "connect_timeout": scaled(2.0),
        "ack_timeout": scaled(5.0),
        "shutdown_timeout": scaled(5.0),
        **overrides,
    }
    async with Agent(AgentSection(endpoints=[collector_endpoint], **settings), spool) as agent:
        assert await agent.wait_acked(scaled(10.0)), agent.ledger
        ledger = agent.ledger
    counts = Counter(stored_values())
    duplicates = [v for v, n in counts.items() if n > 1]
    assert not duplicates, f"stored more than once: {duplicates[:10]}"
    missing = [v for v in values_fed(fed) if v not in counts]
    assert ledger.pending == 0, ledger
    counted = ledger.dropped + ledger.rejected
    assert len(missing) == counted, (len(missing), ledger)
    assert counted == 0 or sum(ledger.dropped_by_reason.values()) == ledger.dropped
