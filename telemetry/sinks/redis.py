"""The ``redis`` sink: one stream entry per reading (``XADD``), one script call per batch.

How this works: :meth:`RedisSink.start` connects, checks the server with ``PING`` and registers
:data:`APPEND` (redis-py loads it at the first call). A batch is one ``EVALSHA`` of that script
with every reading's JSON as an argument: the script appends them in order with ``XADD``, on
the server. A script runs alone, and an ``XADD`` to one stream that the first one could make
cannot fail after it (the server refuses a script on OOM before it starts), so a batch is
appended whole or not at all and a retried batch is not half duplicated, as with the MULTI/EXEC
it replaces (a command per reading cost the client more than the server, docs/benchmarks.md).
Each entry has one field, ``data``, holding the record's JSON. With ``maxlen`` the stream is
trimmed to about that many entries (``XADD ... MAXLEN ~ N``, which trims whole radix-tree
nodes: cheap). A server that lost the script (restart, ``SCRIPT FLUSH``) gets it again:
redis-py's script object loads it on ``NOSCRIPT`` and retries.

The client's own retries are turned off: a lost connection raises
:class:`TransientSinkError` and the pipeline decides when to retry; the next command opens a
fresh connection. Redis has no idempotency key for ``XADD``: at-least-once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from telemetry.config import RedisSinkConfig
from telemetry.log import get_logger
from telemetry.redact import redact_url, scrub, url_secrets
from telemetry.sinks._common import close_quietly, sink_name, started
from telemetry.sinks.base import PermanentSinkError, Record, TransientSinkError
from telemetry.sinks.encoding import json_documents

log = get_logger("telemetry.sinks.redis")

#: Error replies that say "not now" rather than "never" (memory full, loading, failover).
TRANSIENT_REPLIES = ("OOM ", "LOADING ", "BUSY ", "TRYAGAIN ", "MASTERDOWN ", "READONLY ")


#: Appends ``ARGV[2..]`` to the stream ``KEYS[1]``, trimmed to about ``ARGV[1]`` entries
#: (0: never trimmed); returns how many it appended.
APPEND = """
local maxlen = tonumber(ARGV[1])
for i = 2, #ARGV do
    if maxlen > 0 then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'data', ARGV[i])
    else
        redis.call('XADD', KEYS[1], '*', 'data', ARGV[i])
    end
end
return #ARGV - 1
"""


class RedisSink:
    """Appends each batch to a Redis stream in one script call."""

    config_model: ClassVar[type[RedisSinkConfig]] = RedisSinkConfig

    def __init__(self, config: RedisSinkConfig) -> None:
        self.name = sink_name(config)
        self.config = config
        self.stream = config.stream
        #: The URL as logs may show it: its password masked.
        self.url = redact_url(config.url)
        self._secrets = [
            config.password.get_secret_value() if config.password else None,
            *url_secrets(config.url),
        ]
        self._client: aioredis.Redis | None = None
        self._append: AsyncScript | None = None

    async def start(self) -> None:
        """Connect and PING; raise :class:`TransientSinkError` when the server is unreachable."""
        if self._client is not None:
            return
        config = self.config
        client: aioredis.Redis = aioredis.Redis.from_url(
            config.url,
            password=config.password.get_secret_value() if config.password else None,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=f"telemetry-sink-{self.name}",
        )
        try:
            await client.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            await client.aclose()
            raise TransientSinkError(
                f"redis: cannot connect to {self.url}: {self._scrub(str(exc))}"
            ) from exc
        self._client = client
        self._append = client.register_script(APPEND)
        log.info("redis_sink_started", sink=self.name, url=self.url, stream=self.stream)

    def _scrub(self, text: str) -> str:
        """An error text as it may be logged: no password in it."""
        return scrub(text, self._secrets)

    async def write(self, batch: Sequence[Record]) -> None:
        """``XADD`` every record in one script call; returns after the server ran it."""
        maxlen = self.config.maxlen
        try:
            append = started(self._append, "redis")
            await append(keys=[self.stream], args=[maxlen or 0, *json_documents(batch)])
        except redis.exceptions.ResponseError as exc:  # WRONGTYPE, OOM with noeviction...
            if any(code in str(exc) for code in TRANSIENT_REPLIES):
                raise TransientSinkError(f"redis is busy: {self._scrub(str(exc))}") from exc
            raise PermanentSinkError(f"redis refused the batch: {self._scrub(str(exc))}") from exc
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise TransientSinkError(f"redis write failed: {self._scrub(repr(exc))}") from exc

    async def close(self) -> None:
        """Close the connection pool; idempotent."""
        client, self._client = self._client, None
        self._append = None
        if client is not None:
            await close_quietly(
                client.aclose,
                errors=(redis.exceptions.RedisError, OSError),
                timeout=5,
                log=log,
                event="redis_close_failed",
                sink=self.name,
            )
