"""Soak: the demo exchange at 2,000 ticks/s through the real ingester for 30 minutes (not a test).

    python bench/soak.py [--minutes 30] [--rate 2000] [--every 30]

Every `--every` seconds prints the ingester's RSS, the lag from trade time to stored (now - newest stored
trade time; the exchange stamps trades with the wall clock), the ingester's commit p99 from feed_health,
ticks stored and the rate since the last line. At the end it compares the first and last thirds: memory
and latency must stay flat (a leak or a backlog shows as growth).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import psutil

from common import PROJECT_DIR, bench_settings, fresh_database

import database  # noqa: E402
from run_all import free_port, wait_for_port  # noqa: E402

SYMBOLS = "btcusdt,ethusdt,bnbusdt,solusdt"
FLAT_TOLERANCE = 1.25  # last third may be at most 25% above the first third


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--every", type=float, default=30.0)
    args = parser.parse_args()
    settings = bench_settings("soak")
    dsn = fresh_database(database.ensure_database(settings), "soak")
    port = free_port()
    exchange = subprocess.Popen([sys.executable, "demo_exchange.py", "--port", str(port), "--symbols", SYMBOLS,
                                 "--rate", str(args.rate), "--wall-clock-times", "--log-level", "WARNING"],
                                cwd=PROJECT_DIR, stdout=subprocess.DEVNULL)
    assert wait_for_port("127.0.0.1", port, 30)
    env = dict(os.environ, DATABASE_URL=dsn, SYMBOLS=SYMBOLS, BINANCE_WS_URL=f"ws://127.0.0.1:{port}",
               BINANCE_REST_URL=f"http://127.0.0.1:{port}", LOG_LEVEL="WARNING")
    ingester = subprocess.Popen([sys.executable, "main.py"], cwd=PROJECT_DIR, env=env)
    conn = database.connect_sync(dsn)
    samples: list[tuple[float, float, float]] = []  # (rss MB, lag s, commit p99 s)
    print(f"{'min':>5} {'RSS MB':>7} {'lag s':>6} {'p99 s':>6} {'ticks':>10} {'ticks/s':>8}", flush=True)
    started, last_count, last_time = time.monotonic(), 0, time.monotonic()
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            with conn.cursor() as cur:
                cur.execute("SELECT count(*), extract(epoch FROM now() - max(ts)) FROM ticks")
                count, lag = cur.fetchone()
                cur.execute("SELECT max(commit_p99_seconds) FROM feed_health")
                p99 = cur.fetchone()[0] or float("nan")
            now = time.monotonic()
            rss = psutil.Process(ingester.pid).memory_info().rss / 2**20
            rate = (count - last_count) / (now - last_time)
            last_count, last_time = count, now
            samples.append((rss, float(lag or 0), float(p99)))
            print(f"{(now - started) / 60:>5.1f} {rss:>7.1f} {float(lag or 0):>6.2f} {p99:>6.2f} {count:>10,} "
                  f"{rate:>8,.0f}", flush=True)
    finally:
        ingester.send_signal(signal.SIGTERM)
        ingester.wait(30)
        exchange.send_signal(signal.SIGTERM)
        exchange.wait(30)
        conn.close()
        if not settings.database_url:
            database.stop_embedded_database(settings)
    third = max(1, len(samples) // 3)
    verdicts = []
    for index, name in enumerate(("RSS", "lag", "commit p99")):
        first = statistics.median(s[index] for s in samples[:third])
        last = statistics.median(s[index] for s in samples[-third:])
        flat = last <= first * FLAT_TOLERANCE + (0.5 if name != "RSS" else 0)
        verdicts.append(flat)
        print(f"{name}: first third median {first:.2f}, last third median {last:.2f} -> {'flat' if flat else 'GROWING'}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
