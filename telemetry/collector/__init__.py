"""The collector: uvloop TCP server, one connection's life, the pipeline, the HTTP side port."""

from telemetry.collector.server import Collector, ListenError

__all__ = ["Collector", "ListenError"]
