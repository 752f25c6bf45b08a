"""Passwords and tokens in sink URLs, DSNs and settings never reach an error message or a log
event, not even when connecting fails; the server is still named (host:port)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import structlog.testing
from pydantic import TypeAdapter

from telemetry.config import SinkConfig
from telemetry.sinks.base import SinkError
from telemetry.sinks.registry import build_sink

SECRET = "s3cret-Pa55"


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_failure(options: dict[str, Any]) -> tuple[str, str]:
    """Start the sink, which must fail: the error's text and every log event, as text."""
    sink = build_sink(TypeAdapter(SinkConfig).validate_python(options))
    with structlog.testing.capture_logs() as logs, pytest.raises(SinkError) as failure:
        await sink.start()
    await sink.close()
    return str(failure.value), repr(logs)


def assert_no_secret(error: str, logs: str, server: str) -> None:
    assert SECRET not in error
    assert SECRET not in logs
    assert server in error, f"the error should name {server}: {error}"


@pytest.mark.parametrize(
    "url", [f"redis://user:{SECRET}@127.0.0.1:{{port}}/0", f"redis://:{SECRET}@127.0.0.1:{{port}}"]
)
async def test_redis_connect_failure_names_the_server_not_the_password(url: str):
    port = closed_port()
    error, logs = await start_failure({"type": "redis", "url": url.format(port=port), "timeout": 2})
    assert_no_secret(error, logs, f"127.0.0.1:{port}")


async def test_redis_refusing_the_password_is_reported_without_it(redis_service: str):
    """The real server refuses an unknown user's credentials: the error says so, without
    them."""
    error, logs = await start_failure(
        {"type": "redis", "url": f"redis://nobody:{SECRET}@127.0.0.1:6379/0", "timeout": 5}
    )
    assert_no_secret(error, logs, "127.0.0.1:6379")


@pytest.mark.parametrize(
    ("servers", "extra"),
    [
        ([f"nats://user:{SECRET}@127.0.0.1:{{port}}"], {}),
        ([f"nats://{SECRET}@127.0.0.1:{{port}}"], {}),  # a token in the URL
        (["nats://127.0.0.1:{port}"], {"user": "u", "password": SECRET}),
        (["nats://127.0.0.1:{port}"], {"token": SECRET}),
    ],
)
async def test_nats_connect_failure_names_the_server_not_the_secret(
    servers: list[str], extra: dict[str, Any]
):
    port = closed_port()
    options = {
        "type": "nats",
        "servers": [s.format(port=port) for s in servers],
        "connect_timeout": 1,
        **extra,
    }
    error, logs = await start_failure(options)
    assert_no_secret(error, logs, f"127.0.0.1:{port}")


async def test_postgres_connect_failure_names_the_server_not_the_password():
    port = closed_port()
    dsn = f"postgresql://telemetry:{SECRET}@127.0.0.1:{port}/test"
    error, logs = await start_failure({"type": "postgres", "dsn": dsn, "connect_timeout": 2})
    assert_no_secret(error, logs, f"127.0.0.1:{port}")
    assert "telemetry:***@" in error


async def test_postgres_refusing_the_login_is_reported_without_the_password(
    postgres_service: str,
):
    dsn = f"postgresql://no_such_role_{SECRET[:6]}:{SECRET}@127.0.0.1:5432/test"
    error, logs = await start_failure({"type": "postgres", "dsn": dsn, "connect_timeout": 5})
    assert_no_secret(error, logs, "127.0.0.1:5432")


async def test_postgres_invalid_dsn_is_a_permanent_error_without_the_password():
    dsn = f"postgresql://telemetry:{SECRET}@127.0.0.1:notaport/test"
    error, logs = await start_failure({"type": "postgres", "dsn": dsn, "connect_timeout": 2})
    assert SECRET not in error
    assert SECRET not in logs


async def test_mqtt_connect_failure_names_the_server_not_the_password():
    port = closed_port()
    options = {
        "type": "mqtt",
        "port": port,
        "username": "u",
        "password": SECRET,
        "ack_timeout": 2,
    }
    error, logs = await start_failure(options)
    assert_no_secret(error, logs, f"127.0.0.1:{port}")
