"""``[[sources]]``: where an agent's readings come from, one model per source ``type``."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from telemetry.config.base import Strict, check_template


class SimulatedSourceConfig(Strict):
    """Made-up readings: for a first try, demos and load."""

    type: Literal["simulated"]
    #: Sensors simulated; names come from ``sensor`` with ``{agent}`` and ``{n}`` filled in.
    sensors: int = Field(default=3, ge=1)
    sensor: str = "{agent}/sim-{n}"
    metric: str = "temperature"
    unit: str = "°C"
    #: Seconds between two readings of one sensor.
    interval: float = Field(default=1.0, gt=0)
    #: Stop after this many readings in all (0: never).
    count: int = Field(default=0, ge=0)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("sensor")
    @classmethod
    def _sensor_template(cls, sensor: str) -> str:
        # {n} is a number: a template may format it, e.g. "sim-{n:02d}".
        return check_template(sensor, {"agent": "agent", "n": 1}, what="sensor template")


class StdinSourceConfig(Strict):
    """JSON lines on standard input, one reading per line; EOF ends the agent cleanly."""

    type: Literal["stdin"]
    tags: dict[str, str] = Field(default_factory=dict)


def _check_template(template: str, names: tuple[str, ...]) -> str:
    """A polled source's sensor template may only use its own placeholders."""
    return check_template(template, dict.fromkeys(names, "x"), what="sensor template")


class PolledSourceBase(Strict):
    """Keys of every source that takes a sample on an interval (``system``, ``file``,
    ``command``). A failed sample (an exception, a timeout, an unreadable file) is logged
    and counted, and the next one is taken on time."""

    #: Seconds between two samples.
    interval: float = Field(default=10.0, gt=0)
    #: Seconds one sample may take; past it the sample counts as failed (a command is killed).
    timeout: float = Field(default=5.0, gt=0)
    #: Added to every reading's tags (a reading's own tag with the same key wins).
    tags: dict[str, str] = Field(default_factory=dict)


SystemMetric = Literal["cpu", "load", "memory", "swap", "disk", "net", "temperature", "fan"]
SYSTEM_TEMPLATE_NAMES = ("agent", "host", "name", "metric", "device")


class SystemSourceConfig(PolledSourceBase):
    """Host metrics through psutil: CPU, load, memory, disks, network rates, temperatures,
    fans (the last two where the host has them)."""

    type: Literal["system"]
    #: Sensor names: ``{agent}``, ``{host}``, ``{name}`` (e.g. ``cpu``, ``disk:/``,
    #: ``net:eth0:rx``, ``temp:coretemp:Core 0``), ``{metric}``, ``{device}``.
    sensor: str = "{agent}/{name}"
    #: Which groups to read (default: all).
    metrics: list[SystemMetric] = Field(default_factory=lambda: list(get_args(SystemMetric)))
    #: Mount points whose usage is read.
    disks: list[str] = Field(default_factory=lambda: ["/"])
    #: Network interfaces (empty: every interface but loopback).
    interfaces: list[str] = Field(default_factory=list)

    @field_validator("sensor")
    @classmethod
    def _sensor_template(cls, sensor: str) -> str:
        return _check_template(sensor, SYSTEM_TEMPLATE_NAMES)


FILE_TEMPLATE_NAMES = ("agent", "host", "name", "parent", "path")


class FileSourceConfig(PolledSourceBase):
    """A sysfs-style file (or every file a glob matches) read on an interval."""

    type: Literal["file"]
    #: The file, or a glob such as ``/sys/bus/w1/devices/28-*/w1_slave`` (expanded each time).
    path: str = Field(min_length=1)
    #: ``number``: the file holds one number; ``w1_slave``: the 1-Wire thermometer format
    #: (value in °C, a failed CRC is a failed read); ``auto``: by the content.
    format: Literal["auto", "number", "w1_slave"] = "auto"
    #: value = number * scale + offset (e.g. millidegrees: scale 0.001).
    scale: float = 1.0
    offset: float = 0.0
    #: Sensor names: ``{agent}``, ``{host}``, ``{name}`` (file name), ``{parent}`` (its
    #: directory's name, e.g. ``thermal_zone0`` or ``28-000005e2fdc3``), ``{path}``.
    sensor: str = "{agent}/{parent}"
    metric: str | None = None
    unit: str | None = None
    timeout: float = Field(default=2.0, gt=0)

    @field_validator("sensor")
    @classmethod
    def _sensor_template(cls, sensor: str) -> str:
        return _check_template(sensor, FILE_TEMPLATE_NAMES)


COMMAND_TEMPLATE_NAMES = ("agent", "host", "name")


class CommandSourceConfig(PolledSourceBase):
    """A command run on an interval, its standard output parsed as readings."""

    type: Literal["command"]
    #: argv list, run without a shell; a string is split like a shell would (``shlex``) but
    #: still run without one, unless ``shell = true``.
    command: list[str] | str
    #: Run ``command`` (a string) through ``/bin/sh -c``: pipes and globs, at your own risk.
    shell: bool = False
    #: ``number``: the output (or the first group of ``pattern``) is one number;
    #: ``json``: one reading object, an array of them, or JSON lines.
    parse: Literal["number", "json"] = "number"
    #: With ``parse = "number"``: a regular expression whose first group (or whole match)
    #: is the number, e.g. ``temp=([0-9.]+)`` for ``vcgencmd measure_temp``.
    pattern: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    #: Sensor names: ``{agent}``, ``{host}``, ``{name}`` (the program's file name); with
    #: ``parse = "json"`` only for readings without a ``sensor``.
    sensor: str = "{agent}/{name}"
    metric: str | None = None
    unit: str | None = None
    #: Most bytes of output read; more is a failed run.
    max_output: int = Field(default=1024 * 1024, ge=1)
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("sensor")
    @classmethod
    def _sensor_template(cls, sensor: str) -> str:
        return _check_template(sensor, COMMAND_TEMPLATE_NAMES)

    @field_validator("command")
    @classmethod
    def _not_empty(cls, command: list[str] | str) -> list[str] | str:
        if not command or (isinstance(command, str) and not command.strip()):
            raise ValueError("command is empty")
        return command

    @field_validator("pattern")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            import re

            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a regex: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _shell_takes_a_string(self) -> CommandSourceConfig:
        if self.shell and not isinstance(self.command, str):
            raise ValueError("with shell = true, command must be one string")
        if self.pattern is not None and self.parse != "number":
            raise ValueError('pattern only applies to parse = "number"')
        return self

    @property
    def argv(self) -> list[str]:
        """The command as an argv list (``/bin/sh -c ...`` when ``shell``)."""
        import shlex

        if isinstance(self.command, list):
            return list(self.command)
        if self.shell:
            return ["/bin/sh", "-c", self.command]
        return shlex.split(self.command)


SourceConfig = Annotated[
    SimulatedSourceConfig
    | StdinSourceConfig
    | SystemSourceConfig
    | FileSourceConfig
    | CommandSourceConfig,
    Field(discriminator="type"),
]
