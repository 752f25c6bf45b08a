"""The ``nats`` sink: one JetStream message per reading, deduplicated by ``Nats-Msg-Id``.

How this works: :meth:`NatsSink.start` connects (nats-py keeps reconnecting on its own after
that) and, with ``create_stream``, creates the stream when it does not exist. A batch is
published all at once with JetStream async publishes; ``write()`` returns when every message
has its PubAck (the stream has stored it), and raises :class:`TransientSinkError` when one
fails or ``ack_timeout`` passes first (connection lost, server down, stream unavailable).

The reading id is the message's ``Nats-Msg-Id`` header: when the pipeline resends a batch,
or an agent resends a batch whose ack was lost, JetStream drops the copies it has already
stored within the stream's ``duplicate_window``. Fire-and-forget readings carry no id and are
not deduplicated.

A dropped copy must really be a copy: a PubAck that says ``duplicate`` carries the stream
sequence of the message stored first; the sink fetches those messages (``get_msg``, all at
once) and compares their content with the records'. A record whose id is stored with other
content is refused (:class:`RefusedRecords`); the others of the batch are stored. A batch of
new readings pays nothing for this.

Subjects come from the ``subject`` template; values are escaped so that a sensor name cannot
add tokens or wildcards (``telemetry.sinks._template``). The payload is the record's JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import ClassVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, StreamConfig

from telemetry.config import NatsSinkConfig
from telemetry.log import get_logger
from telemetry.redact import scrub
from telemetry.sinks._common import sink_name, started
from telemetry.sinks._template import Template, escape_nats, nats_subject_matches
from telemetry.sinks.base import (
    PermanentSinkError,
    Record,
    RefusedRecords,
    TransientSinkError,
    canonical_content,
    conflict_reason,
    content_of,
)
from telemetry.sinks.encoding import json_documents
from telemetry.sinks.nats_link import close_nats, connect, logged_servers, secrets_of

log = get_logger("telemetry.sinks.nats")

MSG_ID = "Nats-Msg-Id"
#: Stored messages to compare are read as one range when it holds at most this many times as
#: many messages as needed, plus this many.
RANGE_READ_SLACK = 4
RANGE_READ_EXTRA = 1000
#: ``get_msg`` requests in flight at once (scattered duplicates).
GET_MSG_CONCURRENCY = 64
#: Async publishes in flight at once (nats-py's own default is 4000).
MAX_PENDING = 20_000


class NatsSink:
    """Publishes each batch concurrently to JetStream and waits for every PubAck."""

    config_model: ClassVar[type[NatsSinkConfig]] = NatsSinkConfig

    def __init__(self, config: NatsSinkConfig) -> None:
        self.name = sink_name(config)
        self.config = config
        self.subject = Template(config.subject, escape_nats)
        self.duplicates = 0  # PubAcks that said "duplicate": copies JetStream dropped
        #: The server URLs as logs may show them: passwords and tokens masked.
        self.servers = logged_servers(config)
        self._secrets = secrets_of(config)
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def start(self) -> None:
        """Connect and make sure the stream exists; raise when that fails."""
        if self._nc is not None:
            return
        config = self.config
        sample = self.subject.sample()
        if config.create_stream and not any(
            nats_subject_matches(sample, pattern) for pattern in config.subjects
        ):
            raise PermanentSinkError(
                f"nats sink {self.name}: subject template {config.subject!r} is outside the "
                f"stream's subjects {config.subjects}"
            )
        nc = NatsClient()
        try:
            async with asyncio.timeout(config.connect_timeout):
                await connect(
                    nc,
                    config,
                    name=f"telemetry-sink-{self.name}",
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            js = nc.jetstream(publish_async_max_pending=MAX_PENDING)
            if config.create_stream:
                await self._ensure_stream(js)
        except BaseException as exc:
            await close_nats(nc, log)
            if isinstance(exc, Exception) and not isinstance(exc, PermanentSinkError):
                raise TransientSinkError(
                    f"nats sink {self.name}: cannot start on {self.servers}: "
                    f"{self._scrub(repr(exc))}"
                ) from exc
            raise
        self._nc, self._js = nc, js
        log.info("nats_sink_started", sink=self.name, servers=self.servers, stream=config.stream)

    def _scrub(self, text: str) -> str:
        """An error text as it may be logged: no password or token in it."""
        return scrub(text, self._secrets, token_userinfo=True)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        config = self.config
        try:
            await js.stream_info(config.stream)
            return  # an existing stream is the operator's: left as it is
        except nats.js.errors.NotFoundError:
            pass
        await js.add_stream(
            StreamConfig(
                name=config.stream,
                subjects=list(config.subjects),
                duplicate_window=config.duplicate_window,
                num_replicas=config.replicas,
            )
        )
        log.info(
            "nats_stream_created", sink=self.name, stream=config.stream, replicas=config.replicas
        )

    async def write(self, batch: Sequence[Record]) -> None:
        """Publish every record and wait for all PubAcks (or fail the whole batch)."""
        js = started(self._js, "nats")
        render = self.subject.render
        stream = self.config.stream
        futures: list[asyncio.Future[PubAck]] = []
        try:
            async with asyncio.timeout(self.config.ack_timeout):
                for record, payload in zip(batch, json_documents(batch), strict=True):
                    headers = {MSG_ID: record.id} if record.id is not None else None
                    future = await js.publish_async(
                        render(record),
                        payload,
                        stream=stream,
                        headers=headers,
                    )
                    futures.append(future)
                acks = await asyncio.gather(*futures)
        except TimeoutError as exc:
            raise TransientSinkError(
                f"nats: no PubAck for {sum(not f.done() for f in futures)} of {len(batch)} "
                f"messages within {self.config.ack_timeout} s"
            ) from exc
        except nats.errors.MaxPayloadError as exc:
            raise PermanentSinkError(f"nats rejected a message: {self._scrub(repr(exc))}") from exc
        except (nats.errors.Error, OSError) as exc:
            raise TransientSinkError(f"nats publish failed: {self._scrub(repr(exc))}") from exc
        finally:
            for future in futures:  # free their slots in nats-py's pending limit
                if not future.done():
                    future.cancel()
        duplicates = [
            (index, ack.seq)
            for index, ack in enumerate(acks)
            if ack.duplicate and batch[index].id is not None
        ]
        self.duplicates += len(duplicates)
        if duplicates:
            refused = await self._conflicts(js, batch, duplicates)
            if refused:
                raise RefusedRecords(refused)

    async def _conflicts(
        self, js: JetStreamContext, batch: Sequence[Record], duplicates: list[tuple[int, int]]
    ) -> dict[int, str]:
        """The records JetStream dropped as duplicates whose stored message (at the sequence
        the PubAck named) has other content: index -> reason."""
        seqs = sorted({seq for _, seq in duplicates})
        try:
            async with asyncio.timeout(self.config.ack_timeout):
                stored = await self._stored_messages(js, seqs)
        except TimeoutError as exc:
            raise TransientSinkError(
                f"nats: could not read back {len(seqs)} stored messages within "
                f"{self.config.ack_timeout} s to compare duplicates"
            ) from exc
        except (nats.errors.Error, OSError) as exc:
            raise TransientSinkError(
                f"nats: reading back stored messages failed: {self._scrub(repr(exc))}"
            ) from exc
        refused: dict[int, str] = {}
        for index, seq in duplicates:
            record = batch[index]
            payload = stored.get(seq)
            if payload is None:
                log.warning("nats_duplicate_not_found", sink=self.name, id=record.id, seq=seq)
                continue
            if record.id is not None and not _same_content(record, payload):
                refused[index] = conflict_reason(record.id)
        return refused

    async def _stored_messages(self, js: JetStreamContext, seqs: list[int]) -> dict[int, bytes]:
        """The payloads of the stream's messages at ``seqs`` (sorted); a missing one (deleted
        since) is left out.

        A resent batch's originals sit close together in the stream: read the whole range
        through one ephemeral consumer (thousands of messages in a few round trips). Only
        scattered ones are fetched one by one (``get_msg``, a JetStream API request each: a
        few thousand a second at best)."""
        stream = self.config.stream
        first, last = seqs[0], seqs[-1]
        if last - first + 1 <= RANGE_READ_SLACK * len(seqs) + RANGE_READ_EXTRA:
            return await _read_range(js, stream, first, last, set(seqs))
        window = asyncio.Semaphore(GET_MSG_CONCURRENCY)

        async def fetch(seq: int) -> tuple[int, bytes | None]:
            async with window:
                try:
                    return seq, (await js.get_msg(stream, seq)).data
                except nats.js.errors.NotFoundError:
                    return seq, None  # deleted or trimmed since: nothing to compare with

        found = await asyncio.gather(*(fetch(seq) for seq in seqs))
        return {seq: data for seq, data in found if data is not None}

    async def close(self) -> None:
        """Drain and close the connection; idempotent."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            await close_nats(nc, log)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats_error", sink=self.name, error=self._scrub(repr(exc)))

    async def _on_disconnected(self) -> None:
        if self._nc is not None:  # not our own close()
            log.warning("nats_disconnected", sink=self.name)

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected", sink=self.name)


def _same_content(record: Record, payload: bytes) -> bool:
    """True when a stored message (the JSON of the reading stored first) holds
    the record's content."""
    try:
        data = json.loads(payload)
        stored = canonical_content(
            data["sensor"],
            data["value"],
            data["ts"],
            data["metric"],
            data["unit"],
            data["tags"],
            data["received_at"],
        )
    except (ValueError, KeyError, TypeError):  # not one of ours: not the same reading
        return False
    return content_of(record) == stored


async def _read_range(
    js: JetStreamContext, stream: str, first: int, last: int, wanted: set[int]
) -> dict[int, bytes]:
    """The payloads of the ``wanted`` messages among stream sequences ``first`` .. ``last``.

    An ephemeral consumer (no filter, no acks) is asked once for the whole range (``no_wait``)
    and answers on a plain inbox subscription: nats-py's ``fetch()`` costs ~10x as much per
    message. The consumer is deleted afterwards."""
    nc = js._nc
    info = await js.add_consumer(
        stream,
        ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=first,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60,
            mem_storage=True,
            num_replicas=1,
        ),
    )
    found: dict[int, bytes] = {}
    over = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        if not msg.reply:  # a status (404: no more messages, 408): the request is answered
            over.set()
            return
        seq = msg.metadata.sequence.stream
        if seq in wanted:
            found[seq] = msg.data
        if seq >= last:
            over.set()

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_message)
    try:
        request = {"batch": last - first + 1, "no_wait": True}
        await nc.publish(
            f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{info.name}",
            json.dumps(request).encode(),
            reply=inbox,
        )
        await over.wait()
    finally:
        with contextlib.suppress(nats.errors.Error, OSError):
            await sub.unsubscribe()
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
            await js.delete_consumer(stream, info.name)
    return found
