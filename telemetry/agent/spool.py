"""The spool: every batch closed by the agent and not yet acked, in ``seq`` order.

How this works: closing a batch calls :meth:`Spool.add`, which gives it the next ``seq``
(``seq`` only grows, across restarts too). The sender reads batches by ``seq`` and sends them;
an ``ack`` removes one with :meth:`Spool.ack`. A batch stays in the spool while it is in
flight, so a lost connection loses nothing: after a reconnect the sender starts again from
:attr:`Spool.oldest_seq`. The spool is bounded in readings and in bytes (the encoded frames);
when an added batch makes it overflow, the oldest batches are dropped (sent or not), counted
by reason and logged as a ``readings_dropped`` event (for a full spool, at most one a second:
under load it drops on every batch it takes, and the drops in between go into the next event,
or into one when the spool closes).

The spool also keeps the reading ledger, updated with the state it describes:
``spooled = acked + rejected + dropped + readings`` holds after every call.

:class:`Spool` is the interface. :class:`MemorySpool` keeps everything in a dict and starts
``seq`` from the clock (:func:`restart_safe_seq`);
:class:`~telemetry.agent.disk_spool.DiskSpool` keeps batches, ``next_seq`` and the ledger in
a SQLite file, so they survive a restart, a crash and a long outage, and builds on what this
module shares (:class:`SpooledBatch`, :class:`SpoolCounters`, :func:`log_dropped`); this
module never imports it. :func:`~telemetry.agent.spool_factory.open_spool` builds the one a
:class:`~telemetry.config.SpoolConfig` asks for.
"""

from __future__ import annotations

import builtins
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from pydantic_core import to_json

from telemetry.log import get_logger
from telemetry.protocol import encode_frame
from telemetry.protocol.framing import HEADER_SIZE

log = get_logger("telemetry.agent.spool")

#: Least seconds between two ``readings_dropped`` events of a full spool.
SPOOL_FULL_LOG_INTERVAL = 1.0
#: Drop reasons (the ``reason`` of ``readings_dropped`` and the keys of ``dropped_by_reason``).
SPOOL_FULL = "spool_full"
BATCH_TOO_LARGE = "batch_too_large"
UNACKED_AT_EXIT = "unacked_at_exit"
#: The spool could not store a closed batch (disk full, I/O error): its readings are counted
#: as dropped instead of killing the source that produced them.
SPOOL_WRITE_FAILED = "spool_write_failed"
#: A stored batch that cannot be read back as the frame it was (a corrupt spool file): it is
#: quarantined to the dead-letter file beside the spool.
SPOOL_CORRUPT = "spool_corrupt"

#: Payload bytes of a batch frame besides its readings, with room for a 20-digit seq.
BATCH_OVERHEAD = len(b'{"type":"batch","seq":,"readings":[]}') + 20


def split_items(
    items: Sequence[bytes], max_frame_bytes: int
) -> tuple[list[list[bytes]], list[bytes]]:
    """``items`` (encoded readings, in order) cut into runs whose batch frame payload fits
    ``max_frame_bytes``, and the items too large to fit even alone."""
    chunks: list[list[bytes]] = []
    too_large: list[bytes] = []
    current: list[bytes] = []
    size = BATCH_OVERHEAD
    for item in items:
        if BATCH_OVERHEAD + len(item) > max_frame_bytes:
            too_large.append(item)
            continue
        cost = len(item) + (1 if current else 0)  # the comma
        if size + cost > max_frame_bytes:
            chunks.append(current)
            current, size, cost = [], BATCH_OVERHEAD, len(item)
        current.append(item)
        size += cost
    if current:
        chunks.append(current)
    return chunks, too_large


@dataclass(frozen=True)
class SpooledBatch:
    """A closed batch waiting for its ack: its ``seq`` and each reading as compact JSON.

    Readings are kept encoded: bytes cost the garbage collector nothing, and the frame is
    their join.
    """

    seq: int
    items: tuple[bytes, ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def of(cls, seq: int, readings: Sequence[bytes | Mapping[str, Any]]) -> SpooledBatch:
        """A batch of readings given encoded (``bytes``) or as wire dicts."""
        if set(map(type, readings)) <= {builtins.bytes}:  # as the agent gives them: no loop
            return cls(seq, tuple(readings))  # type: ignore[arg-type]
        return cls(seq, tuple(r if isinstance(r, bytes) else to_json(r) for r in readings))

    @cached_property
    def readings(self) -> tuple[dict[str, Any], ...]:
        """The readings as wire dicts, decoded when asked for (inspection, tests)."""
        return tuple(json.loads(item) for item in self.items)

    @cached_property
    def frame(self) -> bytes:
        """The complete ``batch`` frame (header and payload), encoded once, reused on resend."""
        return encode_frame(
            b'{"type":"batch","seq":%d,"readings":[%b]}' % (self.seq, b",".join(self.items))
        )

    @classmethod
    def from_frame(cls, seq: int, frame: bytes) -> SpooledBatch:
        """The batch stored as ``frame`` (as :attr:`frame` made it), without re-encoding it."""
        readings = tuple(json.loads(frame[HEADER_SIZE:])["readings"])
        batch = cls(seq, tuple(to_json(r) for r in readings))
        batch.__dict__["frame"] = frame  # what cached_property would have computed
        batch.__dict__["readings"] = readings
        return batch


class Spool(Protocol):
    """Storage for unacked batches; the sender's only source of what to (re)send."""

    @property
    def durable(self) -> bool:
        """True when held batches survive the process (a disk spool)."""
        ...

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next added batch will get."""
        ...

    @property
    def oldest_seq(self) -> int | None:
        """The smallest ``seq`` still held, or None when the spool is empty."""
        ...

    @property
    def readings(self) -> int:
        """Readings held."""
        ...

    @property
    def batches(self) -> int:
        """Batches held."""
        ...

    @property
    def bytes(self) -> int:
        """Bytes of the held batches' frames (what ``max_bytes`` bounds)."""
        ...

    @property
    def spooled(self) -> int:
        """Readings ever given to :meth:`add` (for a disk spool: over the file's life)."""
        ...

    @property
    def acked(self) -> int:
        """Readings acked as accepted by the collector."""
        ...

    @property
    def rejected(self) -> int:
        """Readings acked as rejected by the collector (they never succeed on resend)."""
        ...

    @property
    def dropped(self) -> int:
        """Readings dropped, because the spool was full or a batch undeliverable."""
        ...

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """:attr:`dropped` split by reason (``spool_full``, ``batch_too_large``)."""
        ...

    def add(self, readings: Sequence[builtins.bytes | Mapping[str, Any]]) -> SpooledBatch:
        """Store ``readings`` (each encoded, or a wire dict) as a new batch with the next
        ``seq``; may drop the oldest."""
        ...

    def get(self, seq: int) -> SpooledBatch | None:
        """The batch ``seq``, or None when it was acked, dropped, or never added."""
        ...

    def pending(self) -> list[SpooledBatch]:
        """Every batch held, in ``seq`` order."""
        ...

    def ack(self, seq: int, rejected: int = 0) -> SpooledBatch | None:
        """Remove batch ``seq``, of which ``rejected`` readings were rejected; return it.

        None when it is not held (already acked or dropped): nothing is counted then.
        """
        ...

    def drop(self, seq: int, reason: str) -> int:
        """Remove batch ``seq`` without an ack, count its readings as dropped, return them."""
        ...

    def split(self, seq: int, max_frame_bytes: int) -> list[int]:
        """Replace batch ``seq`` by batches of its readings, in order, whose frames carry at
        most ``max_frame_bytes`` of payload, under new seqs (from :attr:`next_seq`); return
        them. A reading too large alone is dropped as ``batch_too_large``.

        New seqs, never the old one: a reading id is ``<agent>:<seq>:<index>``, and a part
        sent as ``seq`` would give ids that other readings of the batch had.
        """
        ...

    def lose(self, readings: int, reason: str) -> None:
        """Count ``readings`` that could not be stored (:meth:`add` failed) as spooled and
        dropped for ``reason``, so the ledger still says where they went."""
        ...

    def close(self) -> None:
        """Release the storage (commit, close files); idempotent."""
        ...


def log_dropped(reason: str, readings: int, batches: int, **context: Any) -> None:
    """The one event every drop of readings emits: ``readings_dropped`` with its ``reason``."""
    log.warning("readings_dropped", reason=reason, readings=readings, batches=batches, **context)


def restart_safe_seq() -> int:
    """A first ``seq`` above any that an earlier run of this agent used: the clock in µs.

    The reading id ``<agent>:<seq>:<index>`` is the sinks' idempotency key, so a restarted
    agent that counted from 0 again would have its new readings ignored as duplicates. Until
    the spool (and its counter) lives on disk, starting from the clock keeps ids unique: a run
    would have to close more than a million batches a second to catch up with it.
    """
    return time.time_ns() // 1000


class SpoolCounters:
    """The counting half of :class:`Spool`, the same for every spool: a spool keeps these
    fields up to date and inherits the properties that read them."""

    _next_seq: int
    _readings: int
    _bytes: int
    _spooled: int
    _acked: int
    _rejected: int
    _dropped: Mapping[str, int]
    max_readings: int
    max_bytes: int | None
    #: When the last ``spool_full`` event was logged, and the drops held for the next one.
    _full_logged_at: float = -math.inf
    _full_held: tuple[int, int] = (0, 0)

    def _log_spool_full(self, readings: int, batches: int) -> None:
        """Log readings dropped by a full spool: now if the last such event is
        :data:`SPOOL_FULL_LOG_INTERVAL` old, else with the next one."""
        held_readings, held_batches = self._full_held
        readings, batches = readings + held_readings, batches + held_batches
        now = time.monotonic()
        if now - self._full_logged_at < SPOOL_FULL_LOG_INTERVAL:
            self._full_held = (readings, batches)
            return
        self._full_logged_at, self._full_held = now, (0, 0)
        log_dropped(
            SPOOL_FULL,
            readings,
            batches,
            max_readings=self.max_readings,
            max_bytes=self.max_bytes,
            dropped_total=self.dropped,
        )

    def _log_held_drops(self) -> None:
        """Log the drops still held for the next event (on close)."""
        if self._full_held[0]:
            self._full_logged_at = -math.inf
            self._log_spool_full(0, 0)

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def readings(self) -> int:
        return self._readings

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def spooled(self) -> int:
        return self._spooled

    @property
    def acked(self) -> int:
        return self._acked

    @property
    def rejected(self) -> int:
        return self._rejected

    @property
    def dropped(self) -> int:
        return sum(self._dropped.values())

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        return dict(self._dropped)
