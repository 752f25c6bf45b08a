"""Reconnect delays: exponential backoff with full jitter.

The n-th delay after a failure is ``uniform(0, min(maximum, minimum * 2**n))``, the "full
jitter" of the AWS architecture blog: many agents that lost the same collector spread their
reconnects instead of arriving together. A successful handshake resets ``n`` to 0.
"""

from __future__ import annotations

import random

# Past this exponent the cap is reached for any sane minimum, and 2**n would overflow floats.
_MAX_EXPONENT = 64


class Backoff:
    """Delays before reconnect attempts: full jitter over an exponentially growing cap."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if minimum <= 0 or maximum <= 0:
            raise ValueError("backoff bounds must be > 0")
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
        self.attempt = 0
        self._rng = rng if rng is not None else random.Random()

    def cap(self, attempt: int) -> float:
        """The largest delay attempt number ``attempt`` may get."""
        if attempt >= _MAX_EXPONENT:
            return self.maximum
        return min(self.maximum, self.minimum * float(2**attempt))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows the cap for the following one."""
        delay = self._rng.uniform(0, self.cap(self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start over from the smallest cap (after a successful handshake)."""
        self.attempt = 0
