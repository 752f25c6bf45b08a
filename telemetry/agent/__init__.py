"""The agent: sources, spool, the reconnecting sender, and the library API.

``async with Agent(AgentSection(...)) as agent: await agent.send(reading)`` delivers readings
at least once; :func:`run_agent` runs an agent fed by configured sources; :func:`send_once`
sends one batch and returns its ack.
"""

from telemetry.agent.actions import SenderStats
from telemetry.agent.agent import Agent, AgentLedger
from telemetry.agent.batching import Batcher
from telemetry.agent.connection import CollectorError
from telemetry.agent.disk_spool import DiskSpool
from telemetry.agent.memory_spool import MemorySpool
from telemetry.agent.oneshot import SendError, send_once
from telemetry.agent.run import run_agent
from telemetry.agent.sender import Sender
from telemetry.agent.sources import (
    BadLine,
    SimulatedSource,
    Source,
    StdinSource,
    build_source,
    parse_line,
)
from telemetry.agent.spool import Spool, SpooledBatch
from telemetry.agent.spool_factory import open_spool
from telemetry.agent.spool_file import SpoolError
from telemetry.backoff import Backoff

__all__ = [
    "Agent",
    "AgentLedger",
    "Backoff",
    "BadLine",
    "Batcher",
    "CollectorError",
    "DiskSpool",
    "MemorySpool",
    "SendError",
    "Sender",
    "SenderStats",
    "SimulatedSource",
    "Source",
    "Spool",
    "SpoolError",
    "SpooledBatch",
    "StdinSource",
    "build_source",
    "open_spool",
    "parse_line",
    "run_agent",
    "send_once",
]
