"""A connection to NATS as the nats sink and the relay both make it, written once.

Both take the same keys (``servers``, ``user``, ``password``, ``token``,
``connect_timeout``), keep reconnecting after a loss (writes and fetches fail meanwhile and
are retried by their owners), log the client's errors without a password or token in them,
and close without letting a failed goodbye out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import nats.errors
from nats.aio.client import Client as NatsClient
from pydantic import SecretStr
from structlog.typing import FilteringBoundLogger

from telemetry.redact import redact_url, url_secrets
from telemetry.sinks._common import close_quietly


class NatsAccess(Protocol):
    """The config keys of a NATS connection (the nats sink's and ``[relay]``)."""

    @property
    def servers(self) -> list[str]: ...
    @property
    def user(self) -> str | None: ...
    @property
    def password(self) -> SecretStr | None: ...
    @property
    def token(self) -> SecretStr | None: ...
    @property
    def connect_timeout(self) -> float: ...


def logged_servers(config: NatsAccess) -> list[str]:
    """The server URLs as logs may show them: passwords and tokens masked."""
    return [redact_url(url, token_userinfo=True) for url in config.servers]


def secrets_of(config: NatsAccess) -> list[str | None]:
    """Every secret of the connection, to scrub from error texts."""
    return [
        config.password.get_secret_value() if config.password else None,
        config.token.get_secret_value() if config.token else None,
        *(s for url in config.servers for s in url_secrets(url, token_userinfo=True)),
    ]


async def connect(
    nc: NatsClient,
    config: NatsAccess,
    *,
    name: str,
    error_cb: Callable[[Exception], Awaitable[None]],
    disconnected_cb: Callable[[], Awaitable[None]],
    reconnected_cb: Callable[[], Awaitable[None]],
) -> None:
    """Connect ``nc`` to any of ``config.servers``; it reconnects by itself after a loss."""
    await nc.connect(
        servers=config.servers,
        name=name,
        user=config.user,
        password=config.password.get_secret_value() if config.password else None,
        token=config.token.get_secret_value() if config.token else None,
        connect_timeout=max(1, int(config.connect_timeout)),
        allow_reconnect=True,
        max_reconnect_attempts=-1,  # keep trying; writes and fetches fail meanwhile
        reconnect_time_wait=1,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
    )


async def close_nats(nc: NatsClient, log: FilteringBoundLogger) -> None:
    """Close ``nc`` within 5 s; a failed goodbye is logged at debug level, not raised."""
    await close_quietly(
        nc.close, errors=(nats.errors.Error, OSError), timeout=5, log=log, event="nats_close_failed"
    )
