"""``telemetry agent``: an :class:`Agent` fed by the configured sources until told to stop.

The agent stops cleanly on SIGTERM/SIGINT or when every source has ended (stdin at EOF, a
simulated source after its ``count``): it flushes, waits up to ``shutdown_timeout`` for every
ack and reports through its exit code whether readings were left pending.

The spool is the one ``[spool]`` asks for: with a ``path``, a disk spool whose unacked
readings wait in the file for the next start; without, a memory spool whose unacked readings
are dropped at exit (``readings_dropped`` with ``reason=unacked_at_exit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Sequence
from typing import Any

from telemetry.agent.agent import Agent
from telemetry.agent.memory_spool import MemorySpool
from telemetry.agent.sources import Source, build_source
from telemetry.agent.spool import UNACKED_AT_EXIT, Spool, log_dropped
from telemetry.agent.spool_factory import open_spool
from telemetry.agent.spool_file import SpoolError
from telemetry.config import AgentConfig
from telemetry.log import get_logger

log = get_logger("telemetry.agent")

EXIT_OK = 0
EXIT_PENDING = 1
EXIT_NO_SOURCES = 2
EXIT_SPOOL_ERROR = 2

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _run_source(source: Source, agent: Agent) -> None:
    """Task root of one source: a failing source is logged and ends, the agent goes on."""
    try:
        await source.run(agent)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("source_failed", source=source.name)


async def run_agent(config: AgentConfig, *, sources: Sequence[Source] | None = None) -> int:
    """Run the agent until a signal or the end of every source; return the exit code.

    0: every reading acked; 1: readings still pending after ``shutdown_timeout``;
    2: no source configured, or the spool cannot be opened (e.g. another agent holds it).
    ``sources`` replaces the configured ones (for embedding, tests).
    """
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
    elif not sources:
        log.error("no_sources_configured")
        return EXIT_NO_SOURCES

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
        return await _run(config, sources, spool)
    finally:
        spool.close()


async def _run(config: AgentConfig, sources: Sequence[Source], spool: Spool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # first signal: stop the sources, wait for the acks
    force = asyncio.Event()  # second signal: stop waiting

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("stop_forced", signal=name, pending=agent.ledger.pending)
            force.set()
        else:
            log.info("stop_requested", signal=name, timeout=config.agent.shutdown_timeout)
            stop.set()

    def on_hangup() -> None:
        # SIGHUP would end the process undrained; an agent keeps running and says so.
        log.info("reload_requested", note="the agent keeps running; restart it to apply")

    agent = Agent(config.agent, spool)
    installed: list[signal.Signals] = []
    for sig in _SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        installed.append(signal.SIGHUP)

    tasks = [
        asyncio.create_task(_run_source(source, agent), name=f"source-{source.name}")
        for source in sources
    ]
    try:
        await agent.start()
        await _first(asyncio.gather(*tasks), stop.wait())
        if not stop.is_set():
            log.info("sources_finished")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _first(agent.wait_acked(config.agent.shutdown_timeout), force.wait())
    finally:
        for task in tasks:
            task.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        acked = await agent.close(0)  # everything is spooled: this only stops and reports
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
