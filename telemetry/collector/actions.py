"""What a collector :class:`~telemetry.collector.session.Session` returns and reports: the
actions the I/O layer carries out, in order, and the events it counts and shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from telemetry.protocol import Rejection
from telemetry.sinks.base import DeadLetter, Record


class SessionEvents(Protocol):
    """What a session reports as it goes: the collector counts it and shows it live."""

    def frames(self, count: int) -> None: ...
    def accepted(self, records: Sequence[Record]) -> None: ...
    def rejected(
        self, who: str, errors: Sequence[str], kinds: Sequence[str], sensor: str | None = None
    ) -> None: ...
    def batch(self) -> None: ...
    def ack(self) -> None: ...
    def nack(self, reason: str) -> None: ...
    def sink_refused(self) -> None: ...
    def connection_error(self, code: str) -> None: ...
    def agent_connected(self, agent: str, peer: str) -> None: ...
    def closed(self, agent: str | None) -> None: ...


class NoEvents:
    """A :class:`SessionEvents` that keeps nothing (tests, tools)."""

    def frames(self, count: int) -> None:
        pass

    def accepted(self, records: Sequence[Record]) -> None:
        pass

    def rejected(
        self, who: str, errors: Sequence[str], kinds: Sequence[str], sensor: str | None = None
    ) -> None:
        pass

    def batch(self) -> None:
        pass

    def ack(self) -> None:
        pass

    def nack(self, reason: str) -> None:
        pass

    def sink_refused(self) -> None:
        pass

    def connection_error(self, code: str) -> None:
        pass

    def agent_connected(self, agent: str, peer: str) -> None:
        pass

    def closed(self, agent: str | None) -> None:
        pass


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` (one or more whole frames)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Queue:
    """Hand fire-and-forget records to the pipeline; nobody waits for them."""

    records: list[Record]


@dataclass(frozen=True, slots=True)
class Deliver:
    """A batch's valid records, to deliver before the ack. ``indexes[i]`` is the index in the
    batch of ``records[i]``; ``rejected`` are the readings validation refused."""

    seq: int
    records: list[Record]
    indexes: Sequence[int]
    rejected: list[Rejection]


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """Hand these rejected readings to the dead-letter sinks (never waits)."""

    letters: list[DeadLetter]


@dataclass(frozen=True, slots=True)
class Pause:
    """A point in a long piece of work where the I/O may let other connections run."""


PAUSE = Pause()

Action = Send | Queue | Deliver | DeadLetters | Pause
