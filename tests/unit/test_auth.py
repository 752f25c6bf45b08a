"""Unit tests of the collector's auth rules (telemetry/collector/auth.py): which credential may
speak for which agent id."""

from __future__ import annotations

import pytest

from telemetry.collector.auth import Authorizer, Credential, token_digest
from telemetry.protocol import Unauthorized


def credential(token: str, *agents: str) -> Credential:
    return Credential(token_digest(token), agents or ("*",))


def test_without_credentials_anyone_may_speak_for_any_id() -> None:
    """No credential and no certificates: auth is off and anonymous readings are taken."""
    auth = Authorizer()
    assert not auth.enabled
    assert auth.anonymous
    auth.check("anything", None)


def test_a_token_speaks_only_for_the_ids_it_covers() -> None:
    """A token bound to a glob admits ids matching it, and no others."""
    auth = Authorizer([credential("gh", "greenhouse-*"), credential("shed", "shed-1")])
    auth.check("greenhouse-2", "gh")
    auth.check("shed-1", "shed")
    for agent, token in [("shed-1", "gh"), ("greenhouse-2", "shed"), ("x", "nope"), ("x", None)]:
        with pytest.raises(Unauthorized) as info:
            auth.check(agent, token)
        assert "credential" in info.value.detail  # one detail for every refusal
    assert auth.enabled
    assert not auth.anonymous


def test_allow_anonymous_keeps_readings_without_hello_but_not_hellos_without_credentials() -> None:
    """allow_anonymous opens fire-and-forget; a hello still needs a credential."""
    auth = Authorizer([credential("t")], allow_anonymous=True)
    assert auth.anonymous
    with pytest.raises(Unauthorized):
        auth.check("a", None)


def test_certificate_names_cover_their_own_ids() -> None:
    """With client certificates, the CN/SAN names are the ids the client may speak for."""
    auth = Authorizer(certificates=True)
    auth.check("pi-7", None, names=("pi-7", "pi-7.sensors.example"))
    with pytest.raises(Unauthorized):
        auth.check("pi-8", None, names=("pi-7",))
    with pytest.raises(Unauthorized):
        auth.check("pi-7", None)


def test_a_token_can_add_ids_to_a_certificate() -> None:
    """A token credential also admits ids beyond the certificate's names."""
    auth = Authorizer([credential("relay", "site-*")], certificates=True)
    auth.check("site-3", "relay", names=("gateway",))
    auth.check("gateway", None, names=("gateway",))
