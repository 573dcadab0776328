"""Bars from the SQL path (incremental bars_1s + date_bin resampling) equal bars computed straight from ticks."""
from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone

import asyncpg
import numpy as np
import pandas as pd
import pytest

import database
from main import EPOCH, make_tick_row
from tests.capture import capture_trades

NOW_MS = 1_800_000_000_000


def staged(row: tuple) -> tuple:
    """A ticks row with a datetime -> the staged row the ingester writes (trade time in µs since 1970)."""
    if isinstance(row[2], datetime):
        return row[:2] + ((row[2] - EPOCH) // timedelta(microseconds=1),) + row[3:]
    return row


async def store_in_batches(dsn: str, rows: list[tuple], seed: int) -> None:
    """Write rows the way the ingester does, in random-size batches."""
    rows = [staged(row) for row in rows]
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    await database.prepare_writer_connection(conn)
    start = 0
    while start < len(rows):
        size = rng.choice([1, 7, 100, 1000, 4000])
        await database.flush_batch(conn, rows[start:start + size])
        start += size
    await conn.close()


def bars_from_ticks(ticks: pd.DataFrame, seconds: int) -> pd.DataFrame:
    """Reference OHLCV straight from raw ticks: bucket = floor(T / seconds), open/close by (ts, trade_id)."""
    frame = ticks.sort_values(["ts", "trade_id"]).copy()
    frame["bucket"] = frame["ts"].dt.floor(f"{seconds}s")
    frame["quote"] = frame["price"] * frame["qty"]
    frame["taker_buy"] = frame["qty"].where(~frame["is_buyer_maker"], 0.0)
    grouped = frame.groupby("bucket")
    bars = pd.DataFrame({
        "open": grouped["price"].first(), "high": grouped["price"].max(), "low": grouped["price"].min(),
        "close": grouped["price"].last(), "volume": grouped["qty"].sum(), "quote_volume": grouped["quote"].sum(),
        "trade_count": grouped["price"].size(), "taker_buy_volume": grouped["taker_buy"].sum(),
    })
    bars["vwap"] = bars["quote_volume"] / bars["volume"]
    bars.index.name = "ts"
    return bars


def assert_bars_equal(sql_bars: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(sql_bars.index) == list(reference.index)
    for column in ("open", "high", "low", "close", "trade_count"):
        assert (sql_bars[column].to_numpy() == reference[column].to_numpy()).all(), column
    for column in ("volume", "quote_volume", "taker_buy_volume", "vwap"):  # float sums in another order
        np.testing.assert_allclose(sql_bars[column].to_numpy(), reference[column].to_numpy(), rtol=1e-9)


@pytest.fixture
def capture_in_store(dsn, shared_data):
    """All 34,419 captured trades stored shuffled, with 5% duplicates, in random batches."""
    files = sorted((shared_data / "binance-spot-capture").glob("*.gz"))
    rows = [make_tick_row(d["s"], d["t"], d["p"], d["q"], d["T"], d["m"], NOW_MS) for d in capture_trades(files)]
    rng = random.Random(1)
    shuffled = rows + rng.sample(rows, len(rows) // 20)
    rng.shuffle(shuffled)  # out of order within and across seconds
    asyncio.run(store_in_batches(dsn, shuffled, seed=2))
    ticks = pd.DataFrame(rows, columns=list(database.STAGE_COLUMNS))
    ticks["ts"] = pd.to_datetime(ticks.pop("time_us"), unit="us", utc=True)
    return dsn, ticks


def test_sql_bars_equal_bars_from_raw_capture_ticks(capture_in_store):
    dsn, ticks = capture_in_store
    conn = database.connect_sync(dsn)
    start, end = datetime(2024, 8, 8, tzinfo=timezone.utc), datetime(2024, 8, 10, tzinfo=timezone.utc)
    for timeframe in ("1s", "5s", "15s", "1m", "5m"):
        seconds = database.TIMEFRAME_SECONDS[timeframe]
        for symbol in ("BTCUSDT", "ETHUSDT"):
            sql_bars = database.read_bars(conn, symbol, seconds, start, end)
            assert_bars_equal(sql_bars, bars_from_ticks(ticks[ticks.symbol == symbol], seconds))
    assert len(database.read_bars(conn, "BTCUSDT", 1, start, end)) > 600  # ~11 minutes of busy 1 s bars
    conn.close()


def test_gaps_in_trading_are_missing_bars_not_invented_ones(dsn):
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = [("BTCUSDT", i, t0 + timedelta(seconds=s), 100.0 + i, 1.0, False) for i, s in enumerate([0, 1, 5, 61])]
    asyncio.run(store_in_batches(dsn, rows, seed=3))
    conn = database.connect_sync(dsn)
    one_second = database.read_bars(conn, "BTCUSDT", 1, t0, t0 + timedelta(hours=1))
    assert [int((ts - t0).total_seconds()) for ts in one_second.index] == [0, 1, 5, 61]
    one_minute = database.read_bars(conn, "BTCUSDT", 60, t0, t0 + timedelta(hours=1))
    assert list(one_minute.index) == [t0, t0 + timedelta(minutes=1)]  # labelled by bucket start, UTC
    assert list(one_minute["open"]) == [100.0, 103.0] and list(one_minute["close"]) == [102.0, 103.0]
    assert list(one_minute["trade_count"]) == [3, 1]
    conn.close()


def test_a_late_earlier_trade_becomes_the_open(dsn):
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    later = [("ETHUSDT", 11, t0 + timedelta(milliseconds=500), 10.0, 1.0, True)]
    earlier_same_ms = [("ETHUSDT", 10, t0 + timedelta(milliseconds=500), 9.0, 2.0, False),
                       ("ETHUSDT", 12, t0 + timedelta(milliseconds=900), 11.0, 1.0, False)]
    asyncio.run(store_in_batches(dsn, later, seed=4))
    asyncio.run(store_in_batches(dsn, earlier_same_ms + later, seed=5))  # with a duplicate of id 11
    conn = database.connect_sync(dsn)
    bar = database.read_bars(conn, "ETHUSDT", 1, t0, t0 + timedelta(seconds=1)).iloc[0]
    assert (bar.open, bar.high, bar.low, bar.close, bar.trade_count) == (9.0, 11.0, 9.0, 11.0, 3)
    assert (bar.volume, bar.taker_buy_volume) == (4.0, 3.0)
    conn.close()


def test_an_empty_range_reads_as_an_empty_frame(dsn):
    conn = database.connect_sync(dsn)
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for seconds in (1, 60):
        bars = database.read_bars(conn, "BTCUSDT", seconds, t0, t0 + timedelta(hours=1))
        assert bars.empty and list(bars.columns) == list(database.BAR_COLUMNS)
    conn.close()
