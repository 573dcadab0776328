"""Import benchmark: `python main.py import` of a Binance trades CSV vs a plain COPY of the same rows.

    python bench/bench_import.py [--trades 1000000] [--runs 3]

Writes N synthetic trades (Binance spot trades format, no header, ms stamps, one UTC day) to a temp dir,
plus the same rows as a `ticks`-shaped CSV. Per run, each into a fresh database with the schema applied:
  1. plain COPY ticks FROM STDIN (psycopg2, one transaction): the database's ceiling for these rows;
  2. `python main.py import --quiet FILE` as a subprocess (wall time, process start included): parsing,
     validation, staging, dedupe and the bars_1s merge.
Prints rows/s of both and their ratio per run, medians last. The target is ratio >= 0.5.
Uses a throw-away embedded PostgreSQL (or DATABASE_URL's server).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

import database  # noqa: E402
from settings import load_settings  # noqa: E402

SYMBOL = "BTCUSDT"
FIRST_TRADE_ID = 3_735_683_259
DAY_START_MS = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC
DAY_MS = 86_400_000
START_PRICE = 61_837.63
PRICE_TICK = 0.01
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TARGET_RATIO = 0.5


def write_files(directory: Path, trades: int, seed: int = 1) -> tuple[Path, Path]:
    """The Binance trades CSV and the equivalent ticks CSV (symbol,trade_id,ts,price,qty,is_buyer_maker)."""
    rng = random.Random(seed)
    binance = directory / f"{SYMBOL}-trades-2024-08-09.csv"
    ticks = directory / "ticks.csv"
    step_ms = DAY_MS / trades
    price = START_PRICE
    with open(binance, "w") as out_binance, open(ticks, "w") as out_ticks:
        for i in range(trades):
            price = max(PRICE_TICK, price + rng.choice((-PRICE_TICK, 0.0, 0.0, PRICE_TICK)))
            price_text, qty_text = f"{price:.8f}", f"{rng.randint(1, 200_000) / 1e5:.8f}"
            time_ms = DAY_START_MS + int(i * step_ms)
            maker = rng.random() < 0.5
            out_binance.write(f"{FIRST_TRADE_ID + i},{price_text},{qty_text},"
                              f"{float(price_text) * float(qty_text):.8f},{time_ms},{maker},True\n")
            ts = (EPOCH + timedelta(milliseconds=time_ms)).isoformat()
            out_ticks.write(f"{SYMBOL},{FIRST_TRADE_ID + i},{ts},{price_text},{qty_text},{'t' if maker else 'f'}\n")
    return binance, ticks


def fresh_database(base_dsn: str) -> str:
    """A new database on the server, schema applied."""
    name = f"bench_import_{os.getpid()}_{time.time_ns()}"
    admin = psycopg2.connect(base_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')  # generated name, not input
    admin.close()
    head, sep, query = base_dsn.partition("?")
    dsn = head.rsplit("/", 1)[0] + "/" + name + sep + query
    database.apply_migrations(dsn)
    return dsn


def drop_database(base_dsn: str, dsn: str) -> None:
    """Drop a benchmark database (keeps the disk from filling over runs)."""
    name = dsn.partition("?")[0].rsplit("/", 1)[1]
    admin = psycopg2.connect(base_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def plain_copy_rate(dsn: str, ticks_csv: Path, trades: int) -> float:
    """Rows/s of COPY ticks FROM STDIN into the empty table (day partition made first, if ticks is partitioned)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regproc('ensure_tick_partition') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute("SELECT ensure_tick_partition(to_timestamp(%s / 1000.0)::date)", (DAY_START_MS,))
        conn.commit()
        with open(ticks_csv) as source:
            started = time.perf_counter()
            cur.copy_expert("COPY ticks FROM STDIN WITH (FORMAT csv)", source)
            conn.commit()
            seconds = time.perf_counter() - started
        cur.execute("SELECT count(*) FROM ticks")
        assert cur.fetchone()[0] == trades, "plain COPY stored the wrong number of rows"
    conn.close()
    return trades / seconds


def import_rate(dsn: str, binance_csv: Path, trades: int) -> float:
    """Rows/s of `python main.py import` (wall time of the whole process)."""
    env = dict(os.environ, DATABASE_URL=dsn, LOG_LEVEL="WARNING")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "main.py", "import", "--quiet", str(binance_csv)], cwd=PROJECT_DIR,
                            env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), (SELECT sum(trade_count) FROM bars_1s) FROM ticks")
        stored, in_bars = cur.fetchone()
    conn.close()
    assert stored == trades and in_bars == trades, f"import stored {stored} ticks, bars count {in_bars}"
    return trades / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = load_settings()
    if not settings.database_url:
        pg_dir = Path(tempfile.mkdtemp(prefix="bench-import-pg-"))
        pg_dir.chmod(0o755)
        settings = settings.__class__(pg_data_dir=pg_dir)
    base_dsn = database.ensure_database(settings)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as directory:
        binance_csv, ticks_csv = write_files(Path(directory), args.trades)
        print(f"{args.trades:,} trades, {binance_csv.stat().st_size / 1e6:.0f} MB CSV")
        print(f"{'run':>3} {'COPY rows/s':>12} {'import rows/s':>14} {'ratio':>6}")
        results = []
        for run in range(1, args.runs + 1):
            copy_dsn = fresh_database(base_dsn)
            copy = plain_copy_rate(copy_dsn, ticks_csv, args.trades)
            drop_database(base_dsn, copy_dsn)
            import_dsn = fresh_database(base_dsn)
            imported = import_rate(import_dsn, binance_csv, args.trades)
            drop_database(base_dsn, import_dsn)
            results.append((copy, imported, imported / copy))
            print(f"{run:>3} {copy:>12,.0f} {imported:>14,.0f} {imported / copy:>6.2f}", flush=True)
    med = [statistics.median(column) for column in zip(*results)]
    print(f"med {med[0]:>12,.0f} {med[1]:>14,.0f} {med[2]:>6.2f}  (target ratio >= {TARGET_RATIO})")
    if not settings.database_url:
        database.stop_embedded_database(settings)


if __name__ == "__main__":
    main()
