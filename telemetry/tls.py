"""TLS for the ingest port, the HTTP port and the agent's link (docs/security.md).

How this works: the collector builds a :class:`CollectorTls` from its config: one server
:class:`ssl.SSLContext` per port that has a ``[*.tls]`` section (TLS 1.2 at least; with
``client_ca_file`` every client must show a certificate signed by it). The contexts live as
long as the process: :meth:`CollectorTls.reload` loads the certificate and key files again
*into the same contexts*, so new handshakes use the new files and open connections go on.
The server contexts log each failed handshake as ``tls_handshake_failed`` with a hint (a
plaintext client on the TLS port, a missing or untrusted client certificate), from inside the
handshake itself (:class:`_LoggedSSLObject`): asyncio reports such failures to no one.

The agent, ``telemetry send``, ``bench`` and ``tail`` build a :class:`ClientTls` from
``[agent.tls]`` (or the ``--tls`` flags): a client context that checks the collector's
certificate against ``ca_file`` (the system's trust store when unset) and the name
``server_name`` (default: the endpoint's host), and shows ``cert_file`` for mutual TLS.
:func:`explain_client_error` turns a client-side TLS failure into a sentence naming its
likely cause.

:func:`certificate_names` gives the names (subject CN, DNS SANs) of a verified client
certificate, which identify the agent (:mod:`telemetry.collector.auth`);
:func:`looks_like_tls` recognises a TLS ClientHello arriving on a plaintext port.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from telemetry.config.loading import ConfigError
from telemetry.config.tls import ClientTlsConfig, IngestTlsConfig, ServerTlsConfig
from telemetry.log import get_logger

if TYPE_CHECKING:  # the agent imports this module: no collector config models for it
    from telemetry.config import CollectorConfig

log = get_logger("telemetry.tls")

#: The oldest protocol version either side accepts.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

#: What a failed handshake on a TLS port most likely means, by OpenSSL reason.
_SERVER_HINTS = {
    "WRONG_VERSION_NUMBER": "plaintext client on a TLS port?",
    "HTTP_REQUEST": "plaintext HTTP client on a TLS port?",
    "UNKNOWN_PROTOCOL": "plaintext client on a TLS port?",
    "RECORD_LAYER_FAILURE": "plaintext client on a TLS port?",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client presented no certificate (client_ca_file "
    "requires one)",
    "CERTIFICATE_VERIFY_FAILED": "client certificate not signed by client_ca_file, or expired",
    "UNSUPPORTED_PROTOCOL": "client only offers TLS older than 1.2",
    "NO_PROTOCOLS_AVAILABLE": "client only offers TLS older than 1.2",
    "ALERT_UNKNOWN_CA": "the client does not trust this server's certificate",
    "ALERT_BAD_CERTIFICATE": "the client does not trust this server's certificate",
    "ALERT_CERTIFICATE_UNKNOWN": "the client does not trust this server's certificate",
}


class TlsError(ConfigError):
    """A TLS setting that cannot be used: a file missing or unreadable, a key that does not
    match its certificate, a CA file with no certificate. The message names the file."""


class TlsHandshakeError(ConnectionError):
    """A client-side TLS handshake (or the first read after it) failed; the message says
    what it most likely means."""


# --- names and bytes --------------------------------------------------------------------------


def certificate_names(peercert: dict[str, Any] | None) -> tuple[str, ...]:
    """The names of a verified peer certificate, as :meth:`ssl.SSLSocket.getpeercert` gives
    it: the subject's common names, then the DNS subject alternative names; no duplicates.
    None or an empty dict (no certificate) gives ``()``."""
    if not peercert:
        return ()
    names: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "DNS":
            names.append(str(value))
    return tuple(dict.fromkeys(names))


def looks_like_tls(first_bytes: bytes) -> bool:
    """Do the first bytes of a connection look like a TLS ClientHello (a handshake record,
    0x16, of TLS version 3.x, 0x03) rather than a frame header (ASCII digits and spaces)?
    Needs at least one byte; with only one, 0x16 is enough (no header starts so)."""
    if not first_bytes or first_bytes[0] != 0x16:
        return False
    return len(first_bytes) < 2 or first_bytes[1] == 0x03


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else type(exc).__name__


def server_hint(exc: BaseException) -> str | None:
    """What a server-side handshake failure most likely means, if it is a known one."""
    reason = _reason(exc).upper()
    for key, hint in _SERVER_HINTS.items():
        if key in reason:
            return hint
    if "ALERT" in reason:
        return "the client refused the handshake"
    return None


def explain_client_error(exc: BaseException, target: str) -> str:
    """One sentence on a client-side TLS failure talking to ``target`` (``host:port`` or a
    URL), naming the likely cause."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS to {target}: the collector's certificate was not accepted "
            f"({exc.verify_message}): check ca_file / --ca-file and server_name / --server-name"
        )
    reason = _reason(exc).upper()
    if any(key in reason for key in ("WRONG_VERSION_NUMBER", "RECORD_LAYER", "PACKET_LENGTH")):
        return (
            f"TLS to {target} failed ({text}): the collector does not speak TLS on this port "
            "(plaintext port? remove [agent.tls] / --tls, or enable [ingest.tls] there)"
        )
    if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
        return (
            f"TLS to {target} failed ({text}): the collector requires a client certificate "
            "(set cert_file and key_file / --cert-file and --key-file)"
        )
    if "ALERT" in reason:
        return (
            f"TLS to {target} failed ({text}): the collector refused our client certificate "
            "(not signed by its client_ca_file, expired, or of the wrong kind)"
        )
    return f"TLS to {target} failed: {text}"


def closed_hint(endpoint: str, tls: bool) -> str:
    """What a client is told when the collector hangs up before ``welcome``: over TLS, most
    likely its client certificate was missing or refused; in plaintext, a TLS port."""
    if tls:
        return (
            f"the collector {endpoint} closed the TLS connection before answering the hello: "
            "it may require a client certificate (cert_file / --cert-file) or have refused "
            "ours (not signed by its client_ca_file, or expired)"
        )
    return (
        f"the collector {endpoint} closed the connection before answering the hello: "
        "is it a TLS port? (set [agent.tls], or --tls)"
    )


# --- the server side --------------------------------------------------------------------------


def _logged_object_class(port: str) -> type[ssl.SSLObject]:
    """An :class:`ssl.SSLObject` that logs a failed handshake on ``port``."""

    class _LoggedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except (ssl.SSLError, ssl.CertificateError) as exc:
                log.warning(
                    "tls_handshake_failed",
                    port=port,
                    reason=_reason(exc),
                    hint=server_hint(exc),
                    error=str(exc),
                )
                raise

    return _LoggedSSLObject


def _load_server(ctx: ssl.SSLContext, config: ServerTlsConfig, where: str) -> None:
    """Load ``config``'s certificate, key and client CA into ``ctx``; :class:`TlsError`."""
    key = config.key_file or config.cert_file
    try:
        ctx.load_cert_chain(config.cert_file, key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(
            f"[{where}] cannot load cert_file {config.cert_file} with key_file {key}: {exc}"
        ) from None
    if config.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=config.client_ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsError(
                f"[{where}] cannot load client_ca_file {config.client_ca_file}: {exc}"
            ) from None


def server_context(config: ServerTlsConfig, where: str = "ingest.tls") -> ssl.SSLContext:
    """A server context for ``config`` (``where`` names its section in errors and logs):
    TLS 1.2 or later; client certificates required when ``client_ca_file`` is set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.options |= ssl.OP_NO_COMPRESSION
    if config.client_ca_file is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
    _load_server(ctx, config, where)
    ctx.sslobject_class = _logged_object_class(where.split(".")[0])
    return ctx


class ServerTls:
    """One port's server context, kept for the life of the listener; :meth:`reload` puts new
    files into it."""

    def __init__(self, config: ServerTlsConfig, where: str) -> None:
        self.config = config
        self.where = where
        self.context = server_context(config, where)

    @property
    def mutual(self) -> bool:
        """Must clients present a certificate?"""
        return self.config.mutual

    def check(self, config: ServerTlsConfig | None = None) -> ServerTlsConfig:
        """Raise :class:`TlsError` unless ``config`` (default: the current one) loads; the
        config to apply."""
        config = config if config is not None else self.config
        if config.mutual != self.mutual:
            raise TlsError(
                f"[{self.where}] client_ca_file cannot be added or removed by a reload: restart"
            )
        server_context(config, self.where)  # a scratch context: the live one is untouched
        return config

    def apply(self, config: ServerTlsConfig) -> None:
        """Load ``config``'s files into the live context (after :meth:`check`)."""
        _load_server(self.context, config, self.where)
        self.config = config

    def reload(self, config: ServerTlsConfig | None = None) -> None:
        """Read the certificate, key and client CA files again (those of ``config`` when
        given) into the same context: new handshakes use them, open connections go on.
        Raises :class:`TlsError`, keeping the old files in use, when they do not load.
        A client CA is added to those trusted: one removed stays trusted until a restart."""
        self.apply(self.check(config))


class CollectorTls:
    """The collector's TLS: ``ingest`` and ``http`` are None on a plaintext port."""

    def __init__(self, config: CollectorConfig) -> None:
        ingest, http = config.ingest.tls, config.http.tls
        self.ingest = ServerTls(ingest, "ingest.tls") if ingest is not None else None
        self.http = ServerTls(http, "http.tls") if http is not None else None
        self.handshake_timeout = ingest.handshake_timeout if ingest is not None else None

    @property
    def client_certificates(self) -> bool:
        """Must agents show a certificate on the ingest port (``authorizer(certificates=)``)?"""
        return self.ingest is not None and self.ingest.mutual

    def ingest_server_kwargs(self) -> dict[str, Any]:
        """``ssl`` and ``ssl_handshake_timeout`` for ``asyncio.start_server`` (or
        ``connect_accepted_socket``); empty on a plaintext port."""
        if self.ingest is None:
            return {}
        return {"ssl": self.ingest.context, "ssl_handshake_timeout": self.handshake_timeout}

    @property
    def http_context(self) -> ssl.SSLContext | None:
        """The HTTP port's context (``web.TCPSite(ssl_context=...)``), or None."""
        return self.http.context if self.http is not None else None

    def reload(self, config: CollectorConfig | None = None) -> None:
        """Re-read every certificate, key and client CA file (the paths of ``config`` when
        given, else the current ones) into the running contexts. Both ports' files are
        checked before either is changed; :class:`TlsError` (old files kept) when one does
        not load, or when ``config`` turns TLS on or off (that needs a restart)."""
        pairs: list[tuple[ServerTls | None, ServerTlsConfig | None, str]] = [
            (self.ingest, config.ingest.tls if config else None, "ingest.tls"),
            (self.http, config.http.tls if config else None, "http.tls"),
        ]
        checked: list[tuple[ServerTls, ServerTlsConfig]] = []
        for live, new, where in pairs:
            if config is not None and (live is None) != (new is None):
                raise TlsError(f"[{where}] cannot be turned on or off by a reload: restart")
            if live is not None:
                checked.append((live, live.check(new)))
        for live, new in checked:
            live.apply(new)
        if self.ingest is not None and isinstance(self.ingest.config, IngestTlsConfig):
            self.handshake_timeout = self.ingest.config.handshake_timeout
        log.info("tls_reloaded", ports=[live.where for live, _ in checked])


# --- the client side --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTls:
    """A client context and the name the server's certificate must carry (None: the host
    being connected to)."""

    context: ssl.SSLContext
    server_name: str | None = None

    def connect_kwargs(self, host: str, handshake_timeout: float) -> dict[str, Any]:
        """``ssl``, ``server_hostname`` and ``ssl_handshake_timeout`` for
        ``asyncio.open_connection(host, ...)``."""
        return {
            "ssl": self.context,
            "server_hostname": self.server_name or host,
            "ssl_handshake_timeout": handshake_timeout,
        }


def client_context(config: ClientTlsConfig, where: str = "agent.tls") -> ssl.SSLContext:
    """A client context for ``config``: the collector's certificate checked against
    ``ca_file`` (or the system's trust store) and its name; TLS 1.2 or later."""
    try:
        ctx = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file is not None else None
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(f"[{where}] cannot load ca_file {config.ca_file}: {exc}") from None
    ctx.minimum_version = MINIMUM_VERSION
    if config.cert_file is not None:
        key = config.key_file or config.cert_file
        try:
            ctx.load_cert_chain(config.cert_file, key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsError(
                f"[{where}] cannot load cert_file {config.cert_file} with key_file {key}: {exc}"
            ) from None
    return ctx


def client_tls(config: ClientTlsConfig | None, where: str = "agent.tls") -> ClientTls | None:
    """The :class:`ClientTls` of an ``[agent.tls]`` section; None (plaintext) without one."""
    if config is None:
        return None
    return ClientTls(client_context(config, where), config.server_name)
