"""[agent.http] on a real agent process: /metrics scraped, /healthz, and the port's bounds."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.fake_collector import FakeCollector, scaled
from tests.integration.test_agent_ops_reload import AgentProcess, agent_toml, simulated

pytestmark = pytest.mark.slow

HTTP = "[agent.http]\nport = 0\nmax_connections = 2\nrequest_timeout = 0.5\n"
BROKEN_FILE = '[[sources]]\ntype = "file"\npath = "/nonexistent/telemetry-x"\ninterval = 0.05\n'


async def request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` raw, read the whole response: ``(status, headers, body)``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), scaled(5.0))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return await request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition as ``{(name, sorted labels): value}``."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_and_healthz_of_a_running_agent(tmp_path: Path) -> None:
    """A scrape shows the ledger, spool, connection and per-source errors, without
    ``_created`` series; /healthz says ok; the numbers match what the collector received."""
    config = tmp_path / "agent.toml"
    async with FakeCollector() as fake:
        config.write_text(
            agent_toml(fake.endpoint, tmp_path / "spool.db", simulated("m"), BROKEN_FILE).replace(
                "[spool]", HTTP + "\n[spool]"
            )
        )
        agent = await AgentProcess.start(config)
        try:
            port = (await agent.wait_event("agent_http_listening"))["port"]
            await fake.wait_for(lambda: fake.readings_received() >= 20, 10.0)
            status, _, body = await get(port, "/healthz")
            assert (status, body) == (200, b"ok\n")

            status, headers, body = await get(port, "/metrics")
            assert status == 200
            assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = body.decode()
            assert "_created" not in text
            assert "# TYPE telemetry_agent_readings_acked_total counter" in text
            assert "# TYPE telemetry_agent_spool_readings gauge" in text
            found = samples(text)
            assert found[("telemetry_agent_connected", ())] == 1
            assert found[("telemetry_agent_endpoint", (("endpoint", fake.endpoint),))] == 1
            assert found[("telemetry_agent_connections_total", ())] == 1
            assert found[("telemetry_agent_reconnects_total", ())] == 0
            assert found[("telemetry_agent_up", ())] == 1
            produced = found[("telemetry_agent_readings_produced_total", ())]
            acked = found[("telemetry_agent_readings_acked_total", ())]
            pending = found[("telemetry_agent_readings_pending", ())]
            assert produced >= acked >= 20
            assert produced == acked + pending
            assert acked <= fake.readings_received()
            sim = (("source", "simulated-0"),)
            broken = (("source", "file-1"),)
            assert found[("telemetry_agent_source_readings_total", sim)] == produced
            assert found[("telemetry_agent_source_errors_total", sim)] == 0
            assert found[("telemetry_agent_source_errors_total", broken)] >= 1
            assert found[("telemetry_agent_source_running", broken)] == 1
            assert found[("telemetry_agent_spool_durable", ())] == 1
            assert any(name == "telemetry_build_info" for name, _ in found)
            assert ("process_resident_memory_bytes", ()) in found

            # The collector goes away: the agent spools, is still healthy, and says so.
            await fake.close()
            await asyncio.sleep(scaled(0.5))
            _, _, body = await get(port, "/metrics")
            found = samples(body.decode())
            assert found[("telemetry_agent_connected", ())] == 0
            assert found[("telemetry_agent_spool_readings", ())] > 0
            assert 0 < found[("telemetry_agent_spool_oldest_age_seconds", ())] < 10
            assert (await get(port, "/healthz"))[0] == 200
        finally:
            agent.proc.send_signal(signal.SIGTERM)
            agent.proc.send_signal(signal.SIGTERM)  # the collector is gone: do not wait
            await agent.kill()


async def test_the_http_port_is_bounded(tmp_path: Path) -> None:
    """Past max_connections a connection gets 503 at once and is counted; a silent client is
    cut at request_timeout; an oversized head, a bad line, a POST and a stray path are
    refused with their status."""
    config = tmp_path / "agent.toml"
    async with FakeCollector() as fake:
        config.write_text(
            agent_toml(fake.endpoint, tmp_path / "spool.db", simulated("b", 0.2)).replace(
                "[spool]", HTTP + "\n[spool]"
            )
        )
        agent = await AgentProcess.start(config)
        idle: list[asyncio.StreamWriter] = []
        try:
            port = (await agent.wait_event("agent_http_listening"))["port"]
            readers = []
            for _ in range(2):  # the two the port serves, saying nothing
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                readers.append(reader)
                idle.append(writer)
            await asyncio.sleep(0.1)
            assert (await get(port, "/healthz"))[0] == 503
            for reader in readers:  # each silent client is answered 408 and closed
                answer = await asyncio.wait_for(reader.read(), scaled(3.0))
                assert answer.startswith(b"HTTP/1.1 408 ")
            for writer in idle:  # the port lingers until the client closes (0.5 s at most)
                writer.close()
                await writer.wait_closed()
            idle.clear()
            await asyncio.sleep(scaled(0.6))  # past the linger even if the close went unseen
            _, _, body = await get(port, "/metrics")
            assert samples(body.decode())[("telemetry_agent_http_refused_total", ())] == 1
            huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n"
            assert (await request(port, huge))[0] == 431
            assert (await request(port, b"NONSENSE\r\n\r\n"))[0] == 400
            assert (await request(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
            assert (await get(port, "/"))[0] == 404
            status, headers, body = await request(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
            assert (status, headers["Content-Length"], body) == (200, "3", b"")
            assert await agent.stop() == 0
        finally:
            for writer in idle:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await agent.kill()


async def test_a_port_in_use_stops_the_agent_with_one_line(tmp_path: Path) -> None:
    """An [agent.http] port already taken: exit 2, one error naming the address."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = tmp_path / "agent.toml"
    config.write_text(
        agent_toml("127.0.0.1:1", tmp_path / "spool.db", simulated("p")).replace(
            "[spool]", f"[agent.http]\nport = {port}\n\n[spool]"
        )
    )
    try:
        agent = await AgentProcess.start(config)
        assert await asyncio.wait_for(agent.proc.wait(), scaled(15.0)) == 2
        await agent.kill()
    finally:
        server.close()
        await server.wait_closed()
    errors = agent.named("agent_http_unavailable")
    assert len(errors) == 1
    assert errors[0]["address"] == f"127.0.0.1:{port}"
