"""What every benchmark script shares: starting a collector, CPU and memory of a process tree.

The scripts run as ``.venv/bin/python benchmarks/<name>.py``, so this directory is on
``sys.path`` and they import this module as ``common``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
NULL_SINK = '[[sinks]]\ntype = "null"\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loadavg() -> str:
    """The 1-minute load average: other work on a shared machine shows here."""
    return f"{os.getloadavg()[0]:.2f}"


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load average {loadavg()}"
    )


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (a collector's supervisor and its workers)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the process and its descendants."""
    total = 0.0
    for proc in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def tree_rss(pid: int) -> int:
    """Resident bytes of the process and its descendants."""
    total = 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def raise_nofile() -> int:
    """Raise this process's open-file limit (inherited by children) to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def workers_supported() -> bool:
    """True when ``telemetry collect`` has ``--workers``."""
    out = subprocess.run(
        [PYTHON, "-m", "telemetry.cli", "collect", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return "--workers" in out


def effective_workers(requested: int) -> int:
    if requested > 1 and not workers_supported():
        print(f"# telemetry collect has no --workers yet: running 1 worker, not {requested}")
        return 1
    return requested


@dataclass
class RunningCollector:
    pid: int
    port: int
    http_port: int
    workers: int

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def rss(self) -> int:
        return tree_rss(self.pid)


@contextlib.contextmanager
def collector(
    workers: int = 1,
    sinks: str = NULL_SINK,
    ingest: str = "",
    startup: float = 30.0,
    cpus: str | None = None,
) -> Iterator[RunningCollector]:
    """``telemetry collect`` in a subprocess on free ports, ready when yielded; drained after.
    ``cpus``: pin it (and its workers) to these CPUs (``taskset -c``)."""
    port, http_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as tmp:
        config = Path(tmp) / "collector.toml"
        config.write_text(
            f"[ingest]\nport = {port}\n{ingest}\n[http]\nport = {http_port}\n"
            f'[log]\nlevel = "warning"\n{sinks}'
        )
        argv = [PYTHON, "-m", "telemetry.cli", "collect", "--config", str(config)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        proc = subprocess.Popen(argv, cwd=tmp)
        try:
            _wait_ready(proc, http_port, startup)
            yield RunningCollector(proc.pid, port, http_port, workers)
        finally:
            stop(proc, 30)


def stop(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM ``proc``; SIGKILL it if it has not exited after ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], http_port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the collector exited with status {proc.returncode}")
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{http_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"the collector was not ready within {timeout:g} s")


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Wait until ``proc`` accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s") from None
            time.sleep(0.05)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"
