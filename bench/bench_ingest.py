"""Ingest benchmark: N trades from the demo exchange through the real ingester into PostgreSQL.

    python bench/bench_ingest.py [--trades 300000] [--runs 3]

Per run, against a fresh demo exchange sending as fast as the socket takes (speed 0):
  1. a discard-only client (websockets, same options as the ingester) receives the N frames: the socket's ceiling;
  2. the real ingester (`python main.py`) streams the same N trades into a fresh database;
  3. with --minimal, a reference "minimal ingester" (websockets + orjson + a writer task doing plain
     copy_records_to_table into an unindexed table: no validation, dedupe, bars, gap tracking or health).
Prints ticks/s, ratios to the discard client, p50/p99 frame-to-commit latency, the ingester's peak RSS, and the
CPU time per trade of the exchange, the ingester and its PostgreSQL sessions while ingesting (the three share
the machine's cores); medians last.
Uses the embedded PostgreSQL (or DATABASE_URL's server).
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import orjson
import psycopg2
from websockets.asyncio.client import connect

from common import PROJECT_DIR, bench_settings, fresh_database

import database  # noqa: E402
from main import WS_MAX_QUEUE_FRAMES, combined_stream_url  # noqa: E402
from run_all import free_port, wait_for_port  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")


def start_exchange(trades: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "demo_exchange.py", "--port", str(port), "--symbols", ",".join(SYMBOLS), "--speed", "0",
         "--max-trades", str(trades), "--pregenerate", "--wall-clock-times", "--log-level", "WARNING"],
        cwd=PROJECT_DIR, stdout=subprocess.DEVNULL)
    assert wait_for_port("127.0.0.1", port, 20), "demo exchange did not start"
    return process, port


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


async def discard_client(url: str, trades: int) -> float:
    """Receive `trades` frames and throw them away; returns frames per second."""
    async with connect(url, compression=None, max_queue=WS_MAX_QUEUE_FRAMES, max_size=1 << 20) as ws:
        received, started = 0, 0.0
        while received < trades:
            await ws.recv(decode=False)
            if received == 0:
                started = time.perf_counter()
            received += 1
        return (trades - 1) / (time.perf_counter() - started)


MINIMAL_TABLE_SQL = ("CREATE UNLOGGED TABLE IF NOT EXISTS ticks_minimal (symbol text, trade_id bigint, ts timestamptz,"
                     " price float8, qty float8, is_buyer_maker boolean)")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


async def minimal_ingester(url: str, dsn: str, trades: int, batch_rows: int, batch_seconds: float) -> float:
    """The simplest ingester that batches into PostgreSQL with COPY; returns ticks/s (first frame -> last commit)."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(MINIMAL_TABLE_SQL)
    buffer: list[tuple] = []
    ready, done = asyncio.Event(), asyncio.Event()
    stored = 0

    async def writer() -> None:
        nonlocal buffer, stored
        while stored < trades:
            try:
                await asyncio.wait_for(ready.wait(), batch_seconds)
            except TimeoutError:
                pass
            ready.clear()
            rows, buffer = buffer, []
            if rows:
                await conn.copy_records_to_table("ticks_minimal", records=rows)
                stored += len(rows)
        done.set()

    task = asyncio.create_task(writer())
    async with connect(url, compression=None, max_queue=WS_MAX_QUEUE_FRAMES, max_size=1 << 20) as ws:
        started = 0.0
        for received in range(trades):
            data = orjson.loads(await ws.recv(decode=False))["data"]
            if received == 0:
                started = time.perf_counter()
            buffer.append((data["s"], data["t"], EPOCH + timedelta(milliseconds=data["T"]), float(data["p"]),
                           float(data["q"]), data["m"]))
            if len(buffer) >= batch_rows:
                ready.set()
        ready.set()
        await done.wait()
    await task
    await conn.close()
    return (trades - 1) / (time.perf_counter() - started)


def minimal_run(base_dsn: str, trades: int, batch_rows: int, batch_seconds: float) -> float:
    dsn = fresh_database(base_dsn, "bench_minimal")
    exchange, port = start_exchange(trades)
    try:
        url = combined_stream_url(f"ws://127.0.0.1:{port}", SYMBOLS)
        return asyncio.run(minimal_ingester(url, dsn, trades, batch_rows, batch_seconds))
    finally:
        stop(exchange)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (from /proc; a process that is gone or unreadable counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


# Progress from bars_1s (committed in the same transaction as the ticks): a few rows to sum, where polling
# count(*) of `ticks` every 50 ms would take a core's tenth from the ingester's database at 300,000 rows.
STORED_TRADES_SQL = "SELECT coalesce(sum(trade_count), 0) FROM bars_1s"
BACKENDS_SQL = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


def ingest_run(base_dsn: str, trades: int) -> dict[str, float]:
    dsn = fresh_database(base_dsn, "bench_ingest")
    exchange, port = start_exchange(trades)
    env = dict(os.environ, DATABASE_URL=dsn, SYMBOLS=",".join(SYMBOLS), BINANCE_WS_URL=f"ws://127.0.0.1:{port}",
               BINANCE_REST_URL=f"http://127.0.0.1:{port}", LOG_LEVEL="INFO")
    log_path = Path(tempfile.mkstemp(suffix=".log")[1])
    with open(log_path, "wb") as log_file:
        ingester = subprocess.Popen([sys.executable, "main.py"], cwd=PROJECT_DIR, env=env, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        first_seen = done_at = None
        deadline = time.monotonic() + 600
        groups: dict[str, list[int]] = {}
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(STORED_TRADES_SQL)
                count = cur.fetchone()[0]
                now = time.perf_counter()
                if count and first_seen is None:
                    first_seen = (now, count)
                    cur.execute(BACKENDS_SQL)  # the ingester's sessions (writer, health)
                    groups = {"exchange": [exchange.pid], "ingester": [ingester.pid],
                              "postgres": [row[0] for row in cur.fetchall()]}
                    cpu_at_first = {name: cpu_seconds(pids) for name, pids in groups.items()}
                if count >= trades:
                    done_at = now
                    break
                time.sleep(0.05)
        cpu = {name: cpu_seconds(pids) - cpu_at_first[name] for name, pids in groups.items()}
        rss = peak_rss_mb(ingester.pid)
        stop(ingester)
        stop(exchange)
        conn.close()
    log = log_path.read_text()
    latency = re.search(r"commit latency p50=([\d.]+)s p99=([\d.]+)s", log)
    assert done_at and first_seen and latency, log[-2000:]
    rate = (trades - first_seen[1]) / (done_at - first_seen[0])
    per_trade = {f"cpu_{name}": seconds * 1e6 / (trades - first_seen[1]) for name, seconds in cpu.items()}
    return {"ingest_tps": rate, "p50": float(latency.group(1)), "p99": float(latency.group(2)), "rss_mb": rss,
            **per_trade}


def discard_run(trades: int) -> float:
    exchange, port = start_exchange(trades)
    try:
        return asyncio.run(discard_client(combined_stream_url(f"ws://127.0.0.1:{port}", SYMBOLS), trades))
    finally:
        stop(exchange)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--minimal", action="store_true", help="also run the reference minimal ingester")
    args = parser.parse_args()
    settings = bench_settings("bench-ingest")
    base_dsn = database.ensure_database(settings)
    print(f"{'run':>3} {'discard t/s':>12} {'ingest t/s':>11} {'ratio':>6} {'p50 s':>6} {'p99 s':>6} {'RSS MB':>7}"
          f" {'minimal t/s':>12} {'ratio':>6}   CPU µs/trade while ingesting: exchange ingester postgres")
    results = []
    for run in range(1, args.runs + 1):
        ceiling = discard_run(args.trades)
        ingest = ingest_run(base_dsn, args.trades)
        minimal = (minimal_run(base_dsn, args.trades, settings.batch_rows, settings.batch_seconds)
                   if args.minimal else math.nan)
        ratio = ingest["ingest_tps"] / ceiling
        cpu = (ingest["cpu_exchange"], ingest["cpu_ingester"], ingest["cpu_postgres"])
        results.append((ceiling, ingest["ingest_tps"], ratio, ingest["p50"], ingest["p99"], ingest["rss_mb"],
                        minimal, minimal / ceiling, *cpu))
        print(f"{run:>3} {ceiling:>12,.0f} {ingest['ingest_tps']:>11,.0f} {ratio:>6.2f} {ingest['p50']:>6.3f} "
              f"{ingest['p99']:>6.3f} {ingest['rss_mb']:>7.1f} {minimal:>12,.0f} {minimal / ceiling:>6.2f}"
              f"   {cpu[0]:>8.2f} {cpu[1]:>8.2f} {cpu[2]:>8.2f}", flush=True)
    med = [statistics.median(column) for column in zip(*results)]
    print(f"med {med[0]:>12,.0f} {med[1]:>11,.0f} {med[2]:>6.2f} {med[3]:>6.3f} {med[4]:>6.3f} {med[5]:>7.1f}"
          f" {med[6]:>12,.0f} {med[7]:>6.2f}   {med[8]:>8.2f} {med[9]:>8.2f} {med[10]:>8.2f}")
    print(f"({args.trades:,} trades per run, {len(SYMBOLS)} symbols, BATCH_ROWS={settings.batch_rows}, "
          f"BATCH_SECONDS={settings.batch_seconds})")
    if not settings.database_url:
        database.stop_embedded_database(settings)


if __name__ == "__main__":
    main()
