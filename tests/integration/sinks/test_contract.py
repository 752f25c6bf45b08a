"""The sink contract, run over every built-in sink against its real service."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import timedelta, timezone
from typing import Any

import pytest

from telemetry.collector.pipeline import Refusal, SinkRunner
from telemetry.sinks.base import (
    PermanentSinkError,
    Record,
    RefusedRecords,
    Sink,
    TransientSinkError,
)
from tests.integration.sinks.conftest import BACKENDS, DEDUPING, NOW, Backend, record, records
from tests.support import timeout

#: Sinks with something to open in start() (null and stdout have nothing).
OPENING = [b for b in BACKENDS if b not in ("null", "stdout")]
#: Sinks that keep what they are given (null keeps nothing).
KEEPING = [b for b in BACKENDS if b != "null"]
#: Sinks with a connection to a service that can drop it.
NETWORKED = ["postgres", "nats", "mqtt", "redis"]


class FlakySink:
    """Wraps a real sink: raises the queued errors on the next writes, refuses for good any
    batch holding a poisoned reading id, and otherwise delegates."""

    def __init__(
        self, inner: Sink, failures: Sequence[Exception] = (), poisoned: Iterable[str] = ()
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.failures = list(failures)
        self.poisoned = set(poisoned)
        self.attempts = 0

    async def start(self) -> None:
        await self.inner.start()

    async def write(self, batch: Sequence[Record]) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        bad = [r.id for r in batch if r.id in self.poisoned]
        if bad:
            raise PermanentSinkError(f"refuses {bad[0]}")
        await self.inner.write(batch)

    async def close(self) -> None:
        await self.inner.close()


async def deliver(runner: SinkRunner, batch: Sequence[Record]) -> list[Refusal]:
    """Queue ``batch`` on the runner; wait until it is written; return the refused readings."""
    done: asyncio.Future[list[Refusal]] = asyncio.get_running_loop().create_future()
    await runner.put(batch, done)
    async with asyncio.timeout(timeout(30)):
        return await done


def assert_each_once(ids: list[str | None], expected: list[Record]) -> None:
    counts = Counter(ids)
    missing = [r.id for r in expected if counts[r.id] == 0]
    assert not missing, f"{len(missing)} readings lost, e.g. {missing[:3]}"
    extra = {rid: n for rid, n in counts.items() if n > 1}
    assert not extra, f"duplicates stored: {list(extra.items())[:3]}"


async def test_write_then_read_back_with_the_backends_own_client(backend: Backend):
    """Every reading written is in the backend afterwards, once."""
    sink = backend.make()
    await sink.start()
    batch = records(0, 250)
    await sink.write(batch)
    await sink.write(records(250, 300))
    await sink.close()
    ids = await backend.stored(300)
    if backend.type == "null":
        assert len(ids) == 300
    else:
        assert_each_once(ids, records(0, 300))


async def test_close_is_idempotent_and_safe_without_start(backend: Backend):
    """close() before start() does nothing; a second close() after use does nothing either."""
    await backend.make().close()
    sink = backend.make()
    await sink.start()
    await sink.write([record(0)])
    await sink.close()
    await sink.close()
    assert len(await backend.stored(1)) == 1


async def test_a_restarted_sink_writes_again(backend: Backend):
    """After close(), a new start() (same object, then a new one) accepts writes again."""
    sink = backend.make()
    await sink.start()
    await sink.write(records(0, 10))
    await sink.close()
    await sink.start()
    await sink.write(records(10, 20))
    await sink.close()
    again = backend.make()
    await again.start()
    await again.write(records(20, 30))
    await again.close()
    ids = await backend.stored(30)
    if backend.type == "null":
        assert len(ids) == 30
    else:
        assert_each_once(ids, records(0, 30))


@pytest.mark.parametrize("backend", OPENING, indirect=True)
async def test_write_before_start_is_a_transient_error(backend: Backend):
    """A sink that is not started refuses a write with a retryable error, never silently."""
    sink = backend.make()
    with pytest.raises(TransientSinkError):
        await sink.write([record(0)])


@pytest.mark.parametrize("backend", sorted(DEDUPING), indirect=True)
async def test_duplicate_ids_are_stored_once_where_the_backend_can(backend: Backend):
    """Rewriting readings (a resent batch) stores each id once on postgres, sqlite and nats."""
    sink = backend.make()
    await sink.start()
    await sink.write(records(0, 100))
    await sink.write(records(50, 150))  # half of it resent
    await sink.write([record(7), record(7)])  # a duplicate inside one batch
    await sink.close()
    sink = backend.make()  # and after a restart
    await sink.start()
    await sink.write(records(0, 10))
    await sink.close()
    assert_each_once(await backend.stored(150), records(0, 150))


def resent(original: Record, **changes: Any) -> Record:
    """``original`` as an agent would resend it: another receive time, maybe other content."""
    return replace(original, received_at=NOW + timedelta(seconds=42), **changes)


@pytest.mark.parametrize("backend", sorted(DEDUPING), indirect=True)
async def test_a_resend_with_the_same_content_is_written_once_and_accepted(backend: Backend):
    """Same id, same content (ts in another offset, tags in another order, value an int, a
    later receive time): write() succeeds and the reading is stored once."""
    first = replace(record(1), value=41.0, tags={"site": "north", "row": "3"})
    sink = backend.make()
    await sink.start()
    try:
        await sink.write([first, record(2)])
        same = resent(
            first,
            value=41,
            ts=first.ts.astimezone(timezone(timedelta(hours=-5))),
            tags={"row": "3", "site": "north"},
        )
        await sink.write([same, record(2), same])
    finally:
        await sink.close()
    assert_each_once(await backend.stored(2), [first, record(2)])


@pytest.mark.parametrize("backend", sorted(DEDUPING), indirect=True)
async def test_a_resend_of_a_reading_without_ts_is_the_same_reading(backend: Backend):
    """A reading sent without ts carries the receive time as ts (ts == received_at); resent,
    it is received (and stamped) later: still the same content. One that now carries a ts of
    its own is not."""
    assert backend.values is not None
    stamped = replace(record(8), ts=NOW, received_at=NOW)
    later = NOW + timedelta(seconds=30)
    sink = backend.make()
    await sink.start()
    try:
        await sink.write([stamped])
        await sink.write([replace(stamped, ts=later, received_at=later)])
        with pytest.raises(RefusedRecords) as refused:
            await sink.write([replace(stamped, ts=later, received_at=later + timedelta(1))])
    finally:
        await sink.close()
    assert list(refused.value.refused) == [0]
    assert_each_once(await backend.stored(1), [stamped])


@pytest.mark.parametrize("backend", sorted(DEDUPING), indirect=True)
@pytest.mark.parametrize(
    "change",
    [
        {"value": 222.0},
        {"sensor": "elsewhere"},
        {"ts": NOW + timedelta(microseconds=1)},
        {"metric": None},
        {"unit": "°C"},
        {"tags": {"site": "south"}},
        {"tags": {}},
    ],
    ids=lambda change: next(iter(change)) + ("=" + str(change["tags"]) if "tags" in change else ""),
)
async def test_an_id_stored_with_other_content_is_refused_and_the_first_kept(
    backend: Backend, change: dict[str, Any]
):
    """Same id, other content: write() raises RefusedRecords naming exactly that record and
    saying why, after storing the rest of the batch; the stored reading is not replaced."""
    assert backend.values is not None
    sink = backend.make()
    await sink.start()
    try:
        await sink.write([record(0), record(1)])
        batch = [record(2), resent(record(1), **change), record(3), record(0)]
        with pytest.raises(RefusedRecords) as refused:
            await sink.write(batch)
    finally:
        await sink.close()
    reason = f"reading id {record(1).id} is already stored with other content"
    assert refused.value.refused == {1: reason}
    assert isinstance(refused.value, PermanentSinkError)
    assert_each_once(await backend.stored(4), records(0, 4))
    assert (await backend.values())[record(1).id] == [record(1).value]


@pytest.mark.parametrize("backend", sorted(DEDUPING), indirect=True)
async def test_a_conflict_inside_one_batch_refuses_the_later_reading(backend: Backend):
    """Two readings with one id and other contents in one batch: the first is stored, the
    second refused; a later batch resending the first is accepted."""
    assert backend.values is not None
    sink = backend.make()
    await sink.start()
    try:
        with pytest.raises(RefusedRecords) as refused:
            await sink.write([record(5), resent(record(5), value=-1.0), record(6)])
        await sink.write([resent(record(5))])
    finally:
        await sink.close()
    assert list(refused.value.refused) == [1]
    assert_each_once(await backend.stored(2), [record(5), record(6)])
    assert (await backend.values())[record(5).id] == [record(5).value]


@pytest.mark.parametrize("backend", sorted(DEDUPING), indirect=True)
async def test_a_large_batch_is_stored_once_and_its_conflicts_found_anywhere_in_it(
    backend: Backend,
):
    """A batch larger than one statement's rows (sqlite writes 500 per ``INSERT``): stored
    once; resent with new readings after it, and a conflict in its last rows, only the
    conflicting record is refused and the rest is stored once."""
    assert backend.values is not None
    sink = backend.make()
    await sink.start()
    try:
        await sink.write(records(0, 1234))
        batch = [*records(1000, 1700), resent(record(1233), value=-1.0), record(1700)]
        with pytest.raises(RefusedRecords) as refused:
            await sink.write(batch)
    finally:
        await sink.close()
    assert list(refused.value.refused) == [700]
    assert_each_once(await backend.stored(1701), records(0, 1701))
    assert (await backend.values())[record(1233).id] == [record(1233).value]


@pytest.mark.parametrize("backend", sorted(DEDUPING), indirect=True)
async def test_the_pipeline_reports_a_conflict_without_retrying_or_bisecting(backend: Backend):
    """Through the pipeline: one write, the conflicting reading refused with the sink's name
    and reason, every other reading of the batch written once."""
    counting = FlakySink(backend.make())
    runner = SinkRunner(counting, backend.config(flush_interval=0))
    await runner.start()
    try:
        assert await deliver(runner, records(0, 10)) == []
        batch = [*records(10, 20), resent(record(4), value=1e6), *records(4, 6)]
        attempts = counting.attempts
        refusals = await deliver(runner, batch)
    finally:
        await runner.close(timeout(10))
    assert counting.attempts == attempts + 1
    expected = f"sink {backend.options['name']}: reading id {record(4).id} is already stored"
    assert [(r.id, reason) for r, reason in refusals] == [
        (record(4).id, f"{expected} with other content")
    ]
    assert refusals[0][0] is batch[10]
    assert runner.written == 10 + 12
    assert_each_once(await backend.stored(20), records(0, 20))


@pytest.mark.parametrize("backend", KEEPING, indirect=True)
async def test_readings_without_id_are_all_kept(backend: Backend):
    """Fire-and-forget readings (no id) are never taken for duplicates of each other."""
    sink = backend.make()
    await sink.start()
    await sink.write([record(i, rid=None) for i in range(5)])
    await sink.close()
    assert (await backend.stored(5)).count(None) == 5


@pytest.mark.parametrize("backend", NETWORKED, indirect=True)
async def test_recovers_when_the_backend_drops_the_connection(backend: Backend):
    """After the backend drops the sink's connections mid-stream, the pipeline's retry gets
    the next batches through and nothing written before or after is lost."""
    assert backend.drop is not None
    config = backend.config(retry_deadline=timeout(20), flush_interval=0)
    runner = SinkRunner(backend.make(), config)
    await runner.start()
    try:
        await deliver(runner, records(0, 500))
        dropped = await backend.drop()
        assert dropped >= 1, "the sink had no connection open to drop"
        await deliver(runner, records(500, 1000))
        # Drop again while a batch is being written.
        pending = asyncio.ensure_future(deliver(runner, records(1000, 3000)))
        await asyncio.sleep(0)
        await backend.drop()
        await pending
        await deliver(runner, records(3000, 3100))
    finally:
        await runner.close(timeout(10))
    ids = await backend.stored(3100)
    if backend.dedupes:
        assert_each_once(ids, records(0, 3100))
    else:  # at-least-once: every reading is there, resent ones maybe twice
        assert {r.id for r in records(0, 3100)} <= set(ids)
    assert runner.written == 3100


async def test_transient_errors_are_retried_by_the_pipeline(backend: Backend):
    """Two transient failures, then the real write: the batch lands, once where dedupe holds."""
    flaky = FlakySink(backend.make(), [TransientSinkError("blip"), ConnectionResetError("reset")])
    runner = SinkRunner(flaky, backend.config(flush_interval=0, retry_deadline=timeout(10)))
    await runner.start()
    try:
        await deliver(runner, records(0, 100))
    finally:
        await runner.close(timeout(10))
    assert flaky.attempts == 3
    ids = await backend.stored(100)
    if backend.type == "null":
        assert len(ids) == 100
    else:
        assert_each_once(ids, records(0, 100))


async def test_permanent_errors_refuse_only_the_bad_readings(backend: Backend):
    """A permanent refusal is not retried as is: the pipeline narrows it down to the refused
    readings, reports them, and writes every other reading of the batch once."""
    poisoned = {record(3).id, record(17).id}
    assert None not in poisoned
    flaky = FlakySink(backend.make(), poisoned=[rid for rid in poisoned if rid is not None])
    runner = SinkRunner(flaky, backend.config(flush_interval=0))
    await runner.start()
    try:
        refusals = await deliver(runner, records(0, 20))
        assert await deliver(runner, records(20, 30)) == []  # the sink goes on
    finally:
        await runner.close(timeout(10))
    assert {r.id for r, _ in refusals} == poisoned
    assert all("refuses" in reason for _, reason in refusals)
    ids = await backend.stored(28)
    good = [r for r in records(0, 30) if r.id not in poisoned]
    if backend.type == "null":
        assert len(ids) == 28
    else:
        assert_each_once(ids, good)
        assert not poisoned & set(ids)
