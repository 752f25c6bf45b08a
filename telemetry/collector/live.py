"""What the collector has seen lately, for the live web view and ``telemetry tail``.

The connection code calls four hooks; they only update in-memory state and never block:
:meth:`LiveView.agent_connected`, :meth:`LiveView.agent_disconnected`,
:meth:`LiveView.accepted` (readings that went to the pipeline) and :meth:`LiveView.rejected`.

How this works: :meth:`LiveView.accepted` is on the ingest hot path, so it does no Python
work per record: per agent a counter in one-second buckets (readings/s over the last
:data:`RATE_WINDOW` seconds); per sensor, one dict update keeps the latest record of the
current :data:`HISTORY_STEP`. Those are folded into each sensor's state (its latest record, and
a history of one point per step, the last value in it, over :data:`HISTORY_SECONDS`, for the
sparklines) when the step ends or a reader asks; at most :data:`MAX_SENSORS` sensors are
tracked (when the table is full, sensors silent for :data:`SENSOR_TTL` make room), updates of
more are counted. Agents are those of open connections (removed when they close); the last
:data:`MAX_REJECTIONS` rejections are kept, their text truncated. ``telemetry tail``
subscribers (:mod:`.live_tail`) are offered every accepted batch. After a restart,
:meth:`LiveView.restore` seeds the latest values read back from a sink (:mod:`.live_seed`).
Everything heavier (pruning, sorting, JSON) happens in :meth:`LiveView.snapshot`, when a
page asks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from telemetry.collector.live_tail import MAX_TAIL_QUEUE, TAIL_QUEUE, Subscription, TailFilter, glob
from telemetry.protocol import format_timestamp
from telemetry.sinks.base import Record

__all__ = ["TAIL_QUEUE", "AgentInfo", "LiveView", "Subscription", "TailFilter"]

#: Rejections kept, errors kept per rejection, and characters kept of each string in one.
MAX_REJECTIONS = 100
MAX_ERRORS = 20
MAX_TEXT = 500
#: Seconds of readings/s averaging per agent.
RATE_WINDOW = 10
#: Seconds of sparkline per sensor, and seconds per point.
HISTORY_SECONDS = 600
HISTORY_STEP = 5
#: Sensors tracked at once; readings of further sensors are only counted.
MAX_SENSORS = 5000
_sensor = attrgetter("sensor")
#: Seconds after which a sensor that sent nothing is forgotten.
SENSOR_TTL = 3600


@dataclass(slots=True)
class AgentInfo:
    """One open connection that said hello (or a fire-and-forget peer).

    Slots and a plain list of buckets: 10,000 idle agents are 10,000 of these, and an empty
    ``deque`` alone is several times larger (docs/benchmarks.md, "Figures behind code
    choices").
    """

    conn_id: int
    agent: str
    peer: str
    connected_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    readings: int = 0
    #: Bytes received on the connection since hello.
    received: int = 0
    #: False for a fire-and-forget peer (no hello).
    hello: bool = True
    #: ``[second, readings]`` for the last ``RATE_WINDOW + 1`` seconds with readings.
    buckets: list[list[int]] = field(default_factory=list)

    def count(self, readings: int, now: float) -> None:
        """Add ``readings`` received at ``now``."""
        self.readings += readings
        self.last_seen = now
        second = int(now)
        buckets = self.buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += readings
        else:
            buckets.append([second, readings])
            if len(buckets) > RATE_WINDOW + 1:
                del buckets[0]

    def rate(self, now: float) -> float:
        """Readings per second over the last :data:`RATE_WINDOW` seconds (or since connect)."""
        first = int(now) - RATE_WINDOW + 1
        total = sum(n for second, n in self.buckets if second >= first)
        span = max(1.0, min(float(RATE_WINDOW), now - self.connected_at))
        return total / span


@dataclass
class Rejected:
    """A rejected reading: who sent it, when, and why."""

    at: float
    agent: str
    errors: tuple[str, ...]
    #: The reading's sensor, when it had one that is a string.
    sensor: str | None = None


@dataclass(slots=True)
class SensorState:
    """The latest record of one sensor, and ``[step start, value]`` points of its history."""

    last: Record
    seen: float
    history: deque[list[float]]
    #: When the record was restored from a sink (:meth:`LiveView.restore`); None once a
    #: reading came in. A restored sensor is forgotten SENSOR_TTL after the restore.
    restored: float | None = None

    def silent(self, now: float) -> bool:
        """True when nothing was heard (or restored) for :data:`SENSOR_TTL` seconds."""
        return now - max(self.seen, self.restored or 0.0) > SENSOR_TTL


class LiveView:
    """In-memory state of connected agents, latest values and recent rejections."""

    def __init__(self) -> None:
        self.agents: dict[int, AgentInfo] = {}
        self._sensors: dict[str, SensorState] = {}
        #: The latest record of each sensor heard from since the last fold, in ``_step``.
        self._pending: dict[str, Record] = {}
        self._step = 0.0
        self.rejections: deque[Rejected] = deque(maxlen=MAX_REJECTIONS)
        self.rejected_total = 0
        #: Updates of sensors beyond :data:`MAX_SENSORS` (one per sensor and step), not shown.
        self.untracked = 0
        #: Tail subscribers (their number is capped by the HTTP port: max_tail_subscribers).
        self.subscriptions: set[Subscription] = set()
        #: The step of the last pass forgetting silent sensors (when the table is full).
        self._pruned = -1.0
        self._points = HISTORY_SECONDS // HISTORY_STEP

    # --- hooks (hot path) -------------------------------------------------------------------

    def agent_connected(self, conn_id: int, agent: str, peer: str) -> None:
        self.agents[conn_id] = AgentInfo(conn_id, agent, peer)

    def agent_disconnected(self, conn_id: int) -> None:
        self.agents.pop(conn_id, None)

    def accepted(self, conn_id: int, records: Sequence[Record]) -> None:
        if not records:
            return
        now = time.time()
        info = self.agents.get(conn_id)
        if info is None:  # a fire-and-forget peer: shown while its connection is open
            peer = records[0].agent
            info = self.agents[conn_id] = AgentInfo(conn_id, peer, peer, hello=False)
        info.count(len(records), now)
        step = now - now % HISTORY_STEP
        if step != self._step:
            self._fold()
            self._step = step
        # Only each sensor's last record of a step counts: a dict update, no loop in Python.
        pending = self._pending
        pending.update(zip(map(_sensor, records), records, strict=True))
        if len(pending) > MAX_SENSORS:
            self._fold()
        for subscription in self.subscriptions:
            subscription.offer(records)

    def _fold(self) -> None:
        """Move the pending latest records into the sensors' state and history."""
        pending, self._pending = self._pending, {}
        sensors, step = self._sensors, self._step
        for name, record in pending.items():
            seen = record.received_at.timestamp()
            state = sensors.get(name)
            if state is None:
                if len(sensors) >= MAX_SENSORS:
                    self._forget_silent(step)  # make room: sensors silent for SENSOR_TTL
                if len(sensors) >= MAX_SENSORS:
                    self.untracked += 1
                    continue
                state = sensors[name] = SensorState(record, seen, deque(maxlen=self._points))
            state.last = record
            state.seen = seen
            state.restored = None
            history = state.history
            if history and history[-1][0] == step:
                history[-1][1] = record.value
            else:
                history.append([step, record.value])

    def _forget_silent(self, now: float) -> None:
        """Forget sensors silent for :data:`SENSOR_TTL` (at most once per step)."""
        if self._pruned == now:
            return
        self._pruned = now
        sensors = self._sensors
        for name in [n for n, s in sensors.items() if s.silent(now)]:
            del sensors[name]

    def received(self, conn_id: int, count: int) -> None:
        """``count`` bytes came in on the connection (counted once it said hello)."""
        info = self.agents.get(conn_id)
        if info is not None:
            info.received += count

    def rejected(
        self, conn_id: int, agent: str, errors: Sequence[str], sensor: str | None = None
    ) -> None:
        self.rejected_total += 1
        kept = tuple(error[:MAX_TEXT] for error in errors[:MAX_ERRORS])
        name = sensor[:MAX_TEXT] if isinstance(sensor, str) else None
        self.rejections.append(Rejected(time.time(), agent[:MAX_TEXT], kept, name))

    def restore(self, records: Sequence[Record], now: float | None = None) -> int:
        """Seed the latest values with ``records`` read back from a sink after a restart:
        only sensors not heard from since, up to :data:`MAX_SENSORS`. Returns how many."""
        now = time.time() if now is None else now
        sensors = self.sensors
        restored = 0
        for record in records:
            if record.sensor in sensors or len(sensors) >= MAX_SENSORS:
                continue
            seen = record.received_at.timestamp()
            history: deque[list[float]] = deque(maxlen=self._points)
            history.append([seen - seen % HISTORY_STEP, record.value])
            sensors[record.sensor] = SensorState(record, seen, history, restored=now)
            restored += 1
        return restored

    # --- readers ----------------------------------------------------------------------------

    @property
    def sensors(self) -> dict[str, SensorState]:
        """Every tracked sensor's state, up to date."""
        self._fold()
        return self._sensors

    @property
    def latest(self) -> dict[str, Record]:
        """The latest record of every tracked sensor."""
        return {name: state.last for name, state in self.sensors.items()}

    def subscribe(self, tail_filter: TailFilter, maxsize: int = TAIL_QUEUE) -> Subscription:
        """A new tail subscriber; call :meth:`unsubscribe` when it goes."""
        subscription = Subscription(tail_filter, max(1, min(maxsize, MAX_TAIL_QUEUE)))
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop feeding ``subscription``."""
        self.subscriptions.discard(subscription)
        subscription.close()

    def close_subscriptions(self) -> None:
        """End every tail stream (the collector is stopping)."""
        for subscription in list(self.subscriptions):
            self.unsubscribe(subscription)

    def snapshot(
        self,
        open_connections: Collection[int] | None = None,
        *,
        sensor_glob: str | None = None,
        limit: int = 500,
        now: float | None = None,
    ) -> dict[str, Any]:
        """A JSON-ready picture of agents, sensors (with history) and rejections.

        ``open_connections`` (the collector's connection ids) prunes fire-and-forget peers
        that left; sensors silent for :data:`SENSOR_TTL` seconds are forgotten here.
        """
        now = time.time() if now is None else now
        sensors_state = self.sensors
        if open_connections is not None:
            for conn_id in [c for c in self.agents if c not in open_connections]:
                del self.agents[conn_id]
        for name in [n for n, s in sensors_state.items() if s.silent(now)]:
            del sensors_state[name]
        agents = [
            {
                "agent": info.agent,
                "peer": info.peer,
                "hello": info.hello,
                "connected_at": info.connected_at,
                "last_seen": info.last_seen,
                "readings": info.readings,
                "received_bytes": info.received,
                "rate": round(info.rate(now), 2),
            }
            for info in sorted(self.agents.values(), key=lambda i: (i.agent, i.conn_id))
        ]
        pattern = glob([sensor_glob]) if sensor_glob else None
        names = sorted(n for n in sensors_state if pattern is None or pattern.match(n))
        sensors = []
        for name in names[:limit]:
            state = sensors_state[name]
            record = state.last
            sensors.append(
                {
                    "sensor": name,
                    "agent": record.agent,
                    "metric": record.metric,
                    "value": record.value,
                    "unit": record.unit,
                    "ts": format_timestamp(record.ts),
                    "seen": state.seen,
                    "restored": state.restored is not None,
                    "tags": record.tags,
                    "history": [[t, v] for t, v in state.history if t >= now - HISTORY_SECONDS],
                }
            )
        return {
            "now": now,
            "history_seconds": HISTORY_SECONDS,
            "agents": agents,
            "sensors": sensors,
            "sensors_total": len(names),
            "sensors_untracked": self.untracked,
            "rejected_total": self.rejected_total,
            "rejections": [
                {"at": r.at, "agent": r.agent, "sensor": r.sensor, "errors": list(r.errors)}
                for r in reversed(self.rejections)
            ],
            "tail_subscribers": len(self.subscriptions),
        }
