"""Source config models, the agent command line, and the example systemd unit."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from telemetry.cli import build_parser
from telemetry.cli.agent import _agent_config
from telemetry.config import AgentSection, CommandSourceConfig, ConfigError, SourceConfig

SOURCES: TypeAdapter[list[SourceConfig]] = TypeAdapter(list[SourceConfig])
ROOT = Path(__file__).resolve().parents[2]


def test_every_source_type_validates_with_defaults() -> None:
    """system, file and command take their defaults; the type picks the model."""
    system, file, command = SOURCES.validate_python(
        [
            {"type": "system"},
            {"type": "file", "path": "/sys/class/thermal/thermal_zone0/temp", "scale": 0.001},
            {"type": "command", "command": ["vcgencmd", "measure_temp"]},
        ]
    )
    assert (system.type, system.interval, system.sensor) == ("system", 10.0, "{agent}/{name}")
    assert (file.type, file.format, file.scale) == ("file", "auto", 0.001)
    assert isinstance(command, CommandSourceConfig)
    assert command.argv == ["vcgencmd", "measure_temp"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"type": "system", "sensor": "{agent}/{path}"}, "may only use"),
        ({"type": "file", "path": "x", "sensor": "{device}"}, "may only use"),
        ({"type": "command", "command": ["a"], "shell": True}, "command must be one string"),
        ({"type": "command", "command": []}, "command is empty"),
        ({"type": "command", "command": "a", "pattern": "("}, "not a regex"),
        ({"type": "command", "command": "a", "parse": "json", "pattern": "x"}, "only applies"),
        ({"type": "system", "metrics": ["gpu"]}, "metrics"),
        ({"type": "file", "path": "x", "colour": 1}, "colour"),
        ({"type": "system", "interval": 0}, "greater than 0"),
    ],
)
def test_bad_source_configs_say_why(source: dict[str, object], message: str) -> None:
    """A mistake in a source is refused at load time with a message that names it."""
    with pytest.raises(ValidationError, match=message):
        SOURCES.validate_python([source])


def test_shell_string_runs_through_sh_plain_string_is_split() -> None:
    """shell = true wraps the string in sh -c; otherwise it is split, never run by a shell."""
    shell = CommandSourceConfig(type="command", command="a | b", shell=True)
    plain = CommandSourceConfig(type="command", command="tool --x 'a b'")
    assert shell.argv == ["/bin/sh", "-c", "a | b"]
    assert plain.argv == ["tool", "--x", "a b"]


def test_agent_command_line_without_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """--source, --interval, --endpoint and --id make a complete config with no file."""
    monkeypatch.delenv("TELEMETRY_AGENT__ID", raising=False)
    args = build_parser().parse_args(
        [
            "agent",
            "--source",
            "system",
            "--source",
            "stdin",
            "--interval",
            "2",
            "-e",
            "c:7600",
            "--id",
            "pi-3",
        ]
    )
    config = _agent_config(args)
    assert config.agent.id == "pi-3"
    assert config.agent.endpoints == ["c:7600"]
    assert [(s.type, getattr(s, "interval", None)) for s in config.sources] == [
        ("system", 2.0),
        ("stdin", None),
    ]


def test_agent_command_line_overrides_a_config_file(tmp_path: Path) -> None:
    """--source replaces the file's sources; the file's other settings stay."""
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nid = "file-id"\nbatch_size = 7\n[[sources]]\ntype = "stdin"\n')
    config = _agent_config(
        build_parser().parse_args(["agent", "-c", str(path), "--source", "simulated"])
    )
    assert (config.agent.id, config.agent.batch_size) == ("file-id", 7)
    assert [s.type for s in config.sources] == ["simulated"]


def test_agent_bad_endpoint_on_command_line_is_a_config_error() -> None:
    """A malformed --endpoint is a config error naming it."""
    with pytest.raises(ConfigError, match="not host:port"):
        _agent_config(build_parser().parse_args(["agent", "--source", "system", "-e", "nope"]))


def test_systemd_unit_stops_cleanly_and_is_hardened() -> None:
    """The example unit sends SIGTERM, waits longer than shutdown_timeout, always restarts."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "config" / "telemetry-agent.service")
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert float(service["TimeoutStopSec"]) > AgentSection().shutdown_timeout
    assert service["Restart"] == "always"
    assert service["DynamicUser"] == "yes"
    assert service["ExecStart"].split()[1:3] == ["agent", "--config"]
    assert service["NoNewPrivileges"] == "yes"
