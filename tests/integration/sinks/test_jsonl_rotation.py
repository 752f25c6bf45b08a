"""The jsonl sink's rotation by size and by time, gzip of rotated files, and ``keep``."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

from telemetry.config import JsonlSinkConfig
from telemetry.sinks.jsonl import JsonlSink
from tests.integration.sinks.conftest import record, records


def all_ids(directory: Path) -> list[str]:
    """Ids in every file of the directory, rotated (gzipped or not) and current."""
    ids: list[str] = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".gz"):
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        elif path.name.endswith(".jsonl"):
            text = path.read_text(encoding="utf-8")
        else:
            continue
        ids += [json.loads(line)["id"] for line in text.splitlines()]
    return ids


def line_size() -> int:
    return len(record(0).to_json().encode("utf-8")) + 1


async def test_rotates_by_size_and_gzips_without_losing_a_line(tmp_path):
    """Past rotate_bytes the file is rotated and gzipped; every reading is in exactly one file."""
    path = tmp_path / "r.jsonl"
    sink = JsonlSink(JsonlSinkConfig(type="jsonl", path=path, rotate_bytes=10 * line_size()))
    await sink.start()
    for i in range(0, 100, 4):
        await sink.write(records(i, i + 4))
    await sink.close()
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "r.jsonl")
    assert len(rotated) >= 8
    assert all(name.startswith("r-") and name.endswith(".jsonl.gz") for name in rotated)
    assert sorted(all_ids(tmp_path)) == sorted(r.id for r in records(0, 100))
    for name in rotated:  # no file grew past the limit
        assert len(gzip.decompress((tmp_path / name).read_bytes())) <= 10 * line_size()


async def test_keep_deletes_the_oldest_rotated_files(tmp_path):
    """With keep = 2 only the two newest rotated files remain."""
    path = tmp_path / "r.jsonl"
    config = JsonlSinkConfig(type="jsonl", path=path, rotate_bytes=line_size(), keep=2)
    sink = JsonlSink(config)
    await sink.start()
    for i in range(6):
        await sink.write([record(i)])
    await sink.close()
    rotated = sink.rotated_files()
    assert len(rotated) == 2
    assert all_ids(tmp_path) == [record(3).id, record(4).id, record(5).id]  # oldest first


async def test_rotates_when_the_time_period_changes_and_can_skip_compression(tmp_path):
    """A file last written in an earlier rotate_interval period is rotated at the next write;
    with compress = false it stays plain."""
    path = tmp_path / "r.jsonl"
    path.write_text(record(0).to_json() + "\n", encoding="utf-8")
    old = time.time() - 7200
    os.utime(path, (old, old))
    config = JsonlSinkConfig(type="jsonl", path=path, rotate_interval=3600, compress=False)
    sink = JsonlSink(config)
    await sink.start()
    await sink.write([record(1)])
    await sink.write([record(2)])  # same period: no new rotation
    await sink.close()
    rotated = sink.rotated_files()
    assert [p.suffix for p in rotated] == [".jsonl"]
    assert [json.loads(line)["id"] for line in rotated[0].read_text().splitlines()] == [
        record(0).id
    ]
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [
        record(1).id,
        record(2).id,
    ]


async def test_a_rotated_file_left_plain_by_a_crash_is_compressed_at_start(tmp_path):
    """Start gzips rotated files that a crash left uncompressed."""
    leftover = tmp_path / "r-20261127T071502.123456Z.jsonl"
    leftover.write_text(record(0).to_json() + "\n", encoding="utf-8")
    sink = JsonlSink(JsonlSinkConfig(type="jsonl", path=tmp_path / "r.jsonl", rotate_bytes=1000))
    await sink.start()
    await sink.close()
    assert not leftover.exists()
    assert [p.name for p in sink.rotated_files()] == [leftover.name + ".gz"]
    assert all_ids(tmp_path) == [record(0).id]
