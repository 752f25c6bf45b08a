"""The agent's HTTP port and metrics, the parts without I/O: requests, responses, ages."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from telemetry.agent.http import parse_request_line, response
from telemetry.agent.metrics import reading_time
from telemetry.agent.test_mode import wire_json
from telemetry.config import AgentConfig
from telemetry.protocol import Reading


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ("GET", "/metrics")),
        (b"HEAD /healthz?verbose=1 HTTP/1.0\r\n\r\n", ("HEAD", "/healthz")),
        (b"GET /metrics\r\n\r\n", None),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", None),
        (b"GET /metrics SPDY/3\r\n\r\n", None),
        (b"GET /\xff HTTP/1.1\r\n\r\n", None),
        (b"\r\n\r\n", None),
    ],
)
def test_request_lines(head: bytes, expected: tuple[str, str] | None) -> None:
    """A request line gives (method, path without query); anything malformed gives None."""
    assert parse_request_line(head) == expected


def test_a_response_closes_and_states_its_length() -> None:
    """Every response says Connection: close and its exact Content-Length; HEAD has no body."""
    full = response(200, b"ok\n", "text/plain")
    assert full.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 3\r\n" in full
    assert b"Connection: close\r\n" in full
    assert full.endswith(b"\r\n\r\nok\n")
    head = response(200, b"ok\n", "text/plain", head=True)
    assert head == full[: -len(b"ok\n")]


def test_reading_time_of_both_timestamp_forms() -> None:
    """The oldest reading's age is taken from epoch seconds or an ISO timestamp."""
    assert reading_time(b'{"sensor":"a","value":1,"ts":1700000000.5}') == 1700000000.5
    iso = reading_time(b'{"sensor":"a","value":1,"ts":"2023-11-14T22:13:20Z"}')
    assert iso == 1700000000.0
    assert reading_time(b'{"sensor":"a","value":1}') is None
    assert reading_time(b'{"sensor":"a","value":1,"ts":true}') is None
    assert reading_time(b'{"sensor":"a","value":1,"ts":"yesterday"}') is None
    assert reading_time(b"[1]") is None


def test_wire_json_is_what_the_agent_sends() -> None:
    """A dict goes as it is when clean; a model goes in its wire form; a bad dict raises."""
    now = time.time()
    assert wire_json({"sensor": "a", "value": 1.5, "ts": now}) == (
        b'{"sensor":"a","value":1.5,"ts":%s}' % repr(now).encode()
    )
    model = Reading.model_validate({"sensor": "a", "value": 2, "tags": {"k": "v"}})
    assert wire_json(model) == b'{"sensor":"a","value":2.0,"tags":{"k":"v"}}'
    with pytest.raises(ValueError, match="value"):
        wire_json({"sensor": "a", "value": "x"})


def test_agent_http_defaults_and_bounds() -> None:
    """[agent.http] is off by default; on, it serves this host only, with bounded limits."""
    assert AgentConfig().agent.http is None
    http = AgentConfig(agent={"http": {}}).agent.http
    assert http is not None
    assert (http.host, http.port, http.max_connections, http.request_timeout) == (
        "127.0.0.1",
        7602,
        16,
        5.0,
    )
    with pytest.raises(ValueError, match="max_connections"):
        AgentConfig(agent={"http": {"max_connections": 0}})
    with pytest.raises(ValueError, match="port"):
        AgentConfig(agent={"http": {"port": 70000}})


def test_a_scrape_without_an_event_loop_reads_the_spool() -> None:
    """The metrics are read from the live objects: spool depth, the oldest reading's age by
    its ts (or since first scraped), the ledger balance, and no _created series."""
    from telemetry.agent import Agent, MemorySpool
    from telemetry.agent.metrics import AgentMetrics
    from telemetry.agent.reload import SourceSet
    from telemetry.config import AgentSection

    spool = MemorySpool(1000)
    agent = Agent(AgentSection(id="u"), spool)
    metrics = AgentMetrics(agent, SourceSet(agent, "u"), http_refused=lambda: 7)
    assert metrics.value("telemetry_agent_spool_oldest_age_seconds") == 0
    spool.add([b'{"sensor":"a","value":1,"ts":%f}' % (time.time() - 100), b'{"sensor":"b"}'])
    spool.add([b'{"sensor":"c","value":1}'])
    text = metrics.render().decode()
    assert "_created" not in text
    assert metrics.value("telemetry_agent_spool_batches") == 2
    assert metrics.value("telemetry_agent_spool_readings") == 3
    assert metrics.value("telemetry_agent_readings_pending") == 3
    assert metrics.value("telemetry_agent_readings_spooled_total") == 3
    assert metrics.value("telemetry_agent_http_refused_total") == 7
    assert metrics.value("telemetry_agent_up") == 0  # never started
    age = metrics.value("telemetry_agent_spool_oldest_age_seconds")
    assert age is not None
    assert 99 < age < 110
    spool.ack(spool.oldest_seq or 0)
    age = metrics.value("telemetry_agent_spool_oldest_age_seconds")
    assert age is not None
    assert 0 <= age < 5  # no ts: counted from this scrape on
    assert metrics.value("telemetry_agent_readings_acked_total") == 2


def test_without_prometheus_client_agent_http_names_the_install(tmp_path: Path) -> None:
    """An agent-only install with [agent.http]: one line naming the pip install, exit 2."""
    config = tmp_path / "agent.toml"
    config.write_text('[agent.http]\nport = 0\n[[sources]]\ntype = "simulated"\n')
    script = (
        "import sys\nsys.modules['prometheus_client'] = None\n"
        f"from telemetry.cli import main\nsys.exit(main(['agent', '--config', {str(config)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "[agent.http]" in done.stderr
    assert "pip install 'sensor-telemetry[collector]'" in done.stderr
