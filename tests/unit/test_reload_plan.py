"""Which sinks a reload keeps, starts and stops, and what needs a restart: no event loop."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from telemetry.collector.reload import SinkPlan, load_checked, plan_sinks, restart_keys
from telemetry.config import CollectorConfig, ConfigError


def sinks(*entries: dict[str, Any]) -> CollectorConfig:
    return CollectorConfig(sinks=list(entries))


def plan(old: CollectorConfig, new: CollectorConfig) -> SinkPlan:
    return plan_sinks(old.sinks, new.sinks)


BASE = ({"type": "sqlite", "path": "a.db"}, {"type": "jsonl", "name": "j1", "path": "j1.jsonl"})


def test_the_same_config_keeps_every_sink() -> None:
    """A reload of an unchanged file keeps every sink and starts or stops none."""
    result = plan(sinks(*BASE), sinks(*BASE))
    assert result == SinkPlan(kept=("sqlite", "j1"))
    assert (result.started, result.stopped) == ((), ())


def test_a_new_sink_is_started_and_the_others_kept() -> None:
    """A sink under a new name is added; the running ones are kept."""
    result = plan(sinks(*BASE), sinks(*BASE, {"type": "jsonl", "name": "j2", "path": "j2"}))
    assert (result.kept, result.added, result.changed, result.removed) == (
        ("sqlite", "j1"),
        ("j2",),
        (),
        (),
    )
    assert result.started == ("j2",)


def test_a_sink_left_out_is_removed() -> None:
    """A name missing from the new config is stopped (drained, closed)."""
    result = plan(sinks(*BASE), sinks(BASE[0]))
    assert (result.kept, result.removed, result.stopped) == (("sqlite",), ("j1",), ("j1",))


@pytest.mark.parametrize(
    "change",
    [
        {"path": "b.db"},  # an option
        {"batch_size": 10},  # batching
        {"flush_interval": 0.5},
        {"sensors": ["room/*"]},  # the route
        {"tags": {"site": "x"}},
        {"required": False},
    ],
)
def test_any_change_of_a_sinks_config_replaces_it(change: dict[str, Any]) -> None:
    """A sink whose options, batching or route changed is replaced: started and stopped."""
    result = plan(sinks(*BASE), sinks({**BASE[0], **change}, BASE[1]))
    assert (result.kept, result.changed) == (("j1",), ("sqlite",))
    assert result.started == result.stopped == ("sqlite",)


def test_a_new_type_under_the_same_name_replaces_the_sink() -> None:
    """The name is the identity: another type under that name is a change, not an addition."""
    result = plan(sinks(*BASE), sinks(BASE[0], {"type": "null", "name": "j1"}))
    assert (result.changed, result.added, result.removed) == (("j1",), (), ())


def test_a_secret_change_is_a_change() -> None:
    """A new password (a SecretStr) replaces the sink: secrets are compared by value."""
    old = sinks({"type": "redis", "password": "one"})
    assert plan(old, sinks({"type": "redis", "password": "one"})).kept == ("redis",)
    assert plan(old, sinks({"type": "redis", "password": "two"})).changed == ("redis",)


def test_spelling_out_the_default_name_keeps_the_sink() -> None:
    """``name = "sqlite"`` on a sqlite sink is the same sink as no name at all."""
    assert plan(sinks(BASE[0]), sinks({**BASE[0], "name": "sqlite"})).kept == ("sqlite",)


def test_renaming_stops_the_old_name_and_starts_the_new() -> None:
    """A renamed sink is another sink: the old name is removed, the new one added."""
    result = plan(sinks(BASE[0]), sinks({**BASE[0], "name": "main"}))
    assert (result.added, result.removed) == (("main",), ("sqlite",))


def test_restart_keys_name_what_a_reload_does_not_apply() -> None:
    """Ports, [http] and [collector] need a restart; sinks, limits and log level do not."""
    old = CollectorConfig()
    new = CollectorConfig(
        ingest={"port": 1, "max_connections_per_ip": 5},
        http={"port": 2},
        log={"level": "debug"},
        sinks=[{"type": "null"}],
    )
    assert restart_keys(old, new) == ["ingest.port", "http"]
    assert restart_keys(old, old) == []


def test_load_checked_refuses_a_bad_file(tmp_path: Path) -> None:
    """The reload's loader refuses broken TOML and unknown sections with one-line errors."""
    path = tmp_path / "c.toml"
    path.write_text("[ingest\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_checked(path)
    path.write_text("[ingset]\nport = 1\n")
    with pytest.raises(ConfigError, match="ingset"):
        load_checked(path)
    path.write_text('[[sinks]]\ntype = "jsonl"\n')
    assert [s.type for s in load_checked(path).sinks] == ["jsonl"]


def test_load_checked_refuses_a_sink_whose_driver_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink whose client library is not installed is refused by the reload's loader."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> object:
        return None if name == "asyncpg" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    path = tmp_path / "c.toml"
    path.write_text('[[sinks]]\ntype = "postgres"\n')
    with pytest.raises(ConfigError, match=r"pip install .*\[postgres\]"):
        load_checked(path)
