-- Feed health, rewritten by the ingester every second; one row per symbol. The dashboard reads it.
CREATE TABLE IF NOT EXISTS feed_health (
    symbol            text PRIMARY KEY,
    source            text             NOT NULL,  -- the WebSocket URL (host only) or 'demo'
    connected         boolean          NOT NULL,
    last_trade_ts     timestamptz,
    last_trade_id     bigint,
    lag_seconds       double precision,           -- now - T of the last trade
    ticks_per_second  double precision NOT NULL DEFAULT 0,
    reconnects        integer          NOT NULL DEFAULT 0,
    gaps_found        integer          NOT NULL DEFAULT 0,
    gaps_filled       integer          NOT NULL DEFAULT 0,
    trades_backfilled bigint           NOT NULL DEFAULT 0,
    malformed_frames  integer          NOT NULL DEFAULT 0,
    buffered_rows     integer          NOT NULL DEFAULT 0,
    commit_p99_seconds double precision,
    updated_at        timestamptz      NOT NULL DEFAULT now()
);
