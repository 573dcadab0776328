-- History imported from Binance's bulk files (data.binance.vision) by `python main.py import`.
-- Individual trades go to `ticks` (and so `bars_1s`) like live ones; these two tables hold the formats
-- that are NOT individual trades, so they can never be mistaken for them or double-count a bar.

-- aggTrades: one row per aggregate trade (trades of one taker order at one price). agg_id is a separate
-- id space from trade_id; first/last_trade_id give the range of real trade ids it covers.
CREATE TABLE IF NOT EXISTS agg_trades (
    symbol          text             NOT NULL,
    agg_id          bigint           NOT NULL,
    ts              timestamptz      NOT NULL,
    price           double precision NOT NULL,
    qty             double precision NOT NULL,
    first_trade_id  bigint           NOT NULL,
    last_trade_id   bigint           NOT NULL,
    is_buyer_maker  boolean          NOT NULL,
    PRIMARY KEY (symbol, agg_id)
);
CREATE INDEX IF NOT EXISTS agg_trades_symbol_ts_idx ON agg_trades (symbol, ts);

-- klines: exchange-computed bars of any interval ('1m', '1h', ...), one row per (symbol, interval, open_time).
CREATE TABLE IF NOT EXISTS imported_klines (
    symbol                  text             NOT NULL,
    interval                text             NOT NULL,  -- Binance interval name: 1s, 1m, 5m, 1h, 1d, ...
    open_time               timestamptz      NOT NULL,
    close_time              timestamptz      NOT NULL,
    open                    double precision NOT NULL,
    high                    double precision NOT NULL,
    low                     double precision NOT NULL,
    close                   double precision NOT NULL,
    volume                  double precision NOT NULL,
    quote_volume            double precision NOT NULL,
    trade_count             bigint           NOT NULL,
    taker_buy_volume        double precision NOT NULL,
    taker_buy_quote_volume  double precision NOT NULL,
    PRIMARY KEY (symbol, interval, open_time)
);
