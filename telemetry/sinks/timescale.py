"""TimescaleDB policies of the ``postgres`` sink's hypertable: ``retention`` and ``compress_after``.

How this works: at start, once the table is known to be a hypertable, :func:`apply_policies`
makes the database hold what the config says, in one transaction:

- ``retention = N`` (seconds): a retention policy dropping chunks whose readings' ``ts`` is
  older than N seconds (``add_retention_policy(..., if_not_exists => true)``).
- ``compress_after = N``: compression enabled on the table (segmented by ``sensor``, ordered
  by ``ts DESC``: what the dashboard queries read) and a compression policy for chunks older
  than N seconds (``add_compression_policy(..., if_not_exists => true)``).

Restarting with the same config changes nothing. ``if_not_exists`` alone would keep an
existing policy whose interval differs from the config (TimescaleDB only warns), so a policy
whose interval differs is removed first and added again with the configured one. A key set
to 0 leaves whatever policy the table has alone (one an operator added by hand, say).

The statements are built by the pure functions below (tested without a database); this
repository's tests do not run them against TimescaleDB (docs/sinks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol


class _Connection(Protocol):
    """What this module uses of an ``asyncpg.Connection``."""

    async def fetchval(self, query: str, *args: Any) -> Any: ...
    async def execute(self, query: str, *args: Any) -> str: ...
    def transaction(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """One TimescaleDB policy: its job's procedure, the key of its interval in the job's
    config, its add function's interval argument, its add/remove functions."""

    proc: str
    key: str
    arg: str
    add: str
    remove: str


#: The job config stores ``drop_after`` as ``retention_window`` (TimescaleDB's
#: ``tsl/src/bgw_policy/retention_api.c``).
RETENTION = Policy(
    "policy_retention",
    "retention_window",
    "drop_after",
    "add_retention_policy",
    "remove_retention_policy",
)
COMPRESSION = Policy(
    "policy_compression",
    "compress_after",
    "compress_after",
    "add_compression_policy",
    "remove_compression_policy",
)


def differs_sql(policy: Policy) -> str:
    """True when the table (``$1`` schema, ``$2`` name) has this policy with an interval other
    than ``$3``; NULL when it has none."""
    return (
        f"SELECT (config->>'{policy.key}')::interval <> $3::interval "
        "FROM timescaledb_information.jobs "
        f"WHERE proc_name = '{policy.proc}' AND hypertable_schema = $1 AND hypertable_name = $2"
    )


def remove_sql(policy: Policy) -> str:
    """Remove the policy of the table ``$1`` (regclass text), if any."""
    return f"SELECT {policy.remove}($1::text::regclass, if_exists => true)"


def add_sql(policy: Policy) -> str:
    """Add the policy to the table ``$1`` (regclass text) with the interval ``$2``, unless the
    table has one."""
    return (
        f"SELECT {policy.add}($1::text::regclass, {policy.arg} => $2::interval, "
        "if_not_exists => true)"
    )


def compression_enabled_sql() -> str:
    """True when compression is enabled on the hypertable (``$1`` schema, ``$2`` name)."""
    return (
        "SELECT compression_enabled FROM timescaledb_information.hypertables "
        "WHERE hypertable_schema = $1 AND hypertable_name = $2"
    )


def enable_compression_sql(qualified: str) -> str:
    """Enable compression on the table ``qualified`` (quoted ``schema.table``)."""
    return (
        f"ALTER TABLE {qualified} SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'sensor', timescaledb.compress_orderby = 'ts DESC')"
    )


def wanted(retention: float, compress_after: float) -> list[tuple[Policy, timedelta]]:
    """The policies a config asks for, with their intervals (a key at 0 asks for none)."""
    return [
        (policy, timedelta(seconds=seconds))
        for policy, seconds in ((RETENTION, retention), (COMPRESSION, compress_after))
        if seconds > 0
    ]


def steps(
    policy: Policy,
    interval: timedelta,
    qualified: str,
    *,
    differs: bool | None,
    compression_enabled: bool,
) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements (with their arguments) that give the table ``policy`` at ``interval``,
    given what the database holds: ``differs`` is :func:`differs_sql`'s answer (None: no such
    policy), ``compression_enabled`` :func:`compression_enabled_sql`'s."""
    todo: list[tuple[str, tuple[Any, ...]]] = []
    if policy is COMPRESSION and not compression_enabled:
        todo.append((enable_compression_sql(qualified), ()))
    if differs:
        todo.append((remove_sql(policy), (qualified,)))
    if differs or differs is None:
        todo.append((add_sql(policy), (qualified, interval)))
    return todo


async def apply_policies(
    conn: _Connection,
    schema: str,
    table: str,
    qualified: str,
    *,
    retention: float,
    compress_after: float,
) -> list[str]:
    """Make the hypertable's policies what the config says (see the module docstring);
    returns the statements run, for the log (``[]``: nothing changed)."""
    done: list[str] = []
    policies = wanted(retention, compress_after)
    if not policies:
        return done
    async with conn.transaction():
        # Collectors starting together: one sets the policies, the others then find them set.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"policies:{qualified}")
        for policy, interval in policies:
            enabled = True
            if policy is COMPRESSION:
                enabled = bool(await conn.fetchval(compression_enabled_sql(), schema, table))
            differs = await conn.fetchval(differs_sql(policy), schema, table, interval)
            for statement, args in steps(
                policy, interval, qualified, differs=differs, compression_enabled=enabled
            ):
                await conn.execute(statement, *args)
                done.append(statement.split("(", 1)[0])
    return done
