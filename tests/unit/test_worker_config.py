"""A --workers worker's config: the supervisor's, with the overrides of worker_overrides."""

from __future__ import annotations

import pytest

from telemetry.collector.workers import Supervisor, Worker, worker_overrides
from telemetry.config import CollectorConfig, env_overrides


def test_env_overrides_writes_what_the_config_loader_reads(monkeypatch: pytest.MonkeyPatch):
    """Nested overrides become TELEMETRY_<SECTION>__<KEY>: strings as they are, else JSON."""
    env = env_overrides(
        CollectorConfig, {"ingest": {"port": 7700, "tokens": ["a"]}, "http": {"enabled": False}}
    )
    assert env == {
        "TELEMETRY_INGEST__PORT": "7700",
        "TELEMETRY_INGEST__TOKENS": '["a"]',
        "TELEMETRY_HTTP__ENABLED": "false",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = CollectorConfig()
    tokens = [t.get_secret_value() for t in config.ingest.tokens]
    assert (config.ingest.port, tokens, config.http.enabled) == (7700, ["a"], False)


def test_a_worker_loads_the_supervisors_config_with_its_own_ports_and_id(
    monkeypatch: pytest.MonkeyPatch,
):
    """The worker's environment turns the supervisor's file into the worker's config."""
    toml = {"collector": {"id": "c1"}, "ingest": {"port": 0}, "http": {"enabled": False}}
    supervisor = Supervisor(CollectorConfig(**toml), None, 2)
    supervisor.ingest_port = 7600
    worker = Worker(1, 45678)
    assert worker_overrides(supervisor.config, 1, ingest_port=7600, http_port=45678) == {
        "ingest": {"port": 7600},
        "http": {"enabled": True, "host": "127.0.0.1", "port": 45678},
        "collector": {"id": "c1-w1"},
    }
    env = supervisor._environment(worker)
    assert env["TELEMETRY_WORKER_INDEX"] == "1"
    for name in ("INGEST__PORT", "HTTP__ENABLED", "HTTP__HOST", "HTTP__PORT", "COLLECTOR__ID"):
        monkeypatch.setenv(f"TELEMETRY_{name}", env[f"TELEMETRY_{name}"])
    config = CollectorConfig(**toml)
    assert config.collector.id == "c1-w1"
    assert config.ingest.port == 7600
    assert (config.http.enabled, config.http.host, config.http.port) == (True, "127.0.0.1", 45678)
