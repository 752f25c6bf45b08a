"""Secrets out of logs and printed configs: URLs, DSNs and error texts with the secrets masked.

- :func:`redact_url` masks the password of one URL (``scheme://user:pass@host`` ->
  ``scheme://user:***@host``), and secret query parameters (``?password=...``);
- :func:`redact_text` does that to every URL in a free text (an exception's message), and
  masks libpq-style ``password=...`` pairs;
- :func:`scrub` additionally replaces given secret values wherever they occur;
- :func:`redact_config` masks the secrets of a whole config (``telemetry check-config``).

Used wherever a sink puts a URL, a DSN or a client library's error text into a log event or an
exception message, and by ``telemetry check-config``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

#: What a masked secret is shown as.
MASK = "***"
#: Query parameters and ``key=value`` pairs whose value is a secret.
SECRET_KEYS = frozenset(
    {"password", "passwd", "pass", "pwd", "token", "secret", "sslpassword", "auth_token"}
)

#: A URL with a scheme and an authority, inside free text.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>,\]\[]+")
#: ``password=secret`` or ``password: 'secret'`` in free text (libpq DSNs, repr()s).
_PAIR = re.compile(
    r"(?i)\b(" + "|".join(sorted(SECRET_KEYS, key=len, reverse=True)) + r")(\s*[=:]\s*)"
    r"('[^']*'|\"[^\"]*\"|[^\s&,;)'\"]+)"
)


def redact_url(url: str, *, token_userinfo: bool = False) -> str:
    """``url`` with its password (and secret query parameters) replaced by ``***``.

    ``token_userinfo``: a userinfo without a password is itself a secret (NATS takes
    ``nats://<token>@host`` as a token). Text that is not a URL is returned as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _PAIR.sub(_mask_pair, url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:{MASK}"
        elif token_userinfo and userinfo:
            userinfo = MASK
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in SECRET_KEYS for key, _ in pairs):
            query = urlencode(
                [(key, MASK if key.lower() in SECRET_KEYS else value) for key, value in pairs],
                safe="*",
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, *, token_userinfo: bool = False) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`, and every
    ``password=...`` (or ``token``, ``secret``...) pair masked."""
    text = _URL.sub(lambda m: redact_url(m.group(0), token_userinfo=token_userinfo), text)
    return _PAIR.sub(_mask_pair, text)


def scrub(text: str, secrets: Iterable[str | None] = (), *, token_userinfo: bool = False) -> str:
    """:func:`redact_text`, and every non-empty value of ``secrets`` replaced by ``***``
    wherever it occurs (a client library may echo a password in its own words)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return redact_text(text, token_userinfo=token_userinfo)


def url_secrets(url: str, *, token_userinfo: bool = False) -> list[str]:
    """The secrets inside ``url``: its password (or, with ``token_userinfo``, a userinfo
    without one) and the values of secret query parameters (for :func:`scrub`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, colon, password = userinfo.partition(":")
        if colon:
            found.append(password)
        elif token_userinfo:
            found.append(user)
    found += [value for key, value in parse_qsl(parts.query) if key.lower() in SECRET_KEYS]
    found += [unquote(secret) for secret in found]
    return list(dict.fromkeys(secret for secret in found if secret))


#: Parts of a config key that name a secret (``password``, ``tokens``, ``api_key``...).
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "credential",
    "private_key",
)


def is_secret_key(key: str) -> bool:
    """True when a config key names a secret: ``dsn``, or a key containing one of
    :data:`SECRET_KEY_PARTS`."""
    lowered = key.lower()
    return lowered == "dsn" or any(part in lowered for part in SECRET_KEY_PARTS)


def redact_config(data: Any, key: str = "") -> Any:
    """A config as JSON-ready data (``model_dump(mode="json")``) with every secret masked:
    the values of secret keys (:func:`is_secret_key`) become ``***`` (a list keeps its
    length, a table its keys), and URLs lose their passwords (NATS ``servers`` their tokens
    too)."""
    if is_secret_key(key) and data not in (None, "", [], {}):
        if isinstance(data, list):
            return [MASK] * len(data)
        if isinstance(data, dict):
            return dict.fromkeys(data, MASK)
        return MASK
    if isinstance(data, dict):
        return {name: redact_config(value, str(name)) for name, value in data.items()}
    if isinstance(data, list):
        return [redact_config(value, key) for value in data]
    if isinstance(data, str) and "://" in data:
        return redact_url(data, token_userinfo=key == "servers")
    return data


def _mask_pair(match: re.Match[str]) -> str:
    value = match.group(3)
    if value == MASK or value.strip("'\"") == MASK:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}"
