"""What ``telemetry bench`` sends: a pool of readings encoded once, frames built from it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from telemetry.protocol import encode_frame


def sample_reading(i: int, ts: str) -> dict[str, Any]:
    """Reading number ``i`` of the pool: ~150 bytes of JSON, like the issue describes."""
    return {
        "sensor": f"greenhouse-{i % 50}/soil-{i % 7}",
        "metric": "moisture",
        "value": 41.25 + i % 100,
        "unit": "%",
        "ts": ts,
        "tags": {"site": "north", "rack": f"r{i % 9}"},
    }


def encode_readings(count: int, ts: str | None = None) -> list[bytes]:
    """``count`` pool readings as compact UTF-8 JSON, stamped ``ts`` (default: now)."""
    if ts is None:
        now = datetime.now(UTC)
        ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return [json.dumps(sample_reading(i, ts), separators=(",", ":")).encode() for i in range(count)]


class Payloads:
    """The pre-encoded bytes every connection sends."""

    def __init__(self, readings: list[bytes]) -> None:
        self.readings = readings
        self.frames = [encode_frame(r) for r in readings]
        #: All frames back to back, and where each starts (one extra offset: the end).
        self.block = b"".join(self.frames)
        self.offsets = [0]
        for frame_ in self.frames:
            self.offsets.append(self.offsets[-1] + len(frame_))
        self._arrays: dict[int, bytes] = {}

    def array(self, count: int) -> bytes:
        """The JSON array of the first ``count`` readings (cached)."""
        cached = self._arrays.get(count)
        if cached is None:
            cached = b"[" + b",".join(self.readings[:count]) + b"]"
            self._arrays[count] = cached
        return cached

    def loose(self, start: int, count: int) -> list[bytes]:
        """``count`` fire-and-forget frames starting at pool index ``start`` (wrapping)."""
        pieces: list[bytes] = []
        n = len(self.frames)
        start %= n
        while count > 0:
            take = min(count, n - start)
            if start == 0 and take == n:
                pieces.append(self.block)
            else:
                pieces.append(self.block[self.offsets[start] : self.offsets[start + take]])
            count -= take
            start = 0
        return pieces


def batch_frame(payloads: Payloads, seq: int, count: int) -> bytes:
    """A ``batch`` frame of the first ``count`` pool readings: the pre-encoded readings
    spliced into a :class:`~telemetry.protocol.Batch` (building the model per batch would
    cost the load generator more than the collector it measures)."""
    payload = b'{"type":"batch","seq":%d,"readings":%s}' % (seq, payloads.array(count))
    return encode_frame(payload)


# --- one connection --------------------------------------------------------------------------
