"""TLS and mutual TLS on the ingest and HTTP ports, the agent's TLS link, reload, and the
fast failures of a plaintext peer on a TLS port and the reverse (docs/security.md)."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from telemetry.agent import SendError, send_once
from telemetry.bench import BenchOptions, run_bench
from telemetry.cli import main as cli_main
from telemetry.config import AgentSection, ConfigError, load_config
from telemetry.config.collector import CollectorConfig
from telemetry.tls import ClientTls, TlsError, client_tls, looks_like_tls
from tests.conftest import StartCollector
from tests.support import RecordingSink, WireClient, frame, timeout
from tests.tls_certs import CA, Issued


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path, "ca")


@pytest.fixture
def server_cert(ca: CA) -> Issued:
    return ca.server(filename="server")


def ingest_tls(server: Issued, client_ca: Path | None = None, **extra: Any) -> dict[str, Any]:
    tls: dict[str, Any] = {"cert_file": str(server.cert), "key_file": str(server.key), **extra}
    if client_ca is not None:
        tls["client_ca_file"] = str(client_ca)
    return {"tls": tls}


def agent(port: int, agent_id: str = "agent-1", **tls: Any) -> AgentSection:
    """An ``[agent]`` section for the collector on ``port``; ``tls`` keys: ``[agent.tls]``
    (``tls={}``-like: pass ``plain=True`` for none)."""
    plain = tls.pop("plain", False)
    return AgentSection(
        id=agent_id,
        endpoints=[f"127.0.0.1:{port}"],
        connect_timeout=timeout(3),
        tls=None if plain else {key: str(value) for key, value in tls.items()},
    )


async def send(section: AgentSection, value: float = 1.5) -> Any:
    return await send_once(section, [{"sensor": "s/1", "value": value}], timeout(5))


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def tls_open(port: int, tls: ClientTls) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port, **tls.connect_kwargs("127.0.0.1", timeout(3))
    )


def served_serial(writer: asyncio.StreamWriter) -> int:
    """The serial number of the certificate the collector showed on this connection."""
    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True)
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


# --- pure functions ---------------------------------------------------------------------------


def test_looks_like_tls_tells_a_client_hello_from_a_frame_header() -> None:
    """A TLS ClientHello's first bytes (0x16 0x03) are recognised; a frame header is not."""
    assert looks_like_tls(b"\x16\x03\x01\x02\x00")
    assert looks_like_tls(b"\x16")
    assert not looks_like_tls(b"64        {")
    assert not looks_like_tls(b"\x16\x01")
    assert not looks_like_tls(b"")


def test_certificate_names_are_the_subject_cn_and_dns_sans() -> None:
    """certificate_names gives the subject CN then the DNS SANs (not IPs), without repeats."""
    from telemetry.tls import certificate_names

    peercert = {
        "subject": ((("countryName", "NL"),), (("commonName", "agent-7"),)),
        "subjectAltName": (("DNS", "agent-7"), ("DNS", "pi-3.lan"), ("IP Address", "10.0.0.3")),
    }
    assert certificate_names(peercert) == ("agent-7", "pi-3.lan")
    assert certificate_names(None) == ()
    assert certificate_names({}) == ()


def test_config_sections_turn_tls_on_and_are_checked(tmp_path: Path) -> None:
    """[ingest.tls], [http.tls] and [agent.tls] parse; a key_file without cert_file is refused."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[ingest.tls]\ncert_file = "s.pem"\nkey_file = "s.key"\nclient_ca_file = "ca.pem"\n'
        '[http.tls]\ncert_file = "s.pem"\n'
    )
    config = load_config(CollectorConfig, path)
    assert config.ingest.tls is not None
    assert config.ingest.tls.mutual
    assert config.ingest.tls.handshake_timeout == 10
    assert config.http.tls is not None
    assert not config.http.tls.mutual
    assert CollectorConfig().ingest.tls is None
    with pytest.raises(ValueError, match="key_file is set but cert_file is not"):
        AgentSection(tls={"key_file": "k.pem"})


def test_unusable_files_are_a_clear_error(tmp_path: Path, ca: CA, server_cert: Issued) -> None:
    """A key that does not match the certificate, or a missing file, names the file."""
    other = ca.issue("other", filename="other")
    config = CollectorConfig(
        ingest={"tls": {"cert_file": str(server_cert.cert), "key_file": str(other.key)}}
    )
    from telemetry.tls import CollectorTls

    with pytest.raises(TlsError, match=r"\[ingest.tls\] cannot load cert_file .*server.pem"):
        CollectorTls(config)
    assert issubclass(TlsError, ConfigError)
    with pytest.raises(TlsError, match="ca_file"):
        client_tls(AgentSection(tls={"ca_file": str(tmp_path / "nope.pem")}).tls)


# --- TLS end to end ---------------------------------------------------------------------------


async def test_agent_sends_over_tls_and_gets_its_ack(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """An agent with [agent.tls] ca_file delivers a batch over TLS: stored and acked."""
    collector = await start_collector(sinks=[recording_sink], ingest=ingest_tls(server_cert))
    assert collector.ingest_port is not None
    ack = await send(agent(collector.ingest_port, ca_file=ca.pem), 21.5)
    assert ack.accepted == 1
    assert [r.value for r in recording_sink.records] == [21.5]
    assert not collector.auth.enabled  # TLS without client CA: no certificate identity


async def test_the_long_running_agent_streams_over_mtls(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """The library Agent (the sender `telemetry agent` runs) delivers over mutual TLS with
    the agent id its certificate names, every reading acked."""
    from telemetry.agent import Agent, MemorySpool

    client = ca.issue("pi-7", server=False)
    collector = await start_collector(
        sinks=[recording_sink], ingest=ingest_tls(server_cert, client_ca=ca.pem)
    )
    assert collector.ingest_port is not None
    section = agent(
        collector.ingest_port, "pi-7", ca_file=ca.pem, cert_file=client.cert, key_file=client.key
    )
    async with Agent(section, MemorySpool(1_000_000)) as streaming:
        for n in range(50):
            await streaming.send({"sensor": "pi-7/t", "value": float(n)})
        assert await streaming.wait_acked(timeout(10))
    assert sorted(r.value for r in recording_sink.records) == [float(n) for n in range(50)]
    assert {r.agent for r in recording_sink.records} == {"pi-7"}


async def test_server_name_override_and_mismatch(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """server_name is the name checked (localhost passes; a name not in the cert fails)."""
    collector = await start_collector(sinks=[recording_sink], ingest=ingest_tls(server_cert))
    assert collector.ingest_port is not None
    port = collector.ingest_port
    assert (await send(agent(port, ca_file=ca.pem, server_name="localhost"))).accepted == 1
    with pytest.raises(SendError, match="certificate was not accepted"):
        await send(agent(port, ca_file=ca.pem, server_name="collector.example"))


async def test_agent_refuses_a_collector_certificate_from_another_ca(
    start_collector: StartCollector, recording_sink: RecordingSink, tmp_path: Path
) -> None:
    """The agent refuses a collector whose certificate its ca_file did not sign."""
    ours, theirs = CA(tmp_path, "ours"), CA(tmp_path, "theirs")
    collector = await start_collector(
        sinks=[recording_sink], ingest=ingest_tls(theirs.server(filename="s"))
    )
    assert collector.ingest_port is not None
    with capture_logs() as logs, pytest.raises(SendError, match="certificate was not accepted"):
        await send(agent(collector.ingest_port, ca_file=ours.pem))
    assert events(logs, "tls_handshake_failed")
    assert recording_sink.records == []


async def test_agent_refuses_an_expired_collector_certificate(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA
) -> None:
    """An expired collector certificate is refused by the agent."""
    expired = ca.server(expired=True, filename="expired")
    collector = await start_collector(sinks=[recording_sink], ingest=ingest_tls(expired))
    assert collector.ingest_port is not None
    with pytest.raises(SendError, match="expired"):
        await send(agent(collector.ingest_port, ca_file=ca.pem))


# --- mutual TLS -------------------------------------------------------------------------------


async def test_mtls_admits_the_agent_id_of_its_certificate(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """With client_ca_file, an agent whose certificate CN equals its id is admitted."""
    collector = await start_collector(
        sinks=[recording_sink], ingest=ingest_tls(server_cert, ca.pem)
    )
    assert collector.ingest_port is not None
    assert collector.auth.certificates
    client = ca.issue("agent-7", server=False)
    section = agent(
        collector.ingest_port, "agent-7", ca_file=ca.pem, cert_file=client.cert, key_file=client.key
    )
    assert (await send(section)).accepted == 1
    assert recording_sink.records[0].agent == "agent-7"


async def test_mtls_refuses_another_agent_id_as_unauthorized(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """A certificate for agent-7 cannot speak for agent-8: the hello gets unauthorized."""
    collector = await start_collector(
        sinks=[recording_sink], ingest=ingest_tls(server_cert, ca.pem)
    )
    assert collector.ingest_port is not None
    client = ca.issue("agent-7", server=False)
    section = agent(
        collector.ingest_port, "agent-8", ca_file=ca.pem, cert_file=client.cert, key_file=client.key
    )
    with capture_logs() as logs, pytest.raises(SendError, match="unauthorized"):
        await send(section)
    assert events(logs, "hello_refused")[0]["certificate_names"] == ["agent-7"]
    assert recording_sink.records == []


@pytest.mark.parametrize("kind", ["none", "other_ca", "expired"])
async def test_mtls_refuses_missing_foreign_or_expired_client_certificates(
    start_collector: StartCollector,
    recording_sink: RecordingSink,
    ca: CA,
    server_cert: Issued,
    tmp_path: Path,
    kind: str,
) -> None:
    """No client certificate, one from another CA, or an expired one: refused, and logged."""
    collector = await start_collector(
        sinks=[recording_sink], ingest=ingest_tls(server_cert, ca.pem)
    )
    assert collector.ingest_port is not None
    keys: dict[str, Any] = {"ca_file": ca.pem}
    if kind == "other_ca":
        client = CA(tmp_path, "rogue").issue("agent-1", server=False)
        keys |= {"cert_file": client.cert, "key_file": client.key}
    elif kind == "expired":
        client = ca.issue("agent-1", server=False, expired=True)
        keys |= {"cert_file": client.cert, "key_file": client.key}
    with capture_logs() as logs:
        with pytest.raises(SendError, match="client certificate"):
            await send(agent(collector.ingest_port, "agent-1", **keys))
        await asyncio.sleep(0.05)
    failed = [e for e in events(logs, "tls_handshake_failed") if e.get("port") == "ingest"]
    assert failed, logs
    expected = {"none": "no certificate", "other_ca": "not signed", "expired": "expired"}[kind]
    assert expected in failed[0]["hint"] + failed[0]["error"]
    assert recording_sink.records == []


# --- a plaintext peer on a TLS port, and the reverse ------------------------------------------


async def test_plaintext_agent_on_a_tls_port_fails_fast_on_both_sides(
    start_collector: StartCollector, recording_sink: RecordingSink, server_cert: Issued
) -> None:
    """A plaintext agent on a TLS port is dropped at once; both sides log why."""
    collector = await start_collector(sinks=[recording_sink], ingest=ingest_tls(server_cert))
    assert collector.ingest_port is not None
    started = time.monotonic()
    with capture_logs() as logs:
        with pytest.raises(SendError, match="is it a TLS port"):
            await send(agent(collector.ingest_port, plain=True))
        raw = await WireClient.connect(collector.ingest_port)
        await raw.send_raw(frame({"sensor": "nc", "value": 1}))
        assert await raw.closed(wait=2)
        await raw.close()
    assert time.monotonic() - started < timeout(2)
    failed = events(logs, "tls_handshake_failed")
    assert failed
    assert failed[0]["hint"] == "plaintext client on a TLS port?"
    assert events(logs, "closed_before_welcome")
    assert recording_sink.records == []


async def test_tls_agent_on_a_plaintext_port_fails_fast_with_a_clear_error(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA
) -> None:
    """A TLS agent on a plaintext port fails within seconds, naming the likely cause."""
    collector = await start_collector(sinks=[recording_sink])
    assert collector.ingest_port is not None
    started = time.monotonic()
    with (
        capture_logs() as logs,
        pytest.raises(SendError, match="does not speak TLS on this port"),
    ):
        await send(agent(collector.ingest_port, ca_file=ca.pem))
    assert time.monotonic() - started < timeout(2)
    assert events(logs, "tls_handshake_failed")


async def test_silent_client_is_cut_off_at_the_handshake_deadline(
    start_collector: StartCollector, server_cert: Issued
) -> None:
    """A client that connects and never starts the handshake is closed at handshake_timeout."""
    collector = await start_collector(ingest=ingest_tls(server_cert, handshake_timeout=0.3))
    assert collector.ingest_port is not None
    raw = await WireClient.connect(collector.ingest_port)
    assert await raw.closed(wait=2)
    await raw.close()


# --- HTTP over TLS ----------------------------------------------------------------------------


async def test_healthz_and_tail_over_https(
    start_collector: StartCollector, ca: CA, server_cert: Issued
) -> None:
    """With [http.tls], /healthz answers over https for a client trusting the CA, and
    telemetry tail streams over https; plain http is refused."""
    from telemetry.tail import tail

    tls = {"cert_file": str(server_cert.cert), "key_file": str(server_cert.key)}
    collector = await start_collector(http={"tls": tls}, ingest=ingest_tls(server_cert))
    port = collector.http.port
    context = ssl.create_default_context(cafile=str(ca.pem))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{port}/healthz", ssl=context) as response,
    ):
        assert response.status == 200
        assert (await response.json())["status"] == "ok"
    with pytest.raises(aiohttp.ClientError):
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            await response.read()

    out, err = io.StringIO(), io.StringIO()
    client = client_tls(AgentSection(tls={"ca_file": str(ca.pem)}).tls)
    tailing = asyncio.create_task(
        tail(f"https://localhost:{port}", count=1, json_lines=True, out=out, err=err, tls=client)
    )
    assert collector.ingest_port is not None
    for n in range(50):
        await send(agent(collector.ingest_port, ca_file=ca.pem), float(n))
        if tailing.done():
            break
        await asyncio.sleep(0.05)
    assert await asyncio.wait_for(tailing, timeout(5)) == 0, err.getvalue()
    assert '"sensor": "s/1"' in out.getvalue() or '"sensor":"s/1"' in out.getvalue()


# --- reload -----------------------------------------------------------------------------------


async def test_reload_serves_the_new_certificate_while_old_connections_go_on(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """After the files are replaced and reload() called, a new connection sees the new
    certificate while an open one keeps working."""
    collector = await start_collector(sinks=[recording_sink], ingest=ingest_tls(server_cert))
    assert collector.ingest_port is not None
    port = collector.ingest_port
    client = client_tls(AgentSection(tls={"ca_file": str(ca.pem)}).tls)
    assert client is not None
    reader, writer = await tls_open(port, client)
    old = WireClient(reader, writer)
    assert (await old.hello("agent-old"))["type"] == "welcome"
    assert served_serial(writer) == server_cert.serial

    fresh = ca.server(filename="fresh")
    shutil.copy(fresh.cert, server_cert.cert)
    shutil.copy(fresh.key, server_cert.key)
    collector.tls.reload()

    _reader2, writer2 = await tls_open(port, client)
    assert served_serial(writer2) == fresh.serial
    writer2.close()
    await old.send({"type": "batch", "seq": 0, "readings": [{"sensor": "s", "value": 2}]})
    ack = await old.recv()
    assert ack["type"] == "ack"
    assert ack["accepted"] == 1
    await old.close()


async def test_reload_with_bad_files_keeps_the_old_ones(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """A reload with a broken certificate file raises TlsError and keeps serving the old one."""
    collector = await start_collector(sinks=[recording_sink], ingest=ingest_tls(server_cert))
    assert collector.ingest_port is not None
    saved = server_cert.cert.read_bytes()
    server_cert.cert.write_text("not a certificate\n")
    with pytest.raises(TlsError, match="cannot load cert_file"):
        collector.tls.reload()
    server_cert.cert.write_bytes(saved)  # the file is back; the context never lost it
    client = client_tls(AgentSection(tls={"ca_file": str(ca.pem)}).tls)
    assert client is not None
    _, writer = await tls_open(collector.ingest_port, client)
    assert served_serial(writer) == server_cert.serial
    writer.close()
    other = ca.issue("other", filename="other")
    server_cert.key.write_bytes(other.key.read_bytes())  # a key of another certificate
    with pytest.raises(TlsError):
        collector.tls.reload()
    assert (await send(agent(collector.ingest_port, ca_file=ca.pem))).accepted == 1


# --- the command line -------------------------------------------------------------------------


async def test_cli_send_with_tls_flags(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """telemetry send --tls --ca-file --cert-file --key-file delivers over mutual TLS."""
    collector = await start_collector(
        sinks=[recording_sink], ingest=ingest_tls(server_cert, ca.pem)
    )
    client = ca.issue("cli-agent", server=False)
    argv = [
        "send", "-e", f"127.0.0.1:{collector.ingest_port}", "--agent-id", "cli-agent",
        "--sensor", "shed/door", "--value", "1", "--tls", "--ca-file", str(ca.pem),
        "--cert-file", str(client.cert), "--key-file", str(client.key),
    ]  # fmt: skip
    assert await asyncio.to_thread(cli_main, argv) == 0
    assert [r.sensor for r in recording_sink.records] == ["shed/door"]
    plain = argv[: argv.index("--tls")]
    assert await asyncio.to_thread(cli_main, plain) == 2


async def test_bench_over_tls(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA, server_cert: Issued
) -> None:
    """telemetry bench's connections speak TLS when given a ClientTls."""
    collector = await start_collector(sinks=[recording_sink], ingest=ingest_tls(server_cert))
    assert collector.ingest_port is not None
    client = client_tls(AgentSection(tls={"ca_file": str(ca.pem)}).tls)
    opts = BenchOptions(
        port=collector.ingest_port, readings=200, batch=50, timeout=timeout(10), tls=client
    )
    result = await run_bench(opts)
    assert result.accepted == 200


@pytest.mark.skipif(  # under CI=true it runs, and fails without openssl
    shutil.which("openssl") is None and os.environ.get("CI") != "true",
    reason="needs the openssl command",
)
async def test_make_certs_script_gives_working_mtls_certificates(
    start_collector: StartCollector, recording_sink: RecordingSink, tmp_path: Path
) -> None:
    """scripts/make-certs.sh (used by docker-compose.tls.yml) makes certificates that work
    for mutual TLS, the agent id being the client certificate's CN."""
    script = Path(__file__).parents[2] / "scripts" / "make-certs.sh"
    certs = tmp_path / "certs"
    process = await asyncio.create_subprocess_exec(
        "sh", str(script), str(certs), "localhost", "--", "agent-1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    server = Issued(certs / "collector.pem", certs / "collector.key", 0)
    collector = await start_collector(
        sinks=[recording_sink], ingest=ingest_tls(server, certs / "ca.pem")
    )
    assert collector.ingest_port is not None
    section = agent(
        collector.ingest_port,
        "agent-1",
        ca_file=certs / "ca.pem",
        cert_file=certs / "agent-1.pem",
        key_file=certs / "agent-1.key",
    )
    assert (await send(section)).accepted == 1


async def test_a_tls_client_on_a_plaintext_port_is_named_in_the_collectors_log(
    start_collector: StartCollector, recording_sink: RecordingSink, ca: CA
) -> None:
    """The collector recognises a TLS handshake on its plaintext port and says so."""
    collector = await start_collector(sinks=[recording_sink])
    assert collector.ingest_port is not None
    with capture_logs() as logs, pytest.raises(SendError):
        await send(agent(collector.ingest_port, ca_file=ca.pem))
    assert events(logs, "tls_client_on_plaintext_port")


# --- the --workers supervisor's port ------------------------------------------------------------


def https_serial(port: int, ca: CA) -> int:
    """The serial of the certificate served on ``port`` after a verified handshake; raises
    OSError while nothing (or no TLS) answers."""
    import socket

    from cryptography import x509

    context = ssl.create_default_context(cafile=str(ca.pem))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


def test_workers_port_serves_http_tls_and_reloads_it_on_sighup(
    tmp_path: Path, ca: CA, server_cert: Issued
) -> None:
    """``--workers 2`` with [http.tls]: the supervisor's public port speaks HTTPS with those
    files (plain http gets nothing), and SIGHUP puts replaced files in use."""
    import http.client
    import signal
    import subprocess
    import urllib.request

    from tests.integration.test_end_to_end import start_workers, wait_for

    tls = f'[http.tls]\ncert_file = "{server_cert.cert}"\nkey_file = "{server_cert.key}"\n'
    proc, _port, http_port, log = start_workers(tmp_path, tls + '[[sinks]]\ntype = "null"\n')
    try:

        def serves(serial: int) -> bool:
            try:
                return https_serial(http_port, ca) == serial
            except OSError:
                return False

        wait_for(proc, log, lambda: serves(server_cert.serial), "https on the workers' port")
        context = ssl.create_default_context(cafile=str(ca.pem))
        url = f"https://localhost:{http_port}/healthz"
        with urllib.request.urlopen(url, context=context, timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises((ConnectionError, http.client.HTTPException)):  # no plain answer
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5).read()

        fresh = ca.server(filename="fresh")
        shutil.copy(fresh.cert, server_cert.cert)
        shutil.copy(fresh.key, server_cert.key)
        proc.send_signal(signal.SIGHUP)
        wait_for(proc, log, lambda: serves(fresh.serial), "the new certificate after SIGHUP")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout(30)) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
