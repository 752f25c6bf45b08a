"""``telemetry bench``: a load generator for any collector, like ``nats bench`` or
``redis-benchmark``.

How this works: a pool of ~150-byte readings is encoded once. In batched mode (``batch > 0``)
each connection says ``hello``, then sends ``batch`` frames built from the pre-encoded readings
(only the ``seq`` changes), keeping at most ``window`` of them unacked, and times each batch
from its write to its ``ack``; a ``nack`` is resent after its ``retry_after_ms``. In
fire-and-forget mode (``batch == 0``) each connection writes the pre-built frames, one reading
each, in large slices; at the end it says ``hello`` and sends one marker batch of one reading:
its ack means the collector has handled every frame before it (the collector handles a
connection's frames in order). Marker readings reach the sinks too; they are counted apart.

With ``rate`` the connections pace themselves (each ``rate / connections`` readings/s) in
ticks of a few milliseconds, batched connections spread evenly over a batch's interval;
without it they send as fast as the collector takes them (window
and TCP backpressure). ``duration`` stops sending after that many seconds. The clock starts
once every connection is open (and, batched, welcomed). The bench reports its own CPU time so
that a reader can tell whether the load generator was the bottleneck.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field

from telemetry.bench_payloads import Payloads, batch_frame, encode_readings, sample_reading
from telemetry.bench_result import BenchResult, percentiles
from telemetry.protocol import (
    Ack,
    Error,
    FrameDecoder,
    Goaway,
    Hello,
    Nack,
    ProtocolError,
    ServerMessage,
    Welcome,
    encode_frame,
    parse_server_message,
)
from telemetry.tls import ClientTls, explain_client_error

#: Distinct readings in the pre-encoded pool (more when a batch is larger).
POOL = 500
#: Bytes written per call in fire-and-forget mode at full speed.
WRITE_CHUNK = 256 * 1024
#: Seconds between two sends of a paced (``rate``) connection, at most.
TICK = 0.005


class BenchError(Exception):
    """The bench could not run to its end (refused connection, protocol error, stall)."""


@dataclass(frozen=True)
class BenchOptions:
    """What to send, where, and how fast."""

    host: str = "127.0.0.1"
    port: int = 7600
    connections: int = 1
    #: Readings in all (split over the connections); None: until ``duration``.
    readings: int | None = 100_000
    #: Readings per acked batch; 0: one fire-and-forget reading per frame.
    batch: int = 500
    #: Target readings/s in all; None: as fast as the collector takes them.
    rate: float | None = None
    #: Seconds after which no new reading is sent; None: until ``readings``.
    duration: float | None = None
    #: Most unacked batches per connection (the collector's ``window`` caps it); None: its.
    window: int | None = None
    agent_prefix: str = "bench"
    token: str | None = None
    #: Seconds to connect, and the longest wait for any progress (an ack, a write).
    timeout: float = 30.0
    #: TLS to the collector (``--tls``); None: plaintext.
    tls: ClientTls | None = None

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        if self.batch < 0:
            raise ValueError("batch must be >= 0")
        if self.readings is None and self.duration is None:
            raise ValueError("give readings or duration (or both)")
        if self.readings is not None and self.readings < self.connections:
            raise ValueError("readings must be at least one per connection")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be > 0")
        if self.window is not None and self.window < 1:
            raise ValueError("window must be at least 1")


@dataclass
class _ConnStats:
    readings: int = 0
    accepted: int = 0
    rejected: int = 0
    nacks: int = 0
    markers: int = 0
    bytes_sent: int = 0
    latencies: list[float] = field(default_factory=list)
    finished_at: float = 0.0
    drain: float = 0.0


class _Connection:
    """One bench connection: open, (hello), send its share, wait for its acks."""

    def __init__(self, opts: BenchOptions, index: int, share: int | None, payloads: Payloads):
        self.opts = opts
        self.index = index
        self.share = share  # readings to send; None: until the deadline
        self.payloads = payloads
        self.agent = f"{opts.agent_prefix}-{index}"
        self.stats = _ConnStats()
        self.decoder = FrameDecoder()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.window = 8
        self._messages: list[ServerMessage] = []

    async def open(self) -> None:
        opts = self.opts
        secure = opts.tls.connect_kwargs(opts.host, opts.timeout) if opts.tls is not None else {}
        try:
            self.reader, self.writer = await asyncio.open_connection(opts.host, opts.port, **secure)
        except ssl.SSLError as exc:
            raise BenchError(explain_client_error(exc, f"{opts.host}:{opts.port}")) from None
        except OSError as exc:
            raise BenchError(
                f"cannot connect to {self.opts.host}:{self.opts.port}: {exc.strerror or exc}"
            ) from None

    def _write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        self.stats.bytes_sent += len(data)

    async def hello(self) -> None:
        self._write(encode_frame(Hello(agent=self.agent, token=self.opts.token).encode()))
        welcome = await self._next_message()
        if not isinstance(welcome, Welcome):
            raise BenchError(f"{self.agent}: expected welcome, got {_describe(welcome)}")
        self.window = min(welcome.window, self.opts.window or 1 << 30)

    async def _next_message(self) -> ServerMessage:
        assert self.reader is not None
        while not self._messages:
            try:
                async with asyncio.timeout(self.opts.timeout):
                    data = await self.reader.read(65536)
            except TimeoutError:
                raise BenchError(
                    f"{self.agent}: no reply from the collector in {self.opts.timeout:g} s"
                ) from None
            if not data:
                raise BenchError(f"{self.agent}: the collector closed the connection")
            try:
                self._messages.extend(parse_server_message(p) for p in self.decoder.feed(data) if p)
            except ProtocolError as exc:
                raise BenchError(f"{self.agent}: {exc.code} from the collector: {exc}") from None
        return self._messages.pop(0)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    # --- fire-and-forget -------------------------------------------------------------------

    async def run_loose(self, start: float, deadline: float | None) -> None:
        assert self.writer is not None
        rate = self.opts.rate / self.opts.connections if self.opts.rate else None
        frame_size = max(1, len(self.payloads.block) // len(self.payloads.frames))
        per_write = max(1, WRITE_CHUNK // frame_size)
        sent = 0
        while self.share is None or sent < self.share:
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                break
            if rate is None:
                count = per_write
            else:
                count = int((now - start) * rate) - sent
                if count <= 0:
                    await asyncio.sleep(min(TICK, (sent + 1) / rate - (now - start)))
                    continue
            if self.share is not None:
                count = min(count, self.share - sent)
            for piece in self.payloads.loose(sent, count):
                self._write(piece)
            sent += count
            await self._drain()
        self.stats.readings = sent
        last_frame = time.perf_counter()
        await self.hello()
        self._write(batch_frame(self.payloads, 0, 1))
        self.stats.markers = 1
        ack = await self._next_message()
        if not isinstance(ack, Ack):
            raise BenchError(f"{self.agent}: marker batch got {_describe(ack)}")
        self.stats.finished_at = time.perf_counter()
        self.stats.drain = self.stats.finished_at - last_frame

    async def _drain(self) -> None:
        assert self.writer is not None
        try:
            async with asyncio.timeout(self.opts.timeout):
                await self.writer.drain()
        except TimeoutError:
            raise BenchError(
                f"{self.agent}: the collector took nothing for {self.opts.timeout:g} s"
            ) from None
        except ConnectionError as exc:
            raise BenchError(f"{self.agent}: connection lost: {exc}") from None

    # --- batched ---------------------------------------------------------------------------

    async def run_batched(self, start: float, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        size = self.opts.batch
        rate = self.opts.rate / self.opts.connections if self.opts.rate else None
        # Paced connections are spread over a batch's interval (the i-th of n starts i/n of it
        # late), as independent agents are: in step, n connections would send n batches at
        # once, a burst no fleet makes, and every ack would wait behind the others' writes.
        phase = size * self.index / self.opts.connections
        inflight: dict[int, tuple[bytes, int, float]] = {}  # seq -> (frame, readings, sent at)
        slots = asyncio.Semaphore(self.window)
        done_sending = asyncio.Event()
        all_acked = asyncio.Event()
        failure: list[BaseException] = []

        def settle() -> None:
            if done_sending.is_set() and not inflight:
                all_acked.set()

        async def receive() -> None:
            try:
                while not all_acked.is_set():
                    message = await self._next_message()
                    if isinstance(message, Ack):
                        entry = inflight.pop(message.seq, None)
                        if entry is None:
                            continue
                        self.stats.latencies.append(time.perf_counter() - entry[2])
                        self.stats.accepted += message.accepted
                        self.stats.rejected += len(message.rejected)
                        slots.release()
                        settle()
                    elif isinstance(message, Nack):
                        self.stats.nacks += 1
                        delay = message.retry_after_ms / 1000
                        loop.call_later(delay, self._resend, inflight, message.seq)
                    else:  # goaway or error: this bench cannot go on
                        raise BenchError(f"{self.agent}: collector sent {_describe(message)}")
            except BaseException as exc:
                failure.append(exc)
                all_acked.set()
                for _ in range(self.window):  # wake the sender if it waits for a slot
                    slots.release()
                raise

        receiver = asyncio.create_task(receive())
        seq = sent = 0
        try:
            while (self.share is None or sent < self.share) and not failure:
                now = time.perf_counter()
                if deadline is not None and now >= deadline:
                    break
                count = size if self.share is None else min(size, self.share - sent)
                if rate is not None:
                    due = start + (sent + phase) / rate
                    if due > now:
                        await asyncio.sleep(due - now)
                        continue
                try:
                    async with asyncio.timeout(self.opts.timeout):
                        await slots.acquire()
                except TimeoutError:
                    raise BenchError(
                        f"{self.agent}: no ack in {self.opts.timeout:g} s with the window full"
                    ) from None
                if failure:
                    break
                frame_ = batch_frame(self.payloads, seq, count)
                inflight[seq] = (frame_, count, time.perf_counter())
                self._write(frame_)
                seq += 1
                sent += count
                if self.writer is not None and self.writer.transport.get_write_buffer_size():
                    await self._drain()
            self.stats.readings = sent
            done_sending.set()
            settle()
            await all_acked.wait()
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        if failure and not isinstance(failure[0], asyncio.CancelledError):
            raise failure[0]
        self.stats.finished_at = time.perf_counter()

    def _resend(self, inflight: dict[int, tuple[bytes, int, float]], seq: int) -> None:
        entry = inflight.get(seq)
        if entry is not None and self.writer is not None and not self.writer.is_closing():
            self._write(entry[0])


def _describe(message: ServerMessage) -> str:
    if isinstance(message, Error):
        return f"error {message.code} {message.detail}".strip()
    if isinstance(message, Goaway | Nack):
        return f"{message.type} {message.reason}"
    return message.type


__all__ = [
    "BenchError",
    "BenchOptions",
    "BenchResult",
    "Payloads",
    "batch_frame",
    "encode_readings",
    "percentiles",
    "run_bench",
    "sample_reading",
]


# --- the run ---------------------------------------------------------------------------------


def _shares(opts: BenchOptions) -> list[int | None]:
    if opts.readings is None:
        return [None] * opts.connections
    base, extra = divmod(opts.readings, opts.connections)
    return [base + (1 if i < extra else 0) for i in range(opts.connections)]


async def run_bench(opts: BenchOptions, payloads: Payloads | None = None) -> BenchResult:
    """Run one bench against the collector at ``opts.host:opts.port``; raise :class:`BenchError`."""
    payloads = payloads or Payloads(encode_readings(max(POOL, opts.batch)))
    conns = [_Connection(opts, i, share, payloads) for i, share in enumerate(_shares(opts))]
    try:
        try:
            async with asyncio.timeout(opts.timeout):
                await asyncio.gather(*(c.open() for c in conns))
                if opts.batch:
                    await asyncio.gather(*(c.hello() for c in conns))
        except TimeoutError:
            raise BenchError(f"connecting took more than {opts.timeout:g} s") from None
        cpu_before = time.process_time()
        start = time.perf_counter()
        deadline = start + opts.duration if opts.duration is not None else None
        if opts.batch:
            await asyncio.gather(*(c.run_batched(start, deadline) for c in conns))
        else:
            await asyncio.gather(*(c.run_loose(start, deadline) for c in conns))
        elapsed = max(c.stats.finished_at for c in conns) - start
        cpu = time.process_time() - cpu_before
    finally:
        for conn in conns:
            conn.close()
    latencies = [s * 1e3 for c in conns for s in c.stats.latencies]
    return BenchResult(
        connections=opts.connections,
        batch=opts.batch,
        readings=sum(c.stats.readings for c in conns),
        accepted=sum(c.stats.accepted for c in conns),
        rejected=sum(c.stats.rejected for c in conns),
        nacks=sum(c.stats.nacks for c in conns),
        marker_readings=sum(c.stats.markers for c in conns),
        bytes_sent=sum(c.stats.bytes_sent for c in conns),
        elapsed=elapsed,
        cpu_seconds=cpu,
        latency_ms=percentiles(latencies),
        drain_seconds=None if opts.batch else max(c.stats.drain for c in conns),
    )
