"""OHLC CSV uploads: real-world layouts, one report per kind of bad row, limits, storage on a real PostgreSQL,
and uploaded datasets analysed by the same analytics.full_pair_analytics as live bars."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

import analytics
import database
import uploads

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
BINANCE_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                  "taker_buy_quote_volume,ignore")


def kline_lines(n: int, start: int = T0, step: int = 60, price: float = 100.0, unit: float = 1000.0,
                seed: int = 1) -> list[str]:
    """Binance kline rows (time in `unit` per second) of a random walk."""
    rng = np.random.default_rng(seed)
    closes = price * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    rows = []
    for i, close in enumerate(closes):
        open_ = closes[i - 1] if i else price
        high, low = max(open_, close) * 1.0005, min(open_, close) * 0.9995
        t = int((start + i * step) * unit)
        rows.append(f"{t},{open_:.6f},{high:.6f},{low:.6f},{close:.6f},12.5,{t + int(step * unit) - 1},"
                    f"{12.5 * close:.4f},42,6.1,{6.1 * close:.4f},0")
    return rows


def csv_bytes(lines: list[str]) -> bytes:
    """Lines -> file bytes."""
    return ("\n".join(lines) + "\n").encode()


def data_url(data: bytes, mime: str = "text/csv") -> str:
    """What dcc.Upload sends."""
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def pair_csvs(n: int = 400) -> tuple[bytes, bytes]:
    """Two cointegrated 1-minute series as TradingView-style CSVs (epoch seconds)."""
    rng = np.random.default_rng(7)
    b = 50 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    a = 2.0 * b * np.exp(rng.normal(0, 0.001, n))
    out = []
    for closes in (a, b):
        lines = ["time,open,high,low,close,Volume"]
        for i, c in enumerate(closes):
            lines.append(f"{T0 + 60 * i},{c:.6f},{c * 1.001:.6f},{c * 0.999:.6f},{c:.6f},{5 + i % 3}")
        out.append(csv_bytes(lines))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------------
# Parsing: layouts
# ---------------------------------------------------------------------------------------------------
def test_binance_klines_with_header_ms() -> None:
    result = uploads.parse_ohlc_csv(csv_bytes([BINANCE_HEADER, *kline_lines(50)]), "BTCUSDT-1m-2024-01-01.csv")
    assert result.ok and result.error is None and not result.problems
    frame = result.frame
    assert len(frame) == 50 and str(frame.index.tz) == "UTC"
    assert frame.index[0] == pd.Timestamp(T0, unit="s", tz="UTC")
    assert result.columns["time"] == "open_time" and result.columns["trade_count"] == "count"
    assert (frame["trade_count"] == 42).all() and frame["quote_volume"].notna().all()
    assert uploads.infer_bar_seconds(frame.index) == 60


def test_binance_klines_without_header_microseconds() -> None:
    result = uploads.parse_ohlc_csv(csv_bytes(kline_lines(20, unit=1e6)), "BTCUSDT-1m-2025-01-01.csv")
    assert result.ok, result.messages()
    assert result.frame.index[-1] == pd.Timestamp(T0 + 19 * 60, unit="s", tz="UTC")


def test_tradingview_export_epoch_seconds() -> None:
    data = b"time,open,high,low,close,Volume\n1704067200,10,11,9,10.5,100\n1704070800,10.5,12,10,11,50\n"
    result = uploads.parse_ohlc_csv(data, "BINANCE_ETHUSDT, 60.csv")
    assert result.ok and list(result.frame["close"]) == [10.5, 11.0]
    assert result.frame.index[1] == pd.Timestamp("2024-01-01T01:00:00Z")
    assert result.columns["volume"] == "Volume"


def test_epoch_milliseconds_and_aliases() -> None:
    data = b"Timestamp;O;H;L;C;Vol;Trades\n1704067200000;1;2;0.5;1.5;3;7\n1704067260000;1.5;2;1;1.8;0;0\n"
    result = uploads.parse_ohlc_csv(data, "ms.csv")
    assert result.ok, result.messages()
    assert result.frame.index[1] == pd.Timestamp("2024-01-01T00:01:00Z")
    assert list(result.frame["trade_count"]) == [7, 0]


def test_iso_strings_with_z_offsets_and_naive_are_utc() -> None:
    data = (b"date,open,high,low,close\n2024-01-01T00:00:00Z,1,1,1,1\n2024-01-01T02:01:00+02:00,1,1,1,1\n"
            b"2024-01-01 00:02:00,1,1,1,1\n2024-01-01T00:03:00.500-00:00,1,1,1,1\n")
    result = uploads.parse_ohlc_csv(data, "iso.csv")
    assert result.ok, result.messages()
    assert list(result.frame.index) == [pd.Timestamp(s) for s in ("2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z",
                                                                    "2024-01-01T00:02:00Z", "2024-01-01T00:03:00.5Z")]
    assert "no volume column: volume = 0" in result.warnings and (result.frame["volume"] == 0).all()


def test_close_only_file_and_explicit_mapping() -> None:
    detected = uploads.parse_ohlc_csv(b"when,px\n2024-01-01,5\n2024-01-02,6\n", "p.csv")
    assert not detected.ok and "no time or close column" in detected.error
    mapped = uploads.parse_ohlc_csv(b"when,px\n2024-01-01,5\n2024-01-02,6\n", "p.csv",
                                    mapping={"time": "WHEN", "close": 1})
    assert mapped.ok and list(mapped.frame["high"]) == [5.0, 6.0]
    # mapping overrides detection: use 'last' as close although a 'close' column exists
    both = uploads.parse_ohlc_csv(b"time,close,last\n2024-01-01,5,7\n", "p.csv", mapping={"close": "last"})
    assert both.frame["close"].iloc[0] == 7.0
    with pytest.raises(uploads.UploadRejected):
        uploads.detect_columns(["time", "close"], {"close": "nope"})


# ---------------------------------------------------------------------------------------------------
# Validation: one report per kind, bad rows never stored
# ---------------------------------------------------------------------------------------------------
BAD_FILE = b"""time,open,high,low,close,volume
2024-01-01T00:00:00Z,1,2,0.5,1.5,10
2024-01-01T00:01:00Z,1,2,0.5,1.5,10
not a time,1,2,0.5,1.5,10
2024-01-01T00:02:00Z,abc,2,0.5,1.5,10
2024-01-01T00:03:00Z,1,2,0.5,inf,10
2024-01-01T00:04:00Z,0,2,0.5,1.5,10
2024-01-01T00:05:00Z,1,1.2,0.5,1.5,10
2024-01-01T00:06:00Z,1,2,1.2,1.5,10
2024-01-01T00:07:00Z,1,2,0.5,1.5,-3
2024-01-01T00:01:00Z,1,2,0.5,1.5,10
2024-01-01T00:08:00Z,1,2,0.5,1.5
2024-01-01T00:09:00Z,1,2,0.5,1.5,10,extra
2023-12-31T23:59:00Z,1,2,0.5,1.5,10
=cmd|' /C calc'!A0,1,2,0.5,1.5,10
"""


def test_each_kind_of_bad_row_is_reported_with_lines() -> None:
    result = uploads.parse_ohlc_csv(BAD_FILE, "bad.csv", name="bad")
    assert result.ok and result.rows_read == 14
    expected = {"bad_time": [4, 15], "bad_price": [5, 6, 7], "inconsistent_ohlc": [8, 9], "bad_volume": [10],
                "duplicate_time": [11], "field_count": [12, 13]}
    assert {k: p.lines for k, p in result.problems.items()} == expected
    assert result.rows_bad == 11 and len(result.frame) == 3
    assert "rows were not in time order: sorted" in result.warnings
    assert result.frame.index.is_monotonic_increasing
    text = "\n".join(result.messages())
    for kind in expected:
        assert uploads.PROBLEM_TEXT[kind] in text
    assert "3 bars from bad.csv (14 rows read, 11 rejected)" in text


def test_nothing_valid_is_a_rejection() -> None:
    result = uploads.parse_ohlc_csv(b"time,close\nx,1\ny,2\n", "x.csv")
    assert not result.ok and result.error.startswith("no valid rows (2 rejected")


def test_size_row_and_column_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    too_big = uploads.parse_ohlc_csv(b"time,close\n" + b"1704067200,1\n" * 10, "big.csv")
    assert too_big.ok
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 100)
    big = uploads.parse_ohlc_csv(b"time,close\n" + b"1704067200,1\n" * 10, "big.csv")
    assert big.error.startswith("file larger than") and big.frame is None
    assert uploads.parse_upload(data_url(b"x" * 200), "big.csv", "big").error.startswith("file larger")
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
    monkeypatch.setattr(uploads, "MAX_UPLOAD_ROWS", 5)
    rows = uploads.parse_ohlc_csv(b"time,close\n" + b"".join(b"%d,1\n" % (T0 + i) for i in range(6)), "r.csv")
    assert rows.error == "more than 5 rows: split the file" and rows.frame is None
    wide = uploads.parse_ohlc_csv((",".join(f"c{i}" for i in range(100)) + "\n").encode(), "w.csv")
    assert "100 columns" in wide.error


def test_binary_and_non_csv_uploads_are_rejected() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    assert uploads.parse_upload(data_url(png, "image/png"), "chart.csv", "x").error == \
        "the file is binary, not CSV text"
    assert "not a CSV file" in uploads.parse_upload(data_url(b"time,close\n"), "book.xlsx", "x").error
    assert "not UTF-8" in uploads.parse_upload(data_url(b"time,close\n\xff\xfe1,2\n"), "a.csv", "x").error
    assert uploads.parse_upload(None, None, "x").error == "no file received"
    assert "dataset name" in uploads.parse_upload(data_url(b"time,close\n"), "a.csv", "bad name!").error
    assert uploads.parse_upload("data:text/csv;base64,@@@", "a.csv", "x").error.endswith("valid base64")


def test_echoed_text_is_never_a_formula() -> None:
    result = uploads.parse_ohlc_csv(b"time,close\n1704067200,1\n", "=HYPERLINK(\"x\").csv", name="n")
    assert "'=HYPERLINK" in result.messages()[0]
    assert uploads.safe_text("@SUM(A1)") == "'@SUM(A1)" and uploads.safe_text("a\x00b") == "a?b"
    rejected = uploads.parse_ohlc_csv(b"=1+1,+2\n", "f.csv")
    assert "'=1+1" in rejected.error and "'+2" in rejected.error


def test_upload_symbols() -> None:
    assert uploads.dataset_of("upload:my-set_1") == "my-set_1"
    assert uploads.dataset_of("BTCUSDT") is None and uploads.dataset_of("upload:bad name") is None
    assert uploads.dropdown_option("x") == {"label": "x (uploaded)", "value": "upload:x"}


# ---------------------------------------------------------------------------------------------------
# Storage (real PostgreSQL)
# ---------------------------------------------------------------------------------------------------
def store(dsn: str, name: str, data: bytes, filename: str = "f.csv") -> uploads.UploadResult:
    """Parse and store; return the parse result."""
    result = uploads.parse_upload(data_url(data), filename, name)
    assert result.ok, result.messages()
    conn = database.connect_sync(dsn)
    try:
        database.store_uploaded_bars(conn, result.name, result.filename, result.frame)
    finally:
        conn.close()
    return result


def test_bad_rows_are_not_stored_and_reupload_replaces(dsn: str) -> None:
    store(dsn, "bad", BAD_FILE, "bad.csv")
    conn = database.connect_sync(dsn)
    try:
        bars = database.read_uploaded_bars(conn, "bad")
        assert list(bars.index) == [pd.Timestamp(s) for s in ("2023-12-31T23:59:00Z", "2024-01-01T00:00:00Z",
                                                                "2024-01-01T00:01:00Z")]
        assert list(bars.columns) == list(database.BAR_COLUMNS)
        assert (bars["vwap"] == bars["close"]).all() and (bars["quote_volume"] == 15.0).all()
        [meta] = database.list_uploaded_datasets(conn)
        assert (meta["name"], meta["filename"], meta["rows"], meta["bar_seconds"]) == ("bad", "bad.csv", 3, 60)
        first_upload = meta["uploaded_at"]

        store(dsn, "bad", b"time,close\n2025-06-01T00:00:00Z,7\n2025-06-01T00:00:05Z,8\n", "second.csv")
        bars = database.read_uploaded_bars(conn, "bad")
        assert list(bars["close"]) == [7.0, 8.0] and (bars["volume"] == 0).all() and (bars["trade_count"] == 0).all()
        [meta] = database.list_uploaded_datasets(conn)
        assert (meta["filename"], meta["rows"], meta["bar_seconds"]) == ("second.csv", 2, 5)
        assert meta["uploaded_at"] > first_upload
        last = database.read_uploaded_last_closes(conn, ["bad", "missing"])
        assert last == {"bad": (datetime(2025, 6, 1, 0, 0, 5, tzinfo=timezone.utc), 8.0)}
    finally:
        conn.close()


def test_failed_store_keeps_the_previous_dataset(dsn: str) -> None:
    store(dsn, "keep", b"time,close\n2024-01-01T00:00:00Z,1\n")
    conn = database.connect_sync(dsn)
    try:
        broken = pd.DataFrame({"open": [1.0], "high": [1.0], "low": [1.0], "close": [None], "volume": [0.0],
                               "quote_volume": [None], "trade_count": [0], "taker_buy_volume": [0.0]},
                              index=pd.DatetimeIndex([pd.Timestamp("2024-02-01", tz="UTC")], name="ts"))
        with pytest.raises(Exception):
            database.store_uploaded_bars(conn, "keep", "broken.csv", broken)  # close NULL violates NOT NULL
        assert conn.autocommit
        assert list(database.read_uploaded_bars(conn, "keep")["close"]) == [1.0]
        assert database.list_uploaded_datasets(conn)[0]["filename"] == "f.csv"
    finally:
        conn.close()


def test_read_uploaded_bars_window_resample_and_limit(dsn: str) -> None:
    store(dsn, "klines", csv_bytes([BINANCE_HEADER, *kline_lines(120)]))
    conn = database.connect_sync(dsn)
    try:
        start = pd.Timestamp(T0 + 600, unit="s", tz="UTC")
        assert len(database.read_uploaded_bars(conn, "klines", start=start, end=start + pd.Timedelta("10min"))) == 10
        five = database.read_uploaded_bars(conn, "klines", bar_seconds=300)
        assert len(five) == 24 and (five["volume"] == 62.5).all() and (five["trade_count"] == 210).all()
        newest = database.read_uploaded_bars(conn, "klines", limit=7)
        assert len(newest) == 7 and newest.index[-1] == pd.Timestamp(T0 + 119 * 60, unit="s", tz="UTC")
        assert database.read_uploaded_bars(conn, "nothing").empty
    finally:
        conn.close()


def test_two_uploaded_datasets_feed_the_pair_analytics(dsn: str) -> None:
    csv_a, csv_b = pair_csvs(400)
    store(dsn, "leg_a", csv_a)
    store(dsn, "leg_b", csv_b)
    conn = database.connect_sync(dsn)
    try:
        bars_a = database.read_uploaded_bars(conn, "leg_a", bar_seconds=60)
        bars_b = database.read_uploaded_bars(conn, "leg_b", bar_seconds=60)
    finally:
        conn.close()
    params = analytics.PairParams(bar_seconds=60, window=60, regression="ols", symbol_a="upload:leg_a",
                                  symbol_b="upload:leg_b")
    pair = analytics.full_pair_analytics(bars_a, bars_b, params)
    assert pair.n_aligned == 400
    assert all(r.ready for r in pair.readiness.values()), {k: r.message() for k, r in pair.readiness.items()}
    assert 0.9 < pair.static_fit.beta < 1.1  # log prices: log A = log 2 + log B + noise
    assert pair.adf is not None and pair.backtest is not None and np.isfinite(pair.correlation)


# ---------------------------------------------------------------------------------------------------
# Dashboard wiring (the real app module and its Dash callback route, on a real PostgreSQL)
# ---------------------------------------------------------------------------------------------------
LIVE_SYMBOLS = ("BTCUSDT", "ETHUSDT")
UPLOAD_OUTPUTS = (("upload-result", "children"), ("upload-result", "style"), ("ctl-a", "options"),
                  ("ctl-b", "options"))


@pytest.fixture
def dashboard(dsn: str):
    """The app module pointed at a fresh database (restored afterwards)."""
    import os
    from dataclasses import replace

    os.environ.setdefault("SYMBOLS", ",".join(LIVE_SYMBOLS))
    import app as dashboard_app

    original = dashboard_app.source.settings
    dashboard_app.source.configure(replace(original, database_url=dsn, symbols=LIVE_SYMBOLS))
    yield dashboard_app
    dashboard_app.source.configure(original)


def post_upload(dashboard_app, contents: str, filename: str, name: str | None) -> dict:
    """POST the upload callback as the browser does; return {component id: {property: value}}."""
    body = {"output": ".." + "...".join(f"{i}.{p}" for i, p in UPLOAD_OUTPUTS) + "..",
            "outputs": [{"id": i, "property": p} for i, p in UPLOAD_OUTPUTS],
            "inputs": [{"id": "upload-file", "property": "contents", "value": contents}],
            "state": [{"id": "upload-file", "property": "filename", "value": filename},
                      {"id": "upload-name", "property": "value", "value": name}],
            "changedPropIds": ["upload-file.contents"]}
    response = dashboard_app.server.test_client().post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.data[:500]
    return response.get_json()["response"]


def texts(children) -> str:
    """The text of rendered html.Div children (JSON)."""
    return "\n".join(child["props"]["children"] for child in children)


def test_upload_route_rejects_binary_and_stores_csv(dashboard) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    rejected = post_upload(dashboard, data_url(png, "image/png"), "chart.png", "pic")
    assert texts(rejected["upload-result"]["children"]) == \
        "Upload rejected: chart.png is not a CSV file (expected .csv, .txt, .tsv)"
    renamed = post_upload(dashboard, data_url(png, "text/csv"), "chart.csv", "pic")
    assert texts(renamed["upload-result"]["children"]) == "Upload rejected: the file is binary, not CSV text"
    assert renamed["ctl-a"]["options"] == [{"label": s, "value": s} for s in LIVE_SYMBOLS]

    stored = post_upload(dashboard, data_url(BAD_FILE), "bad.csv", "")  # no name: taken from the file name
    report = texts(stored["upload-result"]["children"])
    assert report.startswith("bad: 3 bars from bad.csv") and "1 rows: duplicate time" in report
    assert {"label": "bad (uploaded)", "value": "upload:bad"} in stored["ctl-b"]["options"]
    layout = dashboard.server.test_client().get("/_dash-layout").get_data(as_text=True)
    assert '"upload:bad"' in layout and "upload-file" in layout


def test_uploaded_view_uses_the_live_analytics_path(dashboard) -> None:
    csv_a, csv_b = pair_csvs(400)
    for name, data in (("leg_a", csv_a), ("leg_b", csv_b)):
        assert dashboard.store_upload(data_url(data), f"{name}.csv", name).ok
    with dashboard.server.test_request_context():
        view, notices = dashboard.parse_view_with_uploads({"a": "upload:leg_a", "b": "upload:leg_b", "tf": "1m",
                                                           "lookback": "1d", "window": "60"})
        assert notices == [] and (view.a, view.b) == ("upload:leg_a", "upload:leg_b")
        unknown, notices = dashboard.parse_view_with_uploads({"a": "upload:nope", "b": "ETHUSDT"})
        assert (unknown.a, unknown.b) == ("BTCUSDT", "ETHUSDT") and "no such uploaded dataset" in notices[0]
        mixed, notices = dashboard.parse_view_with_uploads({"a": "upload:leg_a", "b": "BTCUSDT"})
        assert (mixed.a, mixed.b, notices) == ("upload:leg_a", "BTCUSDT", [])
        data = dashboard.source.view_data(view)
        assert data.anchor == datetime.fromtimestamp(T0 + 399 * 60, timezone.utc)
        assert len(data.bars["upload:leg_a"]) == 400 and data.bars["BTCUSDT"].empty
        assert data.pair.n_aligned == 400 and data.pair.readiness["backtest"].ready
        assert data.pair.adf is not None and data.pair.backtest is not None
        assert dashboard.upload_view_badge(asdict_view(view)).startswith("UPLOADED DATA, not live: A = leg_a")
        assert dashboard.upload_view_badge(asdict_view(mixed)).count("uploaded") == 1
        # a re-upload under the same name is a new computation, never the cached one
        shorter = b"\n".join(csv_a.splitlines()[:201]) + b"\n"
        assert dashboard.store_upload(data_url(shorter), "leg_a2.csv", "leg_a").ok
        assert dashboard.source.view_data(view).pair.n_bars_a == 200


def asdict_view(view) -> dict:
    """View -> the `view` store's data."""
    from dataclasses import asdict

    return asdict(view)


def test_live_views_unchanged_without_uploads(dashboard) -> None:
    with dashboard.server.test_request_context():
        assert dashboard.upload_options() == []
        view, notices = dashboard.parse_view_with_uploads({"a": "ETHUSDT", "b": "BTCUSDT"})
        assert (view.a, view.b, notices) == ("ETHUSDT", "BTCUSDT", [])
        assert dashboard.upload_version(view) == ()
        assert dashboard.upload_view_badge(asdict_view(view)) == ""
        data = dashboard.source.view_data(view)
        assert set(data.bars) == set(LIVE_SYMBOLS) and data.pair.n_aligned == 0


# ---------------------------------------------------------------------------------------------------
# Browser: the real app in headless Chromium, a CSV sent to dcc.Upload's file input
# ---------------------------------------------------------------------------------------------------
def test_browser_upload_then_analyse_uploaded_pair(dsn: str, tmp_path) -> None:
    import os
    import subprocess
    import sys

    try:
        from tests import test_dashboard as ui
    except ImportError:
        import test_dashboard as ui
    if not (ui.CHROMIUM.exists() and ui.CHROMEDRIVER.exists()):
        pytest.skip(f"needs {ui.CHROMIUM} and {ui.CHROMEDRIVER}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    csv_a, csv_b = pair_csvs(400)
    files = {name: tmp_path / f"{name}.csv" for name in ("leg_a", "leg_b")}
    files["leg_a"].write_bytes(csv_a)
    files["leg_b"].write_bytes(csv_b)
    port = ui.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DASH_USER", "DASH_PASSWORD")}
    env.update(DATABASE_URL=dsn, SYMBOLS=",".join(LIVE_SYMBOLS), DASH_HOST="127.0.0.1", DASH_PORT=str(port),
               PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")
    log_path = tmp_path / "app.log"
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ui.PROJECT_DIR, env=env, stdout=log_path.open("w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(ui.CHROMIUM)
    for flag in ui.CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={ui.LAPTOP[0]},{ui.LAPTOP[1]}")
    driver = None
    try:
        url = f"http://127.0.0.1:{port}"
        ui.wait_for(lambda: ui.http_ok(url + "/"), ui.STARTUP_TIMEOUT, f"the app (log: {log_path})")
        driver = webdriver.Chrome(service=Service(str(ui.CHROMEDRIVER)), options=options)
        driver.get(url + "/")
        ui.wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#upload-file input[type=file]"), ui.PAGE_TIMEOUT,
                    "the upload control")
        for name, path in files.items():
            name_input = driver.find_element(By.ID, "upload-name")
            name_input.send_keys(Keys.CONTROL, "a")  # clear() would not reach React's state
            name_input.send_keys(Keys.BACKSPACE, name)
            driver.find_element(By.CSS_SELECTOR, "#upload-file input[type=file]").send_keys(str(path))
            ui.wait_for(lambda: ui.text(driver, "upload-result").startswith(f"{name}: 400 bars"), 60,
                        f"the upload report of {name}")
        ui.choose(driver, "ctl-a", "leg_a (uploaded)")
        ui.choose(driver, "ctl-b", "leg_b (uploaded)")
        ui.wait_for(lambda: "a=upload%3Aleg_a" in driver.current_url and "b=upload%3Aleg_b" in driver.current_url,
                    30, "the uploaded pair in the URL")
        ui.wait_for(lambda: ui.text(driver, "upload-view-badge").startswith("UPLOADED DATA, not live"), 30,
                    "the uploaded-data label")
        ui.wait_for(lambda: ui.graphs_have_data(driver, ("candles-a", "candles-b", "pair")), 60,
                    "charts of the uploaded pair")
        ui.screenshot(driver, "upload_pair.png", ui.LAPTOP)
    finally:
        if driver is not None:
            driver.quit()
        ui.stop(process)
