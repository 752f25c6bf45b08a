"""What a reload does to an agent's sources and settings, decided without an event loop."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from telemetry.agent.reload import needs_restart, plan_sources
from telemetry.config import AgentConfig, SourceConfig

SOURCES = TypeAdapter(list[SourceConfig])


def sources(*entries: dict[str, Any]) -> list[SourceConfig]:
    return SOURCES.validate_python(list(entries))


SIM_A = {"type": "simulated", "sensor": "a-{n}"}
SIM_B = {"type": "simulated", "sensor": "b-{n}"}
SYSTEM = {"type": "system", "metrics": ["load"]}


def test_unchanged_sources_are_all_kept() -> None:
    """The same config keeps every source and starts or stops none."""
    old = sources(SIM_A, SYSTEM)
    plan = plan_sources(old, sources(SIM_A, SYSTEM))
    assert plan.keep == [(0, 0), (1, 1)]
    assert plan.start == []
    assert plan.stop == []


def test_a_changed_source_is_stopped_and_started_the_others_kept() -> None:
    """Changing one key of one source restarts that source only."""
    old = sources(SIM_A, SYSTEM)
    new = sources(SIM_A, {**SYSTEM, "interval": 5})
    plan = plan_sources(old, new)
    assert plan.keep == [(0, 0)]
    assert plan.stop == [1]
    assert plan.start == [1]


def test_moved_sources_are_matched_by_config_not_position() -> None:
    """Reordering the entries and adding one keeps the moved sources running."""
    old = sources(SIM_A, SYSTEM)
    plan = plan_sources(old, sources(SIM_B, SYSTEM, SIM_A))
    assert sorted(plan.keep) == [(0, 2), (1, 1)]
    assert plan.start == [0]
    assert plan.stop == []


def test_removed_sources_are_stopped() -> None:
    """An entry no longer in the file stops its source."""
    plan = plan_sources(sources(SIM_A, SIM_B, SYSTEM), sources(SIM_B))
    assert plan.keep == [(1, 0)]
    assert sorted(plan.stop) == [0, 2]
    assert plan.start == []


def test_duplicates_match_one_to_one() -> None:
    """Two equal entries keep two sources; a third equal one starts a new source."""
    plan = plan_sources(sources(SIM_A, SIM_A), sources(SIM_A, SIM_A, SIM_A))
    assert plan.keep == [(0, 0), (1, 1)]
    assert plan.start == [2]


def test_a_changed_stdin_source_keeps_running() -> None:
    """stdin cannot be reopened where it stopped: a changed stdin entry keeps the old source."""
    old = sources({"type": "stdin"})
    plan = plan_sources(old, sources({"type": "stdin", "tags": {"k": "v"}}))
    assert plan.keep == [(0, 0)]
    assert plan.stdin_unchanged == [0]
    assert plan.start == []
    assert plan.stop == []


def test_a_removed_stdin_source_is_stopped() -> None:
    """Without a stdin entry in the new file, the stdin source stops."""
    plan = plan_sources(sources({"type": "stdin"}), sources(SIM_A))
    assert plan.stop == [0]
    assert plan.start == [0]


def test_needs_restart_names_the_agent_and_spool_keys_that_changed() -> None:
    """id, endpoints and spool path cannot change live: each changed key is named."""
    old = AgentConfig(agent={"id": "a", "endpoints": ["h:1"]}, sources=[SIM_A])
    new = AgentConfig(
        agent={"id": "b", "endpoints": ["h:2"], "http": {"port": 0}},
        spool={"path": "/tmp/x.db"},
        sources=[SIM_B],
        log={"level": "debug"},
    )
    assert needs_restart(old, new) == ["agent.id", "agent.endpoints", "agent.http", "spool.path"]
    assert needs_restart(old, old.model_copy(update={"sources": new.sources})) == []


def test_needs_restart_never_prints_the_token() -> None:
    """A changed token is named by its key, its value appears nowhere."""
    old = AgentConfig(agent={"id": "a", "token": "old-secret"}, sources=[SIM_A])
    new = AgentConfig(agent={"id": "a", "token": "new-secret"}, sources=[SIM_A])
    changed = needs_restart(old, new)
    assert changed == ["agent.token"]
    assert "secret" not in repr(changed)
