"""The live view: its hooks' state, /api/live with readings from real agents, the page."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest

from telemetry.collector import Collector
from telemetry.collector import live as live_module
from telemetry.collector.live import HISTORY_STEP, RATE_WINDOW, AgentInfo, LiveView
from telemetry.sinks.base import Record
from tests.conftest import StartCollector
from tests.support import RecordingSink, WireClient, http_get


def record(sensor: str, value: float, agent: str = "a1", **tags: str) -> Record:
    """A record as the connection code hands it to the hooks."""
    now = datetime.now(UTC)
    return Record(None, agent, sensor, value, now, now, unit="°C", tags=tags)


def test_hooks_track_agents_rates_history_and_rejections() -> None:
    """Readings count per agent, keep one history point per step, rejections keep reasons."""
    live = LiveView()
    live.agent_connected(1, "pi-1", "10.0.0.5:5000")
    live.accepted(1, [record("s1", 1.0), record("s1", 2.0), record("s2", 5.0)])
    live.rejected(1, "pi-1", ["value: must be a number, not a string"])
    snap = live.snapshot({1})
    [agent] = snap["agents"]
    assert (agent["agent"], agent["peer"], agent["readings"]) == ("pi-1", "10.0.0.5:5000", 3)
    assert agent["rate"] > 0
    s1 = snap["sensors"][0]
    assert (s1["sensor"], s1["value"], s1["unit"]) == ("s1", 2.0, "°C")
    assert len(s1["history"]) == 1  # both readings fell in the same step: the last one kept
    assert s1["history"][0][1] == 2.0
    assert snap["rejections"][0]["errors"] == ["value: must be a number, not a string"]
    assert snap["rejected_total"] == 1
    live.agent_disconnected(1)
    assert live.snapshot({1})["agents"] == []


def test_agent_rate_counts_only_the_last_window_of_seconds() -> None:
    """An agent's rate is over the last RATE_WINDOW seconds; older seconds are dropped, so
    a connection open for days keeps RATE_WINDOW + 1 buckets at most."""
    info = AgentInfo(1, "pi-1", "10.0.0.5:5000", connected_at=1000.0)
    for second in range(1000, 1100):
        info.count(7, second + 0.5)
    assert len(info.buckets) == RATE_WINDOW + 1
    assert info.readings == 700
    assert info.rate(1099.9) == 7.0  # 10 seconds of 7, over 10 seconds
    info.count(30, 1101.0)  # a gap at 1100, then a burst
    assert info.rate(1101.5) == (8 * 7 + 30) / RATE_WINDOW
    assert info.rate(1200.0) == 0.0  # long quiet: nothing in the window


def test_history_one_point_per_step_and_snapshot_filters() -> None:
    """A reading in a later step adds a point; a sensor glob and a limit narrow the list."""
    live = LiveView()
    live.accepted(1, [record("greenhouse-1", 1.0)])
    state = live.sensors["greenhouse-1"]
    state.history[0][0] -= HISTORY_STEP  # as if it came one step ago
    live.accepted(1, [record("greenhouse-1", 3.0), record("shed", 0.0)])
    assert [v for _, v in live.sensors["greenhouse-1"].history] == [1.0, 3.0]
    snap = live.snapshot(set(), sensor_glob="green*")
    assert [s["sensor"] for s in snap["sensors"]] == ["greenhouse-1"]
    assert snap["agents"] == []  # the fire-and-forget peer left: pruned
    assert live.snapshot(None, limit=1)["sensors_total"] == 2


def test_sensors_beyond_the_limit_are_counted_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_SENSORS, new sensors are not tracked; each sensor's update in a step counts."""
    monkeypatch.setattr(live_module, "MAX_SENSORS", 2)
    live = LiveView()
    live.accepted(1, [record("a", 1.0), record("b", 1.0), record("c", 1.0), record("c", 2.0)])
    live.accepted(1, [record("d", 1.0), record("a", 3.0)])
    assert sorted(live.sensors) == ["a", "b"]
    assert live.sensors["a"].last.value == 3.0
    assert live.untracked == 2  # c and d
    assert live.snapshot()["sensors_untracked"] == 2


def test_latest_values_are_current_before_the_step_ends() -> None:
    """A reader sees the latest record at once; more in the same step move the same point."""
    live = LiveView()
    live.accepted(1, [record("s", 1.0)])
    assert live.latest["s"].value == 1.0
    live.accepted(1, [record("s", 2.0), record("t", 0.5)])
    snap = live.snapshot()
    assert [(s["sensor"], s["value"]) for s in snap["sensors"]] == [("s", 2.0), ("t", 0.5)]
    assert [v for _, v in live.sensors["s"].history] == [2.0]


async def _live(collector: Collector) -> dict[str, object]:
    assert collector.http.port is not None
    status, body = await http_get(collector.http.port, "/api/live")
    assert status == 200
    result: dict[str, object] = body
    return result


async def test_api_live_shows_agents_values_rejections_and_sinks(
    start_collector: StartCollector, recording_sink: RecordingSink
) -> None:
    """With readings from a real agent connection /api/live shows what the page renders."""
    collector = await start_collector(sinks=[recording_sink])
    client = await WireClient.connect(collector.ingest_port)
    await client.hello("greenhouse-2")
    readings = [
        {"sensor": "greenhouse-2/soil-3", "value": 41.25, "unit": "%", "metric": "moisture"},
        {"sensor": "greenhouse-2/soil-3", "value": "wet"},
    ]
    await client.send({"type": "batch", "seq": 0, "readings": readings})
    ack = await client.recv()
    assert ack["accepted"] == 1
    body = await _live(collector)
    [agent] = body["agents"]  # type: ignore[misc]
    assert agent["agent"] == "greenhouse-2"
    assert agent["readings"] == 1
    [sensor] = body["sensors"]  # type: ignore[misc]
    assert (sensor["sensor"], sensor["value"], sensor["unit"]) == (
        "greenhouse-2/soil-3",
        41.25,
        "%",
    )
    [rejection] = body["rejections"]  # type: ignore[misc]
    assert rejection["agent"] == "greenhouse-2"
    assert rejection["errors"] == ["value: must be a number, not a string"]
    assert body["sinks"] == [
        {"name": "recording", "healthy": True, "queued": 0, "written": 1, "dropped": 0}
    ]
    assert body["collector"]["ready"] is True  # type: ignore[index]
    await client.close()


async def test_page_is_served_with_a_strict_content_security_policy(
    start_collector: StartCollector,
) -> None:
    """/ and /live serve the one HTML page; its CSP allows only its own script and origin."""
    collector = await start_collector()
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/live"):
            async with session.get(f"http://127.0.0.1:{collector.http.port}{path}") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/html"
                page = await resp.text()
                csp = resp.headers["Content-Security-Policy"]
    assert "<title>telemetry · live</title>" in page
    assert "connect-src 'self'" in csp
    assert "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing external


def test_rejections_keep_bounded_text() -> None:
    """A rejection keeps at most MAX_ERRORS reasons of MAX_TEXT characters, and its agent
    truncated: 100 rejections can never hold megabytes."""
    live = LiveView()
    live.rejected(1, "a" * 100_000, ["e" * 100_000] * 1000)
    [kept] = live.rejections
    assert len(kept.agent) == live_module.MAX_TEXT
    assert len(kept.errors) == live_module.MAX_ERRORS
    assert {len(e) for e in kept.errors} == {live_module.MAX_TEXT}


def test_full_sensor_table_forgets_silent_sensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """When MAX_SENSORS are tracked, sensors silent for SENSOR_TTL make room for new ones
    without anyone opening the page."""
    monkeypatch.setattr(live_module, "MAX_SENSORS", 2)
    live = LiveView()
    live.accepted(1, [record("old-1", 1.0), record("old-2", 1.0)])
    for state in live.sensors.values():
        state.seen -= live_module.SENSOR_TTL + HISTORY_STEP + 1
    live._step -= HISTORY_STEP  # the next reading starts a new step
    live.accepted(1, [record("new", 1.0)])
    assert sorted(live.sensors) == ["new"]
    assert live.untracked == 0
