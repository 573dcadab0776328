-- The tick store: one row per Binance trade, keyed by the exchange's trade id (never by time:
-- Binance prints bursts of trades in one millisecond).
--
-- Partitioned by UTC day so that retention drops whole partitions (TICK_RETENTION_DAYS) instead of
-- deleting rows. PostgreSQL requires the partition key in every unique constraint, so the key is
-- (symbol, ts, trade_id); Binance never changes a trade's time, so a duplicate frame or REST record of
-- a trade always carries the same ts and is still dropped by ON CONFLICT DO NOTHING.
CREATE TABLE IF NOT EXISTS ticks (
    symbol          text             NOT NULL,  -- Binance "s", upper case
    trade_id        bigint           NOT NULL,  -- "t", contiguous per symbol, above 2^31
    ts              timestamptz      NOT NULL,  -- trade time "T", never the receive time
    price           double precision NOT NULL,  -- "p"
    qty             double precision NOT NULL,  -- "q"
    is_buyer_maker  boolean          NOT NULL,  -- "m"
    -- One index does both jobs: dedupe, and time-range reads per symbol (it leads with symbol, ts).
    PRIMARY KEY (symbol, ts, trade_id)
) PARTITION BY RANGE (ts);

-- The partition holding `day` (UTC), created on first use. Named ticks_YYYYMMDD.
CREATE OR REPLACE FUNCTION ensure_tick_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := 'ticks_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF ticks FOR VALUES FROM (%L) TO (%L)', name,
                       day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END IF;
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    NULL;  -- another session created it at the same moment
END;
$$;

-- Drops the day partitions that end more than keep_days ago; returns their names. Bars are kept.
CREATE OR REPLACE FUNCTION drop_old_tick_partitions(keep_days integer) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    partition_name text;
BEGIN
    FOR partition_name IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'ticks'::regclass AND c.relname ~ '^ticks_[0-9]{8}$'
          AND to_date(substring(c.relname FROM 7), 'YYYYMMDD') + 1
              <= (now() AT TIME ZONE 'UTC')::date - keep_days
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', partition_name);
        RETURN NEXT partition_name;
    END LOOP;
END;
$$;
