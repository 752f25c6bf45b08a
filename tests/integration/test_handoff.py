"""The --workers connection hand-off: sockets passed over a Unix socket pair, in order."""

from __future__ import annotations

import asyncio
import socket

from telemetry.collector.handoff import Receiver, handoff_pair, try_send_connection
from tests.support import send_connection, timeout


class Collected:
    """The sockets a receiver served; ``until(n)`` waits until there are ``n``."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self._more = asyncio.Event()

    def __call__(self, sock: socket.socket) -> None:
        self.sockets.append(sock)
        self._more.set()

    async def until(self, count: int, seconds: float) -> None:
        async with asyncio.timeout(timeout(seconds)):
            while len(self.sockets) < count:
                self._more.clear()
                await self._more.wait()


async def _received(count: int, channel: socket.socket) -> tuple[list[socket.socket], Receiver]:
    got = Collected()
    receiver = Receiver(channel, got, lambda: None)
    receiver.start()
    await got.until(count, 5)
    return got.sockets, receiver


async def test_passed_connections_arrive_in_order_and_still_work() -> None:
    """Each socket sent arrives as a working socket on the worker's end, in order."""
    ours, theirs = handoff_pair()
    pairs = [socket.socketpair() for _ in range(3)]
    for mine, _ in pairs:
        await send_connection(ours, mine)
        mine.close()  # the supervisor closes its copy; the worker's stays open
    got, receiver = await _received(3, theirs)
    for n, (sock, (_, peer)) in enumerate(zip(got, pairs, strict=True)):
        sock.sendall(b"reading %d" % n)
        assert peer.recv(64) == b"reading %d" % n
        sock.close()
        peer.close()
    receiver.close()
    ours.close()


async def test_a_full_channel_makes_the_supervisor_wait_not_fail() -> None:
    """When the worker reads nothing for a while, sending waits; nothing is lost."""
    ours, theirs = handoff_pair()
    sent: list[socket.socket] = []
    peers: list[socket.socket] = []

    async def send_many() -> None:
        for _ in range(600):  # the channel holds ~280 before the sender must wait
            mine, peer = socket.socketpair()
            peers.append(peer)
            await send_connection(ours, mine)
            sent.append(mine)
            mine.close()

    sender = asyncio.create_task(send_many())
    await asyncio.sleep(0.2)
    assert not sender.done()  # the channel filled up: the sender waits for the worker
    got = Collected()
    receiver = Receiver(theirs, got, lambda: None)
    receiver.start()
    async with asyncio.timeout(timeout(20)):
        await sender
    await got.until(len(sent), 20)
    assert len(got.sockets) == 600
    for sock in got.sockets + peers:
        sock.close()
    receiver.close()
    ours.close()


async def test_the_worker_hears_when_the_supervisor_is_gone() -> None:
    """Closing the supervisor's end calls on_closed once, and the receiver stops."""
    ours, theirs = handoff_pair()
    closed = asyncio.Event()
    receiver = Receiver(theirs, lambda sock: None, closed.set)
    receiver.start()
    ours.close()
    async with asyncio.timeout(timeout(5)):
        await closed.wait()
    receiver.close()  # idempotent after the supervisor left


async def test_the_supervisor_skips_a_worker_whose_queue_is_full() -> None:
    """Round robin passes over a busy worker (its hand-off queue full) instead of waiting."""
    from types import SimpleNamespace

    from telemetry.collector.workers import Supervisor
    from telemetry.config import CollectorConfig

    supervisor = Supervisor(CollectorConfig(), None, 2)
    ends = [handoff_pair(), handoff_pair()]
    for worker, (ours, _) in zip(supervisor.workers, ends, strict=True):
        worker.process = SimpleNamespace(returncode=None)  # type: ignore[assignment]
        worker.channel = ours
    held: list[socket.socket] = []
    busy = ends[0][0]
    while True:  # fill worker 0's queue, as a worker whose loop is stuck would leave it
        mine, peer = socket.socketpair()
        held += [mine, peer]
        if not try_send_connection(busy, mine):
            break
    for _ in range(4):
        mine, peer = socket.socketpair()
        held += [mine, peer]
        async with asyncio.timeout(timeout(5)):
            await supervisor._hand_off(mine)
    _, fds, _, _ = socket.recv_fds(ends[1][1], 16, 16)
    passed = [fds]
    while sum(len(f) for f in passed) < 4:
        _, fds, _, _ = socket.recv_fds(ends[1][1], 16, 16)
        passed.append(fds)
    assert sum(len(f) for f in passed) == 4  # all four went to worker 1
    for f in passed:
        for fd in f:
            socket.socket(fileno=fd).close()
    for sock in held:
        sock.close()
    for ours, theirs in ends:
        ours.close()
        theirs.close()
