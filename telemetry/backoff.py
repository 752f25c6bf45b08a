"""Retry delays: exponential backoff with full jitter, for the agent and the collector alike.

The n-th delay after a failure is ``uniform(0, min(cap, base * 2**n))``, the "full jitter" of
the AWS architecture blog: many agents that lost the same collector spread their reconnects
instead of arriving together, and a sink's retries do not beat on a backend in step.
:func:`backoff_delay` is one such delay; :class:`Backoff` counts the attempts for a caller
that retries in a loop (the agent's sender: a successful handshake resets ``n`` to 0).

How soon a retrying client notices that its peer is back depends on the cap alone: once the
cap is reached the attempts are ``uniform(0, cap)`` apart, so the first attempt after the peer
returns comes at most ``cap`` seconds later and ``cap / 3`` on average (the residual of a
uniform gap). :func:`reconnect_lag` computes it for one outage without an event loop; the
agent's defaults (``reconnect_min`` 0.1 s, ``reconnect_max`` 3 s) reconnect within 3 s on a LAN.
"""

from __future__ import annotations

import random

# Past this exponent the cap is reached for any sane base, and 2**n would overflow floats.
_MAX_EXPONENT = 64


def backoff_cap(attempt: int, base: float, cap: float) -> float:
    """The largest delay attempt number ``attempt`` may get: ``min(cap, base * 2**attempt)``."""
    if attempt >= _MAX_EXPONENT:
        return cap
    return min(cap, base * float(2**attempt))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform between 0 and :func:`backoff_cap` seconds.

    ``rng`` defaults to the :mod:`random` module's shared generator.
    """
    uniform = rng.uniform if rng is not None else random.uniform
    return uniform(0, backoff_cap(attempt, base, cap))


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
        return backoff_cap(attempt, self.minimum, self.maximum)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows the cap for the following one."""
        delay = backoff_delay(self.attempt, self.minimum, self.maximum, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start over from the smallest cap (after a successful handshake)."""
        self.attempt = 0


def reconnect_lag(
    outage: float, backoff: Backoff, *, attempt_seconds: float = 0.0, max_attempts: int = 100_000
) -> float:
    """Seconds between the end of an ``outage`` and the first reconnect attempt after it.

    The connection is lost at 0 and the peer is back at ``outage``; each failed attempt takes
    ``attempt_seconds`` (a refused connect on a LAN: about 0) and is followed by
    ``backoff.next_delay()``. Pure arithmetic over the backoff's delays (``backoff`` advances),
    for tests and for choosing ``reconnect_max``. ValueError past ``max_attempts`` attempts.
    """
    now = 0.0
    for _ in range(max_attempts):
        now += backoff.next_delay()
        if now >= outage:
            return now - outage
        now += attempt_seconds
    raise ValueError(f"no attempt after an outage of {outage:g} s within {max_attempts} attempts")
