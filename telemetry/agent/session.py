"""The agent's side of one connection, sans-I/O: window, acks, nacks, drain, timeouts, books.

How this works: an :class:`AgentSession` holds the rules of one welcomed connection as a
plain object: no asyncio, no socket, no awaits, and the time always passed in (``now``). The
asyncio sender (:mod:`telemetry.agent.sender`) reads, writes and sleeps; it tells the session
what happened and does what the session answers:

- :meth:`~AgentSession.receive` takes a collector message. An ``ack`` frees the batch's
  window slot and answers :class:`AckBatch` (the caller removes the batch from the spool); a
  ``nack`` keeps the slot and schedules the resend after ``retry_after_ms``; a ``goaway``
  stops new sends and starts the drain (in-flight batches may still be acked until
  ``ack_timeout``); an ``error`` or a second ``welcome`` ends the session (:class:`EndSession`).
- :meth:`~AgentSession.next_action` is asked after every event and every write, and when the
  sender wakes ("a batch was spooled", "time passed"). It answers one thing to do at a time:
  :class:`EndSession` when the drain is over or the oldest in-flight batch has waited
  ``ack_timeout``; :class:`SendFrame` for a nacked batch whose retry is due, then for the
  spool's next batches in ``seq`` order while fewer than ``window`` are unacked (nacked ones
  waiting for their retry still count), then for a heartbeat after ``heartbeat_interval`` of
  silence; :class:`DropBatch` for a batch larger than the collector's ``max_frame_bytes``
  (the collector would close the connection on it, forever); None when nothing is due before
  :attr:`~AgentSession.next_deadline`.
- :meth:`~AgentSession.written` says a :class:`SendFrame` went out: the heartbeat clock
  restarts and the :class:`SenderStats` count the send (a ``seq`` sent before, on any
  connection, is a resend). :meth:`~AgentSession.lost` says the connection broke.

The session reads the spool through :class:`SpoolView` (which batches exist) but never
changes it: acks and drops come back as actions for the caller to apply. Every rule about
what the collector may answer belongs here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from telemetry.agent.spool import BATCH_TOO_LARGE, SpooledBatch
from telemetry.log import get_logger
from telemetry.protocol import HEADER_SIZE, HEARTBEAT, Ack, Error, Goaway, Nack, Welcome

if TYPE_CHECKING:
    from telemetry.protocol.messages import ServerMessage

# The sender's logger: the session's events are the sender's, as they were before the split.
log = get_logger("telemetry.agent.sender")


class Outcome(enum.Enum):
    """Why a connection ended."""

    CONNECT_FAILED = "connect_failed"
    LOST = "lost"
    ERROR = "error"
    GOAWAY = "goaway"
    ACK_TIMEOUT = "ack_timeout"


@dataclass
class SenderStats:
    """Counters of the sender since start: batch sends (resends included), the resends among
    them, and the readings sent at least once."""

    batches_sent: int = 0
    batches_resent: int = 0
    sent_readings: int = 0  # first sends only
    #: The highest ``seq`` sent so far: a ``seq`` at or below it is a resend.
    highest_seq: int = -1

    def count_send(self, batch: SpooledBatch) -> bool:
        """Count one send of ``batch``; True when it is a resend."""
        self.batches_sent += 1
        if batch.seq <= self.highest_seq:
            self.batches_resent += 1
            return True
        self.highest_seq = batch.seq
        self.sent_readings += len(batch)
        return False


class SpoolView(Protocol):
    """What the session reads of the spool (a :class:`~telemetry.agent.spool.Spool` is one)."""

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next added batch will get."""
        ...

    @property
    def oldest_seq(self) -> int | None:
        """The smallest ``seq`` still held, or None when the spool is empty."""
        ...

    def get(self, seq: int) -> SpooledBatch | None:
        """The batch ``seq`` if it is still held."""
        ...


@dataclass(frozen=True)
class SendFrame:
    """Write ``frame``, then call :meth:`AgentSession.written`: a batch's frame, or a heartbeat
    (``batch`` None)."""

    frame: bytes
    batch: SpooledBatch | None = None


@dataclass(frozen=True)
class AckBatch:
    """Remove batch ``seq`` from the spool as acked, ``rejected`` of its readings rejected."""

    seq: int
    rejected: int


@dataclass(frozen=True)
class DropBatch:
    """Remove batch ``seq`` from the spool unacked, counted as dropped for ``reason``."""

    seq: int
    reason: str


@dataclass(frozen=True)
class EndSession:
    """The session is over: close the connection."""

    outcome: Outcome


class AgentSession:
    """The window, retry and drain rules of one welcomed connection, and their books.

    ``window`` is the agent's own; the session uses the smaller of it and the welcome's.
    ``stats`` outlive the session: the sender passes the same ones to every session.
    """

    def __init__(
        self,
        welcome: Welcome,
        spool: SpoolView,
        stats: SenderStats,
        now: float,
        *,
        window: int,
        ack_timeout: float,
        heartbeat_interval: float,
    ) -> None:
        self.window = min(window, welcome.window)
        self.max_frame_bytes = welcome.max_frame_bytes
        self.ack_timeout = ack_timeout
        self.heartbeat_interval = heartbeat_interval
        self.stats = stats
        #: Why the session ended, once it has.
        self.outcome: Outcome | None = None
        self._spool = spool
        #: seq -> ack deadline; insertion order is send order, so the first is the oldest.
        self._inflight: dict[int, float] = {}
        #: seq -> when to resend; nacked batches hold their window slot until resent.
        self._retry: dict[int, float] = {}
        self._cursor = 0  # every seq below it was sent on this connection, or is gone
        self._drain_deadline: float | None = None
        self._last_write = now

    @property
    def unacked(self) -> int:
        """Batches sent on this connection and waiting for their ack (not the nacked ones)."""
        return len(self._inflight)

    @property
    def draining(self) -> bool:
        """True after a ``goaway``: nothing new is sent, in-flight batches may finish."""
        return self._drain_deadline is not None

    @property
    def next_deadline(self) -> float:
        """When :meth:`next_action` may have something to do even if nothing happens before:
        a heartbeat, an ack timeout, the drain's end or a retry."""
        deadlines = [self._last_write + self.heartbeat_interval]
        if self._inflight:
            deadlines.append(next(iter(self._inflight.values())))
        if self._drain_deadline is not None:
            deadlines.append(self._drain_deadline)
        elif self._retry:
            deadlines.append(min(self._retry.values()))
        return min(deadlines)

    # --- events -------------------------------------------------------------------------

    def receive(self, message: ServerMessage, now: float) -> AckBatch | EndSession | None:
        """A message from the collector; what the spool must do with it, or the end."""
        if isinstance(message, Ack):
            return self._on_ack(message)
        if isinstance(message, Nack):
            self._on_nack(message, now)
        elif isinstance(message, Goaway):
            log.info("goaway_received", reason=message.reason, unacked=len(self._inflight))
            if self._drain_deadline is None:
                self._drain_deadline = now + self.ack_timeout
        elif isinstance(message, Error):
            log.error("collector_error", code=message.code, detail=message.detail)
            return self._end(Outcome.ERROR)
        elif isinstance(message, Welcome):
            return self.lost("unexpected second welcome")
        return None

    def lost(self, error: str) -> EndSession:
        """The connection broke (EOF, reset, a broken stream): the session is over."""
        log.warning("connection_lost", error=error)
        return self._end(Outcome.LOST)

    def written(self, sent: SendFrame, now: float) -> None:
        """The frame of ``sent`` (from :meth:`next_action`) was written at ``now``."""
        self._last_write = now
        batch = sent.batch
        if batch is None:
            log.debug("heartbeat_sent")
            return
        resend = self.stats.count_send(batch)
        log.debug("batch_sent", seq=batch.seq, readings=len(batch), resend=resend)

    # --- decisions ----------------------------------------------------------------------

    def next_action(self, now: float) -> SendFrame | DropBatch | EndSession | None:
        """The next thing to do at ``now``, or None until :attr:`next_deadline` or an event.

        A :class:`SendFrame` for a batch puts it in flight at once: an ack may arrive before
        the write completes.
        """
        if self.outcome is not None:
            return EndSession(self.outcome)
        if self._drain_deadline is not None:
            if not self._inflight:
                return self._end(Outcome.GOAWAY)
            if now >= self._drain_deadline:
                log.warning("goaway_drain_timeout", unacked=len(self._inflight))
                return self._end(Outcome.GOAWAY)
        if self._inflight:
            seq, deadline = next(iter(self._inflight.items()))
            if now >= deadline:
                log.warning("ack_timeout", seq=seq, ack_timeout=self.ack_timeout)
                return self._end(Outcome.ACK_TIMEOUT)
        if self._drain_deadline is None:
            action = self._due_retry(now) or self._next_new(now)
            if action is not None:
                return action
        if now - self._last_write >= self.heartbeat_interval:
            return SendFrame(HEARTBEAT)
        return None

    # --- internals ----------------------------------------------------------------------

    def _end(self, outcome: Outcome) -> EndSession:
        if self.outcome is None:  # the first reason wins
            self.outcome = outcome
        return EndSession(self.outcome)

    def _on_ack(self, ack: Ack) -> AckBatch | None:
        self._inflight.pop(ack.seq, None)
        self._retry.pop(ack.seq, None)
        batch = self._spool.get(ack.seq)
        if batch is None:  # dropped from a full spool while in flight, or a duplicate ack
            log.debug("ack_for_unknown_batch", seq=ack.seq)
            return None
        rejected = {r.index for r in ack.rejected if 0 <= r.index < len(batch)}
        for rejection in ack.rejected:
            log.warning(
                "reading_rejected", seq=ack.seq, index=rejection.index, errors=rejection.errors
            )
        accepted = len(batch) - len(rejected)
        if ack.accepted != accepted:
            log.warning("ack_count_mismatch", seq=ack.seq, accepted=ack.accepted, expected=accepted)
        log.debug("batch_acked", seq=ack.seq, accepted=accepted, rejected=len(rejected))
        return AckBatch(ack.seq, len(rejected))

    def _on_nack(self, nack: Nack, now: float) -> None:
        if self._inflight.pop(nack.seq, None) is None:
            log.debug("nack_for_unknown_batch", seq=nack.seq)
            return
        delay = max(0, nack.retry_after_ms) / 1000
        self._retry[nack.seq] = now + delay
        log.info("batch_nacked", seq=nack.seq, reason=nack.reason, retry_after_ms=delay * 1000)

    def _due_retry(self, now: float) -> SendFrame | None:
        for seq, due in list(self._retry.items()):
            if due <= now:
                del self._retry[seq]
                batch = self._spool.get(seq)
                if batch is not None:  # else dropped from a full spool: the slot is free
                    return self._send(batch, now)
        return None

    def _next_new(self, now: float) -> SendFrame | DropBatch | None:
        if len(self._inflight) + len(self._retry) >= self.window:
            return None
        batch = self._next_batch()
        if batch is None:
            return None
        size = len(batch.frame) - HEADER_SIZE
        if size > self.max_frame_bytes:
            log.error(
                "batch_too_large",
                seq=batch.seq,
                bytes=size,
                max_frame_bytes=self.max_frame_bytes,
            )
            return DropBatch(batch.seq, BATCH_TOO_LARGE)
        return self._send(batch, now)

    def _next_batch(self) -> SpooledBatch | None:
        spool = self._spool
        oldest = spool.oldest_seq
        if oldest is None:
            return None
        self._cursor = max(self._cursor, oldest)
        while self._cursor < spool.next_seq:
            batch = spool.get(self._cursor)
            self._cursor += 1
            if batch is not None:
                return batch
        return None

    def _send(self, batch: SpooledBatch, now: float) -> SendFrame:
        self._inflight[batch.seq] = now + self.ack_timeout
        return SendFrame(batch.frame, batch)
