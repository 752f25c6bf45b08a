"""The live view over a restart: latest values restored from the sqlite sink, rejections with
their sensor, bytes per agent; the retention counter on /metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from telemetry.collector import Collector
from tests.conftest import StartCollector
from tests.support import WireClient, collector_config, http_get, timeout


async def _send(port: int, agent: str, seq: int, readings: list[dict[str, object]]) -> None:
    client = await WireClient.connect(port)
    await client.hello(agent)
    await client.send({"type": "batch", "seq": seq, "readings": readings})
    await client.recv()
    await client.close()


async def test_latest_values_come_back_after_a_restart(start_collector: StartCollector) -> None:
    """A restarted collector shows each sensor's last stored value, marked restored, until a
    new reading of that sensor replaces it."""
    first = await start_collector()
    readings = [
        {"sensor": "greenhouse-1/air", "value": 20.5, "unit": "°C"},
        {"sensor": "greenhouse-1/air", "value": 21.5, "unit": "°C"},
        {"sensor": "shed/door", "value": 1},
    ]
    await _send(first.ingest_port, "pi-1", 0, readings)
    await first.shutdown()

    second = await start_collector()
    status, body = await http_get(second.http.port, "/api/live")
    assert status == 200
    got = {s["sensor"]: (s["value"], s["unit"], s["agent"], s["restored"]) for s in body["sensors"]}
    assert got == {
        "greenhouse-1/air": (21.5, "°C", "pi-1", True),
        "shed/door": (1.0, None, "pi-1", True),
    }
    await _send(second.ingest_port, "pi-1", 1, [{"sensor": "shed/door", "value": 0}])
    _, body = await http_get(second.http.port, "/api/live")
    door = next(s for s in body["sensors"] if s["sensor"] == "shed/door")
    assert (door["value"], door["restored"]) == (0.0, False)


async def test_rejections_name_the_sensor_and_agents_count_bytes(
    start_collector: StartCollector,
) -> None:
    """A rejected reading is listed with its sensor; an agent's received bytes are counted."""
    collector = await start_collector()
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("pi-2")
    readings = [{"sensor": "pump/pressure", "value": "high"}, {"value": 1}]
    await client.send({"type": "batch", "seq": 0, "readings": readings})
    await client.recv()
    _, body = await http_get(collector.http.port, "/api/live")
    assert [r["sensor"] for r in body["rejections"]] == [None, "pump/pressure"]
    [agent] = body["agents"]
    assert agent["received_bytes"] > 60
    await client.close()


async def test_pruned_rows_are_counted_on_metrics(tmp_path: Path) -> None:
    """With max_rows, the rows a pass deletes show in telemetry_sink_pruned_readings_total."""
    sink = {"type": "sqlite", "path": str(tmp_path / "t.db"), "max_rows": 2}
    collector = Collector(collector_config(tmp_path, sinks=[sink]))
    await collector.start()
    try:
        readings = [{"sensor": f"s{i}", "value": i} for i in range(5)]
        assert collector.ingest_port is not None
        await _send(collector.ingest_port, "pi-3", 0, readings)
        retention = collector.pipeline.runners[0].sink.retention  # type: ignore[attr-defined]
        retention.wake()
        async with asyncio.timeout(timeout(10)):
            await retention.until(lambda: retention.pruned["max_rows"] >= 3)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{collector.http.port}/metrics") as resp,
        ):
            text = await resp.text()
        assert 'telemetry_sink_pruned_readings_total{limit="max_rows",sink="sqlite"} 3.0' in text
    finally:
        await collector.shutdown()
