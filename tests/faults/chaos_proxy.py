"""A TCP proxy that breaks connections on purpose: cuts, stalls and delays, from a seed.

How this works: the proxy runs its own asyncio loop in a thread, so the tests that drive
agent and collector processes stay plain synchronous code. Every accepted connection gets a
*plan*, drawn from a ``random.Random`` seeded with ``seed`` and the connection's number, so a
seed replays the same faults in the same order (their timing still depends on the machine):

- ``cut_header`` / ``cut_payload``: in the agent -> collector direction, after ``frame``
  frames, forward only part of the next frame's 10-byte header (1 to 9 bytes) or of its
  payload, then close both sides (a FIN or, half the time, a RST);
- ``cut_reply``: the same inside a collector -> agent frame (a ``welcome`` or an ``ack``);
- ``stall``: after ``frame`` frames, forward nothing in either direction for ``seconds``;
- ``delay``: hold every chunk for a few milliseconds (latency) in both directions, and cut
  the connection inside a payload later on.

Kinds are dealt like cards from a shuffled deck holding each kind once, so every kind occurs
in any run of connections as long as the deck. After :meth:`ChaosProxy.calm` connections are
clean pipes.

The frame positions are found by a small header parser (:class:`FrameCursor`), so a cut lands
exactly where the plan says. :meth:`ChaosProxy.calm` makes later connections clean, so a test
can finish; :meth:`ChaosProxy.hold_replies` stops forwarding collector -> agent bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from dataclasses import dataclass

HEADER = 10
KINDS = ("cut_header", "cut_payload", "cut_reply", "stall", "delay")


@dataclass
class Plan:
    """What the proxy does to one connection."""

    kind: str
    frame: int = 0  # frames forwarded intact before the fault
    offset: float = 0.5  # where in the frame: header byte (1..9) or payload fraction
    seconds: float = 0.0  # stall length, or per-chunk delay
    rst: bool = False  # cut with a RST instead of a FIN

    @classmethod
    def draw(cls, kind: str, rng: random.Random) -> Plan:
        """A plan of ``kind`` with random parameters."""
        rst = rng.random() < 0.5
        if kind == "cut_header":
            return cls(kind, rng.randint(1, 12), rng.randint(1, HEADER - 1), rst=rst)
        if kind == "cut_payload":
            return cls(kind, rng.randint(1, 12), rng.uniform(0.01, 0.99), rst=rst)
        if kind == "cut_reply":
            return cls(kind, rng.randint(0, 8), rng.uniform(0.01, 0.99), rst=rst)
        if kind == "stall":
            return cls(kind, rng.randint(1, 10), seconds=rng.uniform(0.5, 3.5))
        if kind == "delay":
            return cls(kind, rng.randint(5, 20), rng.uniform(0.01, 0.99), rng.uniform(0.002, 0.03))
        return cls("none")


class FrameCursor:
    """Follows the frames of one direction of a stream and finds a cut point in them."""

    def __init__(self) -> None:
        self.frame = 0  # index of the frame being read
        self._header = bytearray()
        self._total = 0  # payload length of the current frame
        self._left: int | None = None  # payload bytes still to come; None while in a header

    def find_cut(self, data: bytes, frame: int, where: str, offset: float) -> int | None:
        """Feed ``data``; return the index in it where the planned cut falls, else None.

        ``where`` is ``header`` (cut after ``offset`` header bytes) or ``payload`` (cut after
        that fraction of the payload). A frame without payload (heartbeat) moves the cut to
        the next frame.
        """
        pos = 0
        while pos < len(data):
            if self._left is None:
                have = len(self._header)
                if (
                    where == "header"
                    and self.frame >= frame
                    and have <= offset < HEADER
                    and offset - have < len(data) - pos
                ):
                    return pos + int(offset) - have
                take = min(HEADER - have, len(data) - pos)
                self._header += data[pos : pos + take]
                pos += take
                if len(self._header) == HEADER:
                    self._total = self._left = int(self._header)
                    self._header.clear()
                    if self._total == 0:
                        self.frame += 1
                        self._left = None
            else:
                if where == "payload" and self.frame >= frame:
                    target = min(max(1, int(offset * self._total)), self._total - 1)
                    done = self._total - self._left
                    if done <= target < done + (len(data) - pos):
                        return pos + target - done
                take = min(self._left, len(data) - pos)
                self._left -= take
                pos += take
                if self._left == 0:
                    self.frame += 1
                    self._left = None
        return None


class ChaosProxy:
    """Listens on a free port and forwards to ``127.0.0.1:upstream``, breaking things."""

    def __init__(self, upstream: int, seed: int) -> None:
        self.upstream = upstream
        self.seed = seed
        self.port = 0
        #: Faults that actually happened, by kind (``cut_header``, ``stall``, ...).
        self.stats: Counter[str] = Counter()
        self._calm = threading.Event()
        self._rng = random.Random(seed)
        self._deck: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._released = asyncio.Event()  # cleared while replies are held
        self._released.set()

    def start(self) -> ChaosProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def calm(self) -> None:
        """From now on, new connections are clean pipes."""
        self._calm.set()

    def hold_replies(self, hold: bool) -> None:
        """Stop (or resume) forwarding collector -> agent bytes on every connection."""
        released = self._released
        self._loop.call_soon_threadsafe(released.clear if hold else released.set)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()  # its self-pipe sockets too (ResourceWarnings otherwise)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        plan = Plan("none") if self._calm.is_set() else self._deal()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        if plan.kind == "delay":
            self.stats["delay"] += 1
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, plan, replies=False)),
            asyncio.create_task(self._pump(up_reader, writer, plan, replies=True)),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            rst = any(task.result() for task in done)
        finally:
            # One side ending ends the other: the proxy never half-closes.
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (writer, up_writer):
                self._writers.discard(w)
                if rst:
                    w.transport.abort()
                else:
                    w.close()

    def _deal(self) -> Plan:
        if not self._deck:
            self._deck = list(KINDS)
            self._rng.shuffle(self._deck)
        return Plan.draw(self._deck.pop(), self._rng)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        plan: Plan,
        *,
        replies: bool,
    ) -> bool:
        """Forward one direction until EOF or the planned cut; True to end with a RST."""
        cursor = FrameCursor()
        if replies:
            cuts, where = plan.kind == "cut_reply", "payload"
        else:
            cuts = plan.kind in ("cut_header", "cut_payload", "delay")
            where = "header" if plan.kind == "cut_header" else "payload"
        stalls = plan.kind == "stall" and not replies
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return False
                if replies:
                    await self._released.wait()
                if plan.kind == "delay":
                    await asyncio.sleep(plan.seconds)
                if stalls:
                    at = cursor.find_cut(data, plan.frame, "payload", 0.5)
                    if at is not None:
                        stalls = False
                        self.stats["stall"] += 1
                        writer.write(data[:at])
                        await asyncio.sleep(plan.seconds)
                        writer.write(data[at:])
                        await writer.drain()
                        continue
                if cuts:
                    at = cursor.find_cut(data, plan.frame, where, plan.offset)
                    if at is not None:
                        writer.write(data[:at])
                        with contextlib.suppress(OSError):
                            await writer.drain()
                        self.stats["cut_reply" if replies else f"cut_{where}"] += 1
                        return plan.rst
                writer.write(data)
                await writer.drain()
        except OSError:
            return False
