"""Bulk importer (`python main.py import`) against a real PostgreSQL: every format round-trips exactly,
re-import changes nothing, bad rows are reported and never stored, the recorded capture imports to the
same ticks and bars as the live ingester's path."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

import database
import importer
from main import make_tick_row
from tests.capture import capture_trades
from tests.ingest_helpers import query

PROJECT_DIR = Path(__file__).resolve().parents[1]
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CAPTURE_TRADES = 34_419
LIVE_BATCH_ROWS = 100  # the live ingester's default BATCH_ROWS
TRADES_HEADER = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"
TRADE_LINES_MS = [  # id, price, qty, quoteQty, time (ms), isBuyerMaker, isBestMatch
    "3735693016,61837.63000000,0.02000000,1236.75260000,1723161601437,True,True\n",
    "3735693017,61837.64000000,0.00100000,61.83764000,1723161601437,False,True\n",
    "3735693018,61836.01000000,1.23456789,76341.26400000,1723161602001,False,True\n",
]
TRADE_LINES_US = [  # the same shape, microsecond stamps (Binance spot files from 2025-01-01)
    "4400000001,93500.10000000,0.00012000,11.22001200,1735689600123456,True,True\n",
    "4400000002,93500.11000000,0.50000000,46750.05500000,1735689600999999,False,True\n",
]


def run(coro):
    """Run one coroutine to completion (tests are synchronous)."""
    return asyncio.run(coro)


def import_files(dsn: str, *paths: Path, **options) -> list[importer.FileReport]:
    """importer.import_paths without a progress bar."""
    return run(importer.import_paths(dsn, list(paths), **options))


def expected_tick(symbol: str, line: str) -> tuple:
    """What a trades line must be stored as (values straight from the text, µs kept)."""
    trade_id, price, qty, _, stamp, maker, _ = line.strip().split(",")
    micros = int(stamp) if int(stamp) >= 10 ** 14 else int(stamp) * 1000
    return symbol, int(trade_id), EPOCH + timedelta(microseconds=micros), float(price), float(qty), maker == "True"


def stored_ticks(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT symbol, trade_id, ts, price, qty, is_buyer_maker FROM ticks ORDER BY symbol, trade_id")


def snapshot(dsn: str) -> tuple[list, list, list, list]:
    """Every importer-written table, fully ordered."""
    return (stored_ticks(dsn), query(dsn, "SELECT * FROM bars_1s ORDER BY symbol, ts"),
            query(dsn, "SELECT * FROM agg_trades ORDER BY symbol, agg_id"),
            query(dsn, "SELECT * FROM imported_klines ORDER BY symbol, interval, open_time"))


def write_zip(path: Path, member: str, text: str) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, text)
    return path


# ---------------------------------------------------------------------------------------------------
# trades
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
@pytest.mark.parametrize("packing", ["csv", "zip"])
def test_trades_round_trip_exact(dsn: str, tmp_path: Path, header: bool, packing: str) -> None:
    """ms and µs stamps, csv or zip, with or without a header: stored values equal the text exactly."""
    lines = TRADE_LINES_MS + TRADE_LINES_US
    text = (TRADES_HEADER if header else "") + "".join(lines)
    if packing == "zip":
        path = write_zip(tmp_path / "BTCUSDT-trades-2024-08-09.zip", "BTCUSDT-trades-2024-08-09.csv", text)
    else:
        path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
        path.write_text(text)
    [report] = import_files(dsn, path)
    assert (report.error, report.kind, report.target) == ("", "trades", "ticks")
    assert (report.rows_read, report.rows_new, sum(report.bad.values())) == (len(lines), len(lines), 0)
    assert report.skipped == (1 if header else 0)
    assert stored_ticks(dsn) == sorted(expected_tick("BTCUSDT", line) for line in lines)
    bars = query(dsn, "SELECT ts, open, close, trade_count, volume, taker_buy_volume FROM bars_1s "
                      "WHERE symbol = 'BTCUSDT' ORDER BY ts")
    assert bars[0][:4] == (datetime(2024, 8, 9, 0, 0, 1, tzinfo=timezone.utc), 61837.63, 61837.64, 2)
    assert bars[-1][3:] == (2, 0.50012, 0.5)  # both µs trades in one second; taker buy = isBuyerMaker False


def test_reimport_changes_nothing(dsn: str, tmp_path: Path) -> None:
    """A second import of the same files reports 0 new rows and leaves every table byte-for-byte equal."""
    trades = tmp_path / "ETHUSDT-trades-2024-08-09.csv"
    trades.write_text("".join(TRADE_LINES_MS))
    aggs = tmp_path / "ETHUSDT-aggTrades-2024-08-09.csv"
    aggs.write_text("100,2600.5,1.5,1000,1002,1723161601437,True,True\n")
    klines = tmp_path / "ETHUSDT-1m-2024-08-09.csv"
    klines.write_text("1723161600000,2600.1,2601,2599.5,2600.5,10.5,1723161659999,27305.25,42,4.25,11051.2,0\n")
    first = import_files(dsn, trades, aggs, klines)
    before = snapshot(dsn)
    second = import_files(dsn, trades, aggs, klines, jobs=1)
    assert [r.rows_new for r in first] == [3, 1, 1]
    assert [r.rows_new for r in second] == [0, 0, 0]
    assert snapshot(dsn) == before


def test_bad_rows_reported_with_line_numbers_and_never_stored(dsn: str, tmp_path: Path) -> None:
    """Each bad kind is counted, its first examples carry file:line, good rows around them are stored."""
    good = [f"{1000 + i},100.{i % 100:02d},0.5,50,1723161601{i % 1000:03d},{i % 2 == 0},True\n" for i in range(500)]
    bad = {
        "bad_price": "9001,abc,1,1,1723161601437,True,True\n",
        "bad_qty": "9002,100,-1,1,1723161601437,True,True\n",
        "bad_time": "9003,100,1,1,1234,True,True\n",
        "bad_trade_id": "x9004,100,1,1,1723161601437,True,True\n",
        "bad_is_buyer_maker": "9005,100,1,1,1723161601437,maybe,True\n",
        "bad_column_count": "9006,100,1\n",
    }
    lines = good[:200] + list(bad.values()) + ["9007,nan,1,1,1723161601437,True,True\n"] + good[200:]
    path = tmp_path / "SOLUSDT-trades-2024-08-09.csv"
    path.write_text("".join(lines))
    [report] = import_files(dsn, path, batch_rows=150)  # several chunks, bad ones in the middle of one
    assert report.rows_new == len(good)
    assert dict(report.bad) == {**{kind: 1 for kind in bad}, "bad_price": 2}
    assert f"{path.name}:201: bad_price: 'abc'" in "\n".join(report.examples)
    assert f"{path.name}:206: bad_column_count" in "\n".join(report.examples)
    assert query(dsn, "SELECT count(*), min(trade_id), max(trade_id) FROM ticks") == [(500, 1000, 1499)]
    assert query(dsn, "SELECT sum(trade_count) FROM bars_1s") == [(500,)]
    assert "never stored" in report.summary()


def test_bad_row_examples_are_capped_per_kind(dsn: str, tmp_path: Path) -> None:
    """A flood of one defect shows only the first few examples but counts them all."""
    path = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    path.write_text("".join(f"{i},0,1,1,1723161601437,True,True\n" for i in range(50)) + TRADE_LINES_MS[0])
    [report] = import_files(dsn, path)
    assert report.bad == {"bad_price": 50} and len(report.examples) == importer.BAD_ROW_EXAMPLES
    assert report.rows_new == 1


# ---------------------------------------------------------------------------------------------------
# aggTrades and klines
# ---------------------------------------------------------------------------------------------------
def test_agg_trades_round_trip_into_agg_trades_only(dsn: str, tmp_path: Path) -> None:
    """aggTrades go to agg_trades with their trade-id range; ticks and bars_1s stay untouched."""
    text = ("agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,best\n"
            "2000001,61837.63000000,0.03000000,3735693016,3735693018,1723161601437,True,True\n"
            "2000002,61837.64000000,0.00100000,3735693019,3735693019,1735689600123456,False,True\n"
            "2000003,61837.64000000,0.00100000,3735693021,3735693020,1723161601437,False,True\n")
    path = write_zip(tmp_path / "BTCUSDT-aggTrades-2024-08-09.zip", "BTCUSDT-aggTrades-2024-08-09.csv", text)
    [report] = import_files(dsn, path)
    assert (report.target, report.rows_new, dict(report.bad)) == ("agg_trades", 2, {"bad_trade_id_range": 1})
    assert query(dsn, "SELECT * FROM agg_trades ORDER BY agg_id") == [
        ("BTCUSDT", 2000001, EPOCH + timedelta(milliseconds=1723161601437), 61837.63, 0.03, 3735693016,
         3735693018, True),
        ("BTCUSDT", 2000002, EPOCH + timedelta(microseconds=1735689600123456), 61837.64, 0.001, 3735693019,
         3735693019, False),
    ]
    assert query(dsn, "SELECT (SELECT count(*) FROM ticks), (SELECT count(*) FROM bars_1s)") == [(0, 0)]


def test_klines_round_trip_into_imported_klines(dsn: str, tmp_path: Path) -> None:
    """Klines keep every column, interval from the name (or from the bar length), µs and ms stamps."""
    minute_ms = ("1723161600000,61837.63,61900.00,61800.00,61850.10,12.5,1723161659999,773000.5,1234,6.25,"
                 "386500.25,0\n")
    minute_us = ("1735689600000000,93500.1,93600,93400,93550,0,1735689659999999,0,0,0,0,0\n")
    bad = "1723161720000,100,90,110,100,1,1723161779999,100,1,0,0,0\n"  # high < low
    named = tmp_path / "BTCUSDT-1m-2024-08-09.csv"
    named.write_text(minute_ms + minute_us + bad)
    unnamed = tmp_path / "eth-history.csv"
    unnamed.write_text(minute_ms)
    reports = import_files(dsn, named, unnamed, symbol=None)
    assert reports[1].error.startswith("no symbol")
    [again] = import_files(dsn, unnamed, symbol="ETHUSDT")
    assert (reports[0].kind, reports[0].rows_new, dict(reports[0].bad)) == ("klines 1m", 2, {"bad_ohlc": 1})
    assert (again.kind, again.rows_new) == ("klines 1m", 1)
    rows = query(dsn, "SELECT * FROM imported_klines ORDER BY symbol, open_time")
    assert rows[0] == ("BTCUSDT", "1m", EPOCH + timedelta(milliseconds=1723161600000),
                       EPOCH + timedelta(milliseconds=1723161659999), 61837.63, 61900.0, 61800.0, 61850.1, 12.5,
                       773000.5, 1234, 6.25, 386500.25)
    assert rows[1][:4] == ("BTCUSDT", "1m", EPOCH + timedelta(microseconds=1735689600000000),
                           EPOCH + timedelta(microseconds=1735689659999999))
    assert rows[2][:2] == ("ETHUSDT", "1m")
    assert query(dsn, "SELECT count(*) FROM bars_1s") == [(0,)]


# ---------------------------------------------------------------------------------------------------
# Files that are not a format; the command line
# ---------------------------------------------------------------------------------------------------
def test_unknown_files_get_one_line_each(dsn: str, tmp_path: Path) -> None:
    """Not-a-format files are refused with a reason; the other files are still imported."""
    wrong_columns = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    wrong_columns.write_text("1,2,3\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello world\n")
    empty = tmp_path / "ETHUSDT-trades-2024-08-10.csv"
    empty.write_text("")
    broken_zip = tmp_path / "BTCUSDT-trades-2024-08-11.zip"
    broken_zip.write_bytes(b"PK\x03\x04 not really a zip")
    good = tmp_path / "ETHUSDT-trades-2024-08-09.csv"
    good.write_text("".join(TRADE_LINES_MS))
    reports = import_files(dsn, wrong_columns, notes, empty, broken_zip, good, tmp_path / "missing.csv")
    errors = [r.error for r in reports]
    assert errors[0] == "looks like trades but has 3 columns (a trades file has 7 or 6)"
    assert errors[1].startswith("not a Binance trades, aggTrades, klines or capture file")
    assert errors[2] == "empty file"
    assert errors[3].startswith("not a readable zip archive")
    assert errors[4] == "" and reports[4].rows_new == 3
    assert errors[5].startswith("cannot read")
    assert reports[1].summary() == f"import: {notes}: {errors[1]}"


def test_cli_exit_code_progress_and_summary(dsn: str, tmp_path: Path) -> None:
    """`python main.py import` prints progress to stderr, a summary per file, exit 2 when a file failed."""
    good = tmp_path / "BTCUSDT-trades-2024-08-09.csv"
    good.write_text("".join(TRADE_LINES_MS))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    env = dict(os.environ, DATABASE_URL=dsn, LOG_LEVEL="WARNING")
    result = subprocess.run([sys.executable, "main.py", "import", str(good), str(notes)], cwd=PROJECT_DIR,
                            env=env, capture_output=True, timeout=120)  # bytes: text mode would turn \r into \n
    stderr, stdout = result.stderr.decode(), result.stdout.decode()
    assert result.returncode == 2
    assert "\rBTCUSDT-trades-2024-08-09.csv: 3 rows" in stderr and "rows/s" in stderr and "100.0%" in stderr
    assert [line for line in stderr.splitlines() if line.startswith("import:")] == [
        f"import: {notes}: not a Binance trades, aggTrades, klines or capture file (first line has 1 columns, "
        "and the name is not SYMBOL-kind-DATE)"]
    assert "BTCUSDT-trades-2024-08-09.csv: trades -> ticks: 3 valid rows, 3 new" in stdout
    ok = subprocess.run([sys.executable, "main.py", "import", "--quiet", str(good)], cwd=PROJECT_DIR, env=env,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "3 valid rows, 0 new, 3 already stored" in ok.stdout
    assert "rows/s  " not in ok.stderr


# ---------------------------------------------------------------------------------------------------
# The recorded capture: same ticks and bars as the live path
# ---------------------------------------------------------------------------------------------------
BAR_SQL = ("SELECT symbol, ts, open, high, low, close, volume, quote_volume, trade_count, taker_buy_volume, "
           "open_ts, open_trade_id, close_ts, close_trade_id FROM bars_1s ORDER BY symbol, ts")
SUM_COLUMNS = (6, 7, 9)  # float sums: equal up to summation order


async def live_path(dsn: str, rows: list[tuple]) -> None:
    """What the live ingester does: flush_batch in its batch size, in arrival order."""
    conn = await asyncpg.connect(dsn)
    await database.prepare_writer_connection(conn)
    for start in range(0, len(rows), LIVE_BATCH_ROWS):
        await database.flush_batch(conn, rows[start:start + LIVE_BATCH_ROWS])
    await conn.close()


def assert_same_bars(imported: list[tuple], live: list[tuple]) -> None:
    """Bars equal: exactly, except float sums which may differ in the last bits (different order)."""
    assert len(imported) == len(live)
    for got, want in zip(imported, live):
        exact = [v for i, v in enumerate(got) if i not in SUM_COLUMNS]
        assert exact == [v for i, v in enumerate(want) if i not in SUM_COLUMNS]
        assert [got[i] for i in SUM_COLUMNS] == pytest.approx([want[i] for i in SUM_COLUMNS], rel=1e-12)


@pytest.mark.parametrize("batch_rows,jobs", [(importer.BATCH_ROWS, importer.IMPORT_JOBS), (997, 3)])
def test_capture_imports_all_trades_with_live_path_bars(dsn: str, shared_data: Path, batch_rows: int,
                                                        jobs: int) -> None:
    """34,419 ticks, contiguous ids, and bars_1s equal to flush_batch of the same trades (also with small
    batches written by 3 concurrent connections)."""
    paths = sorted((shared_data / "binance-spot-capture").glob("*.gz"))
    reports = import_files(dsn, *paths, batch_rows=batch_rows, jobs=jobs)
    assert [r.error for r in reports] == [""] * len(paths) and all(not r.bad for r in reports)
    assert sum(r.rows_new for r in reports) == CAPTURE_TRADES
    assert query(dsn, "SELECT symbol, count(*), max(trade_id) - min(trade_id) + 1 FROM ticks GROUP BY symbol "
                      "ORDER BY symbol") == [("BTCUSDT", 19_904, 19_904), ("ETHUSDT", 14_515, 14_515)]
    imported_ticks, imported_bars = stored_ticks(dsn), query(dsn, BAR_SQL)
    assert sum(bar[8] for bar in imported_bars) == CAPTURE_TRADES

    now_ms = datetime.now(timezone.utc).timestamp() * 1000
    rows = [make_tick_row(t["s"], t["t"], t["p"], t["q"], t["T"], t["m"], now_ms) for t in capture_trades(paths)]
    query_sql = "TRUNCATE ticks, bars_1s; SELECT 1"
    query(dsn, query_sql)
    run(live_path(dsn, rows))
    assert stored_ticks(dsn) == imported_ticks
    assert_same_bars(imported_bars, query(dsn, BAR_SQL))
    assert [r.rows_new for r in import_files(dsn, *paths)] == [0] * len(paths)  # live rows: nothing new
