"""The collector's loss ledger: where every reading it received is now.

For acked delivery (batches) the invariant ``received = acked + rejected + unacked + pending``
holds at every moment: a batch's readings are *pending* from validation until its ``ack``
(then *acked*, or *rejected* by validation or by a sink), its ``nack`` or the end of its
connection (then *unacked*: the agent still holds them and will resend). Fire-and-forget
readings have no ack; they are counted apart (``fire_and_forget_*``; their drops, by reason, are the
``telemetry_readings_dropped_total`` metric).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Ledger:
    """Counters of readings by where they are; see the module docstring."""

    received: int = 0
    acked: int = 0
    rejected: int = 0
    unacked: int = 0
    pending: int = 0
    fire_and_forget_received: int = 0
    fire_and_forget_rejected: int = 0

    @property
    def balanced(self) -> bool:
        """The invariant of acked delivery."""
        return self.received == self.acked + self.rejected + self.unacked + self.pending

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict, for the ``ledger`` log event and metrics."""
        return asdict(self)
