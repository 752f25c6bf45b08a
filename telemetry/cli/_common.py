"""What the command modules share: the epilog, the error line, ``key=value`` tags, the check
for the ``collector`` extra."""

from __future__ import annotations

import sys

EPILOG = "Environment variables TELEMETRY_<SECTION>__<KEY> override the config file."


def fail(message: str, status: int = 1) -> int:
    """Print ``telemetry: <message>`` on standard error; return ``status`` (the exit code)."""
    print(f"telemetry: {message}", file=sys.stderr)
    return status


#: The modules of the ``collector`` extra (pyproject.toml), which the base install leaves out.
COLLECTOR_MODULES = ("aiohttp", "prometheus_client")
#: How to install them.
COLLECTOR_INSTALL = "pip install 'sensor-telemetry[collector]'"


def missing_extra(command: str, modules: tuple[str, ...] = COLLECTOR_MODULES) -> int | None:
    """When one of ``modules`` is not installed (an agent-only install), print one line naming
    the install command and return the exit code 2; None when all are there."""
    from importlib.util import find_spec

    missing = [name for name in modules if find_spec(name) is None]
    if not missing:
        return None
    return fail(
        f"{command} needs the collector's dependencies ({', '.join(missing)} not installed): "
        f"{COLLECTOR_INSTALL}",
        2,
    )


def split_tag(tag: str) -> tuple[str, str]:
    """``key=value`` -> ``(key, value)``; a :class:`~telemetry.config.ConfigError` if not."""
    from telemetry.config import ConfigError

    key, sep, value = tag.partition("=")
    if not sep or not key:
        raise ConfigError(f"--tag {tag!r} is not key=value")
    return key, value
