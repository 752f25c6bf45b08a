"""Issue 14: an acked reading is never lost or replaced, through a live collector.

An agent that reuses a batch seq (a reset spool, a second agent with the same id) sends other
readings under ids that are already stored. Before, SQLite's ``INSERT OR IGNORE`` kept the
first reading, dropped the new one, and the ack counted it as accepted.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from telemetry.collector import Collector
from tests.support import WireClient, collector_config


def stored(path: Path) -> dict[str, float]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT id, value FROM readings WHERE id IS NOT NULL"))
    finally:
        db.close()


async def test_a_reused_seq_gets_its_conflicting_reading_rejected_not_lost(
    tmp_path: Path,
) -> None:
    letters = tmp_path / "dead.jsonl"
    config = collector_config(
        tmp_path,
        sinks=[
            {"type": "sqlite", "path": str(tmp_path / "telemetry.db")},
            {"type": "jsonl", "name": "dead", "path": str(letters), "dead_letter": True},
        ],
    )
    collector = Collector(config)
    await collector.start()
    client = await WireClient.connect(collector.ingest_port)
    try:
        assert (await client.hello("p"))["type"] == "welcome"
        first = {"type": "batch", "seq": 5, "readings": [{"sensor": "r/x", "value": 111}]}
        await client.send(first)
        ack = await client.recv()
        assert (ack["type"], ack["seq"], ack["accepted"], ack["rejected"]) == ("ack", 5, 1, [])
        await client.send(first)  # a true resend (same content) is still just accepted
        assert (await client.recv())["accepted"] == 1
        await client.send(
            {
                "type": "batch",
                "seq": 5,
                "readings": [{"sensor": "r/x", "value": 222}, {"sensor": "r/x", "value": 333}],
            }
        )
        ack = await client.recv()
    finally:
        await client.close()
        await collector.shutdown()
    reason = "sink sqlite: reading id p:5:0 is already stored with other content"
    assert ack["type"] == "ack"
    assert ack["seq"] == 5
    assert ack["accepted"] == 1
    assert ack["rejected"] == [{"index": 0, "errors": [reason]}]
    assert stored(tmp_path / "telemetry.db") == {"p:5:0": 111.0, "p:5:1": 333.0}
    letters_by_id = {line["id"]: line for line in map(json.loads, letters.read_text().splitlines())}
    assert list(letters_by_id) == ["p:5:0"]
    assert letters_by_id["p:5:0"]["reason"] == reason
    assert json.loads(letters_by_id["p:5:0"]["raw"])["value"] == 222
