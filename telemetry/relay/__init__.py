"""``telemetry relay``: read what the collectors' ``nats`` sink stored in JetStream and write
it to the relay's own sinks through the collector's pipeline (docs/relay.md)."""

from __future__ import annotations

from telemetry.relay.relay import Relay

__all__ = ["Relay"]
