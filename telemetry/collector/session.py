"""The rules of one agent connection, sans-I/O (docs/protocol.md#messages, #delivery).

How this works: a :class:`Session` is a plain object with no awaits, in the manner of h11's
``Connection``. The I/O layer (:mod:`telemetry.collector.connection`) feeds it decoded frames
(:meth:`Session.receive`) and carries out the actions it yields, in order
(:mod:`telemetry.collector.actions`): send bytes, queue fire-and-forget records, deliver a
batch (then report back with :meth:`settled`, :meth:`failed` or :meth:`abandoned`, which give
the ``ack`` or ``nack``), feed the dead-letter sinks, or pause. A ``ProtocolError`` raised by
:meth:`receive` ends the connection; :meth:`fatal` gives the ``error`` frame to send first.

It holds hello and auth, admission (``max_batch``, ``on_full``), the window, the replies and
every ledger move; it reports to a :class:`SessionEvents` (metrics, live view).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from telemetry.collector.actions import (
    PAUSE,
    Action,
    DeadLetters,
    Deliver,
    NoEvents,
    Queue,
    Send,
    SessionEvents,
)
from telemetry.collector.auth import Authorizer, authorizer
from telemetry.collector.ledger import Ledger
from telemetry.collector.replies import (
    ack_frame,
    dead_letters,
    error_frame,
    goaway_frame,
    nack_frame,
    refusals_by_index,
)
from telemetry.collector.validation import (
    CONTROL_KEY,
    BrokenReading,
    check_readings,
    classify,
    clean_batch,
    clean_fire_and_forget,
)
from telemetry.config import IngestConfig
from telemetry.log import get_logger
from telemetry.protocol import (
    PROTOCOL_VERSION,
    Batch,
    Hello,
    HelloRequired,
    ProtocolViolation,
    Rejection,
    Unauthorized,
    Welcome,
    encode_frame,
)
from telemetry.ratelog import RateLimitedLog
from telemetry.sinks.base import Record

if TYPE_CHECKING:
    from telemetry.collector.pipeline import Refusal

log = get_logger("telemetry.connection")


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: Readings of a batch validated on the exact path between two :class:`Pause` points.
EXACT_CHUNK = 256
#: Seconds between two rejection log events of one connection (the first is logged whole).
REJECTION_LOG_INTERVAL = 10.0


def _sensor(raw: Any) -> str | None:
    """The sensor a rejected reading names, if any (for the log; cut to the protocol limit)."""
    sensor = raw.get("sensor") if isinstance(raw, dict) else None
    return sensor[:256] if isinstance(sensor, str) else None


class Session:
    """The protocol rules of one connection; see the module docstring."""

    def __init__(
        self,
        config: IngestConfig,
        *,
        collector_id: str,
        peer: str,
        ledger: Ledger | None = None,
        events: SessionEvents | None = None,
        would_wait: Callable[[int], bool] = lambda count: False,
        dead_letters: bool = False,
        dead_letter_max_bytes: int = 4096,
        clock: Callable[[], datetime] = _utcnow,
        auth: Authorizer | None = None,
        certificate_names: Sequence[str] = (),
    ) -> None:
        """``would_wait(count)``: would the sinks make a batch of ``count`` readings wait (for
        ``on_full = "nack"``). ``dead_letters``: is there a dead-letter sink to feed.
        ``auth``: who may speak for which agent id (default: the config's ``tokens``);
        ``certificate_names``: the names of the client's verified TLS certificate."""
        self.config = config
        self.collector_id = collector_id
        self.peer = peer
        #: Who sends readings without a ``hello``: the peer's host (its port changes with
        #: every connection, the host does not).
        self.host = peer.rsplit(":", 1)[0] if ":" in peer else peer
        self.auth = auth if auth is not None else authorizer(config)
        self.certificate_names = tuple(certificate_names)
        self.ledger = ledger if ledger is not None else Ledger()
        self.events: SessionEvents = events if events is not None else NoEvents()
        #: The agent id of the ``hello``; ``None`` before it.
        self.agent: str | None = None
        self._would_wait = would_wait
        self._dead_letters = dead_letters
        self._dead_letter_max_bytes = dead_letter_max_bytes
        self._clock = clock
        self._skew = timedelta(seconds=config.max_clock_skew)
        # One rejection logged whole per interval, the others summed up (a flood of bad
        # readings costs a log line per interval).
        self._log = RateLimitedLog(log, REJECTION_LOG_INTERVAL, lambda: self._clock().timestamp())

    @property
    def who(self) -> str:
        """The agent id, or the peer's host before a ``hello``."""
        return self.agent or self.host

    @property
    def window(self) -> int:
        """Batches the agent may have unacked at once (announced in ``welcome``)."""
        return self.config.window

    # --- frames in --------------------------------------------------------------------------

    def receive(self, frames: list[bytes]) -> Iterator[Action]:
        """The actions for ``frames``, in order. Raises a ``ProtocolError`` that ends the
        connection; the actions before it are still to be carried out."""
        self.events.frames(len(frames))
        index, count = 0, len(frames)
        if self.agent is None and not self.auth.anonymous:
            index = yield from self._before_hello(frames)
        while index < count:
            # The fast path: clean input validated natively, one call per frame.
            now = self._clock()
            records, index = clean_fire_and_forget(frames, index, self.who, now, now + self._skew)
            if records:
                self.ledger.fire_and_forget_received += len(records)
                yield self._queue(records)
            if index == count:
                return
            payload = frames[index]
            index += 1
            if self.agent is not None and CONTROL_KEY in payload:
                actions = self._clean_batch(self.agent, payload)
                if actions is not None:
                    yield from actions
                    continue
            # The exact path: anything else, with the precise reasons.
            yield from self._exact(payload)

    def _before_hello(self, frames: list[bytes]) -> Generator[Action, None, int]:
        """With auth on, a connection's first frame (heartbeats aside) must be a ``hello``
        that passes: anything else is refused before it is looked at as a reading. Returns
        the index of the first frame after the ``hello`` (``len(frames)``: none came yet)."""
        for index, payload in enumerate(frames):
            if not payload:
                continue  # heartbeat
            message = classify(payload)
            if not isinstance(message, Hello):
                raise Unauthorized("send a hello with a credential first")
            yield self._hello(message)
            return index + 1
        return len(frames)

    def _exact(self, payload: bytes) -> Iterator[Action]:
        message = classify(payload)
        if isinstance(message, BrokenReading):
            self.ledger.fire_and_forget_received += 1
            yield from self._reject_fire_and_forget(message.payload, message.errors, message.kinds)
        elif isinstance(message, dict):
            yield from self._exact_fire_and_forget([message])
        elif isinstance(message, Batch):
            yield from self._exact_batch(message)
        else:
            yield self._hello(message)

    def _hello(self, hello: Hello) -> Send:
        if self.agent is not None:
            raise ProtocolViolation("second hello on one connection")
        if hello.protocol != PROTOCOL_VERSION:
            raise ProtocolViolation(
                f"protocol {hello.protocol} is not supported; this collector speaks "
                f"{PROTOCOL_VERSION}"
            )
        self.auth.check(hello.agent, hello.token, self.certificate_names)
        self.agent = hello.agent
        structlog.contextvars.bind_contextvars(agent=hello.agent)
        self.events.agent_connected(hello.agent, self.peer)
        log.info("agent_hello")
        welcome = Welcome(
            collector=self.collector_id,
            max_frame_bytes=self.config.max_frame_bytes,
            window=self.config.window,
        )
        return Send(encode_frame(welcome.encode()))

    # --- fire-and-forget --------------------------------------------------------------------

    def _exact_fire_and_forget(self, raws: list[Any]) -> Iterator[Action]:
        self.ledger.fire_and_forget_received += len(raws)
        now = self._clock()
        accepted, rejected = check_readings(raws, self.who, None, now, self.config.max_clock_skew)
        for rejection in rejected:
            yield from self._reject_fire_and_forget(
                raws[rejection.index], rejection.errors, rejection.kinds
            )
        if accepted:
            yield self._queue([record for _, record in accepted])

    def _reject_fire_and_forget(
        self, raw: Any, errors: tuple[str, ...], kinds: tuple[str, ...]
    ) -> Iterator[Action]:
        self.ledger.fire_and_forget_rejected += 1
        self.events.rejected(self.who, errors, kinds, sensor := _sensor(raw))
        self._log.warning(
            "reading_rejected", sensor=sensor, errors=list(errors), fire_and_forget=True
        )
        letters = self._letters([(raw, errors, None)])
        if letters is not None:
            yield letters

    def _queue(self, records: list[Record]) -> Queue:
        self.events.accepted(records)
        return Queue(records)

    # --- batches ----------------------------------------------------------------------------

    def _admit(self, seq: int, count: int) -> Send | None:
        """Check a batch's limits and count it; the ``nack`` when it is refused (``on_full``)."""
        if self.agent is None:
            raise HelloRequired("send hello before the first batch")
        if count > self.config.max_batch:
            raise ProtocolViolation(
                f"batch of {count} readings exceeds max_batch {self.config.max_batch}"
            )
        self.ledger.received += count
        if self.config.on_full == "nack" and self._would_wait(count):
            self.ledger.unacked += count
            return Send(self._nack(seq, "overloaded", "sink queue full"))
        return None

    def _clean_batch(self, agent: str, payload: bytes) -> list[Action] | None:
        """The actions for a batch the fast path finds clean; ``None``: it is not, so it must
        take the exact path (which finds and names every problem)."""
        now = self._clock()
        batch = clean_batch(payload, agent, now, now + self._skew)
        if batch is None:
            return None
        seq, records = batch
        nack = self._admit(seq, len(records))
        if nack is not None:
            return [nack]
        self.events.batch()
        return list(self._deliver(seq, records, range(len(records)), []))

    def _exact_batch(self, batch: Batch) -> Iterator[Action]:
        nack = self._admit(batch.seq, len(batch.readings))
        if nack is not None:
            yield nack
            return
        agent = self.who
        prefix = f"{agent}:{batch.seq}:"
        now = self._clock()
        accepted: list[tuple[int, Record]] = []
        rejected: list[Rejection] = []
        readings, skew = batch.readings, self.config.max_clock_skew
        for start in range(0, len(readings), EXACT_CHUNK):
            if start:
                yield PAUSE
            chunk = readings[start : start + EXACT_CHUNK]
            good, bad = check_readings(chunk, agent, prefix, now, skew, offset=start)
            accepted += good
            rejected += bad
        self.ledger.rejected += len(rejected)
        self.events.batch()
        for rejection, sensor in ((r, _sensor(batch.readings[r.index])) for r in rejected):
            self.events.rejected(agent, rejection.errors, rejection.kinds, sensor)
            self._log.warning(
                "reading_rejected",
                seq=batch.seq,
                index=rejection.index,
                sensor=sensor,
                errors=list(rejection.errors),
            )
        if rejected:
            letters = self._letters(
                [(batch.readings[r.index], r.errors, f"{prefix}{r.index}") for r in rejected]
            )
            if letters is not None:
                yield letters
        yield from self._deliver(
            batch.seq,
            [record for _, record in accepted],
            [index for index, _ in accepted],
            rejected,
        )

    def _deliver(
        self, seq: int, records: list[Record], indexes: Sequence[int], rejected: list[Rejection]
    ) -> Iterator[Action]:
        self.events.accepted(records)
        if not records:
            yield Send(self._ack(seq, 0, rejected))
            return
        self.ledger.pending += len(records)
        yield Deliver(seq, records, indexes, rejected)

    # --- settling a delivery ----------------------------------------------------------------

    def settled(self, deliver: Deliver, refusals_by_sink: Sequence[Sequence[Refusal]]) -> bytes:
        """Every sink has the batch; some may have refused readings for good. The ``ack``."""
        refused = self._refused(deliver, refusals_by_sink)
        rejected = deliver.rejected
        if refused:
            rejected = sorted([*rejected, *refused.values()], key=lambda r: r.index)
        count = len(deliver.records)
        self.ledger.pending -= count
        self.ledger.acked += count - len(refused)
        self.ledger.rejected += len(refused)
        return self._ack(deliver.seq, count - len(refused), rejected)

    def failed(self, deliver: Deliver, sink: str, reason: str) -> bytes:
        """A sink gave up on the batch for now: the ``nack``; the agent resends it."""
        log.warning("batch_nacked", seq=deliver.seq, sink=sink, reason=reason)
        self.abandoned(deliver)
        return self._nack(deliver.seq, "sink_unavailable", f"sink {sink} unavailable")

    def abandoned(self, deliver: Deliver) -> None:
        """The batch will get no answer (the connection went): the agent still holds it."""
        self.ledger.pending -= len(deliver.records)
        self.ledger.unacked += len(deliver.records)

    def _refused(
        self, deliver: Deliver, refusals_by_sink: Sequence[Sequence[Refusal]]
    ) -> dict[int, Rejection]:
        """Readings a sink refused for good, as rejections by their index in the batch."""
        refused, sensors = refusals_by_index(deliver, refusals_by_sink)
        for rejection in refused.values():
            self.events.sink_refused()
            self._log.warning(
                "reading_refused",
                seq=deliver.seq,
                index=rejection.index,
                sensor=sensors[rejection.index],
                errors=list(rejection.errors),
            )
        return refused

    # --- messages out -----------------------------------------------------------------------

    def _ack(self, seq: int, accepted: int, rejected: list[Rejection]) -> bytes:
        self.events.ack()
        return ack_frame(seq, accepted, rejected, self.config.max_ack_rejections)

    def _nack(self, seq: int, reason: str, detail: str) -> bytes:
        self.events.nack(reason)
        return nack_frame(seq, detail, self.config.retry_after_ms)

    def goaway(self, reason: str) -> bytes:
        """The ``goaway`` frame: the collector is draining or rebalancing."""
        return goaway_frame(reason)

    def fatal(self, code: str, detail: str) -> bytes:
        """The ``error`` frame that ends the connection, logged and counted."""
        log.warning("connection_error", code=code, detail=detail)
        self.events.connection_error(code)
        return error_frame(code, detail)

    def closed(self) -> None:
        """The connection is gone."""
        self._log.flush()
        self.events.closed(self.agent)

    # --- dead letters -----------------------------------------------------------------------

    def _letters(self, rejected: list[tuple[Any, Sequence[str], str | None]]) -> DeadLetters | None:
        """Dead letters for rejected readings (raw, reasons, reading id), when a sink takes
        them."""
        if not self._dead_letters:
            return None
        return dead_letters(rejected, self.who, self._clock(), self._dead_letter_max_bytes)
