"""The TimescaleDB policy statements the postgres sink runs (built without a database: this
machine's PostgreSQL has no TimescaleDB, so they are not run against it here)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from telemetry.config import PostgresSinkConfig
from telemetry.sinks.timescale import (
    COMPRESSION,
    RETENTION,
    add_sql,
    differs_sql,
    enable_compression_sql,
    remove_sql,
    steps,
    wanted,
)

TABLE = '"public"."readings"'
MONTH = timedelta(days=30)


def test_keys_default_to_no_policy_and_refuse_negatives() -> None:
    """retention and compress_after are off (0) by default; a negative one is a config error."""
    config = PostgresSinkConfig(type="postgres")
    assert (config.retention, config.compress_after) == (0, 0)
    assert wanted(config.retention, config.compress_after) == []
    for key in ("retention", "compress_after"):
        with pytest.raises(ValidationError, match=key):
            PostgresSinkConfig.model_validate({"type": "postgres", key: -1})


def test_wanted_turns_seconds_into_intervals() -> None:
    """Each key set above 0 asks for its policy, with that many seconds as the interval."""
    assert wanted(30 * 86400, 0) == [(RETENTION, MONTH)]
    assert wanted(0, 7 * 86400) == [(COMPRESSION, timedelta(days=7))]
    assert [p for p, _ in wanted(1, 2)] == [RETENTION, COMPRESSION]


def test_the_statements_name_timescaledb_functions_with_if_not_exists() -> None:
    """add_* keeps an existing policy (if_not_exists), remove_* tolerates a missing one."""
    assert add_sql(RETENTION) == (
        "SELECT add_retention_policy($1::text::regclass, drop_after => $2::interval, "
        "if_not_exists => true)"
    )
    assert add_sql(COMPRESSION) == (
        "SELECT add_compression_policy($1::text::regclass, compress_after => $2::interval, "
        "if_not_exists => true)"
    )
    assert remove_sql(RETENTION) == (
        "SELECT remove_retention_policy($1::text::regclass, if_exists => true)"
    )
    assert "proc_name = 'policy_retention'" in differs_sql(RETENTION)
    # The job config's key is retention_window, not the argument's name (retention_api.c).
    assert "config->>'retention_window'" in differs_sql(RETENTION)
    assert "config->>'compress_after'" in differs_sql(COMPRESSION)
    assert enable_compression_sql(TABLE) == (
        'ALTER TABLE "public"."readings" SET (timescaledb.compress, '
        "timescaledb.compress_segmentby = 'sensor', timescaledb.compress_orderby = 'ts DESC')"
    )


def test_a_restart_with_the_same_policy_runs_nothing() -> None:
    """Idempotent: the policy is there with the configured interval, compression is on."""
    for policy in (RETENTION, COMPRESSION):
        assert steps(policy, MONTH, TABLE, differs=False, compression_enabled=True) == []


def test_a_missing_policy_is_added() -> None:
    """No policy yet: one add, with the table and the interval as arguments."""
    assert steps(RETENTION, MONTH, TABLE, differs=None, compression_enabled=False) == [
        (add_sql(RETENTION), (TABLE, MONTH))
    ]


def test_a_changed_interval_replaces_the_policy() -> None:
    """if_not_exists alone would keep the old interval: remove, then add the configured one."""
    assert steps(RETENTION, MONTH, TABLE, differs=True, compression_enabled=True) == [
        (remove_sql(RETENTION), (TABLE,)),
        (add_sql(RETENTION), (TABLE, MONTH)),
    ]


def test_compression_is_enabled_before_its_policy() -> None:
    """A compression policy needs compression enabled on the table first."""
    assert steps(COMPRESSION, MONTH, TABLE, differs=None, compression_enabled=False) == [
        (enable_compression_sql(TABLE), ()),
        (add_sql(COMPRESSION), (TABLE, MONTH)),
    ]
