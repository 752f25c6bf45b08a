"""The chaos proxy's frame cursor puts cuts exactly where a plan says, however data arrives."""

from __future__ import annotations

import pytest

from telemetry.protocol import encode_frame
from tests.faults.chaos_proxy import FrameCursor

STREAM = b"".join(encode_frame(p) for p in [b'{"type":"hello"}', b"", b"x" * 50, b"y" * 20])
# Frame starts: hello at 0, heartbeat at 26, "x" frame at 36 (payload 46..96), "y" at 96.


def cut_at(frame: int, where: str, offset: float, chunk: int) -> int | None:
    cursor = FrameCursor()
    for start in range(0, len(STREAM), chunk):
        at = cursor.find_cut(STREAM[start : start + chunk], frame, where, offset)
        if at is not None:
            return start + at
    return None


@pytest.mark.parametrize("chunk", [1, 3, 7, len(STREAM)])
def test_header_cut_lands_inside_the_header(chunk: int) -> None:
    """A header cut after 4 bytes of frame 2 falls at byte 4 of that frame, for any chunking."""
    assert cut_at(2, "header", 4, chunk) == 36 + 4


@pytest.mark.parametrize("chunk", [1, 5, len(STREAM)])
def test_payload_cut_skips_heartbeats_and_lands_inside_the_payload(chunk: int) -> None:
    """A payload cut aimed at a heartbeat moves to the next frame, strictly inside its payload."""
    assert cut_at(1, "payload", 0.5, chunk) == 46 + 25
    assert cut_at(2, "payload", 0.999, chunk) == 46 + 49
    assert cut_at(3, "payload", 0.0, chunk) == 96 + 10 + 1


def test_no_cut_past_the_end() -> None:
    """A cut planned after the last frame never happens."""
    assert cut_at(9, "header", 1, 4) is None
