"""Running the real ingester (`python main.py`) as a subprocess against a demo exchange, for tests and benches."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psycopg2

PROJECT_DIR = Path(__file__).resolve().parents[1]


class IngesterProcess:
    """`python main.py` with the given settings; its log goes to a file the test can read."""

    def __init__(self, dsn: str, ws_url: str, rest_url: str, symbols: str, log_path: Path, **settings: object):
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
        env.update(DATABASE_URL=dsn, BINANCE_WS_URL=ws_url, BINANCE_REST_URL=rest_url, SYMBOLS=symbols,
                   BATCH_SECONDS="0.5", BACKOFF_CAP_SECONDS="1", HEALTHY_SECONDS="5", PYTHONUNBUFFERED="1")
        env.update({name.upper(): str(value) for name, value in settings.items()})
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "main.py"], cwd=PROJECT_DIR, env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds it took to exit)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code, time.monotonic() - started

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._log.close()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except psycopg2.OperationalError:
            pass
        time.sleep(interval)
    return False


def query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    conn.close()
    return rows


def tick_count(dsn: str) -> int:
    return query(dsn, "SELECT count(*) FROM ticks")[0][0]


def stored_ticks(dsn: str, symbol: str) -> list[tuple]:
    """(trade_id, T ms, price, qty, is_buyer_maker) of a symbol, in id order."""
    return query(dsn, "SELECT trade_id, (extract(epoch FROM ts) * 1000)::bigint, price, qty, is_buyer_maker "
                      "FROM ticks WHERE symbol = %s ORDER BY trade_id", (symbol,))
