"""A live collector under generated garbage: whatever one client throws at it, a well-behaved
agent's acks keep flowing and the collector's memory stays bounded (docs/security.md)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry.protocol import FrameDecoder, encode_frame
from tests.integration.test_end_to_end import CollectorProcess
from tests.support import timeout

pytestmark = pytest.mark.slow

_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_reading = st.fixed_dictionaries(
    {"sensor": st.text(max_size=300), "value": st.one_of(st.floats(), st.integers(), st.text())},
    optional={"unit": st.text(max_size=40), "tags": st.dictionaries(st.text(), st.text())},
)
_payload = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda obj: json.dumps(obj).encode()),
    _reading.map(lambda r: json.dumps(r).encode()),
    st.builds(
        lambda agent, token: json.dumps({"type": "hello", "agent": agent, "token": token}).encode(),
        st.text(max_size=140),
        st.none() | st.text(max_size=10),
    ),
    st.builds(
        lambda seq, readings: json.dumps(
            {"type": "batch", "seq": seq, "readings": readings}
        ).encode(),
        st.integers(min_value=-2, max_value=2**40),
        st.lists(_reading, max_size=30),
    ),
)
#: Whole frames, bad headers, and fragments cut anywhere.
_chunk = st.one_of(
    _payload.map(encode_frame),
    st.binary(min_size=10, max_size=10),
    st.sampled_from([b"2000000000", b"-000000001", b"   \t    1", b"99        "]),
    st.binary(max_size=64),
)


class GoodAgent(threading.Thread):
    """Sends a batch, waits for its ack, again and again; notes the longest wait."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.acked = 0
        self.longest = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout(30)) as sock:
                decoder = FrameDecoder()
                hello = {"type": "hello", "agent": "good", "protocol": 1}
                sock.sendall(encode_frame(json.dumps(hello).encode()))
                self._next(sock, decoder)
                seq = 0
                while not self.stop.is_set():
                    batch = {
                        "type": "batch",
                        "seq": seq,
                        "readings": [{"sensor": "good/s", "value": seq + i} for i in range(10)],
                    }
                    started = time.monotonic()
                    sock.sendall(encode_frame(json.dumps(batch).encode()))
                    ack = self._next(sock, decoder)
                    assert ack["type"] == "ack", ack
                    assert ack["seq"] == seq, ack
                    assert ack["accepted"] == 10, ack
                    self.longest = max(self.longest, time.monotonic() - started)
                    self.acked += 1
                    seq += 1
                    time.sleep(0.01)
        except BaseException as exc:
            self.error = exc

    def _next(self, sock: socket.socket, decoder: FrameDecoder) -> dict[str, object]:
        pending: list[bytes] = []
        while not pending:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("collector closed the good agent's connection")
            pending = [p for p in decoder.feed(data) if p]
        message: dict[str, object] = json.loads(pending[0])
        return message


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path)
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


def test_generated_garbage_never_stalls_a_good_agent_nor_grows_memory(collector):
    """Hundreds of hostile connections of generated frames, fragments and floods: the good
    agent is acked throughout, within a bounded wait, and the collector's RSS stays bounded."""
    good = GoodAgent(collector.port)
    good.start()
    proc = psutil.Process(collector.proc.pid)
    deadline = time.monotonic() + timeout(10)
    while good.acked < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    rss_before = proc.memory_info().rss

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(chunks=st.lists(_chunk, min_size=1, max_size=40), repeat=st.integers(1, 200))
    def throw(chunks: list[bytes], repeat: int) -> None:
        data = b"".join(chunks) * repeat  # a flood: the same garbage again and again
        with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
            sock.settimeout(0.5)
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except OSError:
                pass  # reset or timed out: the collector may cut us off

    throw()
    acked_during = good.acked
    time.sleep(0.5)
    good.stop.set()
    good.join(timeout(10))
    assert good.error is None, repr(good.error)
    assert good.acked > acked_during or good.acked > 50
    assert good.longest < timeout(5), good.longest
    growth = proc.memory_info().rss - rss_before
    assert growth < 64 * 1024 * 1024, f"collector grew by {growth / 2**20:.1f} MiB"
    assert collector.proc.poll() is None


def _flood(port: int, first: bytes, data: bytes, seconds: float) -> int:
    """Send ``first``, then ``data`` again and again for ``seconds``, reading nothing; the bytes
    the collector took."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(first)
        sock.setblocking(False)
        end = time.monotonic() + seconds
        view = memoryview(data)
        while time.monotonic() < end:
            try:
                sent += sock.send(view[sent % len(data) :])
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
    return sent


@pytest.mark.parametrize(
    "kind",
    ["invalid_fire_and_forget", "batches_of_10000_invalid"],
)
def test_a_flood_from_one_client_does_not_stall_the_others(collector, kind):
    """One socket sending invalid readings at full speed (or batches of 10,000 invalid ones)
    leaves the other agents' acks flowing."""
    good = GoodAgent(collector.port)
    good.start()
    deadline = time.monotonic() + timeout(10)
    while good.acked < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    bad = json.dumps({"sensor": "x", "value": "not a number"}).encode()
    first = b""
    if kind == "invalid_fire_and_forget":
        data = encode_frame(bad) * 2000
    else:
        first = encode_frame(json.dumps({"type": "hello", "agent": "flood"}).encode())
        readings = [{"sensor": "x", "value": "no"}] * 10_000
        data = encode_frame(json.dumps({"type": "batch", "seq": 0, "readings": readings}).encode())
    before = good.acked
    sent = _flood(collector.port, first, data, 3.0)
    during = good.acked - before
    good.stop.set()
    good.join(timeout(10))
    assert good.error is None, repr(good.error)
    assert sent > 500_000, sent  # the flood really flowed
    assert during >= 3, f"only {during} acks in 3 s of flood"  # the old code: none
    assert good.longest < timeout(3), good.longest
