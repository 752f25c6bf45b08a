"""A configured sink whose driver is missing: one line naming the ``pip install``, exit 2,
from ``check-config`` and ``collect`` alike (simulated by hiding the driver from find_spec)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

from telemetry import DISTRIBUTION
from telemetry.cli import main
from telemetry.config import AgentConfig, CollectorConfig, ConfigError, load_config
from telemetry.sinks.registry import BUILTIN, sink_class
from telemetry.sinks.requirements import DRIVERS, check_sink_drivers, missing_drivers

CONFIG = """
[[sinks]]
type = "sqlite"
path = "data/x.db"
[[sinks]]
type = "postgres"
dsn = "postgresql://telemetry@127.0.0.1/test"
[[sinks]]
type = "nats"
[[sinks]]
type = "postgres"
name = "second"
dsn = "postgresql://telemetry@127.0.0.1/test"
table = "other"
"""

EXPECTED = (
    "telemetry: missing sink driver: sink 'postgres' needs asyncpg (extra 'postgres'); "
    "sink 'nats' needs nats-py (extra 'nats'); "
    "to install: pip install 'sensor-telemetry[nats,postgres]'"
)

#: Run the command with asyncpg and nats hidden from importlib.util.find_spec.
HIDE_DRIVERS = (
    "import importlib.util, sys\n"
    "real = importlib.util.find_spec\n"
    "importlib.util.find_spec = lambda name, *a: "
    "None if name in ('asyncpg', 'nats') else real(name, *a)\n"
    "from telemetry.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def hidden_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name in ("asyncpg", "nats") else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("hidden_drivers")
def test_check_config_names_the_extra_and_the_pip_line(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(config_file)]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", EXPECTED + "\n")


@pytest.mark.parametrize("command", [["check-config"], ["collect", "--config"]])
def test_both_commands_exit_2_with_one_line_and_no_traceback(
    config_file: Path, command: list[str], tmp_path: Path
) -> None:
    """In a fresh interpreter, as the installed command runs: ``collect`` fails before it
    binds a port or opens a sink."""
    done = subprocess.run(
        [sys.executable, "-c", HIDE_DRIVERS, *command, str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout, done.stderr) == (2, "", EXPECTED + "\n")
    assert not (tmp_path / "data").exists()  # the sqlite sink was never started


def test_installed_drivers_and_other_configs_pass(config_file: Path) -> None:
    check_sink_drivers(load_config(CollectorConfig, config_file))
    check_sink_drivers(load_config(AgentConfig, None))
    check_sink_drivers(load_config(CollectorConfig, None))


@pytest.mark.usefixtures("hidden_drivers")
def test_only_sinks_with_a_missing_driver_are_named() -> None:
    assert list(missing_drivers(["sqlite", "jsonl", "mqtt", "redis", "csv"])) == []
    assert list(missing_drivers(["nats", "postgres", "nats"])) == ["nats", "postgres"]
    with pytest.raises(ConfigError, match=re.escape("pip install 'sensor-telemetry[nats]'")):
        check_sink_drivers(CollectorConfig(sinks=[{"type": "nats"}]))  # type: ignore[list-item]


def test_the_table_matches_pyproject_s_extras_and_the_sink_modules() -> None:
    """Each driver is its extra's requirement in the installed metadata, and is what the sink
    module imports; every built-in sink outside the table needs nothing beyond the base."""
    declared = requires(DISTRIBUTION) or []
    for sink_type, driver in DRIVERS.items():
        marker = re.compile(rf"extra\s*==\s*['\"]{driver.extra}['\"]")
        names = [re.split(r"[^A-Za-z0-9._-]", r)[0].lower() for r in declared if marker.search(r)]
        assert driver.package in names, (sink_type, names)
        sink_class(sink_type)
        assert driver.module in sys.modules, sink_type
    assert set(DRIVERS) == set(BUILTIN) - {"null", "stdout", "jsonl", "sqlite"}
