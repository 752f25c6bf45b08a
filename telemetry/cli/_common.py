"""What the command modules share: the epilog, the error line, ``key=value`` tags."""

from __future__ import annotations

import sys

EPILOG = "Environment variables TELEMETRY_<SECTION>__<KEY> override the config file."


def fail(message: str, status: int = 1) -> int:
    """Print ``telemetry: <message>`` on standard error; return ``status`` (the exit code)."""
    print(f"telemetry: {message}", file=sys.stderr)
    return status


def split_tag(tag: str) -> tuple[str, str]:
    """``key=value`` -> ``(key, value)``; a :class:`~telemetry.config.ConfigError` if not."""
    from telemetry.config import ConfigError

    key, sep, value = tag.partition("=")
    if not sep or not key:
        raise ConfigError(f"--tag {tag!r} is not key=value")
    return key, value
