"""Reading a config: TOML first, then ``TELEMETRY_*`` environment variables, which win.

``TELEMETRY_INGEST__PORT=7700`` overrides ``[ingest] port``; lists and tables take JSON, e.g.
``TELEMETRY_SINKS='[{"type": "null"}]'``. Unknown keys are errors that name the key.

The collector and the agent share the ``TELEMETRY_`` prefix, and one environment may hold
variables for both (a container image, a shell): a section of the *other* config is left to
it, but a ``TELEMETRY_<SECTION>__<KEY>`` whose section neither config has (a typo such as
``TELEMETRY_INGSET__PORT``) is an error naming the variable (:func:`check_env_sections`).
Variables without ``__`` (``TELEMETRY_SINKS``, and others the project reads itself, such as
``TELEMETRY_POSTGRES_DSN``) are not sections and are not checked.
:func:`env_overrides` writes such variables from a nested dict (the ``--workers`` supervisor
gives its workers their overrides that way).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class TomlThenEnv(BaseSettings):
    """Settings read from init kwargs (the TOML file), overridden by ``TELEMETRY_*``."""

    model_config = SettingsConfigDict(
        env_prefix="TELEMETRY_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


class ConfigError(Exception):
    """A config file that cannot be read or does not validate; the message says why."""


Settings = TypeVar("Settings", bound=TomlThenEnv)


def load_config(model: type[Settings], path: Path | str | None) -> Settings:
    """Read ``path`` (TOML; None: defaults only), apply ``TELEMETRY_*`` and validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    check_env_sections(os.environ)
    try:
        return model(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path)) from None


#: Every config model's top-level sections, written out: an agent must not import the
#: collector's models (the lean agent) just to know their names. A unit test holds this table
#: to the models.
SECTIONS: dict[str, frozenset[str]] = {
    "CollectorConfig": frozenset({"collector", "ingest", "http", "log", "sinks"}),
    "AgentConfig": frozenset({"agent", "spool", "sources", "log"}),
    "RelayConfig": frozenset({"relay", "http", "log", "sinks"}),
}


def config_sections() -> dict[str, frozenset[str]]:
    """Each config model's name -> its top-level sections (:data:`SECTIONS`)."""
    return dict(SECTIONS)


def check_env_sections(environ: Mapping[str, str]) -> None:
    """Raise :class:`ConfigError` naming every ``TELEMETRY_<SECTION>__<KEY>`` variable whose
    section no config has (neither the collector's, the agent's nor the relay's)."""
    prefix = TomlThenEnv.model_config.get("env_prefix", "")
    delimiter = TomlThenEnv.model_config.get("env_nested_delimiter") or "__"
    sections = config_sections()
    known = frozenset().union(*sections.values())
    unknown = sorted(
        name
        for name in environ
        if name.upper().startswith(prefix)
        and delimiter in name[len(prefix) :]
        and name[len(prefix) :].split(delimiter, 1)[0].lower() not in known
    )
    if unknown:
        listed = "; ".join(
            f"{model.removesuffix('Config').lower()}: {', '.join(sorted(names))}"
            for model, names in sorted(sections.items())
        )
        raise ConfigError(
            f"environment variable {', '.join(unknown)}: no such config section "
            f"(sections: {listed})"
        )


def format_validation_error(exc: ValidationError, path: Path | str | None) -> str:
    """One line per problem, each naming the key: ``ingest.prot: unknown key``."""
    where = f"config {path}" if path is not None else "config"
    lines = [f"{where} is invalid:"]
    for error in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def env_overrides(model: type[TomlThenEnv], overrides: dict[str, Any]) -> dict[str, str]:
    """The environment variables that make ``model`` load ``overrides`` over its file:
    ``{"ingest": {"port": 7700}}`` -> ``{"TELEMETRY_INGEST__PORT": "7700"}``. Strings go as
    they are, anything else as JSON (what the settings source parses back)."""
    prefix = model.model_config.get("env_prefix", "")
    delimiter = model.model_config.get("env_nested_delimiter") or "__"
    env: dict[str, str] = {}

    def add(path: list[str], value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add([*path, key], inner)
        else:
            name = prefix + delimiter.join(path).upper()
            env[name] = value if isinstance(value, str) else json.dumps(value)

    add([], overrides)
    return env
