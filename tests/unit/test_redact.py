"""Secrets never reach logs or printed configs: the redaction helpers and check-config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from telemetry.cli import check_config
from telemetry.redact import redact_config, redact_text, redact_url, scrub, url_secrets

SECRETS = ("pw-Redis1", "pw-Redis2", "pw-Pg3", "pw-Nats4", "tok-Nats5", "tok-Nats6", "pw-Mqtt7")


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://user:pw-1@db:6379/0", "redis://user:***@db:6379/0"),
        ("redis://:pw-1@db:6379/0", "redis://:***@db:6379/0"),
        ("rediss://user:p%40ss@[::1]:6380", "rediss://user:***@[::1]:6380"),
        ("postgresql://telemetry@db:5432/t", "postgresql://telemetry@db:5432/t"),
        (
            "postgresql://db/t?sslmode=require&password=pw-1",
            "postgresql://db/t?sslmode=require&password=***",
        ),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_masks_the_password_only(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_a_nats_token_userinfo_is_masked_where_it_is_a_token() -> None:
    assert redact_url("nats://tok-1@h:4222", token_userinfo=True) == "nats://***@h:4222"
    assert redact_url("nats://u:pw@h:4222", token_userinfo=True) == "nats://u:***@h:4222"
    assert url_secrets("nats://tok-1@h:4222", token_userinfo=True) == ["tok-1"]
    assert url_secrets("postgresql://telemetry@db/t") == []
    assert url_secrets("redis://u:p%40ss@h") == ["p%40ss", "p@ss"]


def test_redact_text_masks_every_url_and_password_pair_in_a_message() -> None:
    message = (
        "cannot start on ['nats://u:pw-1@a:4222', 'nats://b:4222']: "
        "host=db password=pw-2 user=u; password: 'pw 3'"
    )
    redacted = redact_text(message)
    assert "pw-1" not in redacted
    assert "pw-2" not in redacted
    assert "pw 3" not in redacted
    assert "nats://u:***@a:4222" in redacted
    assert "nats://b:4222" in redacted
    assert "host=db" in redacted


def test_scrub_masks_given_secrets_wherever_a_library_echoes_them() -> None:
    assert scrub("auth failed with secret-1 for u", ["secret-1", None, ""]) == (
        "auth failed with *** for u"
    )


def test_redact_config_masks_secret_keys_and_url_passwords() -> None:
    data = {
        "ingest": {"tokens": ["a", "b"], "port": 7600},
        "agent": {"token": "t", "endpoints": ["h:7600"]},
        "sinks": [
            {"type": "postgres", "dsn": "postgresql://u:p@h/db", "table": "readings"},
            {"type": "nats", "servers": ["nats://tok@h:4222"], "password": None},
            {"type": "plugin", "api_key": "k", "url": "https://u:p@example.com/x"},
        ],
    }
    assert redact_config(data) == {
        "ingest": {"tokens": ["***", "***"], "port": 7600},
        "agent": {"token": "***", "endpoints": ["h:7600"]},
        "sinks": [
            {"type": "postgres", "dsn": "***", "table": "readings"},
            {"type": "nats", "servers": ["nats://***@h:4222"], "password": None},
            {"type": "plugin", "api_key": "***", "url": "https://u:***@example.com/x"},
        ],
    }


def check(path: Path | None, kind: str = "auto") -> argparse.Namespace:
    return argparse.Namespace(config=path, kind=kind)


def test_check_config_prints_no_secret_of_a_collector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest tokens, sink passwords, a DSN and passwords inside URLs are printed as ***;
    everything else as it is."""
    config = tmp_path / "collector.toml"
    config.write_text(
        """
[ingest]
tokens = ["tok-Ingest0"]
[[sinks]]
type = "redis"
url = "redis://user:pw-Redis1@127.0.0.1:6379/0"
password = "pw-Redis2"
[[sinks]]
type = "postgres"
dsn = "postgresql://u:pw-Pg3@127.0.0.1/test"
[[sinks]]
type = "nats"
servers = ["nats://u:pw-Nats4@127.0.0.1:4222", "nats://tok-Nats5@127.0.0.1:4223"]
token = "tok-Nats6"
[[sinks]]
type = "mqtt"
username = "mq"
password = "pw-Mqtt7"
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("TELEMETRY_INGEST__TOKENS", '["tok-Env8", "tok-Env9"]')
    assert check_config.run(check(config)) == 0
    out = capsys.readouterr().out
    for secret in (*SECRETS, "tok-Env8", "tok-Env9"):
        assert secret not in out
    effective = json.loads(out)
    assert effective["ingest"]["tokens"] == ["***", "***"]
    redis, postgres, nats, mqtt = effective["sinks"]
    assert redis["url"] == "redis://user:***@127.0.0.1:6379/0"
    assert redis["password"] == "***"
    assert postgres["dsn"] == "***"
    assert nats["servers"] == ["nats://u:***@127.0.0.1:4222", "nats://***@127.0.0.1:4223"]
    assert nats["token"] == "***"
    assert nats["password"] is None
    assert (mqtt["username"], mqtt["password"]) == ("mq", "***")


def test_check_config_prints_no_token_of_an_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nid = "a1"\ntoken = "tok-Agent1"\n', encoding="utf-8")
    assert check_config.run(check(config)) == 0
    out = capsys.readouterr().out
    assert "tok-Agent1" not in out
    assert json.loads(out)["agent"]["token"] == "***"
    assert json.loads(out)["agent"]["id"] == "a1"
