"""Endpoint names: a failed or slow lookup falls back to the addresses the name last had."""

from __future__ import annotations

import asyncio
import socket

import pytest

from telemetry.agent import connection as connection_module
from telemetry.agent.connection import CollectorLink, remember, resolve
from tests.support import timeout


async def _listener() -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture(autouse=True)
def _forget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "_last_good", {})


async def test_a_failed_lookup_uses_the_last_good_address(monkeypatch) -> None:
    """Once "localhost" resolved, a lookup that raises or hangs still gets a connection."""
    server, port = await _listener()
    async with server:
        await remember([f"localhost:{port}"], timeout(5))

        async def broken(host: str, port: int) -> list[tuple[str, int]]:
            raise socket.gaierror("Temporary failure in name resolution")

        monkeypatch.setattr(connection_module, "_getaddrinfo", broken)
        conn = await CollectorLink.open(f"localhost:{port}", timeout(5))
        await conn.close()

        async def stuck(host: str, port: int) -> list[tuple[str, int]]:
            await asyncio.sleep(3600)
            return []

        monkeypatch.setattr(connection_module, "_getaddrinfo", stuck)
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn = await CollectorLink.open(f"localhost:{port}", timeout(5))
        await conn.close()
        assert loop.time() - started < connection_module.FALLBACK_AFTER + 1


async def test_a_name_never_resolved_fails_as_before(monkeypatch) -> None:
    """With nothing to fall back on, the lookup's own error comes through."""

    async def broken(host: str, port: int) -> list[tuple[str, int]]:
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(connection_module, "_getaddrinfo", broken)
    with pytest.raises(socket.gaierror):
        await resolve("collector.invalid", 7600, timeout(5))
