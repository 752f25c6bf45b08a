"""``telemetry agent``: an :class:`Agent` fed by the configured sources until told to stop.

The agent stops cleanly on SIGTERM/SIGINT or when every source has ended (stdin at EOF, a
simulated source after its ``count``): it flushes, waits up to ``shutdown_timeout`` for every
ack and reports through its exit code whether readings were left pending.

The spool is the one ``[spool]`` asks for: with a ``path``, a disk spool whose unacked
readings wait in the file for the next start; without, a memory spool whose unacked readings
are dropped at exit (``readings_dropped`` with ``reason=unacked_at_exit``).

SIGHUP re-reads the config (when the caller says how, ``reload``) and restarts only the
sources whose config changed (:mod:`telemetry.agent.reload`); the connection, spool and
ledger are untouched. With ``[agent.http]`` the agent serves ``/metrics`` and ``/healthz``
(:mod:`telemetry.agent.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from telemetry.agent.agent import Agent
from telemetry.agent.memory_spool import MemorySpool
from telemetry.agent.reload import SourceSet, reload_config
from telemetry.agent.sources import Source, build_source
from telemetry.agent.spool import UNACKED_AT_EXIT, Spool, log_dropped
from telemetry.agent.spool_factory import open_spool
from telemetry.agent.spool_file import SpoolError
from telemetry.config import AgentConfig, SourceConfig
from telemetry.log import get_logger

log = get_logger("telemetry.agent")

EXIT_OK = 0
EXIT_PENDING = 1
EXIT_NO_SOURCES = 2
EXIT_SPOOL_ERROR = 2
EXIT_HTTP_ERROR = 2

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_agent(
    config: AgentConfig,
    *,
    sources: Sequence[Source] | None = None,
    reload: Callable[[], AgentConfig] | None = None,
) -> int:
    """Run the agent until a signal or the end of every source; return the exit code.

    0: every reading acked; 1: readings still pending after ``shutdown_timeout``;
    2: no source configured, the spool cannot be opened (e.g. another agent holds it), or
    the ``[agent.http]`` port cannot be listened on.
    ``sources`` replaces the configured ones (for embedding, tests). ``reload`` loads the
    config again on SIGHUP (a :class:`~telemetry.config.ConfigError` refuses it); without it
    SIGHUP is logged and changes nothing.
    """
    configs: list[SourceConfig | None]
    if sources is None:
        if not config.sources:
            log.error(
                "no_sources_configured",
                hint='add a [[sources]] table to the agent config, e.g. type = "stdin"',
            )
            return EXIT_NO_SOURCES
        sources = [
            build_source(source, config.agent.id, index)
            for index, source in enumerate(config.sources)
        ]
        configs = list(config.sources)
    elif not sources:
        log.error("no_sources_configured")
        return EXIT_NO_SOURCES
    else:
        configs = [None] * len(sources)

    try:
        spool = open_spool(config.spool)
    except SpoolError as exc:
        log.error("spool_unavailable", error=str(exc))
        return EXIT_SPOOL_ERROR
    if not spool.durable:
        log.info(
            "spool_in_memory",
            hint="set [spool] path to keep unacked readings across restarts",
            max_readings=config.spool.max_readings,
        )
    try:
        return await _run(config, sources, configs, spool, reload)
    finally:
        spool.close()


async def _run(
    config: AgentConfig,
    sources: Sequence[Source],
    configs: Sequence[SourceConfig | None],
    spool: Spool,
    reload: Callable[[], AgentConfig] | None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # first signal: stop the sources, wait for the acks
    force = asyncio.Event()  # second signal: stop waiting
    reload_wanted = asyncio.Event()  # SIGHUP: several before the reload runs make one
    stopping = asyncio.Event()  # the sources are stopped: no reload any more

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("stop_forced", signal=name, pending=agent.ledger.pending)
            force.set()
        else:
            log.info("stop_requested", signal=name, timeout=config.agent.shutdown_timeout)
            stop.set()

    def on_hangup() -> None:
        # SIGHUP must never end the process undrained.
        if stop.is_set() or stopping.is_set():
            log.info("reload_ignored", reason="stopping")
        elif reload is None:
            log.info("reload_ignored", reason="no config to re-read")
        else:
            log.info("reload_requested")
            reload_wanted.set()

    async def reloader() -> None:
        running = config
        while reload is not None:
            await reload_wanted.wait()
            reload_wanted.clear()
            running = await reload_config(running, reload, source_set)

    agent = Agent(config.agent, spool)
    source_set = SourceSet(agent, config.agent.id)
    http = None
    if config.agent.http is not None:
        from telemetry.agent.http import AgentHttp  # prometheus-client: only when asked for

        http = AgentHttp(config.agent.http, agent, source_set)
        try:
            await http.start()
        except OSError as exc:
            where = f"{config.agent.http.host}:{config.agent.http.port}"
            log.error("agent_http_unavailable", address=where, error=exc.strerror or str(exc))
            return EXIT_HTTP_ERROR
    installed: list[signal.Signals] = []
    for sig in _SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        installed.append(signal.SIGHUP)

    source_set.start(sources, configs)
    reloading = asyncio.create_task(reloader(), name="agent-reloader")
    try:
        await agent.start()
        await _first(source_set.ended.wait(), stop.wait())
        stopping.set()  # a SIGHUP from now on is ignored
        if not stop.is_set():
            log.info("sources_finished")
        reloading.cancel()
        await asyncio.gather(reloading, return_exceptions=True)
        await source_set.close()
        await _first(agent.wait_acked(config.agent.shutdown_timeout), force.wait())
    finally:
        reloading.cancel()
        await source_set.close()
        for sig in installed:
            loop.remove_signal_handler(sig)
        acked = await agent.close(0)  # everything is spooled: this only stops and reports
        if http is not None:
            await http.close()
    if not acked:
        pending = agent.ledger.pending
        if isinstance(spool, MemorySpool):
            batches = spool.batches
            log_dropped(UNACKED_AT_EXIT, spool.discard(UNACKED_AT_EXIT), batches)
        log.error("readings_pending_at_exit", pending=pending, kept=spool.durable)
        return EXIT_PENDING
    return EXIT_OK


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until the first of ``aws`` is done, then cancel the others."""
    futures = [asyncio.ensure_future(aw) for aw in aws]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
