"""Sinks: the contract (``base``), one module per backend, and the lazy registry."""

from telemetry.sinks.base import (
    PermanentSinkError,
    Record,
    Sink,
    SinkError,
    TransientSinkError,
)
from telemetry.sinks.registry import build_sink, sink_class

__all__ = [
    "PermanentSinkError",
    "Record",
    "Sink",
    "SinkError",
    "TransientSinkError",
    "build_sink",
    "sink_class",
]
