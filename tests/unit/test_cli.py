"""The ``telemetry`` command's package: cheap to import, one module per command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from telemetry.cli import build_parser
from telemetry.cli.tail import DEFAULT_URL
from telemetry.config import DEFAULT_HTTP_PORT

#: What no command needs just to build its parser (``telemetry --help``).
HEAVY = ("pydantic", "structlog", "aiohttp", "uvloop", "psutil", "asyncio")
#: What the agent never needs: the collector's side and the HTTP client.
NOT_FOR_THE_AGENT = ("aiohttp", "telemetry.collector", "telemetry.sinks", "telemetry.bench")
#: What an agent process must never load (issue 18, a lean agent): the collector and its
#: config models, the sinks and their models, the HTTP server and client, the metrics
#: library, and every sink driver.
COLLECTOR_SIDE = (
    "telemetry.collector",
    "telemetry.sinks",
    "telemetry.config.collector",
    "telemetry.config.sinks",
    "telemetry.bench",
    "telemetry.tail",
    "aiohttp",
    "prometheus_client",
    "asyncpg",
    "nats",
    "aiomqtt",
    "paho",
    "redis",
)


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


def _collector_side(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m in COLLECTOR_SIDE or m.startswith(tuple(COLLECTOR_SIDE))]


def test_what_telemetry_agent_runs_loads_no_collector_http_or_sink_module(
    tmp_path: Path,
) -> None:
    """Everything ``telemetry agent`` imports on its way to running: the command's config
    (file, --source of every kind, overrides), logging, the loop, every source type built,
    a disk spool opened, the agent and its sender; none of it is the collector's."""
    config = tmp_path / "agent.toml"
    config.write_text(
        '[spool]\npath = "spool.db"\n'
        '[[sources]]\ntype = "file"\npath = "/sys/class/thermal/*/temp"\n'
        '[[sources]]\ntype = "command"\ncommand = ["true"]\n'
    )
    loaded = loaded_after(
        "import os\n"
        f"os.chdir({str(tmp_path)!r})\n"
        "from telemetry.cli import build_parser\n"
        "from telemetry.cli import agent\n"
        "argv = ['agent', '--config', 'agent.toml', '--endpoint', '127.0.0.1:1']\n"
        "file_config = agent._agent_config(build_parser().parse_args(argv))\n"
        "argv += ['--source', 'system', '--source', 'simulated', '--source', 'stdin']\n"
        "cli_config = agent._agent_config(build_parser().parse_args(argv))\n"
        "from telemetry.agent import Agent, open_spool, run_agent, build_source\n"
        "from telemetry.log import configure_logging\n"
        "from telemetry.runtime import run_async\n"
        "configure_logging('warning', 'json')\n"
        "for i, source in enumerate([*file_config.sources, *cli_config.sources]):\n"
        "    build_source(source, 'a', i)\n"
        "open_spool(file_config.spool).close()\n"
        "import telemetry.agent.sender, telemetry.agent.connection, uvloop\n"
    )
    assert {"telemetry.agent.run", "telemetry.agent.sources.system", "psutil"} <= set(loaded)
    assert _collector_side(loaded) == []


def test_a_running_agent_loads_no_collector_http_or_sink_module() -> None:
    """``telemetry agent`` itself, run in a subprocess with the system and simulated sources
    (no collector to reach: it keeps retrying), lists its modules after its first samples."""
    # The dump waits until the agent runs (its sender and the system source's psutil are
    # loaded) and then for a few more samples; the deadline only bounds a broken start.
    script = (
        "import json, os, sys, threading, time\n"
        "def dump():\n"
        "    deadline = time.monotonic() + 60\n"
        "    while time.monotonic() < deadline and not {\n"
        "        'telemetry.agent.sender', 'psutil'} <= set(sys.modules.copy()):\n"
        "        time.sleep(0.05)\n"
        "    time.sleep(0.5)\n"
        "    print(json.dumps(sorted(sys.modules.copy())), flush=True)\n"
        "    os._exit(0)\n"
        "threading.Thread(target=dump, daemon=True).start()\n"
        "from telemetry.cli import main\n"
        "main(['agent', '--source', 'system', '--source', 'simulated', '--interval', '0.1',\n"
        "      '--endpoint', '127.0.0.1:1'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TELEMETRY_LOG__LEVEL": "error"},
    ).stdout
    loaded = list(json.loads(out.splitlines()[-1]))
    assert {"telemetry.agent.run", "telemetry.agent.sender", "psutil"} <= set(loaded)
    assert _collector_side(loaded) == []


def test_the_config_package_builds_only_the_side_asked_for() -> None:
    """``from telemetry.config import AgentConfig`` leaves the collector's and the sinks'
    models unbuilt; asking for a collector name then builds them."""
    loaded = loaded_after("from telemetry.config import AgentConfig, load_config, ConfigError")
    assert "telemetry.config.agent" in loaded
    assert [
        m for m in loaded if m.startswith(("telemetry.config.collector", "telemetry.config.sinks"))
    ] == []
    loaded = loaded_after("import telemetry.config as c; c.CollectorConfig")
    assert {"telemetry.config.collector", "telemetry.config.sinks"} <= set(loaded)


def test_every_name_of_the_config_package_resolves() -> None:
    """Each name in ``telemetry.config.__all__`` is importable from the package (and listed
    by ``dir``); an unknown one is an AttributeError."""
    import telemetry.config as config

    for name in config.__all__:
        assert getattr(config, name) is not None, name
    assert set(config.__all__) <= set(dir(config))
    with pytest.raises(AttributeError, match="NoSuchModel"):
        _ = config.NoSuchModel


@pytest.mark.parametrize(("command", "missing"), [("collect", "aiohttp"), ("tail", "aiohttp")])
def test_without_the_collector_extra_one_line_names_the_install(command: str, missing: str) -> None:
    """An agent-only install (no aiohttp, no prometheus-client): ``telemetry collect`` and
    ``tail`` print one line naming ``pip install 'sensor-telemetry[collector]'`` and exit 2."""
    script = (
        f"import sys\nsys.modules[{missing!r}] = None\n"
        f"from telemetry.cli import main\nsys.exit(main([{command!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "pip install 'sensor-telemetry[collector]'" in done.stderr
    assert missing in done.stderr


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
