"""``telemetry tail``: live readings from a running collector's HTTP side port.

The collector filters (``GET /api/tail``, server-sent events); this side only prints. On a
terminal each reading is a row of aligned, colored columns (time, agent, sensor, value, unit);
otherwise each is one JSON line, exactly as the collector sent it, for ``jq`` and scripts.
Readings the collector had to drop for this subscriber (it read too slowly) are reported on
standard error.

Nothing the collector sends reaches the terminal raw: every character that is not printable
(control characters such as ESC, other ``Cc``/``Cf`` characters, line and paragraph
separators, surrogates, unassigned code points) is printed escaped (``\\x1b``, ``\\u200b``) in
rows and notices, and as a JSON ``\\u`` escape in JSON lines.
"""

from __future__ import annotations

import json
import math
import os
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import aiohttp

from telemetry.tls import ClientTls

#: Exit codes: 0 ``--count`` readings printed; 1 the stream ended or broke; 2 no connection.
EXIT_OK = 0
EXIT_ENDED = 1
EXIT_UNREACHABLE = 2

_RESET = "\x1b[0m"
_COLORS = {"time": "\x1b[2m", "agent": "\x1b[36m", "sensor": "\x1b[1m", "value": "\x1b[32m",
           "unit": "\x1b[2m", "warn": "\x1b[33m"}  # fmt: skip


#: Unicode categories never printed as they are: controls, format characters, separators
#: that break lines, surrogates, private use, unassigned.
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE


def printable(text: str) -> str:
    """``text`` with every character that is not safe on a terminal escaped (``\\x1b``)."""
    if text.isprintable():  # the common case: nothing to escape (isprintable is stricter)
        return text
    out = []
    for char in text:
        if char == " " or not _unsafe(char):
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def printable_json(text: str) -> str:
    """A JSON text with every unsafe character written as a ``\\u`` escape (the same JSON
    value when the character was inside a string, where any raw one would be)."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char == " " or not _unsafe(char):
            out.append(char)
        else:
            for unit in _utf16(char):
                out.append(f"\\u{unit:04x}")
    return "".join(out)


def _utf16(char: str) -> list[int]:
    code = ord(char)
    if code < 0x10000:
        return [code]
    code -= 0x10000
    return [0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)]


@dataclass(frozen=True)
class Event:
    """One server-sent event: its type (``message`` by default) and its data."""

    type: str
    data: str


class SseParser:
    """Bytes of a ``text/event-stream`` in, :class:`Event` objects out (sans-I/O)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._type = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        """Add ``chunk``; return the events it completes."""
        self._buffer += chunk
        events: list[Event] = []
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:  # a blank line ends an event
                if self._data:
                    events.append(Event(self._type or "message", "\n".join(self._data)))
                self._type, self._data = "", []
            elif line.startswith(":"):
                continue  # a comment (keep-alive)
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._type = value
        return events


def format_value(value: float) -> str:
    """A value for people: integers without ``.0``, others to at most 4 decimals."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if value != 0 and (abs(value) >= 1e9 or abs(value) < 1e-3):
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


class RowFormatter:
    """Terminal rows with columns that widen to fit what they have shown (up to a cap)."""

    caps = {"agent": 24, "sensor": 48, "value": 16}

    def __init__(self, color: bool) -> None:
        self.color = color
        self.widths = {"agent": 8, "sensor": 16, "value": 8}

    def _paint(self, kind: str, text: str) -> str:
        return f"{_COLORS[kind]}{text}{_RESET}" if self.color else text

    def row(self, record: dict[str, Any]) -> str:
        """One aligned line for ``record`` (a record as the collector sends it)."""
        try:
            ts = datetime.fromisoformat(str(record.get("ts", "")).replace("Z", "+00:00"))
            when = ts.astimezone().strftime("%H:%M:%S.%f")[:-3]
        except ValueError:
            when = "--:--:--.---"
        value: Any = record.get("value")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        cells = {
            "agent": printable(str(record.get("agent", ""))),
            "sensor": printable(str(record.get("sensor", ""))),
            "value": format_value(value) if number else printable(str(value)),
        }
        for key, text in cells.items():
            self.widths[key] = min(self.caps[key], max(self.widths[key], len(text)))
        parts = [
            self._paint("time", when),
            self._paint("agent", cells["agent"].ljust(self.widths["agent"])),
            self._paint("sensor", cells["sensor"].ljust(self.widths["sensor"])),
            self._paint("value", cells["value"].rjust(self.widths["value"])),
            self._paint("unit", printable(str(record.get("unit") or ""))),
        ]
        return "  ".join(parts).rstrip()

    def warning(self, text: str) -> str:
        """A notice line (dropped readings) for standard error."""
        return self._paint("warn", printable(text))


def use_color(stream: TextIO) -> bool:
    """Colors on a terminal, unless ``NO_COLOR`` is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


async def tail(
    url: str,
    *,
    sensors: Sequence[str] = (),
    agents: Sequence[str] = (),
    tags: Sequence[str] = (),
    count: int = 0,
    json_lines: bool | None = None,
    token: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    tls: ClientTls | None = None,
) -> int:
    """Print readings from the collector at ``url`` until ``count`` (0: forever); exit code.

    ``json_lines`` None: JSON lines unless ``out`` is a terminal. ``tls``: the CA, client
    certificate and server name for an ``https://`` URL (default: the system's trust store).
    ``token``: sent as ``Authorization: Bearer`` (for a collector with ``[http] tokens``).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    as_json = not out.isatty() if json_lines is None else json_lines
    rows = RowFormatter(use_color(out))
    params = (
        [("sensor", s) for s in sensors]
        + [("agent", a) for a in agents]
        + [("tag", t) for t in tags]
    )
    endpoint = url.rstrip("/") + "/api/tail"
    printed = 0
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(endpoint, params=params, headers=headers, **_tls_kwargs(tls)) as response,
        ):
            if response.status != 200:
                text = printable((await response.text(errors="replace"))[:200].strip())
                if response.status == 401:
                    text += " (give the token with --token or TELEMETRY_TAIL_TOKEN)"
                print(f"telemetry: {endpoint}: HTTP {response.status}: {text}", file=err)
                return EXIT_UNREACHABLE
            parser = SseParser()
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    if event.type == "dropped":
                        note = f"telemetry: {_dropped(event.data)} readings dropped so far "
                        print(rows.warning(note + "(reading too slowly)"), file=err, flush=True)
                        continue
                    if event.type != "message":
                        continue
                    if as_json:
                        out.write(printable_json(event.data) + "\n")
                    else:
                        out.write(_row(rows, event.data) + "\n")
                    printed += 1
                    if count and printed >= count:
                        out.flush()
                        return EXIT_OK
                out.flush()
    except aiohttp.ClientConnectorError as exc:
        reason = printable(str(exc.os_error.strerror or exc))
        print(f"telemetry: cannot connect to {printable(url)}: {reason}", file=err)
        return EXIT_UNREACHABLE
    except aiohttp.ClientError as exc:
        print(f"telemetry: stream from {printable(url)} broke: {printable(str(exc))}", file=err)
        return EXIT_ENDED
    print("telemetry: the collector ended the stream", file=err)
    return EXIT_ENDED


def _tls_kwargs(tls: ClientTls | None) -> dict[str, Any]:
    """aiohttp's ``ssl`` and ``server_hostname`` for ``tls``."""
    if tls is None:
        return {}
    return {"ssl": tls.context, "server_hostname": tls.server_name}


def _dropped(data: str) -> str:
    """The count of an ``event: dropped``, as text safe to print."""
    try:
        dropped = json.loads(data).get("dropped", 0)
    except (ValueError, AttributeError):
        dropped = data
    return printable(str(dropped))


def _row(rows: RowFormatter, data: str) -> str:
    """The terminal row of one event's data (escaped as it is when it is no JSON object)."""
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return printable(data)
    return rows.row(record)
