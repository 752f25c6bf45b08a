"""The relay's JetStream side: one connection, one durable pull consumer, fetches and lag.

:meth:`Consumer.start` connects to any of ``servers`` (nats-py reconnects to the others on its
own afterwards) and creates the durable consumer when it does not exist: explicit acks,
``ack_wait``, ``max_ack_pending`` and the subject filter. An existing durable is bound as it
is (its settings are the operator's; several relays share it). Errors are
:class:`ConsumerError`: the relay retries them with backoff, they never end it.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from telemetry.config import RelaySection
from telemetry.log import get_logger
from telemetry.redact import scrub
from telemetry.sinks.nats_link import close_nats, connect, logged_servers, secrets_of

log = get_logger("telemetry.relay")

#: Messages and bytes the fetch inbox may hold (nats-py's limits of the subscription).
PENDING_MSGS_LIMIT = 100_000
PENDING_BYTES_LIMIT = 64 * 1024 * 1024


class ConsumerError(Exception):
    """NATS could not be reached, or refused a consumer request; retried by the relay."""


class Consumer:
    """A connection and the durable pull consumer the relay fetches from."""

    def __init__(self, config: RelaySection) -> None:
        self.config = config
        self.servers = logged_servers(config)
        self._secrets = secrets_of(config)
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected and self._sub is not None

    def scrub(self, text: str) -> str:
        """An error text as it may be logged: no password or token in it."""
        return scrub(text, self._secrets, token_userinfo=True)

    async def start(self) -> None:
        """Connect and bind the durable consumer (creating it when missing)."""
        config = self.config
        if self._nc is None:
            nc = NatsClient()
            try:
                async with asyncio.timeout(config.connect_timeout * max(1, len(config.servers))):
                    await connect(
                        nc,
                        config,
                        name=f"telemetry-relay-{config.name}",
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                    )
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                await close_nats(nc, log)
                raise ConsumerError(
                    f"cannot connect to {self.servers}: {self.scrub(repr(exc))}"
                ) from exc
            self._nc, self._js = nc, nc.jetstream(timeout=config.connect_timeout)
        if self._sub is None:
            try:
                self._sub = await self._bind()
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                raise ConsumerError(
                    f"cannot bind durable {config.durable} on stream {config.stream}: "
                    f"{self.scrub(repr(exc))}"
                ) from exc
            log.info(
                "relay_consumer_bound",
                servers=self.servers,
                stream=config.stream,
                durable=config.durable,
            )

    async def _bind(self) -> JetStreamContext.PullSubscription:
        js = self._js
        assert js is not None
        config = self.config
        try:
            await js.consumer_info(config.stream, config.durable)
        except nats.js.errors.NotFoundError:
            await js.add_consumer(config.stream, self.consumer_config())
            log.info("relay_consumer_created", stream=config.stream, durable=config.durable)
        return await js.pull_subscribe_bind(
            durable=config.durable,
            stream=config.stream,
            pending_msgs_limit=PENDING_MSGS_LIMIT,
            pending_bytes_limit=PENDING_BYTES_LIMIT,
        )

    def consumer_config(self) -> ConsumerConfig:
        """The durable consumer the relay creates when it does not exist."""
        config = self.config
        subjects = config.subjects
        return ConsumerConfig(
            name=config.durable,
            durable_name=config.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=config.ack_wait,
            max_ack_pending=config.max_ack_pending,
            max_deliver=-1,  # the relay decides (max_deliveries): never dropped silently
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,  # NATS >= 2.10
        )

    async def fetch(self, batch: int) -> list[Msg]:
        """Up to ``batch`` messages; empty when none came within ``fetch_timeout``."""
        sub = self._sub
        if sub is None:
            raise ConsumerError("not bound to the consumer")
        try:
            return await sub.fetch(batch, timeout=self.config.fetch_timeout)
        except (nats.errors.TimeoutError, TimeoutError):  # nothing came within fetch_timeout
            return []
        except (nats.errors.Error, OSError) as exc:
            raise ConsumerError(f"fetch failed: {self.scrub(repr(exc))}") from exc

    async def lag(self) -> tuple[int, int]:
        """The consumer's ``num_pending`` (not delivered yet) and ``num_ack_pending``."""
        sub = self._sub
        if sub is None:
            raise ConsumerError("not bound to the consumer")
        try:
            info = await sub.consumer_info()
        except (nats.errors.Error, OSError) as exc:
            raise ConsumerError(f"consumer info failed: {self.scrub(repr(exc))}") from exc
        return info.num_pending or 0, info.num_ack_pending or 0

    async def close(self) -> None:
        """Unsubscribe and close the connection (flushing acks); idempotent."""
        nc, sub = self._nc, self._sub
        self._nc = self._js = self._sub = None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error, OSError, ValueError):
                await sub.unsubscribe()
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.flush(timeout=2)
            await close_nats(nc, log)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats_error", error=self.scrub(repr(exc)))

    async def _on_disconnected(self) -> None:
        if self._nc is not None:
            log.warning("nats_disconnected")

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected")
