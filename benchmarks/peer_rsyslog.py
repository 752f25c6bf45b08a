"""The peer to beat: rsyslog receiving the same JSON readings over persistent TCP, parsing
them and writing them to a file; against ``telemetry collect --workers N`` doing the same
work (the ``jsonl`` sink: every reading parsed, validated and written to a file, batches
acked once written) in the same run, and with the ``null`` sink (ingest alone, context).

rsyslog (installed with apt-get when missing) runs in the foreground with its own config and
work directory in a temporary directory: ``imtcp`` on a free high port (octet-counted framing,
RFC 6587), a ruleset with its own queue and 2 worker threads, ``mmjsonparse`` and ``omfile``
writing the parsed JSON (``$!all-json``), one line per message. Each message is the SAME bytes
of JSON the telemetry scenarios send, as a syslog line with a minimal RFC 5424 header and the
``@cee:`` cookie mmjsonparse looks for: ``<len> <14>1 - - - - - - @cee:{...}``. rsyslog has
finished when its output file holds as many lines as were sent. For each connection count the
telemetry scenarios and rsyslog run back to back, so their ratio is from one moment; every
scenario, rsyslog too, runs 3 interleaved rounds and keeps its best.

    .venv/bin/python benchmarks/peer_rsyslog.py [--workers 2] [--readings 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    collector,
    effective_workers,
    free_port,
    loadavg,
    machine,
    stop,
    tree_cpu,
    verdict,
)
from end_to_end import destination
from ingest import CONNECTIONS, HEADER, MODES, ROUNDS, best_of, format_row, measure, pool

from telemetry.bench import Payloads
from telemetry.runtime import run_async

SYSLOG_PREFIX = b"<14>1 - - - - - - @cee:"
#: Telemetry -> jsonl over rsyslog -> omfile, the same work (issue "Fast all the way").
TARGETS = {("jsonl", "batched"): 1.5, ("jsonl", "fire-and-forget"): 1.0}

CONFIG = """\
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
module(load="mmjsonparse")
template(name="parsed" type="list") {{ property(name="$!all-json") constant(value="\\n") }}
ruleset(name="bench" queue.type="FixedArray" queue.size="100000"
        queue.dequeueBatchSize="1024" queue.workerThreads="2") {{
  action(type="mmjsonparse")
  action(type="omfile" file="{out}" template="parsed" ioBufferSize="256k"
         flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" port="{port}" ruleset="bench")
"""


def ensure_rsyslog() -> str:
    """The path of ``rsyslogd``, installing the Debian package when it is missing."""
    found = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    if found is None:
        print("# rsyslogd not found: apt-get install -y rsyslog", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "rsyslog"], check=True, stdout=subprocess.DEVNULL
        )
        found = shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("rsyslogd is not installed")
    return found


def rsyslog_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].strip() if out else "rsyslogd (unknown version)"


@dataclass
class Rsyslog:
    pid: int
    port: int
    out: Path
    offset: int = 0
    lines: int = 0

    def count_lines(self) -> int:
        """Lines in the output file so far (reads only what is new)."""
        with contextlib.suppress(FileNotFoundError), open(self.out, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
            self.offset += len(data)
            self.lines += data.count(b"\n")
        return self.lines


@contextlib.contextmanager
def rsyslog() -> Iterator[Rsyslog]:
    """rsyslogd in the foreground with its own config and work directory; stopped after."""
    binary = ensure_rsyslog()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rsyslog-bench-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        out = Path(tmp) / "out.jsonl"
        conf = Path(tmp) / "rsyslog.conf"
        conf.write_text(CONFIG.format(work=work, out=out, port=port))
        check = subprocess.run(
            [binary, "-N1", "-f", str(conf)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"rsyslog refuses its config: {check.stderr.strip()}")
        proc = subprocess.Popen(
            [binary, "-n", "-f", str(conf), "-i", str(Path(tmp) / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("rsyslogd did not start") from None
                    time.sleep(0.05)
            yield Rsyslog(proc.pid, port, out)
        finally:
            stop(proc, 10)


def octet_counted(payloads: Payloads) -> tuple[bytes, list[int]]:
    """The pool's readings as RFC 6587 octet-counted syslog frames, and their offsets."""
    frames = []
    for reading in payloads.readings:
        message = SYSLOG_PREFIX + reading
        frames.append(b"%d %s" % (len(message), message))
    offsets = [0]
    for frame in frames:
        offsets.append(offsets[-1] + len(frame))
    return b"".join(frames), offsets


async def _feed(port: int, block: bytes, offsets: list[int], count: int) -> int:
    """Send ``count`` messages over one connection, the block repeated; return bytes sent."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    n = len(offsets) - 1
    sent_bytes = 0
    while count > 0:
        take = min(count, n)
        data = block if take == n else block[: offsets[take]]
        writer.write(data)
        sent_bytes += len(data)
        count -= take
        await writer.drain()
    writer.close()
    await writer.wait_closed()
    return sent_bytes


def measure_rsyslog(rs: Rsyslog, payloads: Payloads, conns: int, readings: int) -> dict[str, Any]:
    """Send ``readings`` messages over ``conns`` connections; time until all are written."""
    block, offsets = octet_counted(payloads)
    share = readings // conns
    target = rs.count_lines() + share * conns

    async def run() -> tuple[float, int]:
        started = time.perf_counter()
        senders = asyncio.gather(*(_feed(rs.port, block, offsets, share) for _ in range(conns)))
        # rsyslog tells nobody when it has written a line: poll its file (cheap, only new bytes).
        while rs.count_lines() < target:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
        sent = sum(await senders)
        return elapsed, sent

    cpu, own = tree_cpu(rs.pid), time.process_time()
    elapsed, sent_bytes = run_async(lambda: asyncio.wait_for(run(), 120))
    cpu, own = tree_cpu(rs.pid) - cpu, time.process_time() - own
    count = share * conns
    return {
        "scenario": "rsyslog (imtcp+mmjsonparse)",
        "mode": "rsyslog",
        "workers": "-",
        "conns": conns,
        "readings": count,
        "readings_per_s": count / elapsed,
        "mib_per_s": sent_bytes / elapsed / 2**20,
        "collector_us": cpu / count * 1e6,
        "collector_cores": cpu / elapsed,
        "loadgen_us": own / count * 1e6,
        "loadgen_cores": own / elapsed,
        "load": loadavg(),
    }


def run_peer(
    workers: int,
    readings: int,
    payloads: Payloads,
    conns_list: tuple[int, ...] = CONNECTIONS,
    kinds: tuple[str, ...] = ("jsonl", "null"),
) -> list[dict[str, Any]]:
    """For each connection count: telemetry writing to each of ``kinds`` (batched,
    fire-and-forget), then rsyslog writing its file; every scenario once per round, best of
    ``ROUNDS``. ``jsonl`` is the same work as rsyslog's (parse, write every message to a
    file); ``null`` is ingest alone."""
    with contextlib.ExitStack() as stack:
        rs = stack.enter_context(rsyslog())
        cols = {
            kind: stack.enter_context(
                collector(workers, sinks=stack.enter_context(destination((kind,))))
            )
            for kind in kinds
        }
        scenarios: list[Callable[[], dict[str, Any]]] = []

        def run(kind: str, conns: int, batch: int) -> dict[str, Any]:
            col = cols[kind]
            row = measure(col.port, col.cpu, payloads, conns, batch, readings, workers)
            row["sink"] = kind
            return row

        for conns in conns_list:
            scenarios += [
                functools.partial(run, kind, conns, batch) for kind in kinds for _, batch in MODES
            ]
            scenarios.append(functools.partial(measure_rsyslog, rs, payloads, conns, readings))
        rows = best_of(ROUNDS, scenarios)
    for row in rows:
        row.setdefault("sink", "omfile")
        print(f"{row['sink']:<7}" + format_row(row), flush=True)
    return rows


def peer_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Telemetry -> jsonl against rsyslog -> omfile (equal work: the targets), and the
    ``null`` sink (ingest alone, for context), per connection count."""
    lines = []
    for conns in sorted({r["conns"] for r in rows}):
        at = [r for r in rows if r["conns"] == conns]
        peer = next(r for r in at if r["mode"] == "rsyslog")
        for row in at:
            if row["mode"] == "rsyslog":
                continue
            target = TARGETS.get((row["sink"], row["mode"]))
            ratio = row["readings_per_s"] / peer["readings_per_s"]
            per_cpu = peer["collector_us"] / row["collector_us"]
            judged = (
                f"(target >= {target}) {verdict(ratio >= target)}"
                if target
                else "(ingest alone, context)"
            )
            lines.append(
                f"{row['mode']} -> {row['sink']}, --workers {row['workers']}, {conns:>2} conns / "
                f"rsyslog -> omfile = {ratio:.2f} {judged}; per CPU second {per_cpu:.2f}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="telemetry collect --workers")
    parser.add_argument("--readings", type=int, default=200_000, help="per scenario")
    args = parser.parse_args()
    workers = effective_workers(args.workers)
    print(f"# {machine()}")
    print(f"# {rsyslog_version(ensure_rsyslog())}")
    print(f"{'sink':<7}" + HEADER)
    rows = run_peer(workers, args.readings, pool())
    for line in peer_ratios(rows):
        print(line)


if __name__ == "__main__":
    main()
