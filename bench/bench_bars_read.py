"""Bar-read benchmark: one day of 1-second bars for two symbols, with 100,000 and then 10,000,000 ticks stored.

    python bench/bench_bars_read.py [--big-ticks 10000000] [--repeats 15]

Reads go through `database.read_bars` (bars_1s, never ticks), so their time must not grow with `ticks`.
Prints medians for 1s (86,400 bars per symbol) and 1m (resampled in SQL) reads, and the 10M/100k ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone

from common import bench_settings, fresh_database

import database  # noqa: E402

DAY_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SYMBOLS = ("BTCUSDT", "ETHUSDT")
FILL_BARS_SQL = """
INSERT INTO bars_1s (symbol, ts, open, high, low, close, volume, quote_volume, trade_count, taker_buy_volume,
                     open_ts, open_trade_id, close_ts, close_trade_id)
SELECT %(symbol)s, %(start)s + make_interval(secs => s), 100 + sin(s / 500.0), 101 + sin(s / 500.0),
       99 + sin(s / 500.0), 100.5 + sin(s / 500.0), 1.5, 150.0, 3, 0.7,
       %(start)s + make_interval(secs => s), s * 3, %(start)s + make_interval(secs => s + 0.9), s * 3 + 2
FROM generate_series(0, 86399) AS s
"""
FILL_TICKS_SQL = """
INSERT INTO ticks (symbol, trade_id, ts, price, qty, is_buyer_maker)
SELECT %(symbol)s, %(first)s + n, %(start)s - make_interval(secs => (%(first)s + n) / 50.0),
       100 + (n %% 97) / 100.0, 0.01, n %% 2 = 0
FROM generate_series(0, %(count)s - 1) AS n
"""


def add_ticks(conn, total: int, already: int) -> None:
    """Grow `ticks` to `total` rows (split across the symbols), in chunks so progress shows."""
    chunk = 1_000_000
    with conn.cursor() as cur:
        cur.execute("SELECT ensure_tick_partition(day::date) FROM generate_series(%s::timestamptz - interval '5 days', "
                    "%s::timestamptz, interval '1 day') AS day", (DAY_START, DAY_START))
        while already < total:
            count = min(chunk, total - already)
            for index, symbol in enumerate(SYMBOLS):
                cur.execute(FILL_TICKS_SQL, {"symbol": symbol, "start": DAY_START, "count": count // len(SYMBOLS),
                                             "first": already // len(SYMBOLS)})
            already += count
            print(f"  ticks: {already:,}", flush=True)
        cur.execute("VACUUM ANALYZE ticks")


def time_reads(conn, seconds: int, repeats: int) -> float:
    """Median wall time to read both symbols' bars for the whole day."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        for symbol in SYMBOLS:
            bars = database.read_bars(conn, symbol, seconds, DAY_START, DAY_START + timedelta(days=1))
            assert len(bars) == 86_400 // seconds
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-ticks", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    settings = bench_settings("bench-bars-read")
    dsn = fresh_database(database.ensure_database(settings), "bench_bars_read")
    conn = database.connect_sync(dsn)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE ticks, bars_1s")
        for symbol in SYMBOLS:
            cur.execute(FILL_BARS_SQL, {"symbol": symbol, "start": DAY_START})
        cur.execute("VACUUM ANALYZE bars_1s")
    add_ticks(conn, 100_000, 0)
    small = {s: time_reads(conn, s, args.repeats) for s in (1, 60)}
    add_ticks(conn, args.big_ticks, 100_000)
    big = {s: time_reads(conn, s, args.repeats) for s in (1, 60)}
    print(f"{'read (2 symbols, 1 day)':<28} {'100k ticks':>11} {f'{args.big_ticks:,} ticks':>14} {'ratio':>6}")
    for seconds, label in ((1, "1s bars (2 x 86,400)"), (60, "1m bars (2 x 1,440)")):
        print(f"{label:<28} {small[seconds] * 1000:>9.1f}ms {big[seconds] * 1000:>12.1f}ms "
              f"{big[seconds] / small[seconds]:>6.2f}")
    conn.close()
    if not settings.database_url:
        database.stop_embedded_database(settings)


if __name__ == "__main__":
    main()
