"""The spool a ``[spool]`` config asks for: :func:`open_spool`.

It lives apart from :mod:`telemetry.agent.spool` (the interface, the memory spool) and
:mod:`telemetry.agent.disk_spool` (which builds on that interface) so that neither of those
imports the other's importer: the factory is the one module that knows both.
"""

from __future__ import annotations

from telemetry.agent.disk_spool import DiskSpool
from telemetry.agent.memory_spool import MemorySpool
from telemetry.agent.spool import Spool
from telemetry.config import SpoolConfig


def open_spool(config: SpoolConfig) -> Spool:
    """The spool ``config`` asks for: a :class:`DiskSpool` when ``path`` is set, else memory."""
    if config.path is None:
        return MemorySpool(config.max_readings, max_bytes=config.max_bytes)
    return DiskSpool(config.path, max_readings=config.max_readings, max_bytes=config.max_bytes)
