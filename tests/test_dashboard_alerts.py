"""Browser test of the alerts UI: the real app, the real evaluator (`python alerts.py`), real Chromium and
PostgreSQL. A rule is created from the form, a bad one is rejected with its field's message, the evaluator
fires the rule and the page shows a toast, the unseen badge and the history row; then the rule is selected,
disabled and deleted from the dashboard.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import pytest

try:  # tests/ is a package when it has __init__.py, else a rootdir on sys.path
    from tests.test_dashboard import (CHROMEDRIVER, CHROMIUM, PAGE_TIMEOUT, STARTUP_TIMEOUT, LiveFeeder, browser,
                                      choose, free_port, http_ok, screenshot, severe_console_errors, start_app,
                                      stop, text, wait_for, LAPTOP)
    from tests.test_exports import SYMBOLS, market_database
except ImportError:
    from test_dashboard import (CHROMEDRIVER, CHROMIUM, PAGE_TIMEOUT, STARTUP_TIMEOUT, LiveFeeder, browser,  # noqa
                                choose, free_port, http_ok, screenshot, severe_console_errors, start_app, stop, text,
                                wait_for, LAPTOP)
    from test_exports import SYMBOLS, market_database

PROJECT_DIR = Path(__file__).resolve().parents[1]
EVENT_TIMEOUT = 45.0           # rule stored -> evaluator fires -> 1 s poll -> toast
UI_TIMEOUT = 20.0
RULE_NAME = "btc above 1"

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def alerts_stack(pg_base_dsn: str, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """Synthetic market + live feeder + app + alert evaluator: (app url, dsn)."""
    logs = tmp_path_factory.mktemp("alerts_ui_logs")
    with ExitStack() as stack:
        dsn, market = stack.enter_context(market_database(pg_base_dsn))
        port = free_port()
        app = start_app(dsn, port, logs / "app.log")
        stack.callback(stop, app)
        evaluator = subprocess.Popen(
            [sys.executable, "alerts.py"], cwd=PROJECT_DIR, stdout=(logs / "alerts.log").open("w"),
            stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, DATABASE_URL=dsn, SYMBOLS=",".join(SYMBOLS), LOG_LEVEL="INFO", PYTHONUNBUFFERED="1"))
        stack.callback(stop, evaluator)
        feeder = LiveFeeder(dsn, market)
        feeder.start()
        stack.callback(feeder.stopped.set)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(url + "/"), STARTUP_TIMEOUT, f"the app at {url} (log: {logs})")
        assert evaluator.poll() is None, (logs / "alerts.log").read_text()
        yield url, dsn


def fill(driver, element_id: str, value: str) -> None:
    """Replace the text of an input."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    element = driver.find_element(By.ID, element_id)
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(value)


def click(driver, element_id: str) -> None:
    """Click an element by id (scrolled into view)."""
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, element_id)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def input_value(driver, element_id: str) -> str:
    """The value of an input."""
    return driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.value : ''",
                                 element_id)


def test_rule_crud_validation_toast_badge_and_history(browser, alerts_stack) -> None:
    from selenium.webdriver.common.by import By

    url, _ = alerts_stack
    browser.set_window_size(*LAPTOP)
    browser.get(url + "/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#rules-details summary"), PAGE_TIMEOUT, "the rules panel")
    wait_for(lambda: text(browser, "alerts-badge") == "ALERTS 0", PAGE_TIMEOUT, "the alerts badge")
    browser.execute_script("document.getElementById('rules-details').open = true")

    # invalid input: the field's message next to the form, nothing stored
    fill(browser, "rule-name", RULE_NAME)
    choose(browser, "rule-metric", "price")
    choose(browser, "rule-operator", ">")
    fill(browser, "rule-threshold", "abc")
    click(browser, "rule-create")
    wait_for(lambda: "threshold: must be a number" in text(browser, "rule-message"), UI_TIMEOUT,
             "the threshold validation message")
    fill(browser, "rule-threshold", "-5")
    click(browser, "rule-create")
    wait_for(lambda: "threshold: must be between 0 and inf for price" in text(browser, "rule-message"), UI_TIMEOUT,
             "the threshold range message")
    fill(browser, "rule-webhook-url", "javascript:alert(1)")
    fill(browser, "rule-threshold", "1")
    click(browser, "rule-create")
    wait_for(lambda: "webhook_url: must be an http" in text(browser, "rule-message"), UI_TIMEOUT,
             "the webhook URL message")
    assert RULE_NAME not in text(browser, "rules-grid")

    # a valid rule: price of BTCUSDT > 1 holds at once, so the evaluator fires it
    fill(browser, "rule-webhook-url", "")
    fill(browser, "rule-cooldown-seconds", "3600")
    click(browser, "rule-create")
    wait_for(lambda: "created rule #" in text(browser, "rule-message"), UI_TIMEOUT, "the created message")
    wait_for(lambda: RULE_NAME in text(browser, "rules-grid"), UI_TIMEOUT, "the new rule in the rule list")
    assert "BTCUSDT price > 1" in text(browser, "rules-grid")

    # the evaluator fires: toast, unseen badge, history table, CSV export
    wait_for(lambda: RULE_NAME in text(browser, "alert-toast"), EVENT_TIMEOUT, "the alert toast")
    wait_for(lambda: text(browser, "alerts-badge") not in ("", "ALERTS 0"), UI_TIMEOUT, "the unseen badge count")
    assert "unseen" in browser.find_element(By.ID, "alerts-badge").get_attribute("class")
    wait_for(lambda: RULE_NAME in text(browser, "alerts-grid"), UI_TIMEOUT, "the event in the history table")
    with urllib.request.urlopen(url + "/export/alerts.csv", timeout=30) as response:
        assert RULE_NAME in response.read().decode()
    screenshot(browser, "dashboard_alerts.png", LAPTOP)
    click(browser, "alerts-badge")
    wait_for(lambda: text(browser, "alerts-badge") == "ALERTS 0", UI_TIMEOUT, "the badge reset by a click")

    # select the rule: the form is filled from it; disable, then delete
    fill(browser, "rule-name", "something else")
    cell = wait_for(lambda: [c for c in browser.find_elements(By.CSS_SELECTOR, "#rules-grid .ag-cell")
                             if c.text == RULE_NAME], UI_TIMEOUT, "the rule's cell")[0]
    cell.click()
    wait_for(lambda: input_value(browser, "rule-name") == RULE_NAME, UI_TIMEOUT, "the form loaded from the rule")
    assert input_value(browser, "rule-threshold") == "1"
    click(browser, "rule-toggle")
    wait_for(lambda: "disabled rule #" in text(browser, "rule-message"), UI_TIMEOUT, "the disabled message")
    wait_for(lambda: "no" in [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#rules-grid .ag-cell")],
             UI_TIMEOUT, "enabled = no in the rule list")
    click(browser, "rule-delete")
    wait_for(lambda: "deleted rule #" in text(browser, "rule-message"), UI_TIMEOUT, "the deleted message")
    wait_for(lambda: RULE_NAME not in text(browser, "rules-grid"), UI_TIMEOUT, "the rule gone from the list")
    assert RULE_NAME in text(browser, "alerts-grid")  # its events stay in the history
    click(browser, "rule-update")  # nothing selected any more
    wait_for(lambda: "select a rule" in text(browser, "rule-message"), UI_TIMEOUT, "the no-selection message")
    assert severe_console_errors(browser) == []
