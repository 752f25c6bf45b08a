"""What the agent's :class:`~telemetry.agent.session.AgentSession` returns and keeps: why a
connection ended, the sender's counters, the read-only view of the spool it needs, and the
actions the sender carries out."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from telemetry.agent.spool import SpooledBatch


class Outcome(enum.Enum):
    """Why a connection ended."""

    CONNECT_FAILED = "connect_failed"
    LOST = "lost"
    ERROR = "error"
    GOAWAY = "goaway"
    ACK_TIMEOUT = "ack_timeout"
    #: The collector broke the protocol (an ack for a batch not in flight, counts that do
    #: not add up, a bad welcome): what it said is not believed.
    PROTOCOL_ERROR = "protocol_error"
    #: A write did not complete within ``write_timeout`` (or the ack timeout): the collector
    #: or the path stopped reading.
    WRITE_TIMEOUT = "write_timeout"


@dataclass
class SenderStats:
    """Counters of the sender since start: batch sends (resends included), the resends among
    them, the readings sent at least once, and the connections welcomed."""

    batches_sent: int = 0
    batches_resent: int = 0
    sent_readings: int = 0  # first sends only
    #: Connections a collector welcomed.
    connections: int = 0
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
class SplitBatch:
    """Re-batch the readings of batch ``seq`` into batches whose frames carry at most
    ``max_frame_bytes`` of payload, under new seqs (see :meth:`Spool.split`)."""

    seq: int
    max_frame_bytes: int


@dataclass(frozen=True)
class DropBatch:
    """Remove batch ``seq`` from the spool unacked, counted as dropped for ``reason``."""

    seq: int
    reason: str


@dataclass(frozen=True)
class EndSession:
    """The session is over: close the connection."""

    outcome: Outcome
