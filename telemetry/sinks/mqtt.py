"""The ``mqtt`` sink: one MQTT message per reading (QoS 1 by default), through aiomqtt.

How this works: :meth:`MqttSink.start` connects to the broker. A batch is published all at
once; ``write()`` returns when the broker has acknowledged every message (PUBACK for QoS 1,
PUBCOMP for QoS 2) and raises :class:`TransientSinkError` when the connection is lost or
``ack_timeout`` passes first. aiomqtt does not reconnect by itself: a write that finds the
connection gone opens a new one first (one attempt; retrying is the pipeline's job).

MQTT has no idempotency key, so a batch resent after a failure may deliver some readings
twice: at-least-once.

With ``retain_latest``, each sensor's newest reading in a batch is also published, retained,
to ``latest_topic`` (default ``{topic}/latest``), so a new subscriber sees the current value
at once. A reading older than the one already published there by this sink is not.

Topics come from the ``topic`` template; values are escaped so that a sensor name cannot add
levels or wildcards (``telemetry.sinks._template``). The payload is the record's JSON.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

import aiomqtt

from telemetry.config import MqttSinkConfig
from telemetry.log import get_logger
from telemetry.redact import scrub
from telemetry.sinks._common import close_quietly, not_started, sink_name
from telemetry.sinks._template import Template, escape_mqtt
from telemetry.sinks.base import Record, TransientSinkError
from telemetry.sinks.encoding import json_documents

log = get_logger("telemetry.sinks.mqtt")

#: Messages of a batch in flight at once. Both aiomqtt (per publish) and paho (per ack) scan
#: every pending message, so a whole batch in flight costs O(n^2): a window keeps it linear.
WINDOW = 100
#: aiomqtt warns on every publish while more than 10 are pending, which a batch always is:
#: its logger (and paho's) only passes errors through.
_CLIENT_LOGGER = logging.getLogger("telemetry.sinks.mqtt.client")
_CLIENT_LOGGER.setLevel(logging.ERROR)


class MqttSink:
    """Publishes each batch concurrently and waits for every acknowledgement."""

    config_model: ClassVar[type[MqttSinkConfig]] = MqttSinkConfig

    def __init__(self, config: MqttSinkConfig) -> None:
        self.name = sink_name(config)
        self.config = config
        self.topic = Template(config.topic, escape_mqtt)
        self.latest_topic = Template(config.latest_topic or config.topic + "/latest", escape_mqtt)
        self._client: aiomqtt.Client | None = None
        self._started = False
        self._latest_ts: dict[str, datetime] = {}  # latest topic -> newest ts published there

    async def start(self) -> None:
        """Connect to the broker; raise :class:`TransientSinkError` when it cannot."""
        if self._started:
            return
        await self._connect()
        self._started = True
        log.info(
            "mqtt_sink_started", sink=self.name, broker=f"{self.config.host}:{self.config.port}"
        )

    async def _connect(self) -> aiomqtt.Client:
        config = self.config
        client = aiomqtt.Client(
            config.host,
            config.port,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            identifier=config.client_id,
            keepalive=config.keepalive,
            logger=_CLIENT_LOGGER,
            timeout=config.ack_timeout,
            max_inflight_messages=WINDOW,
        )
        try:
            async with asyncio.timeout(config.ack_timeout):
                await client.__aenter__()
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise TransientSinkError(
                f"mqtt: cannot connect to {config.host}:{config.port}: {self._scrub(str(exc))}"
            ) from exc
        self._client = client
        return client

    def _scrub(self, text: str) -> str:
        """An error text as it may be logged: no password in it."""
        password = self.config.password
        return scrub(text, [password.get_secret_value() if password else None])

    def _connected_client(self) -> aiomqtt.Client | None:
        client = self._client
        # aiomqtt resolves this future when the connection ends, whoever ended it.
        if client is None or client._disconnected.done():
            return None
        return client

    async def write(self, batch: Sequence[Record]) -> None:
        """Publish the batch (and the latest values), waiting for every acknowledgement."""
        if not self._started:
            raise not_started("mqtt")
        client = self._connected_client()
        if client is None:
            await self._drop_client()
            client = await self._connect()
        qos = self.config.qos
        render = self.topic.render
        messages = [
            (render(r), payload, False)
            for r, payload in zip(batch, json_documents(batch), strict=True)
        ]
        latest: dict[str, Record] = {}
        if self.config.retain_latest:
            for record in batch:
                topic = self.latest_topic.render(record)
                newest = latest.get(topic)
                if (newest is None or record.ts >= newest.ts) and record.ts >= self._latest_ts.get(
                    topic, record.ts
                ):
                    latest[topic] = record
            documents = json_documents(list(latest.values()))
            messages.extend(
                (topic, payload, True) for topic, payload in zip(latest, documents, strict=True)
            )
        window = asyncio.Semaphore(WINDOW)

        async def publish(topic: str, payload: bytes, retain: bool) -> None:
            async with window:
                await client.publish(topic, payload, qos=qos, retain=retain)

        try:
            async with asyncio.timeout(self.config.ack_timeout):
                await asyncio.gather(*(publish(*message) for message in messages))
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            await self._drop_client()
            raise TransientSinkError(f"mqtt publish failed: {self._scrub(repr(exc))}") from exc
        for topic, record in latest.items():
            self._latest_ts[topic] = record.ts

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await close_quietly(
                lambda: client.__aexit__(None, None, None),
                errors=(aiomqtt.MqttError, OSError),
                timeout=2,
            )

    async def close(self) -> None:
        """Disconnect cleanly; idempotent."""
        self._started = False
        await self._drop_client()
