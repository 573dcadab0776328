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
