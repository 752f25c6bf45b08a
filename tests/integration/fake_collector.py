"""A small collector for agent tests: a real asyncio TCP server on port 0 speaking protocol v1.

Its answers come from the collector's own sans-I/O session core
(:class:`telemetry.collector.session.Session`): ``welcome`` for a ``hello``, an ``ack`` for each
``batch`` with its invalid readings rejected, as a real collector would, with no sinks behind it.
Around it the fake can be told to misbehave:
nack chosen seqs once, send ``goaway`` after some acks, drop the connection mid-stream,
withhold acks, hold acks until the window is full, or answer a hello with an ``error``.
It records everything it saw and counts window violations (more unacked batches than the
``window`` it announced). Tests wait on :meth:`FakeCollector.wait_for`, woken by every event.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telemetry.collector.session import Deliver, Send, Session
from telemetry.config import IngestConfig
from telemetry.protocol import (
    Batch,
    Error,
    FrameDecoder,
    Hello,
    Nack,
    decode_json,
    encode_frame,
    parse_client_message,
)

TIMEOUT_FACTOR = float(os.environ.get("TELEMETRY_TEST_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """A test timeout, stretched by ``TELEMETRY_TEST_TIMEOUT_FACTOR`` on slow machines."""
    return seconds * TIMEOUT_FACTOR


def unused_endpoint() -> str:
    """``127.0.0.1:port`` where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@dataclass
class Received:
    """One batch as the fake received it."""

    conn: int
    seq: int
    readings: list[Any]
    at: float


@dataclass
class _Conn:
    id: int
    writer: asyncio.StreamWriter
    session: Session
    batches: int = 0
    #: seq -> the session's delivery of batches received and not yet acked or nacked, in
    #: arrival order (bytes: every reading was rejected, this is the ready ack).
    unacked: dict[int, Deliver | bytes] = field(default_factory=dict)
    hold_timer: asyncio.TimerHandle | None = None


class FakeCollector:
    """A scriptable collector; set the behaviour attributes before or during a test."""

    def __init__(self, *, window: int = 8, name: str = "fake") -> None:
        self.window = window
        self.name = name
        # --- behaviour
        #: seq -> retry_after_ms: the first receipt of that seq is nacked.
        self.nack: dict[int, int] = {}
        #: Send ``goaway`` once, right after this many acks in total.
        self.goaway_after_acks: int | None = None
        #: Close the connection, once, when it has received this many batches (no acks).
        self.drop_after_batches: int | None = None
        #: Keep every batch unacked until :meth:`release` or the flag is cleared.
        self.withhold_acks = False
        #: Ack only 20 ms after ``window`` batches are unacked, or 50 ms after the first held.
        self.hold_until_window = False
        #: Answer the next hello with an ``error`` of this code, once.
        self.error_on_hello: str | None = None
        # --- what happened
        self.hellos: list[Hello] = []
        self.batches: list[Received] = []
        self.acked: list[int] = []
        self.nacked: list[tuple[int, float]] = []
        self.goaways = 0
        self.heartbeats = 0
        self.connections = 0
        self.max_unacked = 0
        self.window_violations = 0
        self._conns: dict[int, _Conn] = {}
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> FakeCollector:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns.values()):
                conn.writer.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeCollector:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- for tests ------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
        """Wait until ``predicate()`` holds; fail the test after ``timeout`` (scaled)."""
        try:
            async with asyncio.timeout(scaled(timeout)):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: condition not met within {timeout} s") from None

    def release(self) -> None:
        """Ack every batch held so far."""
        for conn in self._conns.values():
            self._ack_all(conn)

    def seqs_received(self) -> list[int]:
        return [batch.seq for batch in self.batches]

    def readings_received(self) -> int:
        return sum(len(batch.readings) for batch in self.batches)

    # --- server ---------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _send(self, conn: _Conn, frame: bytes) -> None:
        if not conn.writer.is_closing():
            conn.writer.write(frame)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        config = IngestConfig(window=self.window, max_frame_bytes=1048576)
        session = Session(config, collector_id=self.name, peer=f"conn-{self.connections}")
        conn = _Conn(self.connections, writer, session)
        self._conns[conn.id] = conn
        decoder = FrameDecoder()
        try:
            while not writer.is_closing():
                data = await reader.read(65536)
                if not data:
                    break
                for payload in decoder.feed(data):
                    if not self._on_frame(conn, payload):
                        return
                    self._notify()
        except (OSError, ConnectionError):
            pass
        finally:
            if conn.hold_timer is not None:
                conn.hold_timer.cancel()
            del self._conns[conn.id]
            writer.close()
            self._notify()

    def _on_frame(self, conn: _Conn, payload: bytes) -> bool:
        """Handle one frame; False closes the connection."""
        if not payload:
            self.heartbeats += 1
            return True
        message = parse_client_message(decode_json(payload))  # to record what was sent
        if isinstance(message, Hello):
            self.hellos.append(message)
            if self.error_on_hello is not None:
                code, self.error_on_hello = self.error_on_hello, None
                self._send(conn, encode_frame(Error(code=code, detail="told to").encode()))
                return False
        actions = list(conn.session.receive([payload]))
        if not isinstance(message, Batch):
            for action in actions:
                if isinstance(action, Send):
                    self._send(conn, action.data)  # the welcome
            return True
        loop = asyncio.get_running_loop()
        self.batches.append(Received(conn.id, message.seq, message.readings, loop.time()))
        conn.batches += 1
        (outcome,) = (a for a in actions if isinstance(a, Send | Deliver))
        conn.unacked[message.seq] = outcome if isinstance(outcome, Deliver) else outcome.data
        self.max_unacked = max(self.max_unacked, len(conn.unacked))
        if len(conn.unacked) > self.window:
            self.window_violations += 1
        if message.seq in self.nack:
            retry = self.nack.pop(message.seq)
            if isinstance(outcome, Deliver):
                conn.session.abandoned(outcome)
            del conn.unacked[message.seq]
            self.nacked.append((message.seq, loop.time()))
            nack = Nack(seq=message.seq, reason="told to", retry_after_ms=retry)
            self._send(conn, encode_frame(nack.encode()))
        elif self.drop_after_batches is not None and conn.batches >= self.drop_after_batches:
            self.drop_after_batches = None
            return False
        elif self.withhold_acks:
            pass
        elif self.hold_until_window:
            # With the window full, wait a little more before acking: a batch the agent sends
            # beyond its window arrives meanwhile and is counted as a violation.
            delay = 0.02 if len(conn.unacked) >= self.window else 0.05
            if conn.hold_timer is not None and delay < conn.hold_timer.when() - loop.time():
                conn.hold_timer.cancel()
                conn.hold_timer = None
            if conn.hold_timer is None:
                conn.hold_timer = loop.call_later(delay, self._ack_all, conn)
        else:
            self._ack_all(conn)
        return True

    def _ack_all(self, conn: _Conn) -> None:
        if conn.hold_timer is not None:
            conn.hold_timer.cancel()
            conn.hold_timer = None
        for seq, outcome in list(conn.unacked.items()):
            del conn.unacked[seq]
            ack = outcome if isinstance(outcome, bytes) else conn.session.settled(outcome, [])
            self._send(conn, ack)
            self.acked.append(seq)
            if self.goaway_after_acks is not None and len(self.acked) == self.goaway_after_acks:
                self.goaways += 1
                self._send(conn, conn.session.goaway("draining"))
        self._notify()


def reading(n: int, **extra: Any) -> dict[str, Any]:
    """A valid reading dict numbered ``n``."""
    return {"sensor": f"test/s-{n % 3}", "value": float(n), **extra}
