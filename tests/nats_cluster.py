"""A real 3-node NATS JetStream cluster for tests: the installed ``nats-server`` binary on free
ports, each node with its own store directory under the test's ``tmp_path``.

Not the system service: the cluster belongs to the test, which may SIGKILL a node
(:meth:`NatsCluster.kill`) and bring it back on the same ports and store
(:meth:`NatsCluster.start_node`). :meth:`NatsCluster.stop` kills every node. Without
``nats-server`` the test is skipped, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import nats
import nats.errors
import pytest

from tests.support import timeout


def nats_server_binary() -> str:
    """The installed ``nats-server`` (skip, or fail under CI, when there is none)."""
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
    )
    if found is None:
        message = "nats-server is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: a missing service fails the run)")
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsCluster:
    """``size`` JetStream nodes routed to each other on 127.0.0.1."""

    def __init__(self, tmp_path: Path, size: int = 3) -> None:
        self.binary = nats_server_binary()
        self.dir = tmp_path / "nats"
        self.ports = [free_port() for _ in range(size)]
        self.routes = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self.starts = [0] * size
        routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in self.routes)
        for n in range(size):
            store = self.dir / f"n{n}"
            store.mkdir(parents=True)
            (self.dir / f"n{n}.conf").write_text(
                f'server_name: "n{n}"\n'
                f"listen: 127.0.0.1:{self.ports[n]}\n"
                f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, '
                "max_file_store: 1GB }\n"
                f'cluster {{ name: "test-{os.getpid()}", listen: 127.0.0.1:{self.routes[n]}, '
                f"routes: [{routes}] }}\n"
            )

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (what ``servers`` lists)."""
        return [f"nats://127.0.0.1:{port}" for port in self.ports]

    def start(self) -> NatsCluster:
        """Start every node and wait until JetStream answers with a meta leader."""
        for n in range(len(self.ports)):
            self.start_node(n)
        self.wait_ready()
        return self

    def start_node(self, n: int) -> None:
        log = (self.dir / f"n{n}.log").open("ab")
        with log:
            self.procs[n] = subprocess.Popen(
                [self.binary, "-c", str(self.dir / f"n{n}.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts[n] += 1
        deadline = time.monotonic() + timeout(15)
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ports[n]), 0.2).close()
                return
            except OSError:
                proc = self.procs[n]
                assert proc is not None
                assert proc.poll() is None, self.log(n)
                if time.monotonic() > deadline:
                    raise AssertionError(f"nats node n{n} did not listen:\n{self.log(n)}") from None
                time.sleep(0.05)

    def kill(self, n: int) -> None:
        """SIGKILL node ``n``."""
        proc = self.procs[n]
        assert proc is not None
        proc.kill()
        proc.wait(timeout(10))
        self.procs[n] = None

    def log(self, n: int) -> str:
        return (self.dir / f"n{n}.log").read_text(errors="replace")[-3000:]

    def wait_ready(self, seconds: float = 30) -> None:
        """Until JetStream's API answers (the cluster has elected a meta leader)."""
        deadline = time.monotonic() + timeout(seconds)
        while True:
            if asyncio.run(self._answers()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"JetStream cluster not ready:\n{self.log(0)}")
            time.sleep(0.2)

    async def _answers(self) -> bool:
        try:
            nc = await nats.connect(self.urls, connect_timeout=2, max_reconnect_attempts=0)
        except (nats.errors.Error, OSError):
            return False
        try:
            await nc.jetstream(timeout=2).account_info()
            return True
        except (nats.errors.Error, OSError, TimeoutError):
            return False
        finally:
            await nc.close()

    def stream_leader(self, stream: str) -> int:
        """The index of the node leading ``stream``."""

        async def leader() -> str:
            nc = await nats.connect(self.urls)
            try:
                info = await nc.jetstream().stream_info(stream)
                assert info.cluster is not None
                assert info.cluster.leader is not None
                return info.cluster.leader
            finally:
                await nc.close()

        return int(asyncio.run(leader()).removeprefix("n"))

    def stop(self) -> None:
        """Kill every node still running."""
        for n, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            self.procs[n] = None
