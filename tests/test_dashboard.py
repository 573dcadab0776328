"""Browser tests: the real app (`python app.py`) in real headless Chromium on a real PostgreSQL.

Two stacks start in parallel, once for the module:
  * synthetic - 90 min of synthetic 1 s bars for 4 symbols, plus a feeder thread appending one bar per
    second (so live updates really happen while we check that zoom survives them);
  * demo      - demo_exchange.py -> main.py (the ingester) -> an empty database -> a second app.
Screenshots of the main views go to artifacts/ (gitignored).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import pytest

try:  # tests/ is a package when it has __init__.py, else a rootdir on sys.path
    from tests.test_exports import SYMBOLS, empty_database, market_database
except ImportError:
    from test_exports import SYMBOLS, empty_database, market_database

PROJECT_DIR = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT_DIR / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync")
LAPTOP = (1366, 768)
UHD = (3840, 2160)
STARTUP_TIMEOUT = 150.0        # the app imports pandas/scipy/statsmodels: slow on a busy machine
PAGE_TIMEOUT = 150.0           # first paint parses ~8 MB of JS; generous for a loaded CI box
DEMO_TIMEOUT = 150.0
LIVE_TICKS_TO_WAIT = 4         # bar closes that must have been applied while the zoom is held
GRAPH_IDS = ("candles-a", "candles-b", "pair", "heatmap", "leadlag", "equity")
DEMO_RATE = 40                 # synthetic trades/s of the demo exchange (all symbols)

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")

TRACE_LENGTHS_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!gd || !gd._fullData) return null;
return gd._fullData.map(t => t._length != null ? t._length : (t.z ? t.z.length : (t.x ? t.x.length : 0)));
"""
LAST_X_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!gd || !gd._fullData || !gd._fullData[0].x) return null;
const x = gd._fullData[0].x; return x.length ? Number(x[x.length - 1]) : null;
"""
X_RANGE_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
return gd && gd._fullLayout ? gd._fullLayout.xaxis.range.map(String) : null;
"""


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------
def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> object:
    """Poll until `condition()` is truthy; fail naming `what`."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except WebDriverException:  # e.g. a script timeout while the page is busy: just poll again
            value = None
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
    """GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_app(dsn: str, port: int, log_path: Path) -> subprocess.Popen:
    """`python app.py` on `port` against `dsn` (DEMO label on)."""
    env = dict(os.environ, DATABASE_URL=dsn, SYMBOLS=",".join(SYMBOLS), DASH_HOST="127.0.0.1",
               DASH_PORT=str(port), DEMO="1", PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT_DIR, env=env, stdout=log_path.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def graphs_have_data(driver, graph_ids=GRAPH_IDS) -> bool:
    """Every graph's first trace has points."""
    for graph_id in graph_ids:
        lengths = driver.execute_script(TRACE_LENGTHS_JS, graph_id)
        if not lengths or not lengths[0]:
            return False
    return True


def severe_console_errors(driver) -> list[dict]:
    """Browser console entries at SEVERE level."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def text(driver, element_id: str) -> str:
    """innerText of an element."""
    return driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : ''",
                                 element_id)


def choose(driver, control_id: str, label: str) -> None:
    """Pick `label` in a dcc.Dropdown (Dash 4): open it, click the option."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{control_id}").click()
    option = wait_for(lambda: [o for o in driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option")
                               if o.text.strip().lower() == label.lower()], 20, f"option {label!r} of {control_id}")
    option[0].click()


def screenshot(driver, name: str, size: tuple[int, int]) -> Path:
    """Full-page PNG in artifacts/ at the given viewport width."""
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(size[0], size[1])
    time.sleep(1.0)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size[0], max(size[1], height + 120))
    time.sleep(1.5)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    driver.set_window_size(*LAPTOP)
    return path


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------
class LiveFeeder(threading.Thread):
    """Appends one synthetic 1 s bar per symbol every second (bars keep closing during the tests)."""

    def __init__(self, dsn: str, market) -> None:
        super().__init__(daemon=True)
        self.dsn, self.market, self.stopped = dsn, market, threading.Event()

    def run(self) -> None:
        import database

        conn = database.connect_sync(self.dsn)
        try:
            while not self.stopped.wait(1.0):
                self.market.advance(conn)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def stacks(pg_base_dsn: str, tmp_path_factory) -> Iterator[dict[str, str]]:
    """Start both stacks in parallel; yield {'synthetic': url, 'demo': url}."""
    logs = tmp_path_factory.mktemp("dashboard_logs")
    with ExitStack() as stack:
        dsn, market = stack.enter_context(market_database(pg_base_dsn))
        demo_dsn = stack.enter_context(empty_database(pg_base_dsn))
        ports = {name: free_port() for name in ("synthetic", "demo", "exchange")}
        processes = [start_app(dsn, ports["synthetic"], logs / "app.log"),
                     start_app(demo_dsn, ports["demo"], logs / "demo_app.log")]
        exchange = subprocess.Popen(
            [sys.executable, "demo_exchange.py", "--port", str(ports["exchange"]), "--symbols", ",".join(SYMBOLS),
             "--rate", str(DEMO_RATE)], cwd=PROJECT_DIR, stdout=(logs / "exchange.log").open("w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(exchange)
        for process in processes:
            stack.callback(stop, process)
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", ports["exchange"])) == 0, STARTUP_TIMEOUT,
                 "demo exchange")
        ingester = subprocess.Popen(
            [sys.executable, "main.py"], cwd=PROJECT_DIR, stdout=(logs / "ingester.log").open("w"),
            stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, DATABASE_URL=demo_dsn, SYMBOLS=",".join(SYMBOLS), DEMO="1",
                     BINANCE_WS_URL=f"ws://127.0.0.1:{ports['exchange']}",
                     BINANCE_REST_URL=f"http://127.0.0.1:{ports['exchange']}", LOG_LEVEL="WARNING"))
        stack.callback(stop, ingester)
        feeder = LiveFeeder(dsn, market)
        feeder.start()
        stack.callback(feeder.stopped.set)
        urls = {name: f"http://127.0.0.1:{ports[name]}" for name in ("synthetic", "demo")}
        for name, url in urls.items():
            wait_for(lambda: http_ok(url + "/"), STARTUP_TIMEOUT, f"the {name} app at {url} (log: {logs})")
        yield urls


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium via the system chromedriver, console logs captured."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={LAPTOP[0]},{LAPTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def open_page(driver, url: str) -> None:
    """Load a page and wait until every chart has data and the tables are filled."""
    driver.get(url)
    wait_for(lambda: graphs_have_data(driver), PAGE_TIMEOUT, f"every chart to have data at {url}")
    wait_for(lambda: text(driver, "export-links").strip(), PAGE_TIMEOUT, "the export links")


# ---------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------
def test_page_loads_with_data_and_no_console_errors(browser, stacks) -> None:
    open_page(browser, stacks["synthetic"] + "/")
    assert "a=BTCUSDT" in browser.current_url and "tf=5s" in browser.current_url  # defaults now in the URL
    assert "DEMO" in text(browser, "demo-badge")
    wait_for(lambda: "β" in text(browser, "metrics") and "—" not in text(browser, "live-beta"), PAGE_TIMEOUT,
             "the ticker's live beta")
    assert "collecting data" not in text(browser, "panel-pair")
    assert "Trades (closed)" in text(browser, "backtest-summary")
    wait_for(lambda: "BTCUSDT" in text(browser, "stats-grid"), PAGE_TIMEOUT, "the stats table")
    wait_for(lambda: "BTCUSDT" in text(browser, "health-grid"), PAGE_TIMEOUT, "the feed health table")
    assert "STALE" in text(browser, "stale-banner")  # no ingester on this stack: the warning must show
    errors = severe_console_errors(browser)
    assert errors == [], errors
    screenshot(browser, "dashboard_1366.png", LAPTOP)
    screenshot(browser, "dashboard_4k.png", UHD)


def test_changing_pair_timeframe_and_regression_changes_numbers(browser, stacks) -> None:
    open_page(browser, stacks["synthetic"] + "/?a=BTCUSDT&b=ETHUSDT&tf=5s&regression=ols")
    before = text(browser, "metrics")
    choose(browser, "ctl-regression", "Huber")
    wait_for(lambda: "regression=huber" in browser.current_url, PAGE_TIMEOUT, "regression=huber in the URL")
    wait_for(lambda: "huber" in text(browser, "metrics"), PAGE_TIMEOUT, "the Huber fit")
    after_regression = text(browser, "metrics")
    assert after_regression != before
    choose(browser, "ctl-b", "SOLUSDT")
    wait_for(lambda: "b=SOLUSDT" in browser.current_url, PAGE_TIMEOUT, "b=SOLUSDT in the URL")
    wait_for(lambda: text(browser, "metrics") != after_regression and "SOLUSDT" in text(browser, "ticker"),
             PAGE_TIMEOUT, "new numbers for BTCUSDT/SOLUSDT")
    after_pair = text(browser, "metrics")
    choose(browser, "ctl-tf", "1m")
    wait_for(lambda: "tf=1m" in browser.current_url, PAGE_TIMEOUT, "tf=1m in the URL")
    wait_for(lambda: text(browser, "metrics") != after_pair, PAGE_TIMEOUT, "new numbers at 1m")
    # the view lives in the URL: a reload restores it
    browser.refresh()
    wait_for(lambda: graphs_have_data(browser, ("candles-a", "candles-b", "pair")), PAGE_TIMEOUT, "charts after reload")
    wait_for(lambda: "huber" in text(browser, "metrics"), PAGE_TIMEOUT, "the Huber view after reload")
    # 60 one-minute bars < the backtest's 2 x 120-bar window: the panel says so instead of drawing
    assert "collecting data: 60 / 240 bars" in text(browser, "ready-backtest") or \
        "collecting data: 61 / 240 bars" in text(browser, "ready-backtest")
    assert "SOLUSDT" in text(browser, "ticker") and "tf=1m" in browser.current_url
    assert severe_console_errors(browser) == []


def test_bad_url_parameters_fall_back_with_notice(browser, stacks) -> None:
    open_page(browser, stacks["synthetic"] + "/?a=NOPE&tf=2m&window=-5&regression=%3Cscript%3E&entry=abc")
    notice = wait_for(lambda: text(browser, "notice"), PAGE_TIMEOUT, "the fallback notice")
    for fragment in ("a=NOPE", "tf='2m'", "window='-5'", "regression=", "entry='abc'"):
        assert fragment in notice
    assert "tf=5s" in browser.current_url and "a=BTCUSDT" in browser.current_url
    assert severe_console_errors(browser) == []


def test_zoom_survives_live_updates(browser, stacks) -> None:
    open_page(browser, stacks["synthetic"] + "/?a=ETHUSDT&b=BNBUSDT&tf=1s&lookback=1800&window=120")
    zoomed = {}
    for graph_id in ("pair", "candles-a"):
        browser.execute_script("""
            const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
            const r = gd._fullLayout.xaxis.range.map(v => new Date(v).getTime());
            const span = r[1] - r[0];
            return Plotly.relayout(gd, {'xaxis.range': [new Date(r[0] + span * 0.4).toISOString(),
                                                         new Date(r[0] + span * 0.6).toISOString()]});
        """, graph_id)
        zoomed[graph_id] = wait_for(lambda: browser.execute_script(X_RANGE_JS, graph_id), 10, "the zoomed range")
    first_last_x = browser.execute_script(LAST_X_JS, "pair")
    time.sleep(LIVE_TICKS_TO_WAIT + 1)
    wait_for(lambda: (browser.execute_script(LAST_X_JS, "pair") or 0) >= first_last_x + LIVE_TICKS_TO_WAIT * 1000,
             PAGE_TIMEOUT, f"{LIVE_TICKS_TO_WAIT} new bars applied to the pair chart")
    for graph_id, expected in zoomed.items():
        assert browser.execute_script(X_RANGE_JS, graph_id) == expected, f"{graph_id} lost its zoom"
    screenshot(browser, "dashboard_zoomed.png", LAPTOP)


def test_csv_download_button_saves_the_export_file(browser, stacks, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    if not browser.current_url.startswith(stacks["synthetic"]):  # any synthetic view will do: skip a reload
        open_page(browser, stacks["synthetic"] + "/")
    browser.find_element(By.ID, "dl-stats").click()
    saved = wait_for(lambda: [p for p in tmp_path.glob("stats_*.csv")], 30, "the downloaded stats CSV")[0]
    header = saved.read_text().splitlines()[0].split(",")
    assert header[:3] == ["symbol", "interval_s", "ts"] and len(saved.read_text().splitlines()) > 2


def test_demo_exchange_feed_reaches_the_page(browser, stacks) -> None:
    """demo_exchange -> main.py -> PostgreSQL -> app: live prices, feed health and bars on screen."""
    browser.get(stacks["demo"] + "/?a=BTCUSDT&b=ETHUSDT&tf=1s&lookback=300&window=10")
    wait_for(lambda: "yes" in text(browser, "health-grid"), DEMO_TIMEOUT, "a connected feed in feed health")
    wait_for(lambda: graphs_have_data(browser, ("candles-a", "candles-b", "pair")), DEMO_TIMEOUT,
             "candles and pair series from the demo feed")
    wait_for(lambda: "LIVE" in text(browser, "feed-badge"), DEMO_TIMEOUT, "the LIVE badge")
    assert "BTCUSDT" in text(browser, "ticker") and "—" not in text(browser, "last-a")
    assert severe_console_errors(browser) == []
    screenshot(browser, "dashboard_demo_feed.png", LAPTOP)
