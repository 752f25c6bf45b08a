"""Cheap static checks of the container files; `.ci/container-check.sh` builds and runs them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from telemetry.config import CollectorConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
CONTAINER_CONFIG = ROOT / "config" / "telemetry-collector.container.toml"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def last(path: Path, word: str) -> str:
    values = [rest for ins, rest in instructions(path) if ins == word]
    assert values, f"no {word} in {path.name}"
    return values[-1]


def test_dockerfile_stages_on_python_slim() -> None:
    froms = [rest for ins, rest in instructions(DOCKERFILE) if ins == "FROM"]
    assert len(froms) >= 2
    assert all(f.split()[0] == "python:3.12-slim" for f in froms)


def test_dockerfile_entrypoint_cmd_exec_form() -> None:
    assert json.loads(last(DOCKERFILE, "ENTRYPOINT")) == ["telemetry"]
    assert json.loads(last(DOCKERFILE, "CMD")) == [
        "collect",
        "--config",
        "/etc/telemetry/collector.toml",
    ]


def test_dockerfile_runs_as_numeric_non_root_user() -> None:
    user = last(DOCKERFILE, "USER").split(":")[0]
    assert user.isdigit()
    assert int(user) != 0


def test_dockerfile_exposes_ports_and_checks_healthz() -> None:
    assert last(DOCKERFILE, "EXPOSE").split() == ["7600", "7601"]
    healthcheck = last(DOCKERFILE, "HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "curl" not in healthcheck


def test_dockerfile_listens_on_all_interfaces() -> None:
    env = " ".join(rest for ins, rest in instructions(DOCKERFILE) if ins == "ENV")
    assert "TELEMETRY_INGEST__HOST=0.0.0.0" in env
    assert "TELEMETRY_HTTP__HOST=0.0.0.0" in env


def test_dockerignore_keeps_what_the_build_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    copied = set()
    for ins, rest in instructions(DOCKERFILE):
        if ins == "COPY" and not rest.startswith("--from"):
            copied.update(rest.split()[:-1])
    assert copied <= allowed, copied - allowed


def test_container_config_is_valid_and_listens_on_all_interfaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("TELEMETRY_")]:
        monkeypatch.delenv(name)
    config = load_config(CollectorConfig, CONTAINER_CONFIG)
    assert config.ingest.host == config.http.host == "0.0.0.0"
    # Drains within `docker stop`'s default 10 s before SIGKILL.
    assert config.collector.shutdown_timeout < 10


def test_compose_has_the_stack() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    services = set(re.findall(r"^  ([a-z0-9-]+):\s*$", text, flags=re.MULTILINE))
    expected = {"collector-1", "collector-2", "agent-1", "agent-2", "postgres", "nats"}
    assert expected <= services
    assert text.count("condition: service_healthy") >= 4
    assert "healthcheck:" in text
    assert "pg_isready" in text
    assert re.search(r"^volumes:\n  pgdata:\n  natsdata:", text, flags=re.MULTILINE)
