"""The real commands as users run them: collector and agent processes, signals, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telemetry.agent import send_once
from telemetry.config import AgentSection
from tests.support import WireClient, timeout

COMMAND = [sys.executable, "-m", "telemetry.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def env(**overrides: str) -> dict[str, str]:
    return {**os.environ, "TELEMETRY_LOG__FORMAT": "json", **overrides}


class CollectorProcess:
    """``telemetry collect`` in a subprocess, on free ports, writing SQLite under tmp_path."""

    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        self.port = free_port()
        self.http_port = free_port()
        self.db = tmp_path / "telemetry.db"
        self.config = tmp_path / "collector.toml"
        self.config.write_text(
            f"[ingest]\nport = {self.port}\n[http]\nport = {self.http_port}\n"
            f"[collector]\nshutdown_timeout = 10\n{extra}\n"
            f'[[sinks]]\ntype = "sqlite"\npath = "{self.db}"\n'
        )
        self.log = tmp_path / "collector.log"
        with self.log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*COMMAND, "collect", "--config", str(self.config)], stderr=stderr, env=env()
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + timeout(15)
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("collector did not start listening")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout(20))

    def rows(self) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.db)
        try:
            return db.execute("SELECT id, agent, sensor, value, unit FROM readings").fetchall()
        finally:
            db.close()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path)
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


def agent_config(tmp_path: Path, agent_id: str, port: int) -> Path:
    path = tmp_path / f"{agent_id}.toml"
    path.write_text(
        f'[agent]\nid = "{agent_id}"\nendpoints = ["127.0.0.1:{port}"]\n'
        "batch_size = 100\nflush_interval = 0.05\nshutdown_timeout = 20\n"
        '[[sources]]\ntype = "stdin"\n'
    )
    return path


def test_three_stdin_agents_deliver_every_reading_once(tmp_path, collector_process):
    """Three agents each piping 1,000 readings: 3,000 rows, distinct ids, all acked (exit 0)."""
    agents = []
    for n in range(3):
        lines = "".join(
            json.dumps(
                {"sensor": f"host-{n}/probe-{i % 7}", "value": i, "unit": "°C"}, ensure_ascii=False
            )
            + "\n"
            for i in range(1000)
        )
        with (tmp_path / f"agent-{n}.log").open("wb") as stderr:
            proc = subprocess.Popen(
                [
                    *COMMAND,
                    "agent",
                    "--config",
                    str(agent_config(tmp_path, f"agent-{n}", collector_process.port)),
                ],
                stdin=subprocess.PIPE,
                stderr=stderr,
                env=env(),
            )
        agents.append((proc, lines))
    for proc, lines in agents:
        assert proc.stdin is not None
        proc.stdin.write(lines.encode())
        proc.stdin.close()
    for n, (proc, _) in enumerate(agents):
        assert proc.wait(timeout(60)) == 0, (tmp_path / f"agent-{n}.log").read_text()
    assert collector_process.stop() == 0
    rows = collector_process.rows()
    assert len(rows) == 3000
    assert len({row[0] for row in rows}) == 3000
    for n in range(3):
        mine = [row for row in rows if row[1] == f"agent-{n}"]
        assert sorted(row[3] for row in mine) == list(range(1000))
        assert {row[4] for row in mine} == {"°C"}


def test_a_restarted_agent_is_not_taken_for_a_duplicate(tmp_path, collector_process):
    """Running the same agent id twice stores both runs' readings (seq keeps growing)."""
    config = agent_config(tmp_path, "restarted", collector_process.port)
    for run in range(2):
        lines = "".join(
            json.dumps({"sensor": "s", "value": run * 100 + i}) + "\n" for i in range(50)
        )
        result = run_cli("agent", "--config", str(config), input=lines)
        assert result.returncode == 0, result.stderr
    collector_process.stop()
    values = sorted(row[3] for row in collector_process.rows())
    assert values == [float(v) for v in [*range(50), *range(100, 150)]]


async def test_sigterm_while_batches_stream_keeps_every_acked_reading(tmp_path):
    """SIGTERM mid-stream: exit 0 within shutdown_timeout and every acked reading is stored."""
    collector = CollectorProcess(tmp_path)
    try:
        client = await WireClient.connect(collector.port)
        assert (await client.hello("streamer"))["type"] == "welcome"
        acked: list[int] = []
        sent = 0
        window = 8
        goaway = False
        signalled = False

        async def receive() -> None:
            nonlocal goaway
            while True:
                try:
                    message = await client.recv(wait=15)
                except (EOFError, ConnectionError):
                    return
                if message["type"] == "ack":
                    acked.append(message["seq"])
                elif message["type"] == "goaway":
                    goaway = True

        receiver = asyncio.create_task(receive())
        readings = [{"sensor": f"s{i}", "value": i} for i in range(200)]
        while not goaway and sent < 2000:
            if sent - len(acked) < window:
                try:
                    await client.send({"type": "batch", "seq": sent, "readings": readings})
                except ConnectionError:
                    break
                sent += 1
            else:
                await asyncio.sleep(0.001)
            if len(acked) >= 20 and not signalled:
                collector.proc.send_signal(signal.SIGTERM)
                signalled = True
        await asyncio.wait_for(receiver, timeout(20))
        started = time.monotonic()
        code = await asyncio.to_thread(collector.proc.wait, timeout(15))
        assert code == 0
        assert time.monotonic() - started < 10 + 1
    finally:
        await WireClient.close_all()
        if collector.proc.poll() is None:
            collector.proc.kill()
    acked_seqs = set(acked)
    assert goaway
    assert sent < 2000, "the collector never drained"
    assert len(acked_seqs) >= 20
    stored = {row[0] for row in collector.rows()}
    for seq in acked_seqs:
        assert {f"streamer:{seq}:{i}" for i in range(200)} <= stored, f"batch {seq} lost"
    events = [e["event"] for e in collector.events()]
    assert "drain_started" in events
    assert events[-1] == "collector_stopped"


def run_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        env=env(),
        check=False,
        **kwargs,
    )


@pytest.mark.parametrize("command", [[], ["collect"], ["agent"], ["send"], ["check-config"]])
def test_every_command_has_help(command):
    """`telemetry [COMMAND] --help` prints usage and exits 0."""
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: telemetry" in result.stdout


def test_busy_port_is_a_one_line_error(tmp_path):
    """A collector whose port is taken exits non-zero with one clear line."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(
            f"[ingest]\nport = {port}\n[http]\nenabled = false\n"
            f'[[sinks]]\ntype = "sqlite"\npath = "{tmp_path / "t.db"}"\n'
        )
        result = run_cli("collect", "--config", str(config))
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("telemetry:")]
    assert error_lines == [f"telemetry: cannot listen on 127.0.0.1:{port}: address already in use"]
    assert "Traceback" not in result.stderr


def test_a_sink_that_never_answers_stops_the_start_with_one_line(tmp_path, monkeypatch, capsys):
    """A backend still down after the start-up retries: a sink_start_failed log per retry,
    then one line naming the sink and a non-zero exit status, no traceback."""
    import telemetry.collector.runner as pipeline_module
    from telemetry.cli import main

    monkeypatch.setattr(pipeline_module, "START_DEADLINE", 1.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        config = tmp_path / "c.toml"
        config.write_text(
            '[ingest]\nport = 0\n[http]\nport = 0\n[log]\nformat = "json"\n'
            f'[[sinks]]\ntype = "redis"\nurl = "redis://127.0.0.1:{closed.getsockname()[1]}"\n'
            "retry_deadline = 0\n"
        )
        assert main(["collect", "--config", str(config)]) != 0
    err = capsys.readouterr().err
    assert "sink_start_failed" in err
    [error] = [line for line in err.splitlines() if line.startswith("telemetry:")]
    assert error.startswith("telemetry: redis: cannot connect to")
    assert "Traceback" not in err


def test_bad_config_is_an_error_naming_the_key(tmp_path):
    """collect and check-config refuse an unknown key, naming it, with exit status 2."""
    config = tmp_path / "c.toml"
    config.write_text("[ingest]\nprot = 7600\n")
    for args in (["collect", "--config", str(config)], ["check-config", str(config)]):
        result = run_cli(*args)
        assert result.returncode == 2
        assert "ingest.prot: unknown key" in result.stderr
        assert "Traceback" not in result.stderr


def test_check_config_prints_the_effective_config(tmp_path):
    """check-config shows the file's values with environment overrides applied."""
    result = subprocess.run(
        [*COMMAND, "check-config", "config/collector.toml"],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=False,
        env=env(TELEMETRY_INGEST__PORT="7777"),
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["ingest"]["port"] == 7777
    assert effective["sinks"][0]["type"] == "sqlite"


def test_send_delivers_one_reading_or_explains_the_rejection(collector_process):
    """`telemetry send` exits 0 when acked, 1 with the reason if rejected, 2 if undelivered."""
    endpoint = f"127.0.0.1:{collector_process.port}"
    ok = run_cli(
        "send",
        "-e",
        endpoint,
        "--agent-id",
        "cron",
        "--sensor",
        "shed/door",
        "--value",
        "1.5",
        "--unit",
        "°C",
        "--tag",
        "site=north",
    )
    assert ok.returncode == 0, ok.stderr
    assert "accepted 1" in ok.stdout
    bad = run_cli("send", "-e", endpoint, "--json", '{"sensor": "x", "value": "high"}')
    assert bad.returncode == 1
    assert "value" in bad.stderr
    nobody = run_cli(
        "send", "-e", f"127.0.0.1:{free_port()}", "--sensor", "x", "--value", "1", "--timeout", "1"
    )
    assert nobody.returncode == 2
    assert "not delivered" in nobody.stderr
    collector_process.stop()
    rows = collector_process.rows()
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [("cron", "shed/door", 1.5, "°C")]


def start_workers(tmp_path: Path, sinks: str) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    """``telemetry collect --workers 2`` on free ports: the process, ingest and HTTP ports,
    and its log file."""
    port, http_port = free_port(), free_port()
    config = tmp_path / "w.toml"
    config.write_text(f"[ingest]\nport = {port}\n[http]\nport = {http_port}\n{sinks}")
    log = tmp_path / "w.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [*COMMAND, "collect", "--config", str(config), "--workers", "2"],
            stderr=stderr,
            env=env(),
        )
    return proc, port, http_port, log


def wait_for(proc: subprocess.Popen[bytes], log: Path, check: Any, what: str) -> None:
    """Poll ``check()`` until true; fail with ``what`` after 30 s, or if ``proc`` exits."""
    deadline = time.monotonic() + timeout(30)
    while not check():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1):
            return True
    except OSError:
        return False


async def send_one_each(port: int, count: int, prefix: str) -> None:
    """``count`` agents, one connection and one reading each (``<prefix><n>``, sensor s<n>)."""
    for n in range(count):
        section = AgentSection(id=f"{prefix}{n}", endpoints=[f"127.0.0.1:{port}"])
        ack = await send_once(section, [{"sensor": f"s{n}", "value": n}], timeout(10))
        assert ack.accepted == 1


def acks_by_worker(http_port: int) -> dict[str, float]:
    """``telemetry_acks_total`` per ``worker`` label, from the supervisor's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "telemetry_acks_total"
    }


def test_workers_share_the_port_and_drain_together(tmp_path):
    """--workers 2: connections go to each in turn, /metrics labels each worker, SIGTERM exits 0."""
    db = tmp_path / "w.db"
    proc, port, http_port, log = start_workers(
        tmp_path, f'[[sinks]]\ntype = "sqlite"\npath = "{db}"\n'
    )
    try:
        wait_for(proc, log, lambda: ready(http_port), "workers did not become ready")
        # one connection each: the supervisor hands them out in turn
        asyncio.run(send_one_each(port, 12, "a"))
        acks = acks_by_worker(http_port)
        assert set(acks) == {"0", "1"}
        assert sum(acks.values()) == 12
        assert sorted(acks.values()) == [6.0, 6.0], acks
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/live", timeout=5) as resp:
            live = json.load(resp)
        assert live["sensors_total"] == 12  # merged from both workers
        assert live["collector"]["workers"] == 2
        assert asyncio.run(tail_through_supervisor(http_port, port)) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout(30)) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    database = sqlite3.connect(db)
    query = "SELECT count(DISTINCT id) FROM readings WHERE agent LIKE 'a%'"
    assert database.execute(query).fetchone()[0] == 12


async def tail_through_supervisor(http_port: int, port: int) -> int:
    """Read the supervisor's /api/tail while readings arrive; how many came through."""
    import aiohttp

    received = 0
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{http_port}/api/tail?sensor=t*") as stream,
    ):

        async def keep_sending() -> None:
            for n in range(100):  # new connections, handed to the workers in turn
                section = AgentSection(id=f"t{n}", endpoints=[f"127.0.0.1:{port}"])
                await send_once(section, [{"sensor": f"t{n}", "value": n}], timeout(10))
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(keep_sending())
        try:
            async with asyncio.timeout(timeout(20)):
                async for line in stream.content:
                    if line.startswith(b"data:"):
                        assert json.loads(line[5:])["sensor"].startswith("t")
                        received += 1
                        if received == 4:
                            break
        finally:
            sender.cancel()
    return received


def test_a_killed_worker_is_replaced_and_no_connection_is_lost(tmp_path):
    """--workers 2: while one worker is dead its turn passes to the other; it comes back."""
    import psutil

    proc, port, http_port, log = start_workers(tmp_path, '[[sinks]]\ntype = "null"\n')
    try:
        wait_for(proc, log, lambda: ready(http_port), "workers did not become ready")
        first, second = psutil.Process(proc.pid).children()
        first.kill()
        first.wait(timeout(10))
        asyncio.run(send_one_each(port, 6, "during"))  # every connection goes to the live worker
        wait_for(proc, log, lambda: ready(http_port), "the killed worker was not replaced")
        workers = psutil.Process(proc.pid).children()
        assert second in workers
        assert len(workers) == 2
        asyncio.run(send_one_each(port, 6, "after"))
        acks = acks_by_worker(http_port)
        # The replacement started its counters at 0 and took its turn again afterwards.
        assert sum(acks.values()) == 12
        assert min(acks.values()) >= 3, acks
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout(30)) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_workers_fail_together_when_the_port_is_busy(tmp_path):
    """A busy ingest port stops the whole worker group with a non-zero status."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = tmp_path / "w.toml"
        config.write_text(
            f"[ingest]\nport = {busy.getsockname()[1]}\n[http]\nport = {free_port()}\n"
            f'[[sinks]]\ntype = "null"\n'
        )
        result = run_cli("collect", "--config", str(config), "--workers", "2")
    assert result.returncode != 0
    assert "address already in use" in result.stderr


def test_sighup_reloads_the_collector_and_never_kills_an_agent(tmp_path, collector_process):
    """SIGHUP: the collector re-reads its config (a broken one is refused and logged, the
    process serves on); the agent keeps running, and still drains on SIGTERM."""
    good = collector_process.config.read_text()
    collector_process.config.write_text(good + "\n[ingest\n")
    collector_process.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout(10)
    while time.monotonic() < deadline:
        if any(e.get("event") == "reload_refused" for e in collector_process.events()):
            break
        time.sleep(0.05)
    assert any(e.get("event") == "reload_refused" for e in collector_process.events())
    collector_process.config.write_text(good)
    collector_process.proc.send_signal(signal.SIGHUP)
    while time.monotonic() < deadline:
        if any(e.get("event") == "config_reloaded" for e in collector_process.events()):
            break
        time.sleep(0.05)
    assert any(e.get("event") == "config_reloaded" for e in collector_process.events())
    assert collector_process.proc.poll() is None
    agent_log = tmp_path / "agent.log"
    with agent_log.open("wb") as log_file:
        agent = subprocess.Popen(
            [
                *COMMAND,
                "agent",
                "--config",
                str(agent_config(tmp_path, "hup", collector_process.port)),
            ],
            stdin=subprocess.PIPE,
            stderr=log_file,
            env=env(),
        )
    assert agent.stdin is not None
    agent.stdin.write(b'{"sensor": "hup/s", "value": 1}\n')
    agent.stdin.flush()
    deadline = time.monotonic() + timeout(20)
    while b'"connected"' not in agent_log.read_bytes():  # its handlers are in place by now
        assert time.monotonic() < deadline, agent_log.read_text()
        assert agent.poll() is None, agent_log.read_text()
        time.sleep(0.05)
    agent.send_signal(signal.SIGHUP)
    while b"reload_requested" not in agent_log.read_bytes():
        assert time.monotonic() < deadline, agent_log.read_text()
        time.sleep(0.05)
    assert agent.poll() is None, "SIGHUP killed the agent"
    agent.stdin.close()  # end of input: the agent drains and exits
    assert agent.wait(timeout(20)) == 0, agent_log.read_text()[-2000:]
    assert collector_process.stop() == 0
    assert [row[2] for row in collector_process.rows()] == ["hup/s"]
