"""The sender: keeps a connection to a collector and moves the spool's batches over it.

How this works: :meth:`Sender.run` loops forever over the configured endpoints, in turn.
Each pass connects, sends ``hello``, waits for ``welcome`` (``connect_timeout``) and then
serves an :class:`~telemetry.agent.session.AgentSession`, the sans-I/O core that holds the
window, acks, nacks, goaway drain, timeouts and the send counters. This module only moves
bytes and applies the session's answers, with two tasks until the session ends:

- the *reader* awaits the collector's messages, hands each to the session's ``receive`` and
  applies what it answers (an ack removes the batch from the spool);
- the *writer* asks the session's ``next_action`` what to do, writes the frames it names (a
  batch, a heartbeat), drops from the spool what it says is too large, and otherwise sleeps
  on one :class:`asyncio.Event` (set by a new batch or an incoming message) with a timeout at
  the session's ``next_deadline``: no polling.

Everything unacked stays in the spool, so a lost connection costs a resend, never a reading.
Between two connections the sender waits a full-jitter backoff delay, reset by a ``welcome``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import structlog

from telemetry.agent.connection import (
    CollectorError,
    CollectorLink,
    ConnectionClosed,
    remember,
)
from telemetry.agent.session import (
    AckBatch,
    AgentSession,
    DropBatch,
    EndSession,
    Outcome,
    SenderStats,
    SendFrame,
)
from telemetry.agent.spool import Spool
from telemetry.backoff import Backoff
from telemetry.config import AgentSection
from telemetry.log import get_logger
from telemetry.protocol import Hello, ProtocolError

__all__ = ["Outcome", "Sender", "SenderStats"]

log = get_logger("telemetry.agent.sender")


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds passed, whichever comes first."""
    if timeout <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


class Sender:
    """Delivers the batches of a :class:`Spool` to the collectors of an :class:`AgentSection`.

    ``on_change`` is called after batches leave the spool (acked or dropped), so the owner
    can tell when everything is delivered. Call :meth:`wake` after adding a batch.
    """

    def __init__(
        self,
        section: AgentSection,
        spool: Spool,
        *,
        on_change: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.section = section
        self.spool = spool
        self.stats = SenderStats()
        #: The endpoint of the current connection (after ``welcome``), else None.
        self.endpoint: str | None = None
        self._on_change = on_change or (lambda: None)
        self._backoff = Backoff(section.reconnect_min, section.reconnect_max, rng)
        self._wake = asyncio.Event()
        self._next_endpoint = 0
        # Built now so that an id the protocol refuses fails here, not on every connect.
        self._hello = Hello(agent=section.id, token=section.token)

    def wake(self) -> None:
        """Tell the sender the spool has a new batch."""
        self._wake.set()

    async def run(self) -> None:
        """Connect, send and reconnect until cancelled. The task root of the sender."""
        endpoints = self.section.endpoints
        # Every endpoint's address, looked up now while the names resolve: a fallback for when
        # a lookup fails later (a failover is exactly when DNS may be slow).
        lookups = asyncio.create_task(remember(endpoints, self.section.connect_timeout))
        with structlog.contextvars.bound_contextvars(agent=self.section.id):
            try:
                await self._run(endpoints)
            finally:
                lookups.cancel()

    async def _run(self, endpoints: list[str]) -> None:
        while True:
            endpoint = endpoints[self._next_endpoint % len(endpoints)]
            self._next_endpoint += 1
            try:
                outcome = await self._connect_and_serve(endpoint)
            except Exception:  # a bug must not end delivery: log it and reconnect
                log.exception("sender_failed", endpoint=endpoint)
                outcome = Outcome.LOST
            delay = self._backoff.next_delay()
            log.info(
                "reconnect_scheduled",
                after=outcome.value,
                delay=round(delay, 3),
                attempt=self._backoff.attempt,
                next_endpoint=endpoints[self._next_endpoint % len(endpoints)],
            )
            await asyncio.sleep(delay)

    async def _connect_and_serve(self, endpoint: str) -> Outcome:
        section = self.section
        with structlog.contextvars.bound_contextvars(endpoint=endpoint):
            try:
                link = await CollectorLink.open(endpoint, section.connect_timeout)
            except (OSError, TimeoutError) as exc:
                log.warning("connect_failed", error=str(exc) or type(exc).__name__)
                return Outcome.CONNECT_FAILED
            try:
                try:
                    welcome = await link.handshake(self._hello, section.connect_timeout)
                except CollectorError as exc:
                    log.error("collector_error", code=exc.code, detail=exc.detail)
                    return Outcome.ERROR
                except (OSError, TimeoutError, ConnectionClosed, ProtocolError) as exc:
                    log.warning("handshake_failed", error=str(exc) or type(exc).__name__)
                    return Outcome.CONNECT_FAILED
                self._backoff.reset()
                session = AgentSession(
                    welcome,
                    self.spool,
                    self.stats,
                    asyncio.get_running_loop().time(),
                    window=section.window,
                    ack_timeout=section.ack_timeout,
                    heartbeat_interval=section.heartbeat_interval,
                )
                log.info(
                    "connected",
                    collector=welcome.collector,
                    window=session.window,
                    max_frame_bytes=welcome.max_frame_bytes,
                    pending_batches=self.spool.batches,
                )
                self.endpoint = endpoint
                outcome = await self._serve(link, session)
                log.info("disconnected", reason=outcome.value, unacked=session.unacked)
                return outcome
            finally:
                self.endpoint = None
                await link.close()

    async def _serve(self, link: CollectorLink, session: AgentSession) -> Outcome:
        """Run the reader and the writer until the session ends; the first to end says why."""
        reader = asyncio.create_task(self._read(link, session), name="agent-reader")
        writer = asyncio.create_task(self._write(link, session), name="agent-writer")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            return done.pop().result()
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    async def _read(self, link: CollectorLink, session: AgentSession) -> Outcome:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await link.receive()
            except (ConnectionClosed, OSError, ProtocolError) as exc:
                return session.lost(str(exc) or type(exc).__name__).outcome
            action = session.receive(message, loop.time())
            if isinstance(action, EndSession):
                return action.outcome
            if action is not None:
                self._apply(action)
            self.wake()

    async def _write(self, link: CollectorLink, session: AgentSession) -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            while True:
                # Cleared before asking the session: a wake during our awaits is not lost.
                self._wake.clear()
                while (action := session.next_action(loop.time())) is not None:
                    if isinstance(action, EndSession):
                        return action.outcome
                    if isinstance(action, SendFrame):
                        await link.send(action.frame)
                        session.written(action, loop.time())
                    else:
                        self._apply(action)
                await _wait(self._wake, session.next_deadline - loop.time())
        except OSError as exc:
            return session.lost(str(exc) or type(exc).__name__).outcome

    def _apply(self, action: AckBatch | DropBatch) -> None:
        """Do to the spool what the session decided, then tell the owner."""
        if isinstance(action, AckBatch):
            self.spool.ack(action.seq, action.rejected)
        else:
            self.spool.drop(action.seq, action.reason)
        self._on_change()
