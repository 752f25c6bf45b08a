"""The systemd units and the agent config they install: loaded the way systemd and the agent
read them, so that neither can rot."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from telemetry.config import AgentConfig, CollectorConfig, SystemSourceConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
UNITS = {
    "telemetry-collector.service": (CollectorConfig, CONFIG / "collector.toml"),
    "telemetry-agent.service": (AgentConfig, CONFIG / "agent-systemd.toml"),
}


def unit(name: str) -> configparser.ConfigParser:
    """A unit file's last value of each key (systemd's repeatable keys are not checked here)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CONFIG / name)
    return parser


def shutdown_timeout(name: str) -> float:
    model, path = UNITS[name]
    config = load_config(model, path)
    if isinstance(config, CollectorConfig):
        return config.collector.shutdown_timeout
    return config.agent.shutdown_timeout


def test_the_agent_s_systemd_config_runs_without_a_terminal() -> None:
    """config/agent-systemd.toml: a source that never ends, a disk spool at an absolute path
    in the unit's StateDirectory."""
    config = load_config(AgentConfig, CONFIG / "agent-systemd.toml")
    assert [type(s) for s in config.sources] == [SystemSourceConfig]
    assert config.spool.path is not None
    spool = Path(config.spool.path)
    assert spool.is_absolute()
    state = unit("telemetry-agent.service")["Service"]["StateDirectory"]
    assert spool.parent == Path("/var/lib") / state
    assert config.log.format == "json"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_a_unit_restarts_reloads_and_outlasts_the_drain(name: str) -> None:
    service = unit(name)["Service"]
    assert service["Restart"] == "always"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > shutdown_timeout(name)
    assert service.get("DynamicUser") == "yes" or service.get("User", "root") not in ("root", "0")
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert service[hardening] in ("yes", "strict"), hardening
    assert service["CapabilityBoundingSet"] == ""
    # The config the unit runs is the one its install comment installs.
    text = (CONFIG / name).read_text()
    config_arg = re.search(r"--config (\S+)", service["ExecStart"])
    assert config_arg is not None
    installed = re.search(rf"install -D -m 0644 (config/\S+) {re.escape(config_arg[1])}", text)
    assert installed is not None
    assert ROOT / installed[1] == UNITS[name][1]


@pytest.mark.parametrize("name", sorted(UNITS))
def test_documentation_points_to_a_file_the_install_lines_put_there(name: str) -> None:
    documentation = unit(name)["Unit"]["Documentation"]
    assert documentation.startswith("file:/usr/share/doc/sensor-telemetry/")
    doc = Path(documentation.removeprefix("file:"))
    assert (ROOT / "docs" / doc.name).is_file()
    install = re.search(r"install -D -m 0644 -t (\S+) (.+)", (CONFIG / name).read_text())
    assert install is not None
    assert Path(install[1]) == doc.parent
    assert f"docs/{doc.name}" in install[2].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verify_accepts_the_unit(name: str, tmp_path: Path) -> None:
    """systemd's own parser; ExecStart pointed at this venv's telemetry, which must exist."""
    command = Path(sys.executable).parent / "telemetry"
    text = (CONFIG / name).read_text().replace("/usr/local/bin/telemetry", str(command))
    (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert (done.returncode, done.stderr) == (0, "")
