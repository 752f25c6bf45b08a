"""What the collector has seen lately, for the live web view and ``telemetry tail``.

The connection code calls four hooks; they only update in-memory state and never block:
:meth:`LiveView.agent_connected`, :meth:`LiveView.agent_disconnected`,
:meth:`LiveView.accepted` (readings that went to the pipeline) and :meth:`LiveView.rejected`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from telemetry.sinks.base import Record

MAX_REJECTIONS = 100


@dataclass
class AgentInfo:
    """One open connection that said hello (or a fire-and-forget peer)."""

    conn_id: int
    agent: str
    peer: str
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    readings: int = 0


@dataclass
class Rejected:
    """A rejected reading: who sent it, when, and why."""

    at: float
    agent: str
    errors: tuple[str, ...]


class LiveView:
    """In-memory state of connected agents, latest values and recent rejections."""

    def __init__(self) -> None:
        self.agents: dict[int, AgentInfo] = {}
        self.latest: dict[str, Record] = {}
        self.rejections: deque[Rejected] = deque(maxlen=MAX_REJECTIONS)

    def agent_connected(self, conn_id: int, agent: str, peer: str) -> None:
        self.agents[conn_id] = AgentInfo(conn_id, agent, peer)

    def agent_disconnected(self, conn_id: int) -> None:
        self.agents.pop(conn_id, None)

    def accepted(self, conn_id: int, records: Sequence[Record]) -> None:
        info = self.agents.get(conn_id)
        if info is not None:
            info.readings += len(records)
            info.last_seen = time.time()
        latest = self.latest
        for record in records:
            latest[record.sensor] = record

    def rejected(self, conn_id: int, agent: str, errors: Sequence[str]) -> None:
        self.rejections.append(Rejected(time.time(), agent, tuple(errors)))
