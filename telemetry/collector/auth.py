"""Who may speak for which agent id (docs/security.md, docs/protocol.md#identity).

A credential is a secret token (held only as its SHA-256) and the agent ids it may speak for
(exact ids or globs such as ``greenhouse-*``). With mutual TLS, the client certificate's
names (its subject CN and DNS SANs) are credentials too: each covers the agent id equal to
it. A ``hello`` is admitted when one of the connection's credentials covers its agent id.

With no credential configured and no client certificate required, auth is off: anyone may
connect, as on a trusted LAN. When auth is on, nothing but a ``hello`` is taken before a
successful ``hello``, unless ``allow_anonymous`` says so; then fire-and-forget readings
without a ``hello`` are stored under the sender's host.

Tokens are compared by digest with :func:`hmac.compare_digest`, against every credential, so
the time taken does not tell which one came close.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from telemetry.config import IngestConfig
from telemetry.log import get_logger
from telemetry.protocol import Unauthorized

log = get_logger("telemetry.auth")

#: The detail an agent sees; the log says which rule refused it.
REFUSED = "credential missing, not accepted, or not valid for this agent id"


def token_digest(token: str) -> bytes:
    """The SHA-256 of a token, the only form in which the collector keeps it."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Credential:
    """A token's digest and the agent ids (or globs) it may speak for."""

    digest: bytes
    agents: tuple[str, ...] = ("*",)

    def covers(self, agent: str) -> bool:
        return any(fnmatch.fnmatchcase(agent, pattern) for pattern in self.agents)


class Authorizer:
    """The collector's rules for a ``hello``; immutable, swapped whole on reload."""

    def __init__(
        self,
        credentials: Sequence[Credential] = (),
        *,
        allow_anonymous: bool = False,
        certificates: bool = False,
    ) -> None:
        """``certificates``: clients must show a certificate (mutual TLS), whose names cover
        the agent ids they may speak for."""
        self.credentials = tuple(credentials)
        self.certificates = certificates
        self.allow_anonymous = allow_anonymous

    @property
    def enabled(self) -> bool:
        """Does a ``hello`` need a credential?"""
        return bool(self.credentials) or self.certificates

    @property
    def anonymous(self) -> bool:
        """May readings arrive without a ``hello``?"""
        return not self.enabled or self.allow_anonymous

    def check(self, agent: str, token: str | None, names: Sequence[str] = ()) -> None:
        """Admit a ``hello`` for ``agent`` or raise :class:`Unauthorized`.

        ``token``: the ``hello``'s token; ``names``: the verified client certificate's names.
        """
        if not self.enabled:
            return
        if agent in names:
            return
        if token is not None:
            digest = token_digest(token)
            matched = [c for c in self.credentials if hmac.compare_digest(digest, c.digest)]
            if any(credential.covers(agent) for credential in matched):
                return
            why = "token does not cover this agent id" if matched else "token not accepted"
        elif names:
            why = "certificate names do not cover this agent id"
        else:
            why = "no token and no client certificate"
        log.warning("hello_refused", agent=agent, reason=why, certificate_names=list(names))
        raise Unauthorized(REFUSED)


def authorizer(ingest: IngestConfig, *, certificates: bool = False) -> Authorizer:
    """The rules of an ``[ingest]`` config: its ``tokens`` (any agent id), its
    ``credentials`` (the ids each covers) and ``allow_anonymous``. ``certificates``: clients
    show verified certificates (mutual TLS)."""
    credentials = [Credential(token_digest(t.get_secret_value())) for t in ingest.tokens]
    credentials += [Credential(c.digest, tuple(c.agents)) for c in ingest.credentials]
    return Authorizer(
        credentials, allow_anonymous=ingest.allow_anonymous, certificates=certificates
    )
