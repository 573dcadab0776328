"""Schema contract: migrations are idempotent and ticks dedupe on (symbol, trade_id)."""
import psycopg2

import database


def test_migrations_are_recorded_and_idempotent(dsn):
    assert database.apply_migrations(dsn) == []
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM schema_migrations ORDER BY name")
        assert [r[0] for r in cur.fetchall()] == [p.name for p in database.migration_files()]
        cur.execute("SELECT data_type FROM information_schema.columns WHERE table_name='ticks' AND column_name='trade_id'")
        assert cur.fetchone()[0] == "bigint"


def test_ticks_are_partitioned_by_day_and_retention_drops_old_days_but_keeps_bars(dsn):
    import asyncio
    from datetime import datetime, timedelta, timezone

    import asyncpg

    today = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
    micros = int(today.timestamp()) * 1_000_000
    rows = [("BTCUSDT", 100 + age, micros - age * 86_400_000_000, 100.0, 1.0, False) for age in (0, 1, 2, 40, 41)]

    async def scenario() -> list[str]:
        conn = await asyncpg.connect(dsn)
        await database.prepare_writer_connection(conn)
        assert await database.flush_batch(conn, rows) == 5
        assert await database.flush_batch(conn, rows) == 0  # duplicates across partitions are still dropped
        dropped = await database.drop_old_tick_partitions(conn, 30)
        await conn.close()
        return dropped

    dropped = asyncio.run(scenario())
    days = [(today - timedelta(days=age)).strftime("ticks_%Y%m%d") for age in (41, 40)]
    assert dropped == days
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ticks")
        assert cur.fetchone()[0] == 3
        cur.execute("SELECT count(*) FROM bars_1s")
        assert cur.fetchone()[0] == 5
        cur.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ticks'::regclass")
        assert cur.fetchone()[0] == 3
