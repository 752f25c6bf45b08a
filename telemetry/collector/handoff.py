"""Handing accepted connections from the ``--workers`` supervisor to its workers.

How this works: the supervisor listens on the ingest port and accepts every connection
itself, then passes the socket to the next worker in turn (round robin) as ``SCM_RIGHTS``
over a Unix ``SOCK_SEQPACKET`` pair, one message per connection, and closes its copy. A
worker whose queue of passed connections is full (~280: its event loop is not reading it) is
skipped for the next one. A worker serves a passed socket exactly as one it accepted. Round
robin keeps the connection counts even: with ``SO_REUSEPORT`` the kernel hashes each
connection to a worker, and with a handful of connections one worker often got most of them
while another idled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from telemetry.log import get_logger

log = get_logger("telemetry.handoff")

#: Environment variable that gives a worker the file descriptor of its end of the pair.
HANDOFF_FD_ENV = "TELEMETRY_WORKER_HANDOFF_FD"
_MESSAGE = b"c"
_MAX_FDS = 64


def handoff_pair() -> tuple[socket.socket, socket.socket]:
    """The supervisor's end and the worker's end (inheritable, for ``pass_fds``)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.set_inheritable(True)
    return ours, theirs


def try_send_connection(channel: socket.socket, conn: socket.socket) -> bool:
    """Pass ``conn`` through ``channel``; ``False`` when the worker's queue is full. Raises
    :class:`OSError` when the worker is gone."""
    try:
        socket.send_fds(channel, [_MESSAGE], [conn.fileno()])
    except BlockingIOError:
        return False
    return True


async def wait_writable(channel: socket.socket) -> None:
    """Wait until ``channel`` has room again (its worker read some of its queue)."""
    loop = asyncio.get_running_loop()
    writable = loop.create_future()
    loop.add_writer(channel.fileno(), writable.set_result, None)
    try:
        await writable
    finally:
        loop.remove_writer(channel.fileno())


class Receiver:
    """The worker's end: calls ``serve(sock)`` for every connection the supervisor passes,
    and ``on_closed()`` when the supervisor's end closes."""

    def __init__(
        self,
        channel: socket.socket,
        serve: Callable[[socket.socket], None],
        on_closed: Callable[[], None],
    ) -> None:
        self.channel = channel
        self._serve = serve
        self._on_closed = on_closed
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.channel.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.channel.fileno(), self._receive)

    def close(self) -> None:
        """Take no more connections (idempotent)."""
        if self._loop is not None:
            self._loop.remove_reader(self.channel.fileno())
            self._loop = None
        self.channel.close()

    def _receive(self) -> None:
        while self._loop is not None:
            try:
                message, fds, _, _ = socket.recv_fds(self.channel, len(_MESSAGE), _MAX_FDS)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("handoff_failed", error=str(exc))
                message, fds = b"", []
            if not message and not fds:  # the supervisor is gone
                self.close()
                self._on_closed()
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                try:
                    self._serve(sock)
                except OSError as exc:  # e.g. the peer left before we got to it
                    log.info("handoff_connection_lost", error=str(exc))
                    with contextlib.suppress(OSError):
                        sock.close()
