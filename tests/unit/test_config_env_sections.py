"""``TELEMETRY_<SECTION>__<KEY>`` with a section no config has is an error naming the variable;
a section of the other side's config (collector and agent share the prefix) is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from telemetry.cli import main
from telemetry.config import AgentConfig, CollectorConfig, ConfigError, load_config
from telemetry.config.loading import config_sections

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model", [CollectorConfig, AgentConfig])
@pytest.mark.parametrize(
    "name", ["TELEMETRY_INGSET__PORT", "TELEMETRY_AGNET__ID", "telemetry_spol__path"]
)
def test_a_misspelled_section_fails_either_config_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, model: type[CollectorConfig] | type[AgentConfig], name: str
) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=f"environment variable {name}: no such config section"):
        load_config(model, None)


def test_the_other_side_s_sections_are_left_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image or a shell may hold both sides' variables: each config takes its own."""
    monkeypatch.setenv("TELEMETRY_INGEST__PORT", "7700")
    monkeypatch.setenv("TELEMETRY_SINKS", '[{"type": "null"}]')
    monkeypatch.setenv("TELEMETRY_AGENT__ID", "north-1")
    monkeypatch.setenv("TELEMETRY_SPOOL__MAX_READINGS", "10")
    monkeypatch.setenv("TELEMETRY_LOG__LEVEL", "debug")
    # Not sections (no "__"): read by the project itself, or whole-field overrides.
    monkeypatch.setenv("TELEMETRY_POSTGRES_DSN", "postgresql://x@127.0.0.1/test")
    monkeypatch.setenv("TELEMETRY_WORKER_INDEX", "0")
    collector = load_config(CollectorConfig, None)
    agent = load_config(AgentConfig, ROOT / "config" / "agent.toml")
    assert (collector.ingest.port, collector.log.level) == (7700, "debug")
    assert (agent.agent.id, agent.spool.max_readings, agent.log.level) == ("north-1", 10, "debug")


def test_an_unknown_key_of_a_known_section_is_still_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_INGEST__PROT", "7700")
    with pytest.raises(ConfigError, match=r"ingest\.prot: unknown key"):
        load_config(CollectorConfig, None)


def test_the_sections_are_read_from_both_models() -> None:
    """The written-out table of sections is each model's own fields (no drift)."""
    sections = config_sections()
    assert sections["CollectorConfig"] == frozenset(CollectorConfig.model_fields)
    assert sections["AgentConfig"] == frozenset(AgentConfig.model_fields)
    assert {"ingest", "http", "sinks", "agent", "spool", "sources"} <= frozenset().union(
        *sections.values()
    )


def test_check_config_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELEMETRY_INGSET__PORT", "1")
    assert main(["check-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("telemetry: environment variable TELEMETRY_INGSET__PORT: no such ")
    assert err.count("\n") == 1


def test_an_agent_accepts_the_collectors_variables_without_loading_its_models() -> None:
    """The same image runs both: an agent with TELEMETRY_INGEST__HOST set loads its config,
    and never imports the collector's config models to know that section."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "os.environ['TELEMETRY_INGEST__HOST'] = '0.0.0.0'\n"
        "os.environ['TELEMETRY_HTTP__HOST'] = '0.0.0.0'\n"
        "from telemetry.config import AgentConfig, load_config\n"
        "load_config(AgentConfig, None)\n"
        "print('telemetry.config.collector' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False", done.stderr
