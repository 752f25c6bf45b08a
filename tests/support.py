"""Shared test helpers: scaled timeouts, a raw protocol client, recording sinks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from telemetry.agent.endpoint_order import endpoint_stride, first_endpoint
from telemetry.collector.handoff import try_send_connection, wait_writable
from telemetry.config import CollectorConfig
from telemetry.protocol import FrameDecoder, encode_frame
from telemetry.sinks.base import PermanentSinkError, Record, TransientSinkError

#: Multiply every timeout in the tests (slow CI machines: TELEMETRY_TEST_TIMEOUT_FACTOR=3).
FACTOR = float(os.environ.get("TELEMETRY_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    """A test timeout, scaled by TELEMETRY_TEST_TIMEOUT_FACTOR."""
    return seconds * FACTOR


#: Scale the examples of the property tests with many (quick loops: `make unit` runs 0.05).
EXAMPLES_FACTOR = float(os.environ.get("TELEMETRY_TEST_EXAMPLES_FACTOR", "1"))


def examples(count: int) -> int:
    """A property test's ``max_examples``, scaled by TELEMETRY_TEST_EXAMPLES_FACTOR."""
    return max(10, round(count * EXAMPLES_FACTOR))


def tried_in_order(agent_id: str, *endpoints: str) -> list[str]:
    """An ``endpoints`` list that the agent ``agent_id`` tries in the order given here.

    An agent tries index ``first + k * stride`` (modulo the length) at its ``k``-th try,
    both derived from its id (:mod:`telemetry.agent.endpoint_order`): ``endpoints[k]`` is
    put there.
    """
    count = len(endpoints)
    first, stride = first_endpoint(agent_id, count), endpoint_stride(agent_id, count)
    ordered = [""] * count
    for k, endpoint in enumerate(endpoints):
        ordered[(first + k * stride) % count] = endpoint
    return ordered


def frame(obj: Any) -> bytes:
    """A frame as a plain socket client builds it: header f"{len(msg):<10}" over the UTF-8 bytes
    (docs/protocol.md#framing)."""
    payload = obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode()
    return encode_frame(payload)


def collector_config(tmp_path: Path, **sections: Any) -> CollectorConfig:
    """A collector config on free ports; ``sections`` override whole sections."""
    data: dict[str, Any] = {
        "ingest": {"host": "127.0.0.1", "port": 0},
        "http": {"host": "127.0.0.1", "port": 0},
        "sinks": [{"type": "sqlite", "path": str(tmp_path / "telemetry.db")}],
        "log": {"level": "debug", "format": "json"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return CollectorConfig(**data)


class WireClient:
    """A raw protocol client: send frames, read the collector's messages."""

    #: Clients not closed yet; the ``start_collector`` fixture closes those a test left open
    #: (an unclosed stream is a ResourceWarning, and warnings are errors).
    unclosed: ClassVar[set[WireClient]] = set()

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.pending: list[bytes] = []

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> WireClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        cls.unclosed.add(client)
        return client

    @classmethod
    async def close_all(cls) -> None:
        """Close every client still open."""
        for client in list(cls.unclosed):
            await client.close()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, *objs: Any) -> None:
        await self.send_raw(b"".join(frame(obj) for obj in objs))

    async def hello(self, agent: str = "agent-1", **extra: Any) -> dict[str, Any]:
        await self.send({"type": "hello", "agent": agent, **extra})
        return await self.recv()

    async def recv(self, wait: float = 5.0) -> dict[str, Any]:
        """The next message from the collector; fails on timeout or EOF."""
        async with asyncio.timeout(timeout(wait)):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("collector closed the connection")
                self.pending.extend(self.decoder.feed(data))
        message: dict[str, Any] = json.loads(self.pending.pop(0))
        return message

    async def closed(self, wait: float = 1.0) -> bool:
        """True when the collector closes the connection within ``wait`` seconds."""
        try:
            async with asyncio.timeout(timeout(wait)):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    async def close(self) -> None:
        self.unclosed.discard(self)
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def http_get(port: int, path: str) -> tuple[int, Any]:
    """GET ``path`` from the collector's HTTP side port: ``(status, decoded JSON body)``."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.json()


class RecordingSink:
    """An in-memory sink for pipeline and collector tests; can be gated and made to fail."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.records: list[Record] = []
        self.batches: list[int] = []
        self.gate: asyncio.Event | None = None  # when set, writes wait for it
        self.failures: list[Exception] = []  # raised by the next writes, in order
        self.fail_always: Exception | None = None
        #: Records this predicate matches make the whole write fail permanently.
        self.refuse: Callable[[Record], bool] | None = None
        self.started = False
        self.closed = 0

    async def start(self) -> None:
        self.started = True

    async def write(self, batch: Sequence[Record]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_always is not None:
            raise self.fail_always
        if self.failures:
            raise self.failures.pop(0)
        if self.refuse is not None and any(self.refuse(record) for record in batch):
            raise PermanentSinkError("value out of range for the backend")
        self.records.extend(batch)
        self.batches.append(len(batch))

    async def close(self) -> None:
        self.closed += 1

    @property
    def ids(self) -> list[str | None]:
        return [record.id for record in self.records]


__all__ = [
    "FACTOR",
    "PermanentSinkError",
    "RecordingSink",
    "TransientSinkError",
    "WireClient",
    "collector_config",
    "frame",
    "http_get",
    "timeout",
]


async def send_connection(channel: socket.socket, conn: socket.socket) -> None:
    """Pass ``conn`` through a hand-off ``channel``, waiting while the worker's queue is full;
    raise :class:`OSError` when the worker is gone."""
    while not try_send_connection(channel, conn):
        await wait_writable(channel)
