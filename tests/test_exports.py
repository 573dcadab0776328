"""CSV exports and URL parameters of the dashboard: /export/*.csv on a real PostgreSQL filled with
synthetic 1-second bars, the same files through the dcc.Download callback, and HTTP 400 on bad input.

`synthetic_market` and `market_database` are reused by tests/test_dashboard.py (browser tests).
"""
from __future__ import annotations

import io
import os
import sys
import uuid
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import psycopg2
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

import database  # noqa: E402
import exports  # noqa: E402
from exports import BadParameter, View, parse_view  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")
BASE_PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "BNBUSDT": 500.0, "SOLUSDT": 150.0}
HISTORY_SECONDS = 5_400                 # 90 min of 1 s bars: every analytic is ready at 5 s / 1 h
COMMON_VOL = 1e-4                       # per-second log-return sd of the shared factor
IDIO_VOL = 3e-4                         # sd of each symbol's mean-reverting (OU) deviation
OU_KEEP = 0.995                         # OU persistence per second (half-life ~ 140 s)
RANGE_SD = 5e-5                         # high/low extension beyond open/close
SEED = 7


# ---------------------------------------------------------------------------------------------------
# Synthetic market (shared with the browser tests)
# ---------------------------------------------------------------------------------------------------
def synthetic_bars(symbol: str, start: datetime, seconds: int, rng: np.random.Generator,
                   common: np.ndarray, loading: float) -> pd.DataFrame:
    """1-second bars of a cointegrated-ish symbol: shared random walk x loading + an OU deviation."""
    ou = np.zeros(seconds)
    shocks = rng.normal(0, IDIO_VOL, seconds)
    for i in range(1, seconds):
        ou[i] = ou[i - 1] * OU_KEEP + shocks[i]
    close = BASE_PRICES.get(symbol, 100.0) * np.exp(common[:seconds] * loading + ou)
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, RANGE_SD, seconds)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, RANGE_SD, seconds)))
    volume = np.abs(rng.normal(1.0, 0.3, seconds)) + 0.01
    trades = rng.integers(1, 20, seconds)
    index = pd.date_range(start, periods=seconds, freq="1s", tz="UTC")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume,
                         "trade_count": trades}, index=index)


def insert_bars(conn, symbol: str, bars: pd.DataFrame, first_trade_id: int) -> int:
    """COPY bars (and one tick per bar at its close) into bars_1s/ticks; returns the next trade id."""
    n = len(bars)
    trade_ids = first_trade_id + np.arange(n)
    ts = bars.index
    bar_rows = pd.DataFrame({
        "symbol": symbol, "ts": ts, "open": bars["open"], "high": bars["high"], "low": bars["low"],
        "close": bars["close"], "volume": bars["volume"], "quote_volume": bars["volume"] * bars["close"],
        "trade_count": bars["trade_count"], "taker_buy_volume": bars["volume"] / 2, "open_ts": ts,
        "open_trade_id": trade_ids, "close_ts": ts, "close_trade_id": trade_ids})
    tick_rows = pd.DataFrame({"symbol": symbol, "trade_id": trade_ids, "ts": ts + timedelta(milliseconds=500),
                              "price": bars["close"].to_numpy(), "qty": bars["volume"].to_numpy(),
                              "is_buyer_maker": (trade_ids % 2 == 0)})
    with conn.cursor() as cur:
        for day in sorted({t.date() for t in tick_rows["ts"]}):
            cur.execute("SELECT ensure_tick_partition(%s)", (day,))  # ticks is partitioned by day
        for table, frame in (("bars_1s", bar_rows), ("ticks", tick_rows)):
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%dT%H:%M:%S.%f+00:00")
            buffer.seek(0)
            cur.copy_expert(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)", buffer)
    return first_trade_id + n


class SyntheticMarket:
    """History up to now plus `advance()`: one new 1 s bar per symbol (for live-update tests)."""

    def __init__(self, dsn: str, seconds: int = HISTORY_SECONDS, seed: int = SEED) -> None:
        self.dsn = dsn
        self.rng = np.random.default_rng(seed)
        self.end = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
        self.common = np.cumsum(self.rng.normal(0, COMMON_VOL, seconds))
        self.next_id = {s: 1_000_000 * (k + 1) for k, s in enumerate(SYMBOLS)}
        self.last = {}
        conn = database.connect_sync(dsn)
        try:
            for k, symbol in enumerate(SYMBOLS):
                bars = synthetic_bars(symbol, self.end - timedelta(seconds=seconds), seconds, self.rng,
                                      self.common, 1 + 0.2 * k)
                self.next_id[symbol] = insert_bars(conn, symbol, bars, self.next_id[symbol])
                self.last[symbol] = float(bars["close"].iloc[-1])
        finally:
            conn.close()

    def advance(self, conn) -> datetime:
        """Append the bar of the current second (a small random step) for every symbol; return its time."""
        ts = datetime.now(timezone.utc).replace(microsecond=0)
        for symbol in SYMBOLS:
            close = self.last[symbol] * float(np.exp(self.rng.normal(0, IDIO_VOL)))
            bars = pd.DataFrame({"open": [self.last[symbol]], "high": [max(close, self.last[symbol])],
                                 "low": [min(close, self.last[symbol])], "close": [close], "volume": [1.0],
                                 "trade_count": [3]}, index=pd.DatetimeIndex([ts]))
            with conn.cursor() as cur:
                cur.execute("DELETE FROM bars_1s WHERE symbol = %s AND ts = %s", (symbol, ts))
            self.next_id[symbol] = insert_bars(conn, symbol, bars, self.next_id[symbol])
            self.last[symbol] = close
        return ts


@contextmanager
def empty_database(pg_base_dsn: str) -> Iterator[str]:
    """A fresh database with the schema applied; dropped afterwards."""
    name = "dash_" + uuid.uuid4().hex[:10]
    admin = psycopg2.connect(pg_base_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')  # generated name, never input
    head, sep, query = pg_base_dsn.partition("?")
    url = head.rsplit("/", 1)[0] + "/" + name + sep + query
    try:
        database.apply_migrations(url)
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def market_database(pg_base_dsn: str) -> Iterator[tuple[str, SyntheticMarket]]:
    """A fresh database with synthetic history for SYMBOLS: (dsn, market)."""
    with empty_database(pg_base_dsn) as url:
        yield url, SyntheticMarket(url)


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def market(pg_base_dsn: str) -> Iterator[tuple[str, SyntheticMarket]]:
    """(dsn, market) for this module."""
    with market_database(pg_base_dsn) as value:
        yield value


@pytest.fixture(scope="module")
def dashboard(market, tmp_path_factory):
    """The app module pointed at the synthetic database (and a fresh shared analytics cache)."""
    os.environ.setdefault("SYMBOLS", ",".join(SYMBOLS))
    import app as dashboard_app

    dashboard_app.source.configure(replace(dashboard_app.settings, database_url=market[0], symbols=SYMBOLS,
                                           cache_dir=tmp_path_factory.mktemp("analytics_cache")))
    return dashboard_app


@pytest.fixture(scope="module")
def client(dashboard):
    """Flask test client of the Dash server."""
    return dashboard.server.test_client()


def read_csv(text: str) -> pd.DataFrame:
    """CSV text -> DataFrame."""
    return pd.read_csv(io.StringIO(text))


# ---------------------------------------------------------------------------------------------------
# URL parameters (pure)
# ---------------------------------------------------------------------------------------------------
def test_parse_view_defaults_and_round_trip() -> None:
    view, notices = parse_view({}, SYMBOLS)
    assert notices == [] and view.a == "BTCUSDT" and view.b == "ETHUSDT"
    again, notices = parse_view(dict(pair.split("=") for pair in view.query()[1:].split("&")), SYMBOLS)
    assert again == view and notices == []


def test_parse_view_bad_values_fall_back_with_notices() -> None:
    args = {"a": "btc;drop table ticks", "b": "NOPEUSDT", "tf": "2m", "window": "abc", "regression": "magic",
            "entry": "1e9", "exit": "nan", "fees": "-1", "lookback": "99999999"}
    view, notices = parse_view(args, SYMBOLS)
    default = exports.default_view(SYMBOLS)
    assert (view.a, view.b, view.tf, view.window, view.regression, view.entry, view.exit, view.fees) == (
        default.a, default.b, default.tf, default.window, default.regression, default.entry, default.exit,
        default.fees)
    assert len(notices) == len(args)
    assert any("tf='2m'" in n for n in notices)


def test_parse_view_same_symbols_and_exit_above_entry_are_fixed() -> None:
    view, notices = parse_view({"a": "ETHUSDT", "b": "ETHUSDT", "entry": "1", "exit": "1.5"}, SYMBOLS)
    assert view.a == "ETHUSDT" and view.b != "ETHUSDT"
    assert view.exit < view.entry and len(notices) == 2


def test_parse_view_page_clips_lookback_to_chart_bars() -> None:
    view, notices = parse_view({"tf": "1s", "lookback": "1d"}, SYMBOLS)
    assert view.lookback // view.bar_seconds <= exports.MAX_CHART_BARS and notices


def test_parse_view_strict_raises() -> None:
    with pytest.raises(BadParameter, match="tf="):
        parse_view({"a": "BTCUSDT", "b": "ETHUSDT", "tf": "7m"}, SYMBOLS, strict=True)
    with pytest.raises(BadParameter, match="a="):
        parse_view({"b": "ETHUSDT"}, SYMBOLS, strict=True)


# ---------------------------------------------------------------------------------------------------
# /export routes
# ---------------------------------------------------------------------------------------------------
def test_export_bars_columns_and_rows(client, market) -> None:
    end = market[1].end
    start = end - timedelta(hours=1)
    query = urlencode({"symbol": "BTCUSDT", "tf": "1m", "start": start.isoformat(), "end": end.isoformat()})
    response = client.get(f"/export/bars.csv?{query}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    frame = read_csv(response.get_data(as_text=True))
    assert list(frame.columns) == ["ts", *database.BAR_COLUMNS]
    assert 60 <= len(frame) <= 61
    assert frame["ts"].str.endswith("Z").all()


def test_export_pair_matches_params(client) -> None:
    base = "/export/pair.csv?a=BTCUSDT&b=ETHUSDT&tf=1m&window=20&lookback=3600"
    ols = read_csv(client.get(base + "&regression=ols").get_data(as_text=True))
    kalman = read_csv(client.get(base + "&regression=kalman").get_data(as_text=True))
    assert list(ols.columns) == ["ts", *exports.PAIR_SERIES_COLUMNS]
    assert 55 <= len(ols) <= 61 and len(ols) == len(kalman)
    assert not np.allclose(ols["beta"].dropna().iloc[-5:], kalman["beta"].dropna().iloc[-5:])


def test_export_stats_backtest_ticks_alerts(client, market) -> None:
    query = "a=BTCUSDT&b=SOLUSDT&tf=5s&window=60&lookback=3600&entry=1.5"
    stats = read_csv(client.get(f"/export/stats.csv?{query}").get_data(as_text=True))
    assert {"symbol", "interval_s", "ts", "last", "vwap", "realised_vol"} <= set(stats.columns)
    assert set(stats["symbol"]) == {"BTCUSDT", "SOLUSDT"} and len(stats) > 0
    trades = read_csv(client.get(f"/export/backtest.csv?{query}").get_data(as_text=True))
    assert list(trades.columns) == list(exports.TRADE_COLUMNS) and len(trades) > 0
    end = market[1].end
    ticks_query = f"symbol=ETHUSDT&start={(end - timedelta(minutes=10)).isoformat()}&end={end.isoformat()}"
    ticks = read_csv(client.get(f"/export/ticks.csv?{ticks_query}").get_data(as_text=True))  # '+' unencoded
    assert list(ticks.columns) == list(database.TICK_COLUMNS) and 599 <= len(ticks) <= 601
    alerts_response = client.get("/export/alerts.csv")
    assert alerts_response.status_code == 200 and alerts_response.get_data(as_text=True).strip()


@pytest.mark.parametrize("url, reason", [
    ("/export/bars.csv?symbol=btc%3Bdrop&tf=1m", "symbol="),
    ("/export/bars.csv?symbol=DOGEUSDT&tf=1m", "not an ingested symbol"),
    ("/export/bars.csv?symbol=BTCUSDT&tf=2m", "tf="),
    ("/export/bars.csv?symbol=BTCUSDT&tf=1m&start=yesterday", "ISO-8601"),
    ("/export/bars.csv?symbol=BTCUSDT&tf=1m&start=2024-01-02T00:00:00&end=2024-01-01T00:00:00", "before"),
    ("/export/ticks.csv?symbol=BTCUSDT&limit=0", "limit="),
    ("/export/pair.csv?a=BTCUSDT&b=ETHUSDT&tf=1m&window=0", "window="),
    ("/export/pair.csv?a=BTCUSDT&b=ETHUSDT&regression=__import__('os')", "regression="),
    ("/export/pair.csv?a=BTCUSDT&b=ETHUSDT&lookback=999999", "lookback="),
    ("/export/stats.csv?a=BTCUSDT", "b="),
    ("/export/backtest.csv?a=BTCUSDT&b=BTCUSDT", "different"),
])
def test_export_bad_parameters_400_one_line(client, url: str, reason: str) -> None:
    response = client.get(url)
    body = response.get_data(as_text=True)
    assert response.status_code == 400, body
    assert reason in body and body.count("\n") == 1


# ---------------------------------------------------------------------------------------------------
# The dcc.Download callback gives the same files as the URLs
# ---------------------------------------------------------------------------------------------------
def click_download(client, dashboard, key: str, view: View) -> dict:
    """POST the Dash callback request a click on CSV button `key` makes; return dcc.Download's data."""
    payload = {
        "output": "download.data", "outputs": {"id": "download", "property": "data"},
        "inputs": [{"id": f"dl-{k}", "property": "n_clicks", "value": 1 if k == key else None}
                   for k in dashboard.DOWNLOAD_KEYS],
        "state": [{"id": "view", "property": "data", "value": asdict(view)}],
        "changedPropIds": [f"dl-{key}.n_clicks"],
    }
    response = client.post("/_dash-update-component", json=payload)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()["response"]["download"]["data"]


def test_download_callback_matches_export_urls(client, dashboard) -> None:
    view = View(a="ETHUSDT", b="BNBUSDT", tf="15s", lookback=3600, window=40, regression="huber")
    pair = click_download(client, dashboard, "pair", view)
    assert pair["filename"] == "pair_ETHUSDT_BNBUSDT.csv"
    assert pair["content"] == client.get(f"/export/pair.csv{view.query()}").get_data(as_text=True)
    frame = read_csv(pair["content"])
    assert list(frame.columns) == ["ts", *exports.PAIR_SERIES_COLUMNS] and 230 <= len(frame) <= 241
    trades = click_download(client, dashboard, "trades", view)
    assert trades["content"] == client.get(f"/export/backtest.csv{view.query()}").get_data(as_text=True)
    stats = click_download(client, dashboard, "stats", view)
    assert stats["content"] == client.get(f"/export/stats.csv{view.query()}").get_data(as_text=True)
    bars = read_csv(click_download(client, dashboard, "bars-b", view)["content"])
    assert list(bars.columns) == ["ts", *database.BAR_COLUMNS] and 230 <= len(bars) <= 241
    ticks = read_csv(click_download(client, dashboard, "ticks-a", view)["content"])
    assert list(ticks.columns) == list(database.TICK_COLUMNS) and 3_500 <= len(ticks) <= 3_601
    alerts = click_download(client, dashboard, "alerts", view)
    assert alerts["content"] == client.get("/export/alerts.csv").get_data(as_text=True)


def test_identical_requests_within_a_bar_compute_once(dashboard) -> None:
    """Ten tabs asking for the same view in the same bar cost one analytics computation."""
    import threading

    source = dashboard.source
    view = View(a="SOLUSDT", b="BNBUSDT", tf="1m", lookback=3600, window=33)
    calls = []
    original = source._compute

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    source._compute = counting
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(source.view_data(view))) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        del source._compute
    assert len(calls) == 1 and len(results) == 10 and all(r is results[0] for r in results)
