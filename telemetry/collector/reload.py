"""The collector's reload (SIGHUP): re-read the config and apply it without dropping a connection.

How this works: :meth:`Reloader.reload` loads and validates the file (a missing sink driver
included; :func:`load_checked`), compares its sinks with the running ones by name
(:func:`plan_sinks`, a pure function) and starts what is new or changed. Only when all of them
started, and the TLS files loaded, does it commit, in one step with no ``await``: the pipeline
routes every batch from then on to the new set (:meth:`Pipeline.replace`), new hellos meet the
new credentials, new connections the new ``[ingest]`` limits, and the log level changes.

- an unchanged sink (same name, same config) keeps its runner, queue and client, untouched;
- a removed sink is drained in the background (its queued batches written and acked) and
  closed; a changed one is replaced: the new runner takes the batches routed from now on and
  writes them only once its predecessor has drained and closed (never two writers on a file);
- a config that does not load, a sink that does not start, or TLS files that do not load:
  the reload is refused with one ``reload_refused`` line, and the running config is kept.

What a reload cannot change (the ports, ``[http]``, ``[collector]``) is logged as
``needs_restart``. SIGHUPs never overlap: one reload runs at a time, and signals that arrive
meanwhile fold into one more reload, which reads the newest file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from telemetry.collector.auth import Authorizer, authorizer
from telemetry.collector.metrics import Metrics
from telemetry.collector.pipeline import Pipeline
from telemetry.collector.runner import SinkRunner
from telemetry.config import CollectorConfig, ConfigError, SinkConfig, load_config
from telemetry.log import configure_logging, get_logger
from telemetry.sinks.registry import build_sink
from telemetry.sinks.requirements import check_sink_drivers
from telemetry.tls import CollectorTls

log = get_logger("telemetry.collector")

__all__ = ["Reloadable", "Reloader", "SinkPlan", "load_checked", "plan_sinks", "restart_keys"]


def sink_key(config: SinkConfig) -> str:
    """A sink's identity across reloads: its name (``name``, else its type)."""
    return config.name or config.type


def _same(old: SinkConfig, new: SinkConfig) -> bool:
    # ``name = "sqlite"`` and no name at all are the same sink of type sqlite.
    return type(old) is type(new) and old.model_dump(exclude={"name"}) == new.model_dump(
        exclude={"name"}
    )


@dataclass(frozen=True, slots=True)
class SinkPlan:
    """What a reload does to the sinks, by name, in config order."""

    kept: tuple[str, ...] = ()  # same config: the running sink goes on untouched
    added: tuple[str, ...] = ()  # new name: started
    changed: tuple[str, ...] = ()  # same name, other config: replaced (start new, drain old)
    removed: tuple[str, ...] = ()  # gone: drained and closed

    @property
    def started(self) -> tuple[str, ...]:
        """The sinks a reload starts (new and replacements)."""
        return self.added + self.changed

    @property
    def stopped(self) -> tuple[str, ...]:
        """The sinks a reload drains and closes (removed and replaced)."""
        return self.removed + self.changed


def plan_sinks(old: Sequence[SinkConfig], new: Sequence[SinkConfig]) -> SinkPlan:
    """Compare the running sinks' configs with the new ones (names are distinct in each)."""
    before = {sink_key(config): config for config in old}
    after = {sink_key(config): config for config in new}
    return SinkPlan(
        kept=tuple(n for n, c in after.items() if n in before and _same(before[n], c)),
        added=tuple(n for n in after if n not in before),
        changed=tuple(n for n, c in after.items() if n in before and not _same(before[n], c)),
        removed=tuple(n for n in before if n not in after),
    )


def restart_keys(old: CollectorConfig, new: CollectorConfig) -> list[str]:
    """The changed settings a reload does not apply: they need a restart."""
    checks = (
        ("ingest.host", new.ingest.host != old.ingest.host),
        ("ingest.port", new.ingest.port != old.ingest.port),
        ("ingest.reuse_port", new.ingest.reuse_port != old.ingest.reuse_port),
        ("http", new.http != old.http),
        ("collector", new.collector != old.collector),
    )
    return [key for key, changed in checks if changed]


def load_checked(path: Path | None) -> CollectorConfig:
    """Load the collector config at ``path`` as ``telemetry collect`` does: parsed, validated,
    every configured sink's driver installed; :class:`ConfigError` (one line) otherwise."""
    config = load_config(CollectorConfig, path)
    check_sink_drivers(config)
    return config


class Reloadable(Protocol):
    """What a reload reads and swaps of the collector."""

    config: CollectorConfig
    config_path: Path | None
    metrics: Metrics
    pipeline: Pipeline
    tls: CollectorTls
    auth: Authorizer

    @property
    def state(self) -> str: ...


class SinkStartFailed(Exception):
    """A sink of the new config did not start: the reload is refused."""


class Reloader:
    """Runs the collector's reloads, one at a time."""

    def __init__(self, target: Reloadable) -> None:
        self.target = target
        self._lock = asyncio.Lock()
        self._waiting = False  # a requested reload has not begun yet: further SIGHUPs join it
        self._deferred = False  # a SIGHUP came while the collector was starting
        self._tasks: set[asyncio.Task[bool]] = set()

    def request(self) -> None:
        """SIGHUP: reload soon (at most one reload waits behind the running one); while the
        collector starts, once it serves (:meth:`serving`)."""
        if self.target.state == "starting":
            self._deferred = True
            log.info("reload_requested", note="applied once the collector serves")
            return
        if self._waiting:
            log.info("reload_requested", note="joins the reload already waiting")
            return
        self._waiting = True
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def serving(self) -> None:
        """The collector serves now: run a reload requested while it started."""
        if self._deferred:
            self._deferred = False
            self.request()

    async def settled(self) -> None:
        """Wait until no requested reload is waiting or running."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def cancel(self) -> None:
        """The collector drains: a reload not committed yet is abandoned."""
        for task in self._tasks:
            task.cancel()

    async def reload(self) -> bool:
        """Re-read the config and apply it (see the module's docstring); ``False`` when it
        was refused and the running config kept."""
        async with self._lock:
            self._waiting = False
            return await self._reload()

    async def _reload(self) -> bool:
        target = self.target
        path = target.config_path
        log.info("reload_requested", config=str(path) if path else None)
        try:
            new = load_checked(path)
        except ConfigError as exc:
            return _refused(str(exc))
        old = target.config
        plan = plan_sinks(old.sinks, new.sinks)
        running = dict(zip((sink_key(c) for c in old.sinks), target.pipeline.runners, strict=True))
        try:
            started = await self._start(new, plan, running)
        except SinkStartFailed as exc:
            return _refused(str(exc))
        try:
            if target.state != "serving":
                raise ConfigError(f"the collector is {target.state}")
            target.tls.reload(new)  # TlsError: the old certificates stay in use
        except ConfigError as exc:
            await _close(started.values())
            return _refused(str(exc))
        # The commit: nothing below awaits, so no batch sees half of it.
        runners = [started.get(name) or running[name] for name in map(sink_key, new.sinks)]
        target.pipeline.replace(runners, drain_timeout=old.collector.shutdown_timeout)
        ingest = new.ingest.model_copy(update={"host": old.ingest.host, "port": old.ingest.port})
        target.auth = authorizer(ingest, certificates=target.tls.client_certificates)
        applied = {"ingest": ingest, "log": new.log, "sinks": new.sinks}
        target.config = old.model_copy(update=applied)
        if new.log != old.log:
            configure_logging(new.log.level, new.log.format)
        log.info(
            "config_reloaded",
            credentials=len(target.auth.credentials),
            sinks=[runner.name for runner in runners],
            sinks_kept=list(plan.kept),
            sinks_started=list(plan.started),
            sinks_stopped=list(plan.stopped),
            needs_restart=restart_keys(old, new) or None,
        )
        return True

    async def _start(
        self, new: CollectorConfig, plan: SinkPlan, running: dict[str, SinkRunner]
    ) -> dict[str, SinkRunner]:
        """Build and start the new and changed sinks; on the first failure close those
        started and raise :class:`SinkStartFailed`."""
        started: dict[str, SinkRunner] = {}
        wanted = set(plan.started)
        try:
            for config in new.sinks:
                name = sink_key(config)
                if name not in wanted:
                    continue
                try:
                    runner = SinkRunner(build_sink(config), config, self.target.metrics)
                except Exception as exc:  # a plugin's constructor: any error refuses the reload
                    raise SinkStartFailed(f"sink {name!r} could not be built: {exc}") from exc
                predecessor = running.get(name)
                try:
                    await runner.start(after=predecessor.closed if predecessor else None)
                except Exception as exc:  # transient after its retries, or permanent
                    await _close_sink(runner)
                    raise SinkStartFailed(f"sink {name!r} did not start: {exc}") from exc
                started[name] = runner
        except BaseException:
            await _close(started.values())
            raise
        return started


def _refused(errors: str) -> bool:
    log.error("reload_refused", errors=errors)
    return False


async def _close(runners: Iterable[SinkRunner]) -> None:
    """Close runners a refused reload started (they hold nothing yet)."""
    for runner in list(runners):
        await runner.close(timeout=1.0)


async def _close_sink(runner: SinkRunner) -> None:
    """Close the sink of a runner whose start failed (its thread or half-open client)."""
    try:
        await runner.sink.close()
    except Exception as exc:  # a sink that never started may fail to close: say so, go on
        log.warning("sink_close_failed", sink=runner.name, error=str(exc))
