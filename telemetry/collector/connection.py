"""One agent connection's I/O: bytes in, the session's actions carried out, bytes out.

How this works: :meth:`Connection.run` reads chunks, cuts them into frames with the sans-I/O
:class:`~telemetry.protocol.FrameDecoder` and hands them to the connection's sans-I/O
:class:`~telemetry.collector.session.Session`, which holds every protocol rule. This class
only carries out what the session asks, in order: write a frame, queue fire-and-forget records
(awaited: a full sink queue stops the reading, which is the backpressure), deliver a batch (at
most ``window`` batches wait for their sinks at once: beyond that, the loop stops reading),
feed the dead-letter sinks. A task per delivered batch waits for the sinks and writes the
``ack`` or ``nack`` the session gives for the outcome.

A :class:`~telemetry.protocol.ProtocolError` sends one ``error`` and closes this connection
only. :meth:`Connection.drain` sends ``goaway``, stops reading, and lets in-flight batches
finish and be acked before the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import structlog

from telemetry.collector.actions import DeadLetters, Deliver, Queue, Send
from telemetry.collector.events import ConnectionEvents
from telemetry.collector.pipeline import DeliveryFailed, Pipeline, Refusal
from telemetry.collector.session import Session
from telemetry.log import get_logger
from telemetry.protocol import (
    BadHeader,
    FrameDecoder,
    HelloRequired,
    IdleTimeout,
    ProtocolError,
)
from telemetry.tls import looks_like_tls

log = get_logger("telemetry.connection")

READ_SIZE = 256 * 1024
#: Seconds a closing connection keeps discarding input so that its last replies arrive.
CLOSE_LINGER = 2.0
#: Frames handed to the session at a time, and seconds of work after which the connection
#: lets the other connections run: a client sending at full speed gets a bounded share.
SLICE_FRAMES = 64
WORK_SLICE = 0.001
#: Bytes of replies waiting for a peer that reads slowly before the connection stops reading
#: from it; if it takes nothing for ``idle_timeout`` seconds, the connection is closed.
WRITE_HIGH_WATER = 256 * 1024


class Connection:
    """Serves one TCP connection from an agent or a plain ``nc``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn_id: int,
        session: Session,
        pipeline: Pipeline,
        events: ConnectionEvents,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        self.session = session
        self.pipeline = pipeline
        self.events = events
        self.config = session.config
        self.peer = session.peer
        self.decoder = FrameDecoder(self.config.max_frame_bytes)
        self._window = asyncio.Semaphore(session.window)
        #: Ack tasks of batches the sinks have not settled (a set once there is one: an empty
        #: set, times 10,000 idle connections, shows in memory; docs/benchmarks.md).
        self._inflight: set[asyncio.Task[None]] | None = None
        self._draining = False
        self._reading = False
        self._write_closed = False  # set once we half-closed: nothing more may be written
        self._task: asyncio.Task[None] | None = None

    @property
    def agent(self) -> str | None:
        """The agent id of the ``hello``, if there was one."""
        return self.session.agent

    # --- life -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until EOF, a fatal error, an idle timeout or a drain."""
        self._task = asyncio.current_task()
        with structlog.contextvars.bound_contextvars(conn_id=self.conn_id, peer=self.peer):
            log.info("connection_opened")
            reason = "closed"
            max_age = self.config.max_connection_age
            rebalance = (
                asyncio.get_running_loop().call_later(
                    max_age * random.uniform(0.9, 1.1), self.drain, "max_connection_age"
                )
                if max_age
                else None
            )
            try:
                reason = await self._read_loop()
            except asyncio.CancelledError:
                if not self._draining:
                    raise
                if self._task is not None:
                    self._task.uncancel()  # our own drain, not a cancellation from outside
                reason = "drained"
            except ProtocolError as exc:
                reason = exc.code
                await self._fatal(exc)
            except (ConnectionError, OSError) as exc:
                reason = "connection_lost"
                log.info("connection_lost", error=str(exc))
            finally:
                if rebalance is not None:
                    rebalance.cancel()
                await self._finish_inflight()
                await self._close()
                self.session.closed()
                log.info("connection_closed", reason=reason, agent=self.agent)

    async def _read_loop(self) -> str:
        idle = self.config.idle_timeout
        loop = asyncio.get_running_loop()
        idle_deadline = loop.time() + idle  # moved on by every complete frame, heartbeats too
        first = True  # the first bytes may be a TLS ClientHello on this plaintext port
        frame_timeout = self.config.frame_timeout
        frame_deadline: float | None = None  # while a frame has started to arrive
        # With auth on, a connection has hello_timeout seconds to say who it is.
        hello_deadline = (
            None if self.session.auth.anonymous else loop.time() + self.config.hello_timeout
        )
        while not self._draining:
            self._reading = True
            if hello_deadline is not None and self.session.agent is not None:
                hello_deadline = None
            deadline = min(
                d for d in (idle_deadline, frame_deadline, hello_deadline) if d is not None
            )
            try:
                async with asyncio.timeout_at(deadline):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                error: ProtocolError
                if deadline == hello_deadline:
                    error = HelloRequired(f"no hello within {self.config.hello_timeout:g} s")
                elif deadline == frame_deadline:
                    error = IdleTimeout(f"a frame took more than {frame_timeout:g} s to arrive")
                else:
                    error = IdleTimeout(f"no frame for {idle:g} s")
                await self._fatal(error)
                return error.code
            finally:
                self._reading = False
            if not data:
                try:
                    self.decoder.feed_eof()
                except ProtocolError as exc:
                    log.warning("truncated_frame", detail=exc.detail)
                    return exc.code
                return "eof"
            self.events.bytes_received(len(data))
            if first and looks_like_tls(data[:2]):
                # The error frame is plaintext: the client's TLS layer sees no handshake
                # record and reports "wrong version number", which its log line explains.
                log.warning(
                    "tls_client_on_plaintext_port",
                    hint="a TLS client on a plaintext port? set [ingest.tls] or drop --tls",
                )
                await self._fatal(BadHeader("a TLS handshake on a plaintext port"))
                return "tls_client_on_plaintext_port"
            first = False
            try:
                frames = self.decoder.feed(data)
            except ProtocolError as exc:
                await self._handle_frames(exc.frames)
                raise
            if not self.decoder.in_frame:
                frame_deadline = None
            elif frames or frame_deadline is None:
                frame_deadline = loop.time() + frame_timeout
            if frames:
                idle_deadline = loop.time() + idle
                await self._handle_frames(frames)
            # A read may return at once, with no wait: let the other connections run.
            await asyncio.sleep(0)
        return "drained"

    def drain(self, reason: str = "draining") -> None:
        """Send ``goaway``, stop reading; in-flight batches still get their acks."""
        if self._draining:
            return
        self._draining = True
        self._send(self.session.goaway(reason))
        if self._reading and self._task is not None:
            self._task.cancel()

    async def _finish_inflight(self) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def _close(self) -> None:
        # Half-close first: the peer reads our last replies (acks, goaway, error), then EOF.
        # Then read and discard what it still sends for a moment: closing a socket with unread
        # input makes the kernel send a reset, which can destroy those replies in flight.
        self._write_closed = True
        with contextlib.suppress(OSError, RuntimeError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            async with asyncio.timeout(CLOSE_LINGER):
                while await self.reader.read(READ_SIZE):
                    pass
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def _fatal(self, exc: ProtocolError) -> None:
        self._send(self.session.fatal(exc.code, exc.detail))
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    def _send(self, data: bytes) -> None:
        if not self._write_closed and not self.writer.is_closing():
            self.writer.write(data)

    # --- the session's actions --------------------------------------------------------------

    async def _handle_frames(self, frames: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for start in range(0, len(frames), SLICE_FRAMES):
            for action in self.session.receive(frames[start : start + SLICE_FRAMES]):
                if isinstance(action, Send):
                    self._send(action.data)
                elif isinstance(action, Queue):
                    await self.pipeline.submit_fire_and_forget(action.records)
                elif isinstance(action, Deliver):
                    await self._deliver(action)
                elif isinstance(action, DeadLetters):
                    self.pipeline.dead_letter(action.letters)
                elif loop.time() - started >= WORK_SLICE:  # a Pause
                    await asyncio.sleep(0)
                    started = loop.time()
            if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                await self._wait_for_reader()
            if loop.time() - started >= WORK_SLICE:
                await asyncio.sleep(0)
                started = loop.time()

    async def _wait_for_reader(self) -> None:
        """Stop reading until the peer has taken our replies; close it if it never does."""
        idle = self.config.idle_timeout
        try:
            async with asyncio.timeout(idle):
                await self.writer.drain()
        except TimeoutError:
            log.warning(
                "peer_not_reading", pending_bytes=self.writer.transport.get_write_buffer_size()
            )
            raise ConnectionError(f"the peer read none of our replies for {idle:g} s") from None

    async def _deliver(self, deliver: Deliver) -> None:
        """Hand a batch's records to the pipeline; a task acks when the sinks have them."""
        await self._window.acquire()
        try:
            done = await self.pipeline.submit(deliver.records)
        except BaseException:
            self._window.release()
            self.session.abandoned(deliver)
            raise
        task = asyncio.create_task(self._ack_when_done(deliver, done))
        if self._inflight is None:
            self._inflight = set()
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _ack_when_done(
        self, deliver: Deliver, done: asyncio.Future[list[list[Refusal]]]
    ) -> None:
        try:
            refusals_by_sink = await done
        except DeliveryFailed as exc:
            self._send(self.session.failed(deliver, exc.sink, exc.reason))
        except BaseException:
            self.session.abandoned(deliver)  # the connection went first: the agent resends
            raise
        else:
            for refusals in refusals_by_sink:
                if refusals:
                    self.pipeline.dead_letter(self.pipeline.refusals_to_dead_letters(refusals))
            self._send(self.session.settled(deliver, refusals_by_sink))
        finally:
            self._window.release()


def peer_host(writer: asyncio.StreamWriter) -> str:
    """The IP address of the other end."""
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def peer_name(writer: asyncio.StreamWriter) -> str:
    """``host:port`` of the other end."""
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
