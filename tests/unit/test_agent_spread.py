"""Agents given the same endpoints spread over them: the order rule, without an event loop."""

from __future__ import annotations

from collections import Counter

import pytest

from telemetry.agent import MemorySpool
from telemetry.agent.endpoint_order import EndpointOrder, endpoint_stride, first_endpoint
from telemetry.agent.sender import Sender
from telemetry.config import AgentSection
from tests.support import tried_in_order

ENDPOINTS = ["c1:7600", "c2:7600", "c3:7600"]
FLEET = [f"sensor-{n:04d}" for n in range(3000)]


def tried(order: EndpointOrder, count: int) -> list[str]:
    """The first ``count`` endpoints ``order`` yields."""
    return [order.next() for _ in range(count)]


@pytest.mark.parametrize("count", [2, 3, 5])
def test_a_fleet_with_numbered_ids_spreads_evenly(count: int) -> None:
    """3,000 agents named sensor-0000.. start within 10 % of an even share on each endpoint."""
    starts = Counter(first_endpoint(agent_id, count) for agent_id in FLEET)
    share = len(FLEET) / count
    assert sorted(starts) == list(range(count))
    assert all(abs(starts[i] - share) < 0.1 * share for i in range(count)), starts


def test_the_agents_of_a_drained_collector_split_over_the_others() -> None:
    """With three collectors, the agents that started on one move half to each other one."""
    on_first = [a for a in FLEET if first_endpoint(a, 3) == 0]
    seconds = Counter(tried(EndpointOrder(a, ENDPOINTS), 2)[1] for a in on_first)
    assert set(seconds) == {"c2:7600", "c3:7600"}
    assert abs(seconds["c2:7600"] - seconds["c3:7600"]) < 0.15 * len(on_first), seconds


@pytest.mark.parametrize("count", [1, 2, 3, 4, 6, 7])
def test_every_endpoint_is_tried_once_per_round(count: int) -> None:
    """Whatever the id, count tries visit each endpoint once, then the round repeats."""
    endpoints = [f"c{n}:7600" for n in range(count)]
    for agent_id in FLEET[:200]:
        visits = tried(EndpointOrder(agent_id, endpoints), 2 * count)
        assert sorted(visits[:count]) == endpoints
        assert visits[count:] == visits[:count]


def test_the_order_is_stable_for_an_id() -> None:
    """The same id makes the same choices every time (a restarted agent comes back)."""
    assert first_endpoint("edge-17", 3) == first_endpoint("edge-17", 3)
    assert endpoint_stride("edge-17", 5) == endpoint_stride("edge-17", 5)
    # Pinned: BLAKE2b of the id, not Python's per-process salted hash().
    assert [first_endpoint(f"agent-{n}", 2) for n in range(1, 9)] == [0, 0, 1, 0, 0, 1, 0, 1]


def test_the_stride_shares_no_factor_with_the_count() -> None:
    """Strides over 6 endpoints are 1 or 5, over 4 are 1 or 3; over 1 or 2 always 1."""
    assert {endpoint_stride(a, 6) for a in FLEET[:100]} == {1, 5}
    assert {endpoint_stride(a, 4) for a in FLEET[:100]} == {1, 3}
    assert {endpoint_stride(a, 2) for a in FLEET[:100]} == {1}
    assert {endpoint_stride(a, 1) for a in FLEET[:100]} == {1}


def test_no_endpoint_is_an_error() -> None:
    """Zero endpoints is refused with the number in the message."""
    with pytest.raises(ValueError, match="got 0"):
        first_endpoint("a", 0)
    with pytest.raises(ValueError, match="got 0"):
        endpoint_stride("a", 0)


def test_peek_names_what_next_returns() -> None:
    """peek() is the endpoint the next call to next() returns, and does not move on."""
    order = EndpointOrder("agent-7", ENDPOINTS)
    for _ in range(5):
        upcoming = order.peek()
        assert order.peek() == upcoming
        assert order.next() == upcoming


def test_senders_with_one_list_start_on_different_endpoints() -> None:
    """Twelve senders with one endpoints list do not all start on its first entry."""
    firsts = Counter(
        Sender(AgentSection(id=f"agent-{n}", endpoints=ENDPOINTS), MemorySpool(100))._order.peek()
        for n in range(12)
    )
    assert set(firsts) == set(ENDPOINTS), firsts


def test_tried_in_order_gives_the_order_named() -> None:
    """The tests' helper builds a list an agent tries in exactly the order given."""
    endpoints = [f"c{n}:7600" for n in range(5)]
    for agent_id in ("test-agent", "agent-1", "agent-3", "x", "cli"):
        order = EndpointOrder(agent_id, tried_in_order(agent_id, *endpoints))
        assert tried(order, 6) == [*endpoints, endpoints[0]]
