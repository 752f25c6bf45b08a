"""``telemetry send``'s flags make readings the collector accepts, or say clearly why not."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from telemetry.cli import build_parser, main
from telemetry.cli.send import _reading_from_args
from telemetry.config import ConfigError
from telemetry.protocol.readings import Reading


def reading(*argv: str) -> dict[str, Any]:
    args: argparse.Namespace = build_parser().parse_args(["send", *argv])
    return _reading_from_args(args)


@pytest.mark.parametrize(
    ("ts", "sent"),
    [
        ("1700000000", 1700000000),
        ("1700000000.25", 1700000000.25),
        ("2026-11-27T07:15:02.123Z", "2026-11-27T07:15:02.123Z"),
    ],
)
def test_ts_takes_epoch_seconds_as_the_wire_does(ts: str, sent: object) -> None:
    """Epoch seconds go as a JSON number: the wire refuses a numeric string."""
    out = reading("--sensor", "shed/door", "--value", "1", "--ts", ts)
    assert out["ts"] == sent
    assert type(out["ts"]) is type(sent)
    Reading.model_validate(out)  # what the collector validates: accepted


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-infinity"])
def test_a_value_that_is_not_finite_is_refused_by_name(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["send", "--sensor", "a", f"--value={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --value/-v: {value!r} is not a finite number (no NaN or infinity)" in err
    assert "null" not in err


def test_a_value_that_is_no_number_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["send", "--sensor", "a", "--value", "warm"])
    assert "argument --value/-v: 'warm' is not a number" in capsys.readouterr().err


def test_json_with_nan_is_refused() -> None:
    with pytest.raises(ConfigError, match="NaN is not a finite number"):
        reading("--json", '{"sensor": "a", "value": NaN}')
