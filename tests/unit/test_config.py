"""Config loading: the shipped files, strictness, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from telemetry.config import (
    AgentConfig,
    CollectorConfig,
    ConfigError,
    SqliteSinkConfig,
    StdinSourceConfig,
    load_config,
    parse_endpoint,
)

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_collector_config_loads_with_documented_values():
    """config/collector.toml validates and says what the README says."""
    config = load_config(CollectorConfig, ROOT / "config" / "collector.toml")
    assert (config.ingest.host, config.ingest.port) == ("127.0.0.1", 7600)
    assert (config.http.host, config.http.port) == ("127.0.0.1", 7601)
    assert config.ingest.max_frame_bytes == 1048576
    assert config.ingest.max_batch == 10000
    assert config.ingest.window == 8
    assert config.ingest.idle_timeout == 60
    assert config.ingest.max_connections == 10000
    assert isinstance(config.sinks[0], SqliteSinkConfig)
    assert config.sinks[0].path == Path("data/telemetry.db")


def test_only_the_null_sink_skips_the_flush_wait():
    """The null sink writes at once (waiting for a fuller batch only holds records); every
    other sink waits the documented 5 ms; either can be set."""
    config = CollectorConfig(
        sinks=[
            {"type": "null"},
            {"type": "jsonl"},
            {"type": "null", "name": "n2", "flush_interval": 0.2},
        ]
    )
    assert [s.flush_interval for s in config.sinks] == [0.0, 0.005, 0.2]


def test_shipped_agent_config_loads():
    """config/agent.toml validates with the issue's keys."""
    config = load_config(AgentConfig, ROOT / "config" / "agent.toml")
    assert config.agent.id == "greenhouse-2"
    assert config.agent.endpoints == ["127.0.0.1:7600"]
    assert isinstance(config.sources[0], StdinSourceConfig)


def test_defaults_without_a_file_use_the_embedded_sqlite_sink():
    """With no config file, the collector writes to SQLite on the default ports."""
    config = load_config(CollectorConfig, None)
    assert config.ingest.port == 7600
    assert config.http.port == 7601
    assert [s.type for s in config.sinks] == ["sqlite"]


def test_unknown_keys_are_errors_that_name_the_key(tmp_path):
    """An unknown key anywhere fails validation with its dotted path in the message."""
    path = tmp_path / "c.toml"
    path.write_text('[ingest]\nprot = 1\n[[sinks]]\ntype = "sqlite"\npaht = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(CollectorConfig, path)
    message = str(info.value)
    assert "ingest.prot: unknown key" in message
    assert "paht: unknown key" in message


def test_unknown_sink_type_is_an_error(tmp_path):
    """A sink type that does not exist is refused with the allowed types."""
    path = tmp_path / "c.toml"
    path.write_text('[[sinks]]\ntype = "kafka"\n')
    with pytest.raises(ConfigError, match=r"sinks\.0"):
        load_config(CollectorConfig, path)


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    """TELEMETRY_SECTION__KEY beats the file; JSON sets lists of tables."""
    path = tmp_path / "c.toml"
    path.write_text('[ingest]\nport = 7000\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("TELEMETRY_INGEST__PORT", "7700")
    monkeypatch.setenv("TELEMETRY_SINKS", '[{"type": "null"}]')
    config = load_config(CollectorConfig, path)
    assert config.ingest.port == 7700
    assert config.ingest.host == "0.0.0.0"
    assert [s.type for s in config.sinks] == ["null"]


def test_bad_toml_and_missing_file_are_clear_errors(tmp_path):
    """A missing file or broken TOML gives a one-line reason, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(CollectorConfig, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(CollectorConfig, bad)


def test_duplicate_sink_names_are_refused():
    """Two sinks with one name would be indistinguishable in logs and /readyz."""
    with pytest.raises(ValueError, match="two sinks are named"):
        CollectorConfig(sinks=[{"type": "null"}, {"type": "null"}])


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("127.0.0.1:7600", ("127.0.0.1", 7600)),
        ("[::1]:7600", ("::1", 7600)),
        ("collector.local:1", ("collector.local", 1)),
    ],
)
def test_endpoints_parse(endpoint, expected):
    """host:port endpoints, IPv6 in brackets."""
    assert parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["7600", "host:", ":7600", "host:0", "host:70000", "h:x"])
def test_bad_endpoints_are_refused(endpoint):
    """Malformed endpoints fail with the endpoint named."""
    with pytest.raises(ValueError, match="not host:port"):
        parse_endpoint(endpoint)


def test_dead_letters_go_only_to_sink_types_whose_model_accepts_them():
    """dead_letter = true is refused, with the types that take them, on a sink that cannot."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="use one of jsonl, null, stdout"):
        CollectorConfig(sinks=[{"type": "null"}, {"type": "sqlite", "dead_letter": True}])
    config = CollectorConfig(sinks=[{"type": "null"}, {"type": "jsonl", "dead_letter": True}])
    assert config.sinks[1].dead_letter


def test_importing_the_config_package_imports_no_collector_and_no_backend():
    """telemetry.config (and telemetry.config.agent) load neither the collector nor a driver."""
    import subprocess
    import sys

    code = (
        "import sys, telemetry.config.agent, telemetry.config;"
        "bad = [m for m in sys.modules if m.startswith(('telemetry.collector', 'telemetry.sinks',"
        " 'asyncpg', 'nats', 'aiomqtt', 'redis'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_empty_tokens_and_credentials_are_config_errors(tmp_path) -> None:
    """tokens = ["", "real"] and a credential with an empty token or none are refused."""
    from pydantic import ValidationError

    from telemetry.config import IngestConfig

    with pytest.raises(ValidationError, match="empty"):
        IngestConfig(tokens=["", "real"])
    with pytest.raises(ValidationError, match="empty"):
        IngestConfig(credentials=[{"agents": ["a"], "token": "  "}])
    with pytest.raises(ValidationError, match="exactly one"):
        IngestConfig(credentials=[{"agents": ["a"]}])
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    config = IngestConfig(credentials=[{"agents": ["gh-*"], "token_file": str(secret)}])
    import hashlib

    assert config.credentials[0].digest == hashlib.sha256(b"s3cret").digest()
