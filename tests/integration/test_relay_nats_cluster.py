"""The nats sink on a real 3-node JetStream cluster (:mod:`tests.nats_cluster`): ``replicas``,
and a node lost mid-batch as a transient error whose retry stores every reading once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from telemetry.config import NatsSinkConfig
from telemetry.sinks.base import TransientSinkError
from telemetry.sinks.nats import NatsSink
from tests.integration.sinks.conftest import records
from tests.nats_cluster import NatsCluster
from tests.support import timeout


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    made = NatsCluster(tmp_path).start()
    yield made
    made.stop()


async def _stream(urls: list[str], name: str) -> tuple[int, int, str | None]:
    nc = await nats.connect(urls)
    try:
        info = await nc.jetstream().stream_info(name)
        assert info.cluster is not None
        return info.config.num_replicas or 1, info.state.messages, info.cluster.leader
    finally:
        await nc.close()


async def test_a_node_lost_mid_batch_is_transient_and_the_retry_stores_once(
    cluster: NatsCluster,
) -> None:
    """The sink creates an R3 stream; killing its leader mid-batch fails the write as
    transient (or not at all), and writing the batch again leaves each reading once."""
    uid = uuid.uuid4().hex[:10]
    sink = NatsSink(
        NatsSinkConfig(
            type="nats",
            servers=cluster.urls,
            stream=f"CLUSTER_{uid}",
            subjects=[f"cluster.{uid}.>"],
            subject=f"cluster.{uid}.{{agent}}.{{sensor}}",
            replicas=3,
            ack_timeout=3,
        )
    )
    await sink.start()
    try:
        await sink.write(records(0, 1000))
        replicas, stored, leader = await _stream(cluster.urls, f"CLUSTER_{uid}")
        assert (replicas, stored) == (3, 1000)
        assert leader is not None
        batch = records(1000, 21_000)
        write = asyncio.create_task(sink.write(batch))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(cluster.kill, int(leader.removeprefix("n")))
        failures = 0
        try:
            await write
        except TransientSinkError:
            failures += 1
        async with asyncio.timeout(timeout(60)):
            while True:  # the pipeline's retry, done by hand
                try:
                    await sink.write(batch)
                    break
                except TransientSinkError:
                    failures += 1
                    await asyncio.sleep(0.5)
        _, stored, _ = await _stream(cluster.urls, f"CLUSTER_{uid}")
        assert stored == 21_000, f"{stored} messages after {failures} failed writes"
    finally:
        await sink.close()
