"""docker-compose.scale.yml and config/scale/ agree with each other (no containers run here;
.ci/container-check-scale.sh runs the topology for real)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from telemetry.agent.endpoint_order import first_endpoint
from telemetry.config import AgentConfig, CollectorConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
SCALE = ROOT / "config" / "scale"


def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(
        (ROOT / "docker-compose.scale.yml").read_text(encoding="utf-8")
    )["services"]
    return services


def named(prefix: str) -> list[str]:
    return sorted(name for name in compose() if name.startswith(prefix))


def test_the_topology_has_every_tier() -> None:
    """Two collectors, three NATS nodes, a relay into PostgreSQL and one into SQLite, agents."""
    services = compose()
    assert named("collector-") == ["collector-1", "collector-2"]
    assert named("nats-") == ["nats-1", "nats-2", "nats-3"]
    assert {"relay-postgres", "relay-sqlite", "postgres"} <= set(services)
    assert len(named("agent-")) >= 2


def test_every_mounted_config_exists() -> None:
    """Each ./config/scale file a service mounts is in the repository."""
    for name, service in compose().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which is missing"


def test_the_collectors_write_to_every_nats_node_with_replicas() -> None:
    """The collectors' only sink is nats, listing every node, the stream on all three."""
    config = load_config(CollectorConfig, SCALE / "collector.toml")
    (sink,) = config.sinks
    dumped = sink.model_dump()
    assert dumped["type"] == "nats"
    assert dumped["servers"] == [f"nats://{n}:4222" for n in named("nats-")]
    assert dumped["replicas"] == len(named("nats-"))
    assert config.ingest.max_connection_age > 0


def test_the_agents_list_every_collector_and_spread_over_them() -> None:
    """One endpoints list for all agents, naming each collector; their ids start on both."""
    config = load_config(AgentConfig, SCALE / "agent.toml")
    endpoints = config.agent.endpoints
    assert endpoints == [f"{c}:7600" for c in named("collector-")]
    services = compose()
    ids = [services[a]["environment"]["TELEMETRY_AGENT__ID"] for a in named("agent-")]
    assert ids == named("agent-"), "each agent's id is its service name"
    firsts = {endpoints[first_endpoint(agent_id, len(endpoints))] for agent_id in ids}
    assert firsts == set(endpoints), "every collector is some agent's first endpoint"


def test_each_nats_node_names_itself_and_routes_to_all() -> None:
    """nats.conf routes to every node; each node's command gives it its own name."""
    conf = (SCALE / "nats.conf").read_text(encoding="utf-8")
    routes = re.findall(r"nats-route://([\w-]+):6222", conf)
    assert sorted(routes) == named("nats-")
    services = compose()
    for node in named("nats-"):
        command = services[node]["command"]
        assert command[command.index("-n") + 1] == node


def test_nats_conf_is_valid_for_nats_server() -> None:
    """The installed nats-server accepts config/scale/nats.conf (``-t``)."""
    binary = shutil.which("nats-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nats-server is not installed")
        pytest.skip("nats-server is not installed")
    result = subprocess.run(
        [binary, "-c", str(SCALE / "nats.conf"), "-t"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_each_relay_reads_every_node_on_a_durable_of_its_own() -> None:
    """relay-postgres and relay-sqlite list every node, read the collectors' stream, and
    keep their own durables (a store falls behind alone)."""
    from telemetry.config.relay import RelayConfig

    collector = load_config(CollectorConfig, SCALE / "collector.toml").sinks[0].model_dump()
    durables = set()
    for store in ("postgres", "sqlite"):
        config = load_config(RelayConfig, SCALE / f"relay-{store}.toml")
        assert config.relay.servers == collector["servers"]
        assert config.relay.stream == collector["stream"]
        assert [sink.model_dump()["type"] for sink in config.sinks] == [store]
        assert config.http.port == int(
            compose()[f"relay-{store}"]["environment"].get("TELEMETRY_HTTP__PORT", config.http.port)
        )
        durables.add(config.relay.durable)
    assert len(durables) == 2
