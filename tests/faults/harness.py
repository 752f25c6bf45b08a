"""The fault-injection harness: collector and agent processes, paced feeds, and the checks.

Every fault test runs real ``telemetry collect`` and ``telemetry agent`` processes. Each agent
is fed JSON lines on stdin by a thread at a fixed rate, so faults land while readings stream;
each reading's ``value`` is unique across the test (agent ``n`` gets ``n * 1_000_000 + i``).
At the end :func:`check_delivery` reads the SQLite sink(s) and asserts, per agent, that every
fed value is stored exactly once, under distinct reading ids whose seqs are contiguous and
whose indexes fill each batch, in feed order; :func:`check_ledger` asserts the agent's final
``ledger`` event says every reading was acked and none dropped or pending.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support import timeout

COMMAND = [sys.executable, "-m", "telemetry.cli"]

#: The seed of every random choice in the fault tests; override to replay another run.
SEED = int(os.environ.get("TELEMETRY_FAULT_SEED", "20261127"))

AGENTS = 3
READINGS = 50_000
#: Readings per second each agent is fed: the whole feed lasts READINGS / AGENTS / RATE s.
RATE = 2_500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_env() -> dict[str, str]:
    return {**os.environ, "TELEMETRY_LOG__FORMAT": "json"}


def events(log: Path, name: str | None = None) -> list[dict[str, Any]]:
    """The JSON log events in ``log`` (named ``name`` when given)."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if name is None or event.get("event") == name:
                found.append(event)
    return found


def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait (checking every 50 ms: the state is in other processes) until ``predicate()``."""
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what} (seed {SEED})")
        time.sleep(0.05)


class Collector:
    """``telemetry collect`` in a subprocess on a fixed port, restartable, writing ``db``."""

    def __init__(self, tmp_path: Path, name: str = "collector", sink_extra: str = "") -> None:
        self.name = name
        self.port = free_port()
        self.db = tmp_path / f"{name}.db"
        self.config = tmp_path / f"{name}.toml"
        self.config.write_text(
            f'[collector]\nid = "{name}"\nshutdown_timeout = 15\n'
            f"[ingest]\nport = {self.port}\n[http]\nenabled = false\n"
            f'[[sinks]]\ntype = "sqlite"\npath = "{self.db}"\n{sink_extra}\n'
        )
        self.log = tmp_path / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Collector:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*COMMAND, "collect", "--config", str(self.config)], stderr=log, env=process_env()
            )
        self.starts += 1
        deadline = time.monotonic() + timeout(15)
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} did not start listening") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, no goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout(10))

    def terminate(self) -> int:
        """SIGTERM (a drain) and the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout(30))

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def count(self, agent: str | None = None) -> int:
        """Rows in the sink now (of ``agent`` when given); 0 before the table exists."""
        if not self.db.exists():
            return 0
        db = sqlite3.connect(self.db, timeout=10)
        try:
            if agent is None:
                row = db.execute("SELECT count(*) FROM readings").fetchone()
            else:
                row = db.execute(
                    "SELECT count(*) FROM readings WHERE agent = ?", (agent,)
                ).fetchone()
            return int(row[0])
        except sqlite3.OperationalError:  # no table yet
            return 0
        finally:
            db.close()


def reading_line(agent: str, value: int) -> str:
    return json.dumps({"sensor": f"{agent}/probe-{value % 5}", "value": value, "unit": "C"}) + "\n"


class Agent:
    """``telemetry agent`` fed on stdin at a fixed rate, with a disk spool in ``tmp_path``."""

    def __init__(
        self,
        tmp_path: Path,
        number: int,
        endpoints: Sequence[str],
        count: int,
        *,
        ack_timeout: float = 10.0,
    ) -> None:
        self.id = f"agent-{number}"
        self.values = [number * 1_000_000 + i for i in range(count)]
        self.spool = tmp_path / f"{self.id}-spool.db"
        self.config = tmp_path / f"{self.id}.toml"
        self.config.write_text(
            f'[agent]\nid = "{self.id}"\nendpoints = {json.dumps(list(endpoints))}\n'
            "batch_size = 200\nflush_interval = 0.05\nwindow = 8\n"
            f"connect_timeout = 2\nack_timeout = {ack_timeout}\nheartbeat_interval = 1\n"
            "reconnect_min = 0.05\nreconnect_max = 0.5\nshutdown_timeout = 90\n"
            "ledger_interval = 2\n"
            f'[spool]\npath = "{self.spool}"\n'
            '[log]\nlevel = "info"\nformat = "json"\n'
            '[[sources]]\ntype = "stdin"\n'
        )
        self.log = tmp_path / f"{self.id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._feeder: threading.Thread | None = None

    def start(self, values: Sequence[int] | None = None, rate: float = RATE) -> Agent:
        """Start the process and a thread feeding ``values`` (default: all) at ``rate``/s."""
        values = self.values if values is None else values
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*COMMAND, "agent", "--config", str(self.config)],
                stdin=subprocess.PIPE,
                stderr=log,
                env=process_env(),
            )
        self._feeder = threading.Thread(
            target=self._feed, args=(self.proc, values, rate), daemon=True
        )
        self._feeder.start()
        return self

    def _feed(self, proc: subprocess.Popen[bytes], values: Sequence[int], rate: float) -> None:
        assert proc.stdin is not None
        chunk = 100
        started = time.monotonic()
        try:
            for n in range(0, len(values), chunk):
                lines = "".join(reading_line(self.id, v) for v in values[n : n + chunk])
                proc.stdin.write(lines.encode())
                proc.stdin.flush()
                delay = started + (n + chunk) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except (BrokenPipeError, ValueError, OSError):
            pass  # the agent was killed
        finally:  # EOF for a live agent; for a killed one, release the pipe all the same
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()

    def kill(self) -> None:
        """SIGKILL the agent mid-stream; its feeder stops at the broken pipe."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout(10))
        if self._feeder is not None:
            self._feeder.join(timeout(10))

    def wait(self, seconds: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout(seconds))

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def final_ledger(self) -> dict[str, Any]:
        """The ``ledger`` event the last run logged at exit."""
        finals = [e for e in events(self.log, "ledger") if e.get("final")]
        assert finals, f"{self.id} logged no final ledger:\n{self.log.read_text()[-3000:]}"
        return finals[-1]


def rows(dbs: Sequence[Path]) -> list[tuple[str | None, str, float, str]]:
    """``(id, agent, value, db name)`` of every row of every sink file."""
    found: list[tuple[str | None, str, float, str]] = []
    for path in dbs:
        db = sqlite3.connect(path)
        try:
            found.extend(
                (rid, agent, value, path.name)
                for rid, agent, value in db.execute("SELECT id, agent, value FROM readings")
            )
        finally:
            db.close()
    return found


def check_delivery(dbs: Sequence[Path], agents: Sequence[Agent]) -> dict[str, dict[str, int]]:
    """Every agent's values stored exactly once, by reading id; returns rows per agent per db."""
    stored = rows(dbs)
    ids = [row[0] for row in stored]
    assert None not in ids, f"fire-and-forget rows in the sink (seed {SEED})"
    duplicates = len(ids) - len(set(ids))
    assert duplicates == 0, f"{duplicates} reading ids stored twice (seed {SEED})"
    expected_agents = {agent.id for agent in agents}
    strangers = {row[1] for row in stored} - expected_agents
    assert not strangers, f"rows from unknown agents {strangers}"
    per_db: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for agent in agents:
        mine = [row for row in stored if row[1] == agent.id]
        for row in mine:
            per_db[agent.id][row[3]] += 1
        values = sorted(int(row[2]) for row in mine)
        if values != agent.values:
            have = set(values)
            missing = [v for v in agent.values if v not in have]
            extra = len(values) - len(have)
            raise AssertionError(
                f"{agent.id}: {len(missing)} readings missing (first {missing[:5]}), "
                f"{extra} stored twice under different ids (seed {SEED})"
            )
        # Ids: "<agent>:<seq>:<index>". Seqs contiguous (the disk spool persists next_seq),
        # each batch's indexes 0..n-1, and values in feed order along (seq, index).
        by_seq: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for rid, _, value, _ in mine:
            assert rid is not None
            name, seq, index = rid.rsplit(":", 2)
            assert name == agent.id, rid
            by_seq[int(seq)].append((int(index), int(value)))
        seqs = sorted(by_seq)
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"{agent.id}: a seq gap (seed {SEED})"
        ordered: list[int] = []
        for seq in seqs:
            batch = sorted(by_seq[seq])
            indexes = [index for index, _ in batch]
            assert indexes == list(range(len(batch))), f"{agent.id}: index gap in seq {seq}"
            ordered.extend(value for _, value in batch)
        assert ordered == agent.values, f"{agent.id}: readings out of feed order (seed {SEED})"
    return {agent: dict(counts) for agent, counts in per_db.items()}


def check_ledger(agent: Agent) -> dict[str, Any]:
    """The agent's final ledger: all produced readings acked, none dropped, rejected, pending."""
    ledger = agent.final_ledger()
    expected = len(agent.values)
    got = {key: ledger[key] for key in ("produced", "acked", "rejected", "dropped", "pending")}
    assert got == {
        "produced": expected,
        "acked": expected,
        "rejected": 0,
        "dropped": 0,
        "pending": 0,
    }, f"{agent.id} ledger {got} (seed {SEED})"
    return ledger


def split(total: int, parts: int) -> list[int]:
    """``total`` readings spread over ``parts`` agents."""
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]
