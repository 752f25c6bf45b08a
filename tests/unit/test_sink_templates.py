"""Subject/topic templates and their escaping (telemetry.sinks._template), without a loop."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

import pytest

from telemetry.sinks._template import (
    Template,
    escape_mqtt,
    escape_nats,
    nats_subject_matches,
)
from telemetry.sinks.base import Record

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def reading(sensor: str, agent: str = "agent-1", metric: str | None = None) -> Record:
    return Record(
        id="a:0:0", agent=agent, sensor=sensor, value=1.0, ts=NOW, received_at=NOW, metric=metric
    )


@pytest.mark.parametrize(
    ("value", "nats", "mqtt"),
    [
        ("greenhouse-2", "greenhouse-2", "greenhouse-2"),
        ("soil.3", "soil%2E3", "soil.3"),
        ("a b", "a%20b", "a%20b"),
        ("gh/soil", "gh%2Fsoil", "gh%2Fsoil"),
        ("*", "%2A", "%2A"),
        (">", "%3E", "%3E"),
        ("+#", "+%23", "%2B%23"),
        ("$SYS", "%24SYS", "%24SYS"),
        ("100%", "100%25", "100%25"),
        ("température", "temp%C3%A9rature", "temp%C3%A9rature"),
        ("", "_", "_"),
    ],
)
def test_values_are_escaped_into_one_safe_token(value, nats, mqtt):
    """Separators, wildcards, spaces, '$', '%' and non-ASCII are %XX-escaped per backend."""
    assert escape_nats(value) == nats
    assert escape_mqtt(value) == mqtt
    if value:
        assert unquote(escape_nats(value)) == value  # reversible


def test_a_rendered_subject_keeps_the_templates_token_count():
    """Whatever the sensor name, the subject has exactly the template's tokens."""
    template = Template("telemetry.{agent}.{sensor}.{metric}", escape_nats)
    subject = template.render(reading("a.b.*.>  x", agent="host 1.lan"))
    assert subject == "telemetry.host%201%2Elan.a%2Eb%2E%2A%2E%3E%20%20x._"
    assert len(subject.split(".")) == 4
    assert nats_subject_matches(subject, "telemetry.>")


@pytest.mark.parametrize(
    ("subject", "pattern", "matches"),
    [
        ("telemetry.a.b", "telemetry.>", True),
        ("telemetry", "telemetry.>", False),
        ("telemetry.a.b", "telemetry.*.b", True),
        ("telemetry.a.b", "telemetry.*", False),
        ("telemetry.a", "telemetry.a", True),
        ("other.a", "telemetry.>", False),
    ],
)
def test_nats_subject_matching(subject, pattern, matches):
    """'*' matches one token and '>' one or more, as the NATS server does."""
    assert nats_subject_matches(subject, pattern) is matches
