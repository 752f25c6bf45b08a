"""The agent's reconnect backoff: LAN defaults, full jitter, the lag after an outage (no loop)."""

from __future__ import annotations

import random
import statistics

import pytest

from telemetry.backoff import Backoff, reconnect_lag
from telemetry.config import AgentSection


def default_backoff(seed: int) -> Backoff:
    section = AgentSection(id="a")
    return Backoff(section.reconnect_min, section.reconnect_max, random.Random(seed))


def test_defaults_are_seconds_not_tens_of_seconds() -> None:
    """The default cap is a few seconds, the base a tenth of one."""
    section = AgentSection(id="a")
    assert section.reconnect_min == 0.1
    assert 2.0 <= section.reconnect_max <= 5.0


def test_caps_double_from_the_base_up_to_the_max() -> None:
    """The n-th cap is min(max, base * 2**n): 0.1, 0.2, 0.4 ... then 3 s for good."""
    backoff = default_backoff(0)
    caps = [backoff.cap(n) for n in range(8)]
    assert caps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0])
    assert backoff.cap(10_000) == 3.0


def test_every_delay_is_full_jitter_under_its_cap() -> None:
    """Each delay lies in [0, cap(n)] and the delays at the cap spread over the whole range."""
    backoff = default_backoff(1)
    at_cap = []
    for n in range(2000):
        delay = backoff.next_delay()
        assert 0.0 <= delay <= backoff.cap(n)
        if n >= 5:
            at_cap.append(delay)
    # Full jitter: uniform over [0, 3]; mean 1.5, both ends reached.
    assert statistics.fmean(at_cap) == pytest.approx(1.5, abs=0.1)
    assert min(at_cap) < 0.1
    assert max(at_cap) > 2.9


def test_reset_starts_over_from_the_base() -> None:
    """After a reset the next delay is under the first cap again."""
    backoff = default_backoff(2)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() <= 0.1


def test_a_collector_back_after_20_s_is_found_within_the_cap() -> None:
    """After a 20 s outage, default agents reconnect within 3 s, about 1 s on average."""
    lags = [reconnect_lag(20.0, default_backoff(seed)) for seed in range(2000)]
    assert max(lags) <= 3.0
    assert statistics.fmean(lags) == pytest.approx(1.0, abs=0.15)
    # A fleet does not stampede: the reconnects spread over the cap, not into one instant.
    quartiles = statistics.quantiles(lags, n=4)
    assert quartiles[0] < 0.5 < 1.2 < quartiles[2]


def test_the_old_30_s_cap_took_tens_of_seconds() -> None:
    """The schedule the issue measured: a 30 s cap leaves agents waiting up to 30 s."""
    lags = [reconnect_lag(20.0, Backoff(0.1, 30.0, random.Random(seed))) for seed in range(500)]
    assert max(lags) > 20.0
    assert statistics.fmean(lags) > 5.0


def test_attempt_time_counts_between_delays() -> None:
    """A slow failing connect (a host that drops SYNs) adds to the time between attempts."""
    fast = reconnect_lag(20.0, Backoff(1.0, 1.0, random.Random(3)))
    slow = reconnect_lag(20.0, Backoff(1.0, 1.0, random.Random(3)), attempt_seconds=5.0)
    assert fast <= 1.0
    assert slow <= 6.0


def test_no_attempt_within_the_bound_is_an_error() -> None:
    """The simulation is bounded: an outage longer than every attempt raises."""
    with pytest.raises(ValueError, match="within 3 attempts"):
        reconnect_lag(100.0, Backoff(0.1, 0.1, random.Random(4)), max_attempts=3)
