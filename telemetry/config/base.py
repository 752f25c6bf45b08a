"""What every config model shares: the strict base, ``[log]``, the default ports, and the
load-time check of a template's placeholders."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

DEFAULT_INGEST_PORT = 7600
DEFAULT_HTTP_PORT = 7601


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogConfig(Strict):
    """``[log]``: level and format of the structured logs (written to stderr)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``auto``: colored key=value on a terminal, JSON lines otherwise (containers).
    format: Literal["auto", "json", "console"] = "auto"


def check_template(template: str, samples: dict[str, Any], *, what: str = "template") -> str:
    """Fail at load time, not in the running sink or source, on a placeholder the template
    cannot have: ``template`` is formatted with ``samples``, a value for each field it may use."""
    try:
        template.format(**samples)
    except (KeyError, IndexError, ValueError) as exc:
        allowed = ", ".join("{" + name + "}" for name in samples)
        raise ValueError(f"{what} {template!r} may only use {allowed} ({exc!r})") from None
    return template
