-- The tick store: one row per Binance trade, keyed by the exchange's trade id (never by time:
-- Binance prints bursts of trades in one millisecond).
CREATE TABLE IF NOT EXISTS ticks (
    symbol          text             NOT NULL,  -- Binance "s", upper case
    trade_id        bigint           NOT NULL,  -- "t", contiguous per symbol, above 2^31
    ts              timestamptz      NOT NULL,  -- trade time "T", never the receive time
    price           double precision NOT NULL,  -- "p"
    qty             double precision NOT NULL,  -- "q"
    is_buyer_maker  boolean          NOT NULL,  -- "m"
    PRIMARY KEY (symbol, trade_id)
);
CREATE INDEX IF NOT EXISTS ticks_symbol_ts_idx ON ticks (symbol, ts);
