"""Agents given the same endpoints spread over them (no event loop: the rule and the order)."""

from __future__ import annotations

from collections import Counter

import pytest

from telemetry.agent import MemorySpool
from telemetry.agent.sender import Sender, first_endpoint
from telemetry.config import AgentSection
from tests.support import tried_in_order

ENDPOINTS = ["c1:7600", "c2:7600", "c3:7600"]


def sender(agent_id: str, endpoints: list[str] = ENDPOINTS) -> Sender:
    return Sender(AgentSection(id=agent_id, endpoints=endpoints), MemorySpool(100))


@pytest.mark.parametrize("count", [2, 3, 5])
def test_a_fleet_with_numbered_ids_spreads_evenly(count: int) -> None:
    """3,000 agents named sensor-0000.. start within 10 % of an even share on each endpoint."""
    starts = Counter(first_endpoint(f"sensor-{n:04d}", count) for n in range(3000))
    share = 3000 / count
    assert sorted(starts) == list(range(count))
    assert all(abs(starts[i] - share) < 0.1 * share for i in range(count)), starts


def test_the_first_endpoint_is_stable_for_an_id() -> None:
    """The same id starts at the same endpoint every time (a restarted agent comes back)."""
    assert first_endpoint("edge-17", 3) == first_endpoint("edge-17", 3)
    # Pinned: BLAKE2b of the id, not Python's per-process salted hash().
    assert [first_endpoint(f"agent-{n}", 2) for n in range(1, 9)] == [0, 0, 1, 0, 0, 1, 0, 1]


def test_one_endpoint_is_always_the_first() -> None:
    """With a single endpoint every agent uses it."""
    assert {first_endpoint(f"a{n}", 1) for n in range(50)} == {0}


def test_no_endpoint_is_an_error() -> None:
    """Zero endpoints is refused with the number in the message."""
    with pytest.raises(ValueError, match="got 0"):
        first_endpoint("a", 0)


def test_senders_with_one_list_start_on_different_endpoints() -> None:
    """Twelve agents with one endpoints list do not all start on its first entry."""
    firsts = Counter(sender(f"agent-{n}").next_endpoint() for n in range(12))
    assert set(firsts) == set(ENDPOINTS), firsts


def test_a_sender_goes_round_the_list_from_its_first_endpoint() -> None:
    """After its first endpoint a sender moves to the next one on every reconnect, wrapping."""
    one = sender("agent-7")
    start = first_endpoint("agent-7", 3)
    tried = [one.next_endpoint() for _ in range(7)]
    assert tried == [ENDPOINTS[(start + n) % 3] for n in range(7)]


def test_tried_in_order_rotates_the_list_for_the_agent() -> None:
    """The tests' helper gives a list the agent tries in exactly the order named."""
    for agent_id in ("test-agent", "agent-1", "agent-3", "x"):
        one = sender(agent_id, tried_in_order(agent_id, *ENDPOINTS))
        assert [one.next_endpoint() for _ in range(4)] == [*ENDPOINTS, ENDPOINTS[0]]
