"""One agent connection's life: frames in, readings to the pipeline, acks out.

How this works: :meth:`Connection.run` reads chunks, cuts them into frames with the sans-I/O
:class:`FrameDecoder` and handles each frame in order. Clean frames take the fast path
(:mod:`telemetry.collector.records`): a run of fire-and-forget readings, or a whole ``batch``,
validated from its JSON bytes in one native call each. Anything else (a ``hello``, a bad
reading, a timestamp too far ahead) takes the exact path, which validates reading by reading
and names every problem. A fire-and-forget reading is queued with no reply. A batch's good
readings go to the pipeline and a task waits for every sink to take them before it sends
``ack`` (listing the rejected indexes), or ``nack`` when a sink gave up. At most ``window``
batches wait at once: beyond that, and whenever a sink queue is full, the loop stops reading
(backpressure).

A :class:`ProtocolError` (broken header, oversized frame, bad hello...) sends one ``error``
message and closes this connection only. :meth:`Connection.drain` sends ``goaway``, stops
reading, and lets in-flight batches finish and be acked before the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from telemetry.collector.pipeline import DeliveryFailed, Refusal
from telemetry.collector.records import (
    CONTROL_KEY,
    clean_batch,
    clean_loose_records,
    reading_record,
)
from telemetry.log import get_logger
from telemetry.protocol import (
    Ack,
    Batch,
    Error,
    FrameDecoder,
    Goaway,
    Hello,
    HelloRequired,
    Nack,
    ProtocolError,
    ProtocolViolation,
    RejectedReading,
    Unauthorized,
    Welcome,
    decode_json,
    encode_frame,
    parse_client_message,
    validate_readings,
    validation_context,
)
from telemetry.protocol.errors import BadJson
from telemetry.protocol.messages import (
    PROTOCOL_VERSION,
    Rejection,
)
from telemetry.sinks.base import DeadLetter, Record

if TYPE_CHECKING:
    from telemetry.collector.server import Collector

log = get_logger("telemetry.connection")

READ_SIZE = 256 * 1024
#: Seconds a closing connection keeps discarding input so that its last replies arrive.
CLOSE_LINGER = 2.0
# A malformed payload that claims to be a control message is fatal (DESIGN.md section 2);
# one that is just a broken reading only skips that frame.
_CONTROL = re.compile(rb'"type"\s*:\s*"(?:hello|batch)"')


class Connection:
    """Serves one TCP connection from an agent or a plain ``nc``."""

    def __init__(
        self,
        collector: Collector,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn_id: int,
    ) -> None:
        self.collector = collector
        self.config = collector.config.ingest
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.agent: str | None = None
        self.decoder = FrameDecoder(self.config.max_frame_bytes)
        self._window = asyncio.Semaphore(self.config.window)
        #: Ack tasks of batches the sinks have not settled (a set once there is one: an
        #: empty set is ~200 bytes, times 10,000 idle connections).
        self._inflight: set[asyncio.Task[None]] | None = None
        self._draining = False
        self._reading = False
        self._write_closed = False  # set once we half-closed: nothing more may be written
        self._task: asyncio.Task[None] | None = None
        self._skew = timedelta(seconds=self.config.max_clock_skew)

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
                await self._fatal(exc.code, exc.detail)
            except (ConnectionError, OSError) as exc:
                reason = "connection_lost"
                log.info("connection_lost", error=str(exc))
            finally:
                if rebalance is not None:
                    rebalance.cancel()
                await self._finish_inflight()
                await self._close()
                if self.agent is not None:
                    self.collector.metrics.agents_connected.dec()
                    self.collector.live.agent_disconnected(self.conn_id)
                log.info("connection_closed", reason=reason, agent=self.agent)

    async def _read_loop(self) -> str:
        idle = self.config.idle_timeout
        loop = asyncio.get_running_loop()
        idle_deadline = loop.time() + idle  # moved on by every complete frame, heartbeats too
        while not self._draining:
            self._reading = True
            try:
                async with asyncio.timeout_at(idle_deadline):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                await self._fatal("idle_timeout", f"no frame for {idle:g} s")
                return "idle_timeout"
            finally:
                self._reading = False
            if not data:
                try:
                    self.decoder.feed_eof()
                except ProtocolError as exc:
                    log.warning("truncated_frame", detail=exc.detail)
                    return exc.code
                return "eof"
            self.collector.metrics.bytes.inc(len(data))
            try:
                frames = self.decoder.feed(data)
            except ProtocolError as exc:
                await self._handle_frames(exc.frames)
                raise
            if frames:
                idle_deadline = loop.time() + idle
                await self._handle_frames(frames)
        return "drained"

    def drain(self, reason: str = "draining") -> None:
        """Send ``goaway``, stop reading; in-flight batches still get their acks."""
        if self._draining:
            return
        self._draining = True
        self._send(Goaway(reason=reason).encode())
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

    async def _fatal(self, code: str, detail: str) -> None:
        log.warning("connection_error", code=code, detail=detail)
        self.collector.metrics.connection_errors.labels(code).inc()
        self._send(Error(code=code, detail=detail).encode())
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    def _send(self, payload: bytes) -> None:
        if not self._write_closed and not self.writer.is_closing():
            self.writer.write(encode_frame(payload))

    # --- frames -----------------------------------------------------------------------------

    async def _handle_frames(self, frames: list[bytes]) -> None:
        self.collector.metrics.frames.inc(len(frames))
        index, count = 0, len(frames)
        while index < count:
            # The fast path: clean input validated natively, one call per frame (records.py).
            now = datetime.now(UTC)
            records, index = clean_loose_records(
                frames, index, self.agent or self.peer, now, now + self._skew
            )
            if records:
                await self._submit_records(records)
            if index == count:
                return
            payload = frames[index]
            index += 1
            clean = self.agent is not None and CONTROL_KEY in payload
            if clean and await self._handle_clean_batch(payload):
                continue
            # The exact path: anything else, with the precise reasons.
            await self._handle_exact(payload)

    async def _handle_exact(self, payload: bytes) -> None:
        try:
            obj = decode_json(payload)
        except BadJson as exc:
            if self.agent is None and _CONTROL.search(payload):
                raise
            self.collector.ledger.loose_received += 1
            self._reject_loose(payload, ("payload: " + exc.detail,), ("bad_json",))
            return
        message = parse_client_message(obj)
        if isinstance(message, dict):
            await self._submit_loose([message])
        elif isinstance(message, Batch):
            await self._handle_batch(message)
        else:
            self._handle_hello(message)

    def _handle_hello(self, hello: Hello) -> None:
        if self.agent is not None:
            raise ProtocolViolation("second hello on one connection")
        if hello.protocol != PROTOCOL_VERSION:
            raise ProtocolViolation(
                f"protocol {hello.protocol} is not supported; this collector speaks "
                f"{PROTOCOL_VERSION}"
            )
        tokens = self.config.tokens
        if tokens and not any(
            hmac.compare_digest((hello.token or "").encode(), t.encode()) for t in tokens
        ):
            raise Unauthorized("hello token missing or not accepted")
        self.agent = hello.agent
        structlog.contextvars.bind_contextvars(agent=hello.agent)
        self.collector.metrics.agents_connected.inc()
        self.collector.live.agent_connected(self.conn_id, hello.agent, self.peer)
        log.info("agent_hello")
        self._send(
            Welcome(
                collector=self.collector.config.collector.id,
                max_frame_bytes=self.config.max_frame_bytes,
                window=self.config.window,
            ).encode()
        )

    def _reject_loose(self, raw: Any, errors: tuple[str, ...], kinds: tuple[str, ...]) -> None:
        self.collector.ledger.loose_rejected += 1
        self._count_rejected(errors, kinds)
        log.warning("reading_rejected", errors=list(errors), fire_and_forget=True)
        self._dead_letter([(raw, errors, None)])

    def _dead_letter(self, rejected: list[tuple[Any, Sequence[str], str | None]]) -> None:
        """Send rejected readings (raw, reasons, reading id) to the dead-letter sinks."""
        pipeline = self.collector.pipeline
        if not pipeline.dead_letter_runners:
            return
        now = datetime.now(UTC)
        max_bytes = self.collector.config.collector.dead_letter_max_bytes
        who = self.agent or self.peer
        pipeline.dead_letter(
            [
                DeadLetter.of(
                    raw,
                    agent=who,
                    reason="; ".join(errors),
                    received_at=now,
                    max_bytes=max_bytes,
                    reading_id=reading_id,
                )
                for raw, errors, reading_id in rejected
            ]
        )

    def _count_rejected(self, errors: tuple[str, ...], kinds: tuple[str, ...]) -> None:
        metrics = self.collector.metrics
        metrics.readings.labels("rejected").inc()
        for kind in kinds:
            metrics.rejections.labels(kind).inc()
        self.collector.live.rejected(self.conn_id, self.agent or self.peer, errors)

    async def _submit_loose(self, raws: list[Any]) -> None:
        """Validate fire-and-forget readings on the exact path and queue the good ones."""
        self.collector.ledger.loose_received += len(raws)
        now = datetime.now(UTC)
        accepted, rejected = validate_readings(raws, self._context(now))
        for rejection in rejected:
            self._reject_loose(raws[rejection.index], rejection.errors, rejection.kinds)
        who = self.agent or self.peer
        if accepted:
            await self._queue_loose([reading_record(r, who, None, now) for _, r in accepted])

    async def _submit_records(self, records: list[Record]) -> None:
        """Queue fire-and-forget readings that the fast path found clean."""
        self.collector.ledger.loose_received += len(records)
        await self._queue_loose(records)

    async def _queue_loose(self, records: list[Record]) -> None:
        self.collector.metrics.readings.labels("accepted").inc(len(records))
        self.collector.live.accepted(self.conn_id, records)
        await self.collector.pipeline.submit_nowait_ack(records)

    def _admit_batch(self, seq: int, count: int) -> bool:
        """Check a batch's limits and count it; ``False`` when it was nacked (``on_full``)."""
        if self.agent is None:
            raise HelloRequired("send hello before the first batch")
        if count > self.config.max_batch:
            raise ProtocolViolation(
                f"batch of {count} readings exceeds max_batch {self.config.max_batch}"
            )
        ledger = self.collector.ledger
        ledger.received += count
        if self.config.on_full == "nack" and self.collector.pipeline.would_wait(count):
            ledger.unacked += count
            self._send_nack(seq, "overloaded", "sink queue full")
            return False
        return True

    async def _handle_clean_batch(self, payload: bytes) -> bool:
        """Queue a batch the fast path finds clean; ``False``: it is not, so it must take the
        exact path (which finds and names every problem)."""
        assert self.agent is not None
        now = datetime.now(UTC)
        batch = clean_batch(payload, self.agent, now, now + self._skew)
        if batch is None:
            return False
        seq, records = batch
        if self._admit_batch(seq, len(records)):
            self.collector.metrics.batches.inc()
            await self._queue_batch(seq, records, [])
        return True

    async def _handle_batch(self, batch: Batch) -> None:
        if not self._admit_batch(batch.seq, len(batch.readings)):
            return
        agent = self.agent
        assert agent is not None  # _admit_batch checked
        now = datetime.now(UTC)
        accepted, rejected = validate_readings(batch.readings, self._context(now))
        self.collector.ledger.rejected += len(rejected)
        self.collector.metrics.batches.inc()
        for rejection in rejected:
            self._count_rejected(rejection.errors, rejection.kinds)
            log.warning(
                "reading_rejected",
                seq=batch.seq,
                index=rejection.index,
                errors=list(rejection.errors),
            )
        if rejected:
            self._dead_letter(
                [
                    (batch.readings[r.index], r.errors, f"{self.agent}:{batch.seq}:{r.index}")
                    for r in rejected
                ]
            )
        records = [
            reading_record(reading, agent, f"{agent}:{batch.seq}:{index}", now)
            for index, reading in accepted
        ]
        await self._queue_batch(batch.seq, records, rejected)

    async def _queue_batch(
        self, seq: int, records: list[Record], rejected: list[Rejection]
    ) -> None:
        """Hand a batch's valid records to the pipeline; a task acks when the sinks have them."""
        self.collector.metrics.readings.labels("accepted").inc(len(records))
        if not records:
            self._send_ack(seq, 0, rejected)
            return
        self.collector.live.accepted(self.conn_id, records)
        ledger = self.collector.ledger
        ledger.pending += len(records)
        await self._window.acquire()
        try:
            done = await self.collector.pipeline.submit(records)
        except BaseException:
            self._window.release()
            ledger.pending -= len(records)
            ledger.unacked += len(records)
            raise
        task = asyncio.create_task(self._ack_when_done(seq, len(records), rejected, done))
        if self._inflight is None:
            self._inflight = set()
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _ack_when_done(
        self, seq: int, accepted: int, rejected: list[Rejection], done: asyncio.Future[Any]
    ) -> None:
        ledger = self.collector.ledger
        settled = False
        try:
            refusals_by_sink: list[list[Refusal]] = await done
        except DeliveryFailed as exc:
            log.warning("batch_nacked", seq=seq, sink=exc.sink, reason=exc.reason)
            self._send_nack(seq, "sink_unavailable", f"sink {exc.sink} unavailable")
        else:
            refused = self._refused(refusals_by_sink)
            if refused:
                rejected = sorted([*rejected, *refused.values()], key=lambda r: r.index)
            ledger.pending -= accepted
            ledger.acked += accepted - len(refused)
            ledger.rejected += len(refused)
            settled = True
            self._send_ack(seq, accepted - len(refused), rejected)
        finally:
            if not settled:  # nacked, or the connection went first: the agent resends
                ledger.pending -= accepted
                ledger.unacked += accepted
            self._window.release()

    def _refused(self, refusals_by_sink: list[list[Refusal]]) -> dict[int, Rejection]:
        """Readings a sink refused for good, as rejections by index (and dead letters)."""
        refused: dict[int, Rejection] = {}
        pipeline = self.collector.pipeline
        for refusals in refusals_by_sink:
            if not refusals:
                continue
            pipeline.dead_letter(pipeline.refusals_to_dead_letters(refusals))
            for record, reason in refusals:
                index = int((record.id or "0").rsplit(":", 1)[-1])
                previous = refused.get(index)
                errors = (*previous.errors, reason) if previous else (reason,)
                refused[index] = Rejection(index, errors, ("sink_refused",))
        for rejection in refused.values():
            self.collector.metrics.rejections.labels("sink_refused").inc()
            log.warning("reading_refused", index=rejection.index, errors=list(rejection.errors))
        return refused

    def _send_nack(self, seq: int, reason: str, detail: str) -> None:
        self.collector.metrics.nacks.labels(reason).inc()
        retry_after_ms = self.config.retry_after_ms
        self._send(Nack(seq=seq, reason=detail, retry_after_ms=retry_after_ms).encode())

    def _send_ack(self, seq: int, accepted: int, rejected: list[Rejection]) -> None:
        self.collector.metrics.acks.inc()
        self._send(
            Ack(
                seq=seq,
                accepted=accepted,
                rejected=[RejectedReading(index=r.index, errors=list(r.errors)) for r in rejected],
            ).encode()
        )

    def _context(self, now: datetime) -> dict[str, Any]:
        return validation_context(now, self.config.max_clock_skew)
