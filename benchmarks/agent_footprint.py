"""Footprint of the ``telemetry`` command: RSS of an agent and a collector, and start-up time.

Against a collector on SQLite (the default sink, in a temporary directory):

* ``telemetry agent --source system --interval 1`` (one sample of every system metric per
  second: "1 Hz") and ``--interval 0.01`` ("100 Hz"), each for ``--seconds`` (60); the
  agent's RSS 5 s after its start (imports, config, the first batches acked) and at the end,
  its peak (VmHWM), and the readings it produced and had acked;
* the collector's RSS after start and after taking both agents' readings;
* wall time of ``telemetry --help``, ``telemetry agent --help`` and ``telemetry collect
  --help`` (the console script, a fresh interpreter each time), best of ``--repeat`` (10);
* for each command, what ``python -X importtime`` counts for the modules its ``run`` imports
  (best of 5) and the RSS of an interpreter that imported them.

    .venv/bin/python benchmarks/agent_footprint.py [--seconds 60] [--repeat 10] [--json out.json]

``--bin DIR`` takes ``telemetry`` and ``python`` from another install (e.g. an agent-only
venv, ``/opt/telemetry/bin``) for every figure but the collector, which this venv runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PYTHON, collector, machine

#: Where ``telemetry`` and ``python`` of the install measured are (``--bin``).
BIN = Path(PYTHON).parent
MIB = 1024 * 1024
#: Sample intervals of the ``system`` source, by the name shown.
RATES = {"1 Hz": 1.0, "100 Hz": 0.01}
#: What each command's ``run`` imports before it starts (the import-time rows).
COMMAND_IMPORTS = {
    "agent": "import telemetry.cli; from telemetry.config import AgentConfig; "
    "import telemetry.agent, telemetry.log, telemetry.runtime, telemetry.agent.sources.system",
    "collect": "import telemetry.cli; from telemetry.config import CollectorConfig; "
    "import telemetry.collector, telemetry.collector.workers, telemetry.log, telemetry.runtime",
}
#: Seconds after which "after start" is read: imports, config, sources, the first batches acked.
START_SECONDS = 5.0
SQLITE_SINK = '[[sinks]]\ntype = "sqlite"\npath = "telemetry.db"\n'


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (VmRSS, VmHWM)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def run_agent(port: int, interval: float, seconds: float) -> dict[str, Any]:
    """``telemetry agent --source system`` for ``seconds``; its RSS at start and end."""
    with tempfile.TemporaryDirectory(prefix="telemetry-footprint-") as tmp:
        log = Path(tmp) / "agent.log"
        argv = [
            str(BIN / "telemetry"),
            "agent",
            "--source",
            "system",
            "--interval",
            str(interval),
            "--endpoint",
            f"127.0.0.1:{port}",
            "--id",
            f"footprint-{interval:g}",
        ]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                argv,
                stderr=fh,
                env={**os.environ, "TELEMETRY_LOG__LEVEL": "info", "TELEMETRY_LOG__FORMAT": "json"},
            )
            try:
                started = time.monotonic()
                time.sleep(START_SECONDS)  # start-up: config, sources, connection, first acks
                start_rss = status_kib(proc.pid, "VmRSS")
                time.sleep(max(0.0, seconds - (time.monotonic() - started)))
                end_rss = status_kib(proc.pid, "VmRSS")
                peak = status_kib(proc.pid, "VmHWM")
            finally:
                proc.terminate()
                proc.wait(60)
        ledger = [
            json.loads(line)
            for line in log.read_text().splitlines()
            if line.startswith("{") and '"ledger"' in line
        ]
    final = ledger[-1] if ledger else {}
    return {
        "interval": interval,
        "seconds": seconds,
        "rss_start_mib": start_rss / 1024,
        "rss_end_mib": end_rss / 1024,
        "rss_peak_mib": peak / 1024,
        "readings": final.get("produced", 0),
        "acked": final.get("acked", 0),
        "exit": proc.returncode,
    }


def wall(argv: list[str], repeat: int) -> float:
    """Best wall time of running ``argv`` to completion, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def import_figures(code: str, repeat: int = 5) -> dict[str, float]:
    """Cumulative ``-X importtime`` of ``code`` (best of ``repeat``) and the RSS after it."""
    best = float("inf")
    for _ in range(repeat):
        err = subprocess.run(
            [str(BIN / "python"), "-X", "importtime", "-c", code],
            check=True,
            capture_output=True,
            text=True,
        ).stderr
        total = 0
        for line in err.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip():
                with_children = parts[1].strip()
                if with_children.isdigit() and not parts[2].startswith("  "):
                    total += int(with_children)  # top-level imports only: no double counting
        best = min(best, total / 1e6)
    probe = (
        f"{code}\nimport re\n"
        "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    out = subprocess.run(
        [str(BIN / "python"), "-c", probe], check=True, capture_output=True, text=True
    )
    return {"import_s": best, "rss_mib": int(out.stdout.split()[-1]) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per agent run (60)")
    parser.add_argument("--repeat", type=int, default=10, help="runs of each --help (best of)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--bin", type=Path, help="bin directory of the install to measure")
    args = parser.parse_args()
    global BIN
    if args.bin is not None:
        BIN = args.bin.resolve()
    print(f"# measuring {BIN / 'telemetry'}")
    print(f"# {machine()}")
    results: dict[str, Any] = {"machine": machine()}

    bare = import_figures("pass")
    print(f"# bare interpreter: {bare['rss_mib']:.1f} MiB RSS")
    results["bare_rss_mib"] = bare["rss_mib"]

    print("\n## start-up: wall time, best of", args.repeat)
    help_rows = {}
    telemetry = str(BIN / "telemetry")
    for argv in ([], ["agent"], ["collect"]):
        name = " ".join(["telemetry", *argv, "--help"])
        help_rows[name] = wall([telemetry, *argv, "--help"], args.repeat)
        print(f"{name:<28} {help_rows[name] * 1000:6.0f} ms")
    results["help_s"] = help_rows

    print("\n## what each command imports to run: -X importtime (best of 5), RSS after")
    imports = {}
    for name, code in COMMAND_IMPORTS.items():
        try:
            imports[name] = import_figures(code)
        except subprocess.CalledProcessError:  # an agent-only install: no collector extra
            print(f"telemetry {name:<8} (cannot import: not installed here)")
            continue
        print(
            f"telemetry {name:<8} {imports[name]['import_s'] * 1000:6.0f} ms "
            f"{imports[name]['rss_mib']:6.1f} MiB"
        )
    results["imports"] = imports

    print(f"\n## RSS (MiB) of telemetry agent --source system, {args.seconds:g} s per rate")
    print(
        f"{'rate':<8} {'after start':>11} {'at the end':>10} {'peak':>6} "
        f"{'readings':>9} {'acked':>9}"
    )
    agents = {}
    with collector(sinks=SQLITE_SINK) as running:
        collect_start = running.rss() / MIB
        for name, interval in RATES.items():
            row = run_agent(running.port, interval, args.seconds)
            agents[name] = row
            print(
                f"{name:<8} {row['rss_start_mib']:11.1f} {row['rss_end_mib']:10.1f} "
                f"{row['rss_peak_mib']:6.1f} {row['readings']:9,} {row['acked']:9,}",
                flush=True,
            )
        collect_end = running.rss() / MIB
    print(
        f"\n## telemetry collect (SQLite sink): {collect_start:.1f} MiB after start, "
        f"{collect_end:.1f} MiB after both agents"
    )
    results["agent"] = agents
    results["collect"] = {"rss_start_mib": collect_start, "rss_end_mib": collect_end}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
