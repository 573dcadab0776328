"""The dashboard's analytics cache is shared by its worker processes.

* `gunicorn app:server -w 4`: ten identical concurrent requests reach several workers and cost ONE analytics
  computation (each worker logs, at DEBUG, how it answered: computed / from the shared cache / from its own);
* two DataSource objects on one cache directory (two processes' worth): the second reads the first's result;
  a waiter takes the result of the lock holder instead of computing it again; an unreadable entry is a miss;
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import pytest

try:  # tests/ is a package when it has __init__.py, else a rootdir on sys.path
    from tests.test_dashboard import free_port, stop, wait_for
    from tests.test_exports import SYMBOLS, dashboard, market  # noqa: F401 - fixtures
except ImportError:
    from test_dashboard import free_port, stop, wait_for
    from test_exports import SYMBOLS, dashboard, market  # noqa: F401

from exports import View

PROJECT_DIR = Path(__file__).resolve().parents[1]
WORKERS = 4
REQUESTS = 10
STARTUP_TIMEOUT = 240.0            # four workers import pandas/scipy/statsmodels at once on a small machine
LOADED = re.compile(r"dashboard loaded in process (\d+)")
OUTCOME = re.compile(r"view (computed in \d+ ms|from the shared cache|from the process cache) \(pid (\d+)\): (.*)$")


def outcomes(log_text: str, marker: str) -> list[tuple[str, int]]:
    """(how, pid) of every view_data answer whose key mentions `marker`."""
    found = []
    for line in log_text.splitlines():
        match = OUTCOME.search(line)
        if match and marker in match.group(3):
            found.append((match.group(1).split(" in ")[0], int(match.group(2))))
    return found


def test_identical_requests_across_gunicorn_workers_compute_once(market, tmp_path) -> None:
    dsn, _ = market
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = dict(os.environ, DATABASE_URL=dsn, SYMBOLS=",".join(SYMBOLS), CACHE_DIR=str(tmp_path / "cache"),
               LOG_LEVEL="DEBUG", PYTHONUNBUFFERED="1")
    env.pop("DASH_USER", None), env.pop("DASH_PASSWORD", None)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "app:server", "-w", str(WORKERS), "-b",
                                f"127.0.0.1:{port}", "--timeout", "120"], cwd=PROJECT_DIR, env=env,
                               stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: process.poll() is not None or len(set(LOADED.findall(log_path.read_text()))) >= WORKERS,
                 STARTUP_TIMEOUT, f"{WORKERS} gunicorn workers to load the app (log: {log_path})")
        assert process.poll() is None, log_path.read_text()[-3000:]
        view = View(a="SOLUSDT", b="ETHUSDT", tf="5s", lookback=3600, window=77, regression="huber")
        url = f"http://127.0.0.1:{port}/export/pair.csv{view.query()}"
        barrier = threading.Barrier(REQUESTS)

        def fetch(_: int) -> bytes:
            barrier.wait()
            with urllib.request.urlopen(url, timeout=120) as response:
                assert response.status == 200
                return response.read()

        with ThreadPoolExecutor(REQUESTS) as pool:
            bodies = list(pool.map(fetch, range(REQUESTS)))
        assert len(set(bodies)) == 1 and bodies[0].count(b"\n") > 300
        time.sleep(0.5)  # the last log lines
        answers = outcomes(log_path.read_text(), repr(tuple(asdict(view).values())))
    finally:
        stop(process)
    assert len(answers) == REQUESTS, answers
    pids = {pid for _, pid in answers}
    assert len(pids) >= 2, f"all {REQUESTS} requests reached one worker: the test proves nothing ({answers})"
    computed = [a for a in answers if a[0] == "computed"]
    assert len(computed) == 1, f"{len(computed)} computations across {len(pids)} workers: {answers}"


def test_a_second_process_reads_the_first_ones_result(dashboard, tmp_path) -> None:
    first = dashboard.DataSource(replace(dashboard.source.settings, cache_dir=tmp_path))
    second = dashboard.DataSource(replace(dashboard.source.settings, cache_dir=tmp_path))
    view = View(a="BTCUSDT", b="BNBUSDT", tf="15s", lookback=3600, window=21)
    computed = first.view_data(view)
    calls = []
    second._compute = lambda *args: calls.append(args)  # must not be called
    shared = second.view_data(view)
    assert calls == [] and second.stats == {"computed": 0, "memory_hits": 0, "shared_hits": 1}
    assert shared is not computed and shared.pair.series.equals(computed.pair.series)
    assert second.view_data(view) is shared and second.stats["memory_hits"] == 1  # then this process's copy
    assert second.latest_view_data(view) is shared
    third = dashboard.DataSource(replace(dashboard.source.settings, cache_dir=tmp_path))
    ticker = third.latest_view_data(view)  # the 1 s ticker on a worker that never computed this view
    assert ticker.pair.series.equals(computed.pair.series)
    assert third.latest_view_data(view) is ticker  # younger than one bar: no disk read
    newer = replace(computed, compute_ms=-1.0)  # another worker stores a newer bar's result
    first.shared._disk().set("view:newer", newer, expire=60)
    first.shared.set_latest(first._shared_key((view.key(),)), "view:newer", expire=60)
    assert third.latest_view_data(view) is ticker  # still younger than one bar
    ticker.computed_at -= view.bar_seconds
    assert third.latest_view_data(view).compute_ms == -1.0  # older than a bar: the newest stored result


def test_a_waiting_process_reuses_the_lock_holders_result(dashboard, tmp_path) -> None:
    holder, waiter = dashboard.SharedViewCache(tmp_path), dashboard.SharedViewCache(tmp_path)
    started, results = threading.Event(), {}

    def slow() -> str:
        started.set()
        time.sleep(0.5)
        return "value"

    thread = threading.Thread(target=lambda: results.setdefault("holder", holder.compute_once("k", slow, 60)))
    thread.start()
    started.wait(10)
    results["waiter"] = waiter.compute_once("k", lambda: pytest.fail("computed twice"), 60)
    thread.join()
    assert results == {"holder": ("value", True), "waiter": ("value", False)}
    assert waiter._disk().get("lock:k") is None  # released


class Gone:
    """Stored in the shared cache, then removed from this module: its entry can no longer be unpickled."""


def test_an_unreadable_entry_or_a_broken_cache_is_a_miss(dashboard, tmp_path, monkeypatch) -> None:
    cache = dashboard.SharedViewCache(tmp_path)
    cache._disk().set("k", Gone(), expire=60)
    monkeypatch.delattr(sys.modules[__name__], "Gone")
    assert cache.get("k") is None
    assert cache.compute_once("k", lambda: "fresh", 60) == ("fresh", True)

    def broken(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(cache._disk(), "add", broken)
    monkeypatch.setattr(cache._disk(), "get", broken)
    assert cache.get("k2") is None
    assert cache.compute_once("k2", lambda: "computed anyway", 60) == ("computed anyway", True)


def test_a_stuck_holders_waiter_computes_once_and_its_error_is_not_retried(dashboard, tmp_path, monkeypatch) -> None:
    """Past the lock's deadline the waiter computes itself; an error of that computation reaches the caller
    after one call (it is not mistaken for a cache failure and computed again)."""
    cache = dashboard.SharedViewCache(tmp_path)
    cache._disk().add("lock:k", "another process", expire=60)  # a holder that never finishes
    monkeypatch.setattr(dashboard, "COMPUTE_LOCK_SECONDS", 0.05)
    calls = []

    def failing() -> str:
        calls.append(1)
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        cache.compute_once("k", failing, 60)
    assert calls == [1]
