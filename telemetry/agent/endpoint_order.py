"""The order an agent tries its collectors in, so that a fleet given one list spreads over it.

How this works: an agent with ``n`` endpoints starts at the index :func:`first_endpoint`
derives from its id and then steps through the list by a *stride*, also derived from its id
(:func:`endpoint_stride`: a number from 1 to ``n - 1`` with no common factor with ``n``, so
the agent visits every endpoint once in ``n`` tries). A fleet with numbered ids spreads
evenly over the list at start; and when one collector drains, its agents do not all move to
the same next one: with three collectors, half of them go to each of the other two.

Both come from a BLAKE2b hash of the id, not from Python's per-process salted ``hash``: an
agent restarted, or run on another machine, makes the same choices. Plain functions and a
small object: no I/O, tested without an event loop.
"""

from __future__ import annotations

import hashlib
from math import gcd

__all__ = ["EndpointOrder", "endpoint_stride", "first_endpoint"]


def _digest(agent_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(agent_id.encode(), digest_size=8).digest(), "big")


def _check(count: int) -> None:
    if count < 1:
        raise ValueError(f"an agent needs at least one endpoint, got {count}")


def first_endpoint(agent_id: str, count: int) -> int:
    """The index of the endpoint the agent ``agent_id`` connects to first, out of ``count``."""
    _check(count)
    return _digest(agent_id) % count


def endpoint_stride(agent_id: str, count: int) -> int:
    """How far the agent ``agent_id`` moves along a list of ``count`` endpoints per reconnect.

    One of the numbers from 1 to ``count - 1`` that share no factor with ``count`` (1 for a
    list of one or two), so that ``count`` reconnects visit every endpoint once.
    """
    _check(count)
    strides = [s for s in range(1, count) if gcd(s, count) == 1] or [1]
    return strides[(_digest(agent_id) // count) % len(strides)]


class EndpointOrder:
    """The endpoints of one agent in the order it tries them, round and round."""

    def __init__(self, agent_id: str, endpoints: list[str]) -> None:
        self.endpoints = list(endpoints)
        self.first = first_endpoint(agent_id, len(self.endpoints))
        self.stride = endpoint_stride(agent_id, len(self.endpoints))
        self._tries = 0

    def peek(self) -> str:
        """The endpoint :meth:`next` returns next."""
        index = (self.first + self._tries * self.stride) % len(self.endpoints)
        return self.endpoints[index]

    def next(self) -> str:
        """The endpoint to connect to now; the one after it (by the stride) next time."""
        endpoint = self.peek()
        self._tries += 1
        return endpoint
