"""The agent's running sources, and what a reload (SIGHUP) changes in them.

How this works: :class:`SourceSet` runs one task per source, each feeding the same
:class:`~telemetry.agent.Agent`. On a reload the new config's ``[[sources]]`` are matched
against the running ones by :func:`plan_sources`, a pure function: a running source whose
config is equal to a new entry keeps running, untouched; the other running ones are stopped
(their task cancelled) and the unmatched new entries started. The agent, so its connection,
spool and ledger, is never touched: a reading a stopped source already handed over is in the
batch or the spool like any other; one it had not is simply never produced. A ``stdin``
source is the exception: its stream cannot be reopened where it stopped, so it keeps running
and a change to it is reported as needing a restart.

:func:`needs_restart` lists the settings a reload cannot apply live (``[agent]`` and
``[spool]`` keys: id, endpoints, spool path, ``[agent.http]``...), logged as
``needs_restart``. The counters of a stopped source are kept under its name, so the
per-source counters of ``/metrics`` only grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from telemetry.agent.sources import Source, build_source
from telemetry.agent.sources.base import ReadingSink
from telemetry.config import AgentConfig, SourceConfig
from telemetry.log import get_logger

log = get_logger("telemetry.agent")

#: Names whose counters are kept after their source stopped; past it the oldest are forgotten.
MAX_RETIRED_NAMES = 256


@dataclass(frozen=True)
class SourcePlan:
    """What a reload does to the sources: indexes into the old and the new lists."""

    #: (old index, new index) of each source that keeps running.
    keep: list[tuple[int, int]] = field(default_factory=list)
    #: New entries to start.
    start: list[int] = field(default_factory=list)
    #: Old sources to stop.
    stop: list[int] = field(default_factory=list)
    #: New entries that describe a changed ``stdin`` source, which keeps its old config.
    stdin_unchanged: list[int] = field(default_factory=list)


def plan_sources(old: Sequence[SourceConfig], new: Sequence[SourceConfig]) -> SourcePlan:
    """Match ``new`` entries to ``old`` running ones: equal configs are kept (each old one
    matches at most one new one, in order), the rest are stopped or started. A ``stdin`` entry
    is never restarted: a new ``stdin`` entry is matched to an old one even when it differs."""
    free = list(range(len(old)))
    plan = SourcePlan()
    unmatched: list[int] = []
    for new_index, config in enumerate(new):
        match = next((i for i in free if old[i] == config), None)
        if match is None:
            unmatched.append(new_index)
            continue
        free.remove(match)
        plan.keep.append((match, new_index))
    for new_index in unmatched:
        if new[new_index].type == "stdin":
            match = next((i for i in free if old[i].type == "stdin"), None)
            if match is not None:
                free.remove(match)
                plan.keep.append((match, new_index))
                plan.stdin_unchanged.append(new_index)
                continue
        plan.start.append(new_index)
    plan.stop.extend(free)
    return plan


def needs_restart(old: AgentConfig, new: AgentConfig) -> list[str]:
    """The ``[agent]`` and ``[spool]`` keys whose new value a reload cannot apply."""
    changed: list[str] = []
    for section in ("agent", "spool"):
        before: BaseModel = getattr(old, section)
        after: BaseModel = getattr(new, section)
        changed.extend(
            f"{section}.{name}"
            for name in type(before).model_fields
            if getattr(before, name) != getattr(after, name)
        )
    return changed


@dataclass(frozen=True)
class Reloaded:
    """The sources a reload kept, started and stopped, by name."""

    kept: list[str]
    started: list[str]
    stopped: list[str]
    #: Indexes of new ``stdin`` entries that differ from the running one (kept as it runs).
    stdin_unchanged: list[int]


def _free_index(config: SourceConfig, taken: set[str]) -> int:
    """The smallest index whose name ``<type>-<index>`` no running source has."""
    index = 0
    while f"{config.type}-{index}" in taken:
        index += 1
    return index


@dataclass
class _Running:
    config: SourceConfig | None  # None: a source given by the caller, not from the config
    source: Source
    task: asyncio.Task[None]


@dataclass
class SourceCounters:
    """What one source (by name) did so far, across restarts by reloads."""

    readings: int = 0
    errors: int = 0
    crashed: int = 0


class SourceSet:
    """The running sources of one agent; :meth:`reload` changes them to a new config."""

    def __init__(self, sink: ReadingSink, agent_id: str) -> None:
        self._sink = sink
        self._agent_id = agent_id
        self._running: list[_Running] = []
        self._retired: dict[str, SourceCounters] = {}
        self._crashed: dict[str, int] = {}
        #: Tasks of stopped sources until they have finished (waited for by :meth:`close`).
        self._stopping: set[asyncio.Task[None]] = set()
        #: Set when no source is running any more (all ended by themselves).
        self.ended = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, sources: Sequence[Source], configs: Sequence[SourceConfig | None]) -> None:
        """Start ``sources`` (``configs[i]`` describes ``sources[i]``, None if nothing does)."""
        for source, config in zip(sources, configs, strict=True):
            self._start(source, config)
        self._check_ended()

    def reload(self, new: Sequence[SourceConfig]) -> Reloaded:
        """Change the running sources to ``new``. Every new source is built before any is
        stopped: a source that cannot be built (ValueError, OSError...) raises and changes
        nothing."""
        # The plan's indexes are over the sources that came from the config.
        configured = [r for r in self._running if r.config is not None]
        plan = plan_sources([r.config for r in configured if r.config is not None], new)
        taken = {configured[i].source.name for i, _ in plan.keep}
        taken.update(r.source.name for r in self._running if r.config is None)
        built: list[tuple[Source, SourceConfig]] = []
        for index in plan.start:
            source = build_source(new[index], self._agent_id, _free_index(new[index], taken))
            taken.add(source.name)
            built.append((source, new[index]))
        for index in plan.stop:
            self._stop(configured[index])
        for source, config in built:
            self._start(source, config)
        self._check_ended()
        return Reloaded(
            kept=[configured[i].source.name for i, _ in plan.keep],
            started=[source.name for source, _ in built],
            stopped=[configured[i].source.name for i in plan.stop],
            stdin_unchanged=plan.stdin_unchanged,
        )

    async def close(self) -> None:
        """Stop every source and wait for their tasks."""
        tasks = [r.task for r in self._running] + list(self._stopping)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- what the sources did -----------------------------------------------------------

    @property
    def running_names(self) -> list[str]:
        """The names of the sources whose task is still running."""
        return [r.source.name for r in self._running if not r.task.done()]

    def counters(self) -> dict[str, SourceCounters]:
        """Per source name: readings produced, failed samples or bad lines, crashes."""
        totals = {
            name: SourceCounters(c.readings, c.errors, c.crashed)
            for name, c in self._retired.items()
        }
        for running in self._running:
            source = running.source
            counters = totals.setdefault(source.name, SourceCounters())
            counters.readings += int(getattr(source, "produced", 0))
            counters.errors += int(getattr(source, "failures", getattr(source, "bad_lines", 0)))
        for name, crashed in self._crashed.items():
            totals.setdefault(name, SourceCounters()).crashed = crashed
        return totals

    # --- internals ----------------------------------------------------------------------

    def _start(self, source: Source, config: SourceConfig | None) -> None:
        task = asyncio.create_task(self._run(source), name=f"source-{source.name}")
        self._running.append(_Running(config, source, task))
        task.add_done_callback(lambda _: self._check_ended())

    def _stop(self, running: _Running) -> None:
        running.task.cancel()
        self._stopping.add(running.task)
        running.task.add_done_callback(self._stopping.discard)
        self._running.remove(running)
        source = running.source
        retired = self._retired.pop(source.name, SourceCounters())
        retired.readings += int(getattr(source, "produced", 0))
        retired.errors += int(getattr(source, "failures", getattr(source, "bad_lines", 0)))
        self._retired[source.name] = retired
        while len(self._retired) > MAX_RETIRED_NAMES:
            del self._retired[next(iter(self._retired))]

    def _check_ended(self) -> None:
        if self._running and all(r.task.done() for r in self._running):
            self.ended.set()
        else:
            self.ended.clear()

    async def _run(self, source: Source) -> None:
        """Task root of one source: a failing source is logged and ends, the agent goes on."""
        try:
            await source.run(self._sink)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._crashed[source.name] = self._crashed.get(source.name, 0) + 1
            if len(self._crashed) > MAX_RETIRED_NAMES:
                del self._crashed[next(iter(self._crashed))]
            log.exception("source_failed", source=source.name)


async def reload_config(
    current: AgentConfig, load: Callable[[], AgentConfig], sources: SourceSet
) -> AgentConfig:
    """Re-read the config with ``load`` and apply it to ``sources`` and the log settings;
    return the config now running. An invalid config is refused with one log line and
    ``current`` stays. ``[agent]`` and ``[spool]`` keep their running values (logged as
    ``needs_restart`` when the file changed them)."""
    from telemetry.config import ConfigError
    from telemetry.log import configure_logging

    try:
        new = await asyncio.to_thread(load)
        if not new.sources:
            raise ConfigError("no [[sources]]: an agent needs at least one")

        done = sources.reload(new.sources)
    except ConfigError as exc:
        log.error("reload_refused", error="; ".join(str(exc).split("\n  ")), kept="old config")
        return current
    except Exception as exc:  # the reloader is a task root: a bug keeps the old config
        log.exception("reload_refused", error=str(exc)[:300] or type(exc).__name__)
        return current
    log.info("config_reloaded", started=done.started, stopped=done.stopped, kept=done.kept)
    restart = needs_restart(current, new) + [f"sources.{i}" for i in done.stdin_unchanged]
    if restart:
        log.warning("needs_restart", keys=restart, hint="restart the agent to apply them")
    if new.log != current.log:
        configure_logging(new.log.level, new.log.format)
    return new.model_copy(update={"agent": current.agent, "spool": current.spool})
