"""TLS settings (docs/security.md): ``[ingest.tls]`` and ``[http.tls]`` on the collector,
``[agent.tls]`` on the agent. A section that is present turns TLS on; absent, the port speaks
plaintext as before. The contexts are built by :mod:`telemetry.tls`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from telemetry.config.base import Strict


class ServerTlsConfig(Strict):
    """``[ingest.tls]`` / ``[http.tls]``: the collector's certificate, and the CA its clients'
    certificates must be signed by (mutual TLS) when ``client_ca_file`` is set."""

    #: PEM certificate chain: the server certificate first, then any intermediates.
    cert_file: Path
    #: PEM private key of ``cert_file`` (unset: the key is in ``cert_file``).
    key_file: Path | None = None
    #: PEM CA certificate(s). Set: every client must present a certificate signed by one of
    #: them (mutual TLS); on the ingest port its names then identify the agent.
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        """Must clients present a certificate?"""
        return self.client_ca_file is not None


class IngestTlsConfig(ServerTlsConfig):
    """``[ingest.tls]``: as ``[http.tls]``, plus the handshake deadline."""

    #: Seconds a client has to complete the TLS handshake after connecting.
    handshake_timeout: float = Field(default=10.0, gt=0)


class ClientTlsConfig(Strict):
    """``[agent.tls]``: how an agent checks the collector, and its own certificate for mutual
    TLS. An empty ``[agent.tls]`` section means TLS with the system's trust store."""

    #: PEM CA certificate(s) the collector's certificate must be signed by (unset: the
    #: system's trust store).
    ca_file: Path | None = None
    #: PEM client certificate (chain), for collectors that require one (mutual TLS).
    cert_file: Path | None = None
    #: PEM private key of ``cert_file`` (unset: the key is in ``cert_file``).
    key_file: Path | None = None
    #: The name the collector's certificate must carry, also sent as SNI (unset: the host
    #: of the endpoint being connected to).
    server_name: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> ClientTlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not")
        return self
