"""The relay's sans-I/O parts: decoding a message back into a record, its config and ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from telemetry.config import ConfigError, RelayConfig, load_config
from telemetry.config.loading import config_sections
from telemetry.relay.books import RelayLedger
from telemetry.relay.decode import Undecodable, decode_record
from telemetry.sinks.base import Record

ROOT = Path(__file__).resolve().parents[2]


def test_a_record_survives_the_round_trip_through_its_json() -> None:
    """What the nats sink publishes decodes to an equal record (id, times, tags included)."""
    ts = datetime(2026, 12, 2, 13, 0, 0, 123456, tzinfo=UTC)
    record = Record(
        id="a:1:0",
        agent="a",
        sensor="soil 1",
        value=21.5,
        ts=ts,
        received_at=ts.replace(microsecond=0),
        metric="moisture",
        unit="%",
        tags={"site": "nörth"},
    )
    assert decode_record(record.to_json().encode()) == record


def test_a_fire_and_forget_record_has_no_id() -> None:
    """A reading without id (fire-and-forget) decodes with ``id`` None and no metric."""
    payload = (
        b'{"agent":"a","sensor":"s","value":1,"ts":"2026-12-02T13:00:00Z",'
        b'"received_at":"2026-12-02T13:00:01Z"}'
    )
    record = decode_record(payload)
    assert (record.id, record.metric, record.value) == (None, None, 1.0)
    assert record.ts.tzinfo is not None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"agent":"a","sensor":"s","value":"1"}', "value: expected a finite number"),
        (b'{"agent":"a","sensor":"s","value":true}', "value: expected a finite number"),
        (b'{"agent":"a","sensor":"s","value":1e999}', "value: expected a finite number"),
        (b'{"agent":"","sensor":"s","value":1}', "agent: expected a non-empty string"),
        (b'{"agent":"a","sensor":"s","value":1,"tags":{"k":1}}', "tags: expected an object"),
        (b'{"agent":"a","sensor":"s","value":1,"ts":"yesterday"}', "ts: 'yesterday' is not"),
        (b'{"agent":"a","sensor":"s","value":1,"ts":"2026-12-02T13:00:00Z"}', "received_at:"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_anything_else_is_undecodable_with_a_reason(payload: bytes, reason: str) -> None:
    """A payload that is not a published reading raises Undecodable saying why."""
    with pytest.raises(Undecodable, match=reason.replace("(", r"\(")):
        decode_record(payload)


def test_the_shipped_relay_config_loads() -> None:
    """config/relay.toml (every key commented) is a valid relay config."""
    config = load_config(RelayConfig, ROOT / "config" / "relay.toml")
    assert config.relay.durable == "telemetry-relay"
    assert config.http.port == 7602
    assert config.sinks[0].type == "sqlite"


def test_relay_environment_variables_override_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """TELEMETRY_RELAY__* overrides [relay] keys, as for the other sections."""
    monkeypatch.setenv("TELEMETRY_RELAY__DURABLE", "relay-postgres")
    monkeypatch.setenv("TELEMETRY_RELAY__SERVERS", '["nats://n1:4222","nats://n2:4222"]')
    config = load_config(RelayConfig, ROOT / "config" / "relay.toml")
    assert config.relay.durable == "relay-postgres"
    assert config.relay.servers == ["nats://n1:4222", "nats://n2:4222"]


def test_the_sections_table_holds_the_relay_model() -> None:
    """The written-out sections of the relay are its model's fields."""
    assert config_sections()["RelayConfig"] == frozenset(RelayConfig.model_fields)


def test_a_relay_needs_sinks_and_bounded_limits() -> None:
    """No sinks, or a max_ack_pending below one fetch, are config errors naming the key."""
    with pytest.raises(ValueError, match="sinks"):
        RelayConfig()
    with pytest.raises(ValueError, match=r"max_ack_pending 10 is below relay\.fetch_batch 100"):
        RelayConfig(relay={"fetch_batch": 100, "max_ack_pending": 10}, sinks=[{"type": "null"}])
    with pytest.raises(ValueError, match="fetch_batch"):
        RelayConfig(relay={"fetch_batch": 0}, sinks=[{"type": "null"}])


def test_an_unknown_relay_key_is_named(tmp_path: Path) -> None:
    """A typo in [relay] is an error naming the key."""
    path = tmp_path / "relay.toml"
    path.write_text('[relay]\ndurabel = "x"\n[[sinks]]\ntype = "null"\n')
    with pytest.raises(ConfigError, match=r"relay\.durabel: unknown key"):
        load_config(RelayConfig, path)


def test_the_ledger_balances_only_when_every_delivery_is_placed() -> None:
    """delivered = acked + dead_lettered + nacked + in_flight."""
    ledger = RelayLedger(delivered=10, acked=6, dead_lettered=1, nacked=2, in_flight=1)
    assert ledger.balanced
    ledger.delivered += 1
    assert not ledger.balanced


def test_check_config_recognises_a_relay_config(capsys: pytest.CaptureFixture[str]) -> None:
    """``telemetry check-config config/relay.toml`` validates it as a relay config."""
    from telemetry.cli import main

    assert main(["check-config", str(ROOT / "config" / "relay.toml")]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("# relay config ")
    assert '"durable": "telemetry-relay"' in out


def test_the_relay_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """``telemetry relay --help`` describes the command and its --config."""
    from telemetry.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["relay", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out
    assert "durable" in out
