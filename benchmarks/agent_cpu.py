"""Agent CPU per 1,000 readings/s: the ``Agent`` library and the ``telemetry agent`` process.

Against a collector with the ``null`` sink: ``agent_load.py`` (the library, batches of 500)
in its own process at 1,000 and 10,000 readings/s, its CPU measured from inside once the
agent has started; and ``telemetry agent`` with a ``simulated`` source (100 or 1,000 sensors
every 0.1 s, in-memory spool), its CPU read from /proc over a window after a warm-up.

    .venv/bin/python benchmarks/agent_cpu.py [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PYTHON, collector, loadavg, machine, tree_cpu

HERE = Path(__file__).resolve().parent
RATES = (1_000, 10_000)


def library(port: int, rate: int, duration: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            PYTHON,
            str(HERE / "agent_load.py"),
            "--port",
            str(port),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--id",
            f"cpu-{rate}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    report = json.loads(out)
    cores = report["cpu_seconds"] / report["seconds"]
    return {
        "what": "Agent library",
        "rate": report["sent"] / report["seconds"],
        "cores": cores,
        "acked": report["acked"],
        "sent": report["sent"],
    }


def process(port: int, rate: int, duration: float) -> dict[str, Any]:
    sensors = rate // 10
    with tempfile.TemporaryDirectory(prefix="telemetry-agent-cpu-") as tmp:
        config = Path(tmp) / "agent.toml"
        config.write_text(
            f'[agent]\nid = "cpu-proc-{rate}"\nendpoints = ["127.0.0.1:{port}"]\n'
            f'[log]\nlevel = "warning"\n'
            f'[[sources]]\ntype = "simulated"\nsensors = {sensors}\ninterval = 0.1\n'
        )
        proc = subprocess.Popen([PYTHON, "-m", "telemetry.cli", "agent", "--config", str(config)])
        try:
            time.sleep(2.0)  # start-up and warm-up
            cpu0, t0 = tree_cpu(proc.pid), time.perf_counter()
            time.sleep(duration)
            cpu, elapsed = tree_cpu(proc.pid) - cpu0, time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return {"what": "telemetry agent (simulated)", "rate": rate, "cores": cpu / elapsed}


def run_agent_cpu(duration: float) -> list[dict[str, Any]]:
    rows = []
    with collector(1) as col:
        for rate in RATES:
            rows.append(library(col.port, rate, duration))
            rows.append(process(col.port, rate, duration))
    for row in rows:
        row["per_1000"] = row["cores"] / (row["rate"] / 1000) * 100
        row["us"] = row["cores"] / row["rate"] * 1e6
        row["load"] = loadavg()
    return rows


def report(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'agent':<30}{'readings/s':>11}{'CPU %':>8}{'% per 1k/s':>12}{'µs/rdg':>8}"]
    for row in rows:
        lines.append(
            f"{row['what']:<30}{row['rate']:>11,.0f}{row['cores'] * 100:>8.1f}"
            f"{row['per_1000']:>12.2f}{row['us']:>8.1f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    args = parser.parse_args()
    print(f"# {machine()}")
    for line in report(run_agent_cpu(args.duration)):
        print(line)


if __name__ == "__main__":
    main()
