"""SIGHUP on a real collector process while agents stream: sinks are added, removed and
replaced without a dropped connection or a lost or doubled reading, and bad configs are refused.

Each agent submits its batches in seq order on one connection, and a reload swaps the sinks
between two batches. So, per agent, a sink that was configured from the start holds a prefix
of the agent's readings (in seq order), a sink added by a reload holds a suffix, and a sink
replaced in between hands over at one seq: the old file holds the prefix, the new one the
rest, and no reading is in both.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.faults.harness import (
    COMMAND,
    Agent,
    Collector,
    check_delivery,
    check_ledger,
    events,
    free_port,
    process_env,
    rows,
    wait_until,
)
from tests.support import timeout

AGENTS = 3
READINGS = 6_000  # per agent
RATE = 600  # per agent per second: the feeds last 10 s, the reloads happen within them


def write_config(collector: Collector, http_port: int, sinks: str) -> None:
    collector.config.write_text(
        f'[collector]\nid = "{collector.name}"\nshutdown_timeout = 15\n'
        f"[ingest]\nport = {collector.port}\n"
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
        f"{sinks}"
    )


def sqlite(path: Path, name: str = "sqlite") -> str:
    return f'[[sinks]]\ntype = "sqlite"\nname = "{name}"\npath = "{path}"\nflush_interval = 0.02\n'


def jsonl(name: str, path: Path) -> str:
    return f'[[sinks]]\ntype = "jsonl"\nname = "{name}"\npath = "{path}"\n'


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    """The value of the sample line ``name`` (with its labels) in a scrape."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {name}")


def sighup(collector: Collector, event: str, count: int) -> dict[str, Any]:
    """Send SIGHUP and wait for the ``count``-th ``event`` of the collector's log."""
    assert collector.proc is not None
    collector.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(events(collector.log, event)) >= count, 30, event)
    return events(collector.log, event)[count - 1]


def jsonl_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def positions(ids: Iterable[str]) -> dict[str, list[tuple[int, int]]]:
    """``(seq, index)`` of each reading id, per agent, sorted."""
    found: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for rid in ids:
        agent, seq, index = rid.rsplit(":", 2)
        found[agent].append((int(seq), int(index)))
    return {agent: sorted(keys) for agent, keys in found.items()}


def assert_split(
    every: dict[str, list[tuple[int, int]]], head: Sequence[str], tail: Sequence[str]
) -> None:
    """Per agent, ``head`` holds a prefix of its readings and ``tail`` the rest from some
    point on; together they hold all of them, each id at most once in each."""
    assert len(set(head)) == len(head), "an id stored twice in the first sink"
    assert len(set(tail)) == len(tail), "an id stored twice in the second sink"
    first, last = positions(head), positions(tail)
    for agent, keys in every.items():
        mine_head, mine_tail = first.get(agent, []), last.get(agent, [])
        assert mine_head, f"{agent}: nothing in the first sink"
        assert mine_tail, f"{agent}: nothing in the second sink: the reload came too late"
        assert mine_head == keys[: len(mine_head)], f"{agent}: the first sink is not a prefix"
        assert mine_tail == keys[len(keys) - len(mine_tail) :], f"{agent}: not a suffix"
        assert set(mine_head) | set(mine_tail) == set(keys), f"{agent}: readings in neither"


def test_sighup_adds_removes_and_replaces_sinks_while_agents_stream(tmp_path: Path) -> None:
    """While three agents stream, SIGHUP adds a jsonl sink, removes another, moves the sqlite
    file, and is refused for a broken file and for a sink that cannot start: no connection is
    dropped, every reading is acked and stored exactly once in the sinks of its time."""
    http_port = free_port()
    collector = Collector(tmp_path)
    old_db, new_db = collector.db, tmp_path / "b.db"
    j1, j2 = tmp_path / "j1.jsonl", tmp_path / "j2.jsonl"
    write_config(collector, http_port, sqlite(old_db) + jsonl("j1", j1))
    collector.start()
    agents = [
        Agent(tmp_path, n, [collector.endpoint], READINGS).start(rate=RATE)
        for n in range(1, AGENTS + 1)
    ]
    try:
        every_agent = lambda count: all(count(a.id) for a in agents)  # noqa: E731
        wait_until(lambda: every_agent(collector.count), 20, "every agent's first readings")

        write_config(collector, http_port, sqlite(old_db) + jsonl("j1", j1) + jsonl("j2", j2))
        added = sighup(collector, "config_reloaded", 1)
        assert (added["sinks_kept"], added["sinks_started"], added["sinks_stopped"]) == (
            ["sqlite", "j1"],
            ["j2"],
            [],
        )
        in_j2 = lambda agent: j2.exists() and f'"{agent}:' in j2.read_text()  # noqa: E731
        wait_until(lambda: every_agent(in_j2), 20, "every agent's readings in j2")

        write_config(collector, http_port, sqlite(old_db) + jsonl("j2", j2))
        removed = sighup(collector, "config_reloaded", 2)
        assert (removed["sinks_started"], removed["sinks_stopped"]) == ([], ["j1"])
        assert sighup_settled(collector, 1)["sinks"] == ["j1"]

        write_config(collector, http_port, sqlite(new_db) + jsonl("j2", j2))
        moved = sighup(collector, "config_reloaded", 3)
        assert (moved["sinks_kept"], moved["sinks_started"], moved["sinks_stopped"]) == (
            ["j2"],
            ["sqlite"],
            ["sqlite"],
        )
        assert sighup_settled(collector, 2)["sinks"] == ["sqlite"]
        in_new = lambda agent: any(row[1] == agent for row in rows([new_db]))  # noqa: E731
        wait_until(lambda: every_agent(in_new), 20, "every agent's readings in the new file")

        good = collector.config.read_text()
        collector.config.write_text(good + "[ingest\n")
        broken = sighup(collector, "reload_refused", 1)
        assert "not valid TOML" in broken["errors"]

        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        write_config(collector, http_port, sqlite(new_db) + sqlite(blocker / "x.db", "extra"))
        failed = sighup(collector, "reload_refused", 2)
        assert "sink 'extra' did not start" in failed["errors"], failed
        collector.config.write_text(good)

        status, body = get(http_port, "/readyz")
        assert (status, json.loads(body)["sinks"]) == (200, {"sqlite": True, "j2": True})
        for agent in agents:
            assert agent.wait(60) == 0, agent.log.read_text()[-3000:]
        scrape = get(http_port, "/metrics")[1]
        # One connection per agent, plus the harness's probe of the port at start-up.
        assert metric(scrape, 'telemetry_connections_total{outcome="accepted"}') == AGENTS + 1
        assert 'telemetry_sink_queue_readings{sink="j1"}' not in scrape  # gauges: the new set
        assert collector.terminate() == 0
    finally:
        for agent in agents:
            agent.cleanup()
        collector.cleanup()

    for agent in agents:
        check_ledger(agent)
        assert len(events(agent.log, "connected")) == 1, f"{agent.id} reconnected"
    check_delivery([old_db, new_db], agents)  # each reading once, in one of the two files
    ids = sorted(str(row[0]) for row in rows([old_db, new_db]))
    every = positions(ids)
    assert_split(every, [str(r[0]) for r in rows([old_db])], [str(r[0]) for r in rows([new_db])])
    assert_split(every, jsonl_ids(j1), jsonl_ids(j2))
    assert len(events(collector.log, "config_reloaded")) == 3
    assert len(events(collector.log, "reload_refused")) == 2


def sighup_settled(collector: Collector, count: int) -> dict[str, Any]:
    """The ``count``-th ``sinks_retired`` event (the stopped sinks drained and closed)."""
    wait_until(lambda: len(events(collector.log, "sinks_retired")) >= count, 30, "a drain")
    return events(collector.log, "sinks_retired")[count - 1]


def test_workers_validate_once_and_each_worker_reloads(tmp_path: Path) -> None:
    """--workers 2: a broken config is refused once by the supervisor (no worker hears of it);
    a good one is applied by each worker, which starts the new sink."""
    port, http_port = free_port(), free_port()
    config = tmp_path / "w.toml"
    base = f"[ingest]\nport = {port}\n[http]\nport = {http_port}\n"
    config.write_text(base + '[[sinks]]\ntype = "null"\n')
    log = tmp_path / "w.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [*COMMAND, "collect", "--config", str(config), "--workers", "2"],
            stderr=stderr,
            env=process_env(),
        )
    try:
        wait_until(lambda: get_ok(http_port, "/readyz"), 30, "the workers")
        config.write_text(base + "[[sinks]]\ntype = 7\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: bool(events(log, "reload_refused")), 20, "the refusal")
        time.sleep(timeout(0.5))  # a worker signalled by mistake would log within this
        refused = events(log, "reload_refused")
        assert len(refused) == 1, refused
        assert "worker" not in refused[0], refused
        assert [e for e in events(log, "reload_requested") if "worker" in e] == []

        sink = tmp_path / "w.jsonl"
        config.write_text(base + f'[[sinks]]\ntype = "null"\n{jsonl("j", sink)}')
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(events(log, "config_reloaded")) == 2, 30, "both workers")
        reloaded = events(log, "config_reloaded")
        assert sorted(e["worker"] for e in reloaded) == [0, 1]
        assert all(e["sinks_started"] == ["j"] for e in reloaded)
        scrape = get(http_port, "/metrics")[1]  # the workers' metrics, merged
        assert 'telemetry_sink_healthy{sink="j"' in scrape
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout(30)) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def get_ok(port: int, path: str) -> bool:
    try:
        return get(port, path)[0] == 200
    except OSError:
        return False
