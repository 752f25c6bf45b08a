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
  silence; :class:`SplitBatch` for a batch larger than the collector's ``max_frame_bytes``
  (the collector would close the connection on it, forever: its readings are re-batched into
  frames that fit, under new seqs); None when nothing is due before
  :attr:`~AgentSession.next_deadline`.
- :meth:`~AgentSession.written` says a :class:`SendFrame` went out: the heartbeat clock
  restarts and the :class:`SenderStats` count the send (a ``seq`` sent before, on any
  connection, is a resend). :meth:`~AgentSession.lost` says the connection broke.

The session reads the spool through :class:`SpoolView` (which batches exist) but never
changes it: acks, splits and drops come back as actions for the caller to apply. Every rule
about what the collector may answer belongs here, and the session trusts the collector only
as far as the protocol allows (docs/delivery.md, "What the agent trusts"):

- :func:`check_welcome` refuses a welcome whose ``window`` is below 1 or whose
  ``max_frame_bytes`` cannot hold one reading of the largest size the schema allows
  (:data:`MIN_MAX_FRAME_BYTES`); the sender treats that as a failed handshake.
- An ``ack`` or ``nack`` counts only for a batch in flight on this connection. An ack whose
  counts do not add up to the batch (``accepted + rejected_count != readings``, a rejected
  index out of range or repeated, a negative count) is a protocol error: the batch stays
  spooled and the session ends with :attr:`Outcome.PROTOCOL_ERROR`.
- A nack's ``retry_after_ms`` is clamped to ``[retry_min, retry_max]``.
- Strings from the collector (goaway reason, error detail, rejection errors) are cut to
  :data:`PEER_TEXT_LIMIT` characters before they are logged; the rejections of one ack are
  one ``readings_rejected`` event with a few samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telemetry.agent.actions import (
    AckBatch,
    DropBatch,
    EndSession,
    Outcome,
    SenderStats,
    SendFrame,
    SplitBatch,
    SpoolView,
)
from telemetry.agent.spool import BATCH_TOO_LARGE, SpooledBatch
from telemetry.log import get_logger
from telemetry.protocol import HEADER_SIZE, HEARTBEAT, Ack, Error, Goaway, Nack, Welcome
from telemetry.protocol.schema import (
    MAX_TAGS,
    METRIC,
    SENSOR,
    TAG_KEY,
    TAG_VALUE,
    UNIT,
)

if TYPE_CHECKING:
    from telemetry.protocol.messages import ServerMessage

# The sender's logger: the session's events are the sender's, as they were before the split.
log = get_logger("telemetry.agent.sender")


#: Characters of a collector's string (goaway reason, error detail, rejection errors) logged.
PEER_TEXT_LIMIT = 200
#: Rejected readings of one ack whose errors are shown in its ``readings_rejected`` event.
REJECTION_SAMPLES = 3
#: The most bytes one valid reading can take encoded: every text field at its longest, each
#: character 4 bytes of UTF-8, every tag, plus the keys, value and timestamp (generous).
MAX_READING_BYTES = (
    4
    * (
        SENSOR.max_length
        + METRIC.max_length
        + UNIT.max_length
        + MAX_TAGS * (TAG_KEY.max_length + TAG_VALUE.max_length + 6)
    )
    + 512
)
#: The smallest ``max_frame_bytes`` a welcome may announce: a batch of one reading of
#: :data:`MAX_READING_BYTES` must fit, or some reading could never be delivered there.
MIN_MAX_FRAME_BYTES = MAX_READING_BYTES + 128


def clip(text: str, limit: int = PEER_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def check_welcome(welcome: Welcome) -> str | None:
    """Why ``welcome`` is not one to work with, or None when it is."""
    if welcome.window < 1:
        return f"window {welcome.window} < 1"
    if welcome.max_frame_bytes < MIN_MAX_FRAME_BYTES:
        return (
            f"max_frame_bytes {welcome.max_frame_bytes} < {MIN_MAX_FRAME_BYTES} "
            "(one reading of the largest size must fit)"
        )
    return None


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
        retry_min: float = 0.05,
        retry_max: float = 30.0,
    ) -> None:
        self.window = max(1, min(window, welcome.window))
        self.max_frame_bytes = welcome.max_frame_bytes
        self.ack_timeout = ack_timeout
        self.heartbeat_interval = heartbeat_interval
        self.retry_min = retry_min
        self.retry_max = max(retry_min, retry_max)
        self.stats = stats
        #: Batches acked on this connection: it did useful work (the sender's backoff resets).
        self.acked_batches = 0
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
    def ack_deadline(self) -> float | None:
        """When the oldest batch in flight times out, or the drain ends; None if neither."""
        deadlines = []
        if self._inflight:
            deadlines.append(next(iter(self._inflight.values())))
        if self._drain_deadline is not None:
            deadlines.append(self._drain_deadline)
        return min(deadlines) if deadlines else None

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
        if self.outcome is not None:  # over: what else it says is not acted upon
            return EndSession(self.outcome)
        if isinstance(message, Ack):
            return self._on_ack(message)
        if isinstance(message, Nack):
            return self._on_nack(message, now)
        if isinstance(message, Goaway):
            log.info("goaway_received", reason=clip(message.reason), unacked=len(self._inflight))
            if self._drain_deadline is None:
                self._drain_deadline = now + self.ack_timeout
        elif isinstance(message, Error):
            log.error("collector_error", code=clip(message.code), detail=clip(message.detail))
            return self._end(Outcome.ERROR)
        elif isinstance(message, Welcome):
            return self.lost("unexpected second welcome")
        return None

    def lost(self, error: str) -> EndSession:
        """The connection broke (EOF, reset, a broken stream): the session is over."""
        log.warning("connection_lost", error=clip(error))
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

    def stalled(self, waited: float, now: float) -> EndSession:
        """A write did not complete in time (the collector or the path stopped reading)."""
        log.warning(
            "write_stalled",
            waited=round(waited, 3),
            unacked=len(self._inflight),
            ack_timeout=self.ack_timeout,
        )
        return self._end(Outcome.WRITE_TIMEOUT)

    def next_action(self, now: float) -> SendFrame | SplitBatch | DropBatch | EndSession | None:
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

    def _violation(self, event: str, **fields: object) -> EndSession:
        """The collector broke the protocol: believe nothing more from it on this connection."""
        log.error(event, unacked=len(self._inflight), **fields)
        return self._end(Outcome.PROTOCOL_ERROR)

    def _on_ack(self, ack: Ack) -> AckBatch | EndSession | None:
        if ack.seq not in self._inflight:
            # Never sent on this connection (or nacked, or acked already): a collector that
            # acks it did not store it, whatever it says.
            return self._violation("ack_not_in_flight", seq=ack.seq, in_flight=self._seqs())
        batch = self._spool.get(ack.seq)
        if batch is None:  # dropped from a full spool while in flight
            del self._inflight[ack.seq]
            log.debug("ack_for_unknown_batch", seq=ack.seq)
            return None
        readings = len(batch)
        listed = len(ack.rejected)
        unlisted = ack.rejected_unlisted or 0
        # Counts first (O(1)): a huge rejected list is refused before it is iterated.
        if (
            ack.accepted < 0
            or unlisted < 0
            or listed > readings
            or ack.accepted + listed + unlisted != readings
        ):
            return self._violation(
                "ack_count_mismatch",
                seq=ack.seq,
                readings=readings,
                accepted=ack.accepted,
                rejected=listed + unlisted,
            )
        indexes = {r.index for r in ack.rejected}
        if len(indexes) != listed or any(not 0 <= i < readings for i in indexes):
            return self._violation(
                "ack_bad_rejected_index",
                seq=ack.seq,
                readings=readings,
                indexes=sorted(indexes)[:REJECTION_SAMPLES] + sorted(indexes)[-REJECTION_SAMPLES:],
            )
        del self._inflight[ack.seq]
        rejected = listed + unlisted
        if rejected:
            log.warning(
                "readings_rejected",
                seq=ack.seq,
                rejected=rejected,
                readings=readings,
                samples=[
                    {"index": r.index, "errors": [clip(e) for e in r.errors[:REJECTION_SAMPLES]]}
                    for r in ack.rejected[:REJECTION_SAMPLES]
                ],
            )
        self.acked_batches += 1
        log.debug("batch_acked", seq=ack.seq, accepted=ack.accepted, rejected=rejected)
        return AckBatch(ack.seq, rejected)

    def _on_nack(self, nack: Nack, now: float) -> EndSession | None:
        if nack.seq not in self._inflight:
            return self._violation("nack_not_in_flight", seq=nack.seq, in_flight=self._seqs())
        del self._inflight[nack.seq]
        delay = min(max(nack.retry_after_ms / 1000, self.retry_min), self.retry_max)
        self._retry[nack.seq] = now + delay
        log.info(
            "batch_nacked",
            seq=nack.seq,
            reason=clip(nack.reason),
            retry_after_ms=nack.retry_after_ms,
            retry_in=round(delay, 3),
        )
        return None

    def _seqs(self) -> list[int]:
        """A few of the seqs in flight, for a log line."""
        return list(self._inflight)[:8]

    def _due_retry(self, now: float) -> SendFrame | None:
        for seq, due in list(self._retry.items()):
            if due <= now:
                del self._retry[seq]
                batch = self._spool.get(seq)
                if batch is not None:  # else dropped from a full spool: the slot is free
                    return self._send(batch, now)
        return None

    def _next_new(self, now: float) -> SendFrame | SplitBatch | DropBatch | None:
        if len(self._inflight) + len(self._retry) >= self.window:
            return None
        batch = self._next_batch()
        if batch is None:
            return None
        size = len(batch.frame) - HEADER_SIZE
        if size > self.max_frame_bytes:
            if len(batch) <= 1:  # cannot be split (the welcome check makes this unreachable)
                log.error(
                    "batch_too_large",
                    seq=batch.seq,
                    bytes=size,
                    max_frame_bytes=self.max_frame_bytes,
                )
                return DropBatch(batch.seq, BATCH_TOO_LARGE)
            log.warning(
                "batch_split",
                seq=batch.seq,
                bytes=size,
                readings=len(batch),
                max_frame_bytes=self.max_frame_bytes,
            )
            return SplitBatch(batch.seq, self.max_frame_bytes)
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
