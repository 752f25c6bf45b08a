"""Subject and topic templates for the message-bus sinks, with their escaping.

A template such as ``"telemetry.{agent}.{sensor}"`` is filled with a record's ``agent``,
``sensor``, ``metric`` and ``unit``. Each value is escaped so that it stays **one** token (NATS)
or one level (MQTT) and can never act as a separator or a wildcard:

- the bytes of the value's UTF-8 encoding that are not in the backend's safe set are written
  as ``%XX`` (uppercase hex), like URL percent-encoding; ``%`` itself is escaped, so the
  escaping is reversible with ``urllib.parse.unquote``;
- safe for NATS: ``A-Z a-z 0-9 - _ ~ : = @ + ,`` (``.``, ``*``, ``>``, ``/``, spaces, ``$``,
  and every non-ASCII character are escaped);
- safe for MQTT: the same but ``+``, plus ``.`` (``/``, ``+``, ``#``, spaces, ``$``, NUL and
  every non-ASCII character are escaped);
- a missing value (``metric`` or ``unit`` of a reading without one) or an empty one becomes
  ``_``.

So sensor ``greenhouse-2/soil 3.1`` is the NATS token ``greenhouse-2%2Fsoil%203%2E1`` and the
MQTT level ``greenhouse-2%2Fsoil%203.1``.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from functools import lru_cache

from telemetry.sinks.base import Record

_BASE_SAFE = string.ascii_letters + string.digits + "-_~:=@+,"
NATS_SAFE = frozenset(_BASE_SAFE.encode("ascii"))
MQTT_SAFE = frozenset((_BASE_SAFE.replace("+", "") + ".").encode("ascii"))
MISSING = "_"


def _escaper(safe: frozenset[int]) -> Callable[[str], str]:
    table = {byte: chr(byte) if byte in safe else f"%{byte:02X}" for byte in range(256)}

    @lru_cache(maxsize=65536)  # sensor and agent names repeat: escape each once
    def escape(value: str) -> str:
        if not value:
            return MISSING
        return "".join([table[byte] for byte in value.encode("utf-8")])

    return escape


escape_nats = _escaper(NATS_SAFE)
escape_mqtt = _escaper(MQTT_SAFE)


class Template:
    """A compiled subject/topic template; :meth:`render` fills it from a record."""

    def __init__(self, template: str, escape: Callable[[str], str]) -> None:
        self.template = template
        self._escape = escape
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        self._fields = tuple(sorted(fields))

    def render(self, record: Record) -> str:
        """The template filled with the record's escaped values."""
        escape = self._escape
        values: dict[str, str] = {}
        for name in self._fields:
            value = getattr(record, name)
            values[name] = MISSING if value is None else escape(value)
        return self.template.format_map(values)

    def sample(self) -> str:
        """The template filled with a sample value (to check it against a stream's subjects)."""
        return self.template.format_map(dict.fromkeys(self._fields, "x"))


def nats_subject_matches(subject: str, pattern: str) -> bool:
    """True when NATS ``subject`` matches ``pattern`` (``*`` one token, ``>`` the rest)."""
    tokens = subject.split(".")
    parts = pattern.split(".")
    for i, part in enumerate(parts):
        if part == ">":
            return len(tokens) > i
        if i >= len(tokens) or (part != "*" and part != tokens[i]):
            return False
    return len(tokens) == len(parts)
