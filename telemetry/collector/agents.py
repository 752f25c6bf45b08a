"""Which connection speaks for each agent id (docs/protocol.md#identity).

One agent id has one live session. A second ``hello`` for an id that is connected takes over:
the older connection gets ``goaway`` (reason ``replaced``), finishes its in-flight batches and
closes. The takeover is logged with both peers and counted
(``telemetry_session_takeovers_total``), so two agents configured with one id show up at once
instead of corrupting each other's sequence numbers in silence.
"""

from __future__ import annotations

from collections.abc import Callable

from telemetry.log import get_logger

log = get_logger("telemetry.agents")


class AgentSessions:
    """The connection holding each agent id."""

    def __init__(self, drain: Callable[[int, str], None], on_takeover: Callable[[], None]) -> None:
        """``drain(conn_id, reason)`` sends a connection ``goaway`` and closes it."""
        self._drain = drain
        self._on_takeover = on_takeover
        self._holders: dict[str, tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def holder(self, agent: str) -> int | None:
        """The connection id holding ``agent``, if one does."""
        held = self._holders.get(agent)
        return held[0] if held is not None else None

    def claim(self, agent: str, conn_id: int, peer: str) -> None:
        """``conn_id`` now speaks for ``agent``; an older holder is replaced."""
        old = self._holders.get(agent)
        self._holders[agent] = (conn_id, peer)
        if old is None or old[0] == conn_id:
            return
        log.warning(
            "agent_session_replaced",
            agent=agent,
            old_conn_id=old[0],
            old_peer=old[1],
            new_conn_id=conn_id,
            new_peer=peer,
        )
        self._on_takeover()
        self._drain(old[0], "replaced")

    def release(self, agent: str, conn_id: int) -> None:
        """``conn_id`` closed; it no longer holds ``agent`` (unless it was replaced)."""
        held = self._holders.get(agent)
        if held is not None and held[0] == conn_id:
            del self._holders[agent]
