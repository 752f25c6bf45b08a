"""The ``telemetry`` command's package: cheap to import, one module per command."""

from __future__ import annotations

import json
import subprocess
import sys

from telemetry.cli import build_parser
from telemetry.cli.tail import DEFAULT_URL
from telemetry.config import DEFAULT_HTTP_PORT

#: What no command needs just to build its parser (``telemetry --help``).
HEAVY = ("pydantic", "structlog", "aiohttp", "uvloop", "psutil", "asyncio")
#: What the agent never needs: the collector's side and the HTTP client.
NOT_FOR_THE_AGENT = ("aiohttp", "telemetry.collector", "telemetry.sinks", "telemetry.bench")


def loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_building_the_parser_imports_no_command_s_dependencies() -> None:
    """``telemetry --help`` loads the command modules and argparse, not what commands run."""
    loaded = loaded_after("from telemetry.cli import build_parser; build_parser()")
    assert "telemetry.cli.agent" in loaded
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    ours = [m for m in loaded if m.startswith("telemetry.") and not m.startswith("telemetry.cli")]
    assert (heavy, ours) == ([], [])


def test_the_agent_command_loads_nothing_of_the_collector() -> None:
    """What ``telemetry agent`` imports to run leaves the collector, sinks and aiohttp out."""
    loaded = loaded_after(
        "from telemetry.cli import build_parser\n"
        "from telemetry.cli import agent\n"
        "args = build_parser().parse_args(['agent', '--source', 'simulated'])\n"
        "agent._agent_config(args)\n"
        "import telemetry.agent, telemetry.log, telemetry.runtime"
    )
    assert "telemetry.agent.run" in loaded
    assert [m for m in loaded if m.startswith(NOT_FOR_THE_AGENT)] == []


def test_tail_s_default_url_is_the_collector_s_http_port() -> None:
    """The written-out default of ``tail --url`` is the collector's default HTTP port."""
    assert f"http://127.0.0.1:{DEFAULT_HTTP_PORT}" == DEFAULT_URL
    assert build_parser().parse_args(["tail"]).url == DEFAULT_URL


def test_every_command_has_its_help_and_its_run() -> None:
    """Each command of ``telemetry --help`` parses and names the function that runs it."""
    parser = build_parser()
    for argv in (["collect"], ["agent"], ["send"], ["spool", "status"], ["tail"], ["bench"]):
        assert callable(parser.parse_args(argv).func), argv
    assert callable(parser.parse_args(["check-config"]).func)


def test_version_prints_the_distribution_s_name_and_version() -> None:
    """``telemetry --version``: the distribution (not the unrelated ``telemetry`` on PyPI) and
    its installed version, looked up without loading any command's dependencies."""
    from importlib.metadata import version

    from telemetry import DISTRIBUTION

    code = (
        "import sys\n"
        "from telemetry.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "import json\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert DISTRIBUTION == "sensor-telemetry"
    assert out[:2] == [f"sensor-telemetry {version(DISTRIBUTION)}", "exit 0"]
    loaded = json.loads(out[-1])
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
