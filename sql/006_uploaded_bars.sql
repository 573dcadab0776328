-- OHLC bars uploaded as CSV from the dashboard (uploads.py), one dataset per user-chosen name. Kept apart
-- from live bars_1s so uploaded data can never be mistaken for (or merged into) the live feed; the
-- dashboard shows a dataset as the symbol 'upload:NAME'. Re-uploading a name replaces it in one transaction.
CREATE TABLE IF NOT EXISTS uploaded_datasets (
    name         text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_-]{1,40}$'),
    filename     text        NOT NULL,            -- as the browser sent it (display only)
    rows         integer     NOT NULL,
    bar_seconds  integer     NOT NULL,            -- median spacing of the bars
    first_ts     timestamptz,
    last_ts      timestamptz,
    uploaded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS uploaded_bars (
    dataset           text             NOT NULL REFERENCES uploaded_datasets (name) ON DELETE CASCADE,
    ts                timestamptz      NOT NULL,  -- bar start, UTC
    open              double precision NOT NULL,
    high              double precision NOT NULL,
    low               double precision NOT NULL,
    close             double precision NOT NULL,
    volume            double precision NOT NULL DEFAULT 0,
    quote_volume      double precision,           -- NULL: not in the file (read as close * volume)
    trade_count       bigint           NOT NULL DEFAULT 0,
    taker_buy_volume  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (dataset, ts)
);
