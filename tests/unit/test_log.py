"""The logging defaults: quiet for library users, as configured for the commands."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.support import timeout

# Runs in a fresh interpreter: structlog's configuration is process-wide, and the default
# under test is the one set when telemetry.log is first imported.
_LIBRARY_USER = textwrap.dedent(
    """
    import asyncio
    import socket

    from telemetry.agent import Agent
    from telemetry.config import AgentSection
    from telemetry.log import get_logger

    with socket.socket() as s:  # a port nobody listens on: the agent logs its retries
        s.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{s.getsockname()[1]}"

    async def main() -> None:
        section = AgentSection(
            id="lib", endpoints=[endpoint], flush_interval=0.01, reconnect_min=0.01,
            reconnect_max=0.02,
        )
        async with Agent(section) as agent:
            await agent.send({"sensor": "lib/a", "value": 1.0})
            await asyncio.sleep(0.3)
            await agent.close(0)
        log = get_logger("telemetry.test")
        log.debug("debug_event", n=1)
        log.info("info_event", n=2)
        log.warning("warning_event", n=3)
        log.error("error_event", n=4)

    asyncio.run(main())
    {configure}
    get_logger("telemetry.test").info("after_configure", n=5)
    """
)


def run_library_user(configure: str = "") -> subprocess.CompletedProcess[str]:
    code = _LIBRARY_USER.replace("{configure}", configure)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=True,
    )


def test_library_use_prints_nothing_below_warning() -> None:
    """Before configure_logging, an Agent and telemetry loggers write nothing to stdout and
    only warnings and errors to stderr."""
    result = run_library_user()
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert any("warning_event" in line for line in lines)
    assert any("error_event" in line for line in lines)
    for line in lines:
        assert line.startswith(("[warning", "[error", "[critical")), line
    for quiet in ("debug_event", "info_event", "after_configure"):
        assert quiet not in result.stderr


def test_configure_logging_still_decides_what_a_process_logs() -> None:
    """configure_logging after the quiet default logs info events as JSON lines on stderr."""
    result = run_library_user(
        "from telemetry.log import configure_logging; configure_logging('info', 'json')"
    )
    assert result.stdout == ""
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {"event": "after_configure", "n": 5, "level": "info"}.items() <= events[-1].items()
    assert events[-1]["logger"] == "telemetry.test"
