"""``telemetry bench`` against a real in-process collector: its counts match the sink's."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from telemetry.bench import BenchOptions, run_bench
from telemetry.cli import main
from tests.conftest import StartCollector
from tests.support import RecordingSink, timeout


async def test_batched_counts_match_the_sink(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """Every reading the bench reports as sent and accepted is in the sink, exactly once."""
    collector = await start_collector(sinks=[recording_sink])
    opts = BenchOptions(port=collector.ingest_port, connections=3, readings=2_500, batch=200)
    cpu_before = time.process_time()
    result = await asyncio.wait_for(run_bench(opts), timeout(10))
    cpu_around = time.process_time() - cpu_before
    assert result.readings == result.accepted == 2_500
    assert result.rejected == result.nacks == result.marker_readings == 0
    assert len(recording_sink.records) == 2_500
    assert len(set(recording_sink.ids)) == 2_500
    # 2,500 over 3 connections: 834, 833, 833 readings -> 5 batches each (the last partial).
    assert result.latency_ms["count"] == 15
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.bytes_sent > 2_500 * 100
    assert result.elapsed > 0
    # This process's CPU while it sent the readings: some, and no more than around the call.
    assert 0 < result.cpu_seconds <= cpu_around


async def test_fire_and_forget_counts_match_the_sink(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """Fire-and-forget frames all reach the sink before each connection's marker is acked."""
    collector = await start_collector(sinks=[recording_sink])
    opts = BenchOptions(port=collector.ingest_port, connections=2, readings=1_001, batch=0)
    result = await asyncio.wait_for(run_bench(opts), timeout(10))
    assert result.readings == 1_001
    assert result.marker_readings == 2
    assert len(recording_sink.records) == result.readings + result.marker_readings
    loose = [r for r in recording_sink.records if r.id is None]
    assert len(loose) == 1_001
    # From the last reading written to the marker's ack: a round trip, inside the run's time
    # and shorter than it (writing 1,001 frames took some of it).
    assert result.drain_seconds is not None
    assert 0 < result.drain_seconds < result.elapsed


async def test_rate_and_duration_pace_the_readings(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """With --rate and --duration the bench sends about rate x duration readings."""
    collector = await start_collector(sinks=[recording_sink])
    opts = BenchOptions(
        port=collector.ingest_port,
        connections=2,
        readings=None,
        batch=50,
        rate=2_000,
        duration=0.5,
    )
    result = await asyncio.wait_for(run_bench(opts), timeout(10))
    assert 800 <= result.readings <= 1_100
    assert len(recording_sink.records) == result.readings == result.accepted


async def test_cli_prints_json(
    start_collector: StartCollector,
    recording_sink: RecordingSink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``telemetry bench --json`` prints one object whose counts match the sink."""
    collector = await start_collector(sinks=[recording_sink])
    argv = [
        "bench",
        "-e",
        f"127.0.0.1:{collector.ingest_port}",
        "-n",
        "2",
        "-r",
        "1000",
        "--batch",
        "100",
        "--json",
    ]
    status = await asyncio.wait_for(asyncio.to_thread(main, argv), timeout(10))
    assert status == 0
    # The in-process collector logs to stdout too: the bench's report is its one JSON line.
    lines = capsys.readouterr().out.splitlines()
    report = json.loads(next(line for line in lines if line.startswith('{"connections"')))
    assert report["readings"] == report["accepted"] == len(recording_sink.records) == 1_000
    assert set(report["latency_ms"]) == {"p50", "p90", "p99", "max", "count"}
    assert report["readings_per_s"] > 0


def test_cli_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed endpoint or a negative batch is a usage error (exit 2), not a traceback."""
    assert main(["bench", "-e", "nowhere"]) == 2
    assert main(["bench", "--batch", "-1"]) == 2
    assert "batch" in capsys.readouterr().err


def test_cli_reports_a_refused_connection(capsys: pytest.CaptureFixture[str]) -> None:
    """No collector listening: exit 1 with the reason."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["bench", "-e", f"127.0.0.1:{port}", "--timeout", "2"]) == 1
    assert "cannot connect" in capsys.readouterr().err
