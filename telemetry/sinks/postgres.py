"""The ``postgres`` sink: readings in a PostgreSQL table, idempotent on the reading id.

How this works: :meth:`PostgresSink.start` opens an asyncpg pool and, with ``create_table``,
creates the schema and the table (the sqlite sink's columns, in PostgreSQL types). Every pooled
connection gets a temporary staging table (``ON COMMIT DELETE ROWS``) when it is opened. A
batch is one transaction on one connection: ``COPY`` the rows into the staging table (binary
protocol, fast), then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into the table, so a
resent reading (same id) is stored once, and ``write()`` returns after ``COMMIT``.

A resend must not hide a conflict: when the INSERT's status says fewer rows went in than were
staged, one more query (same transaction) finds the staged rows whose id is stored with
other content (compared in SQL: ``timestamptz`` and ``jsonb`` compare canonically) and reads
those stored rows back; those records are refused (:class:`RefusedRecords`) after the rest is
committed. A batch of new readings pays nothing for this.

Fire-and-forget readings have a NULL id; PostgreSQL lets any number of NULLs share a unique
column, so they are all kept.

Where the TimescaleDB extension is installed in the database (``hypertable = true``), a newly
created table becomes a hypertable on ``ts``. TimescaleDB requires unique keys to include the
partitioning column, so there the key is ``(id, ts)``: a resend of a reading that carries its
own ``ts`` is still stored once.

A connection lost mid-batch (server restart, ``pg_terminate_backend``) rolls the transaction
back and raises :class:`TransientSinkError`; the pool replaces the connection on the next
acquire and the pipeline retries the batch. Data the server refuses raises
:class:`PermanentSinkError`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import asyncpg

from telemetry.config import PostgresSinkConfig
from telemetry.log import get_logger
from telemetry.redact import redact_text, scrub, url_secrets
from telemetry.sinks._common import COLUMNS, sink_name, started
from telemetry.sinks.base import (
    Content,
    PermanentSinkError,
    Record,
    RefusedRecords,
    TransientSinkError,
    canonical_content,
    conflict_reason,
    content_of,
)
from telemetry.sinks.encoding import table_rows
from telemetry.sinks.latest import postgres_latest, record_of
from telemetry.sinks.timescale import apply_policies

log = get_logger("telemetry.sinks.postgres")

STAGE = "telemetry_stage"
_COLUMN_TYPES = """
    id          text,
    agent       text NOT NULL,
    sensor      text NOT NULL,
    metric      text,
    value       double precision NOT NULL,
    unit        text,
    ts          timestamptz NOT NULL,
    tags        jsonb NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL"""

#: SQLSTATE classes worth retrying: connection (08), transaction rollback (40: serialization,
#: deadlock), insufficient resources (53), operator intervention (57: shutdown, terminated
#: backend, cancelled), system error (58). Any other server error is about the data or the
#: schema (22 data, 23 constraint, 42 syntax or access...) and will fail again.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (the config already restricts its characters)."""
    return '"' + name.replace('"', '""') + '"'


def table_ddl(schema: str, table: str, *, hypertable: bool) -> list[str]:
    """The statements that create the schema and the table, for a plain or a hyper table."""
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    key = "(id, ts)" if hypertable else "(id)"
    statements = [
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}",
        f"CREATE TABLE IF NOT EXISTS {qualified} ({_COLUMN_TYPES},\n"
        f"    CONSTRAINT {quote_ident(table + '_id_key')} UNIQUE {key}\n)",
        f"CREATE INDEX IF NOT EXISTS {quote_ident(table + '_sensor_ts')} "
        f"ON {qualified} (sensor, ts)",
    ]
    if hypertable:
        statements.append(
            f"SELECT create_hypertable('{qualified}', 'ts', if_not_exists => TRUE, "
            "migrate_data => TRUE)"
        )
    return statements


def insert_sql(schema: str, table: str, conflict: str) -> str:
    """Move the staged rows into the table, skipping ids it already holds."""
    columns = ", ".join(COLUMNS)
    return (
        f"INSERT INTO {quote_ident(schema)}.{quote_ident(table)} ({columns}) "
        f"SELECT {columns} FROM pg_temp.{STAGE} ON CONFLICT {conflict} DO NOTHING"
    )


#: The columns that make a reading's content (``received_at`` and ``agent`` do not).
CONTENT_COLUMNS = ("sensor", "metric", "value", "unit", "ts", "tags")


def conflicts_sql(schema: str, table: str, key: Sequence[str]) -> str:
    """The stored rows (id, content) of the ids some staged row conflicts with: same ``key``,
    other content. Run after the INSERT, in its transaction."""
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    join = " AND ".join(f"t.{column} = s.{column}" for column in key)
    same_key = " AND ".join(f"c.{column} = k.{column}" for column in key)
    ours = ", ".join(_content_expression("s", column) for column in CONTENT_COLUMNS)
    theirs = ", ".join(_content_expression("t", column) for column in CONTENT_COLUMNS)
    return (
        f"WITH k AS (SELECT DISTINCT {', '.join(f's.{c}' for c in key)} "
        f"FROM pg_temp.{STAGE} s JOIN {qualified} t ON {join} "
        f"WHERE ({ours}) IS DISTINCT FROM ({theirs})) "
        f"SELECT c.id, c.sensor, c.metric, c.value, c.unit, c.ts, c.tags::text, c.received_at "
        f"FROM {qualified} c JOIN k ON {same_key}"
    )


def _content_expression(alias: str, column: str) -> str:
    # A ts equal to received_at was stamped by the collector (the reading had none): it is not
    # part of the content (telemetry.sinks.base.content_of).
    if column == "ts":
        return f"NULLIF({alias}.ts, {alias}.received_at)"
    return f"{alias}.{column}"


def inserted_count(status: str) -> int:
    """The row count of an ``INSERT 0 <n>`` command status (-1 when it has none)."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return -1


def refused_records(batch: Sequence[Record], stored: Sequence[Sequence[Any]]) -> dict[int, str]:
    """The records of ``batch`` whose id is stored (``stored``: rows of :func:`conflicts_sql`)
    with content other than theirs: index -> reason."""
    contents: dict[str, list[Content]] = {}
    for rid, sensor, metric, value, unit, ts, tags, received_at in stored:
        contents.setdefault(rid, []).append(
            canonical_content(sensor, value, ts, metric, unit, tags, received_at)
        )
    refused: dict[int, str] = {}
    for index, record in enumerate(batch):
        rid = record.id
        if rid is not None and rid in contents and content_of(record) not in contents[rid]:
            refused[index] = conflict_reason(rid)
    return refused


async def timescaledb_installed(conn: asyncpg.Connection) -> bool:
    """True when the TimescaleDB extension is installed in the connection's database."""
    found = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return found is not None


def classify(
    exc: BaseException, action: str, secrets: Sequence[str | None] = ()
) -> TransientSinkError | PermanentSinkError:
    """The sink error an asyncpg/OS failure maps to; ``secrets`` (the DSN's password) and any
    URL's password are masked in its message."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        message = f"postgres {action} failed: {type(exc).__name__} [{sqlstate}] {exc}"
        if sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES or not sqlstate:
            return TransientSinkError(scrub(message, secrets))
        return PermanentSinkError(scrub(message, secrets))
    # InterfaceError (connection closed/lost), OSError (refused, reset), timeouts.
    return TransientSinkError(
        scrub(f"postgres {action} failed: {type(exc).__name__}: {exc}", secrets)
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Once per pooled connection: the staging table lives as long as the session, and
    # ON COMMIT DELETE ROWS empties it at the end of every batch's transaction.
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ({_COLUMN_TYPES}) ON COMMIT DELETE ROWS"
    )


class PostgresSink:
    """Writes each batch with COPY + INSERT ... ON CONFLICT DO NOTHING in one transaction."""

    config_model: ClassVar[type[PostgresSinkConfig]] = PostgresSinkConfig

    def __init__(self, config: PostgresSinkConfig) -> None:
        self.name = sink_name(config)
        self.config = config
        self.schema = config.schema_
        self.table = config.table
        self.hypertable = False  # set at start: True when the table is a TimescaleDB hypertable
        self._insert = insert_sql(self.schema, self.table, "(id)")
        self._conflicts = conflicts_sql(self.schema, self.table, ("id",))
        self._pool: asyncpg.Pool | None = None

    def dsn(self) -> str | None:
        """The configured DSN, else ``TELEMETRY_POSTGRES_DSN``, else None (libpq env vars)."""
        if self.config.dsn is not None:
            return self.config.dsn.get_secret_value()
        return os.environ.get("TELEMETRY_POSTGRES_DSN") or None

    def where(self) -> str:
        """The server as logs may show it: the DSN with its password masked."""
        dsn = self.dsn()
        return redact_text(dsn) if dsn else "the libpq environment (PGHOST...)"

    def _secrets(self) -> list[str | None]:
        """What error messages must not show: the DSN's password, ``PGPASSWORD``."""
        dsn = self.dsn()
        return [*(url_secrets(dsn) if dsn else ()), os.environ.get("PGPASSWORD")]

    async def start(self) -> None:
        """Open the pool and create the table when missing; raise when PostgreSQL refuses."""
        if self._pool is not None:
            return
        config = self.config
        secrets = self._secrets()
        try:
            pool = await asyncpg.create_pool(
                self.dsn(),
                min_size=config.pool_min,
                max_size=config.pool_max,
                timeout=config.connect_timeout,
                init=_init_connection,
                server_settings={"application_name": f"telemetry-sink-{self.name}"},
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise classify(exc, f"connect to {self.where()}", secrets) from exc
        except ValueError as exc:  # a DSN asyncpg cannot parse (e.g. a port that is no number)
            raise PermanentSinkError(
                scrub(f"postgres sink {self.name}: invalid DSN: {exc}", secrets)
            ) from exc
        try:
            async with pool.acquire(timeout=config.connect_timeout) as conn:
                await self._prepare_table(conn)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
                raise classify(exc, "table setup", secrets) from exc
            raise
        self._pool = pool
        log.info(
            "postgres_sink_started",
            sink=self.name,
            table=f"{self.schema}.{self.table}",
            hypertable=self.hypertable,
        )

    async def _prepare_table(self, conn: asyncpg.Connection) -> None:
        timescale = self.config.hypertable and await timescaledb_installed(conn)
        if self.config.create_table:
            async with conn.transaction():
                # Collectors starting together would race in CREATE ... IF NOT EXISTS (it is
                # not atomic in PostgreSQL): one creates, the others wait here, then see it.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    f"telemetry:{self.schema}.{self.table}",
                )
                for statement in table_ddl(self.schema, self.table, hypertable=timescale):
                    await conn.execute(statement)
        # An existing table decides for itself: a hypertable keys on (id, ts).
        self.hypertable = timescale and await self._is_hypertable(conn)
        key = ("id", "ts") if self.hypertable else ("id",)
        await self._apply_policies(conn)
        self._insert = insert_sql(self.schema, self.table, f"({', '.join(key)})")
        self._conflicts = conflicts_sql(self.schema, self.table, key)

    async def _apply_policies(self, conn: asyncpg.Connection) -> None:
        """``retention`` / ``compress_after`` on a hypertable (telemetry.sinks.timescale)."""
        config = self.config
        if not (config.retention or config.compress_after):
            return
        if not self.hypertable:
            log.warning("timescale_policies_ignored", sink=self.name, reason="not a hypertable")
            return
        qualified = f"{quote_ident(self.schema)}.{quote_ident(self.table)}"
        changes = await apply_policies(
            conn,
            self.schema,
            self.table,
            qualified,
            retention=config.retention,
            compress_after=config.compress_after,
        )
        log.info("timescale_policies", sink=self.name, changed=changes)

    async def latest(self, limit: int) -> list[Record]:
        """The newest reading (by ``ts``) of at most ``limit`` sensors (telemetry.sinks.latest)."""
        pool = started(self._pool, "postgres")
        qualified = f"{quote_ident(self.schema)}.{quote_ident(self.table)}"
        try:
            async with pool.acquire(timeout=self.config.connect_timeout) as conn:
                rows = await conn.fetch(postgres_latest(qualified), limit)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise classify(exc, "latest", self._secrets()) from exc
        return [record_of(tuple(row)) for row in rows]

    async def _is_hypertable(self, conn: asyncpg.Connection) -> bool:
        found = await conn.fetchval(
            "SELECT 1 FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = $1 AND hypertable_name = $2",
            self.schema,
            self.table,
        )
        return found is not None

    async def write(self, batch: Sequence[Record]) -> None:
        """Insert the batch in one transaction; a resent id (same content) is skipped, an id
        stored with other content is refused (:class:`RefusedRecords`, after the commit)."""
        pool = started(self._pool, "postgres")
        rows = table_rows(batch, text_times=False)
        refused: dict[int, str] = {}
        try:
            async with (
                pool.acquire(timeout=self.config.connect_timeout) as conn,
                conn.transaction(),
            ):
                await conn.copy_records_to_table(
                    STAGE, records=rows, columns=COLUMNS, schema_name="pg_temp"
                )
                status = await conn.execute(self._insert)
                if inserted_count(status) != len(rows):  # some ids were there already
                    refused = refused_records(batch, await conn.fetch(self._conflicts))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise classify(exc, "write", self._secrets()) from exc
        if refused:
            raise RefusedRecords(refused)

    async def close(self) -> None:
        """Close the pool (waits for a write in progress); idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(self.config.connect_timeout):
                    await pool.close()
            except TimeoutError:
                pool.terminate()
