"""``telemetry send``: one batch, one ack, no spool and no retry.

How this works: :func:`send_once` opens a :class:`~telemetry.agent.connection.CollectorLink`
to the first endpoint that answers, performs ``hello`` -> ``welcome``, writes one ``batch``
and reads until the ``ack`` or ``nack`` for its ``seq`` (other messages are skipped), all
within one timeout. Anything but the ack is a :class:`SendError`; nothing is kept for
a later try (the long-lived :class:`~telemetry.agent.sender.Sender` is the one that retries).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from telemetry.agent.connection import CollectorError, CollectorLink, ConnectionClosed
from telemetry.config import AgentSection
from telemetry.log import get_logger
from telemetry.protocol import Ack, Batch, Error, Hello, Nack, ProtocolError, encode_frame
from telemetry.tls import ClientTls, client_tls

log = get_logger("telemetry.agent.oneshot")


class SendError(Exception):
    """A one-shot send that did not get its ack; the message says why."""


async def send_once(
    section: AgentSection,
    readings: list[dict[str, Any]],
    timeout: float,
    *,
    seq: int | None = None,
) -> Ack:
    """Connect to the first reachable endpoint, send ``readings`` as one batch, return the ack.

    Readings go as given: the collector validates them and lists the rejected ones in the
    ack. ``seq`` defaults to the current time in microseconds, so two sends from the same
    agent id never share a reading id. Raises :class:`SendError` when no endpoint is
    reachable, the collector answers ``error`` or ``nack``, or ``timeout`` seconds pass.
    With ``[agent.tls]`` (``section.tls``) it connects over TLS; a TLS setting that cannot be
    used raises :class:`~telemetry.tls.TlsError`.
    """
    tls = client_tls(section.tls)
    seq = time.time_ns() // 1000 if seq is None else seq
    batch = encode_frame(Batch(seq=seq, readings=readings).encode())
    try:
        async with asyncio.timeout(timeout):
            link = await _connect(section, tls)
            try:
                await link.handshake(
                    Hello(agent=section.id, token=section.token), section.connect_timeout
                )
                await link.send(batch)
                while True:
                    message = await link.receive()
                    if isinstance(message, Ack) and message.seq == seq:
                        return message
                    if isinstance(message, Nack) and message.seq == seq:
                        raise SendError(
                            f"collector {link.endpoint} did not take the batch: "
                            f"{message.reason} (retry after {message.retry_after_ms} ms)"
                        )
                    if isinstance(message, Error):
                        raise CollectorError(message.code, message.detail)
            finally:
                await link.close()
    except TimeoutError:
        raise SendError(f"no ack within {timeout} s") from None
    except CollectorError as exc:
        raise SendError(str(exc)) from None
    except (OSError, ConnectionClosed, ProtocolError) as exc:
        raise SendError(f"connection to the collector failed: {exc}") from None


async def _connect(section: AgentSection, tls: ClientTls | None) -> CollectorLink:
    failures: list[str] = []
    for endpoint in section.endpoints:
        try:
            return await CollectorLink.open(endpoint, section.connect_timeout, tls)
        except (OSError, TimeoutError) as exc:
            log.debug("connect_failed", endpoint=endpoint, error=str(exc) or type(exc).__name__)
            failures.append(f"{endpoint}: {exc or type(exc).__name__}")
    raise SendError("no collector reachable (" + "; ".join(failures) + ")")
