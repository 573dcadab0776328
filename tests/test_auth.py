"""Optional HTTP Basic auth of the dashboard (DASH_USER / DASH_PASSWORD).

* the real `python app.py` with both set: 401 (+ WWW-Authenticate) without or with wrong credentials, 200 with
  the right ones, for the page, the `_dash-*` endpoints and `/export/*.csv`;
* one of the two set: one line naming the setting, exit code 2;
* the Flask test client on `app.server`: the same hook, and no auth at all when unset.
"""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from settings import load_settings

try:  # tests/ is a package when it has __init__.py, else a rootdir on sys.path
    from tests.test_dashboard import free_port, stop, wait_for
    from tests.test_exports import SYMBOLS, empty_database
except ImportError:
    from test_dashboard import free_port, stop, wait_for
    from test_exports import SYMBOLS, empty_database

PROJECT_DIR = Path(__file__).resolve().parents[1]
USER, PASSWORD = "trader", "s3cret:with:colons"
STARTUP_TIMEOUT = 150.0
PROTECTED_GETS = ("/", "/_dash-layout", "/_dash-dependencies", "/export/alerts.csv",
                  "/export/stats.csv?a=BTCUSDT&b=ETHUSDT&tf=5s")
REALM_HEADER = 'Basic realm="pair-dashboard"'


def basic(user: str, password: str) -> str:
    """An Authorization header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(url: str, authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET, HTTP errors included."""
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def status_or_none(url: str) -> int | None:
    """Status of a GET, None while the server is not listening yet."""
    try:
        return get(url)[0]
    except OSError:
        return None


def app_env(dsn: str, port: int, **extra: str) -> dict[str, str]:
    """Environment of a real app process (no DASH_USER/DASH_PASSWORD unless given)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DASH_USER", "DASH_PASSWORD")}
    env.update(DATABASE_URL=dsn, SYMBOLS=",".join(SYMBOLS), DASH_HOST="127.0.0.1", DASH_PORT=str(port),
               PYTHONUNBUFFERED="1", LOG_LEVEL="INFO", **extra)
    return env


@pytest.fixture(scope="module")
def auth_app(pg_base_dsn: str, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The real app with DASH_USER/DASH_PASSWORD set: (base url, log file)."""
    log_path = tmp_path_factory.mktemp("auth_logs") / "app.log"
    with empty_database(pg_base_dsn) as dsn:
        port = free_port()
        process = subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT_DIR,
                                   env=app_env(dsn, port, DASH_USER=USER, DASH_PASSWORD=PASSWORD),
                                   stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: process.poll() is not None or status_or_none(url + "/") == 401, STARTUP_TIMEOUT,
                     f"the app to answer 401 (log: {log_path})")
            assert process.poll() is None, log_path.read_text()
            yield url, log_path
        finally:
            stop(process)


def test_real_app_rejects_missing_and_wrong_credentials(auth_app) -> None:
    url, _ = auth_app
    for path in PROTECTED_GETS:
        for authorization in (None, basic(USER, "wrong"), basic("other", PASSWORD), "Basic !!notbase64",
                              "Bearer " + PASSWORD, basic(USER, PASSWORD + "x")):
            status, headers, body = get(url + path, authorization)
            assert status == 401, (path, authorization, status)
            assert headers.get("WWW-Authenticate") == REALM_HEADER
            assert PASSWORD.encode() not in body


def test_real_app_accepts_right_credentials(auth_app) -> None:
    url, _ = auth_app
    for path in PROTECTED_GETS:
        status, _, body = get(url + path, basic(USER, PASSWORD))
        assert status == 200, (path, status, body[:300])
    status, _, body = get(url + "/_dash-layout", basic(USER, PASSWORD))
    assert b"alerts-grid" in body


def test_real_app_rejects_unauthenticated_callback_post(auth_app) -> None:
    url, _ = auth_app
    request = urllib.request.Request(url + "/_dash-update-component", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 401


def test_password_is_never_logged(auth_app) -> None:
    _, log_path = auth_app
    text = log_path.read_text()
    assert PASSWORD not in text and "Basic auth" in text


@pytest.mark.parametrize("given", ["DASH_USER", "DASH_PASSWORD"])
def test_one_setting_without_the_other_exits_2(given: str, tmp_path) -> None:
    env = app_env("postgresql://nobody@127.0.0.1:1/none", free_port(), **{given: "x"})
    result = subprocess.run([sys.executable, "app.py"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                            timeout=STARTUP_TIMEOUT)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    missing = "DASH_PASSWORD" if given == "DASH_USER" else "DASH_USER"
    assert len(lines) == 1 and missing in lines[0], result.stderr


# ---------------------------------------------------------------------------------------------------
# In process: the hook on app.server (Flask test client)
# ---------------------------------------------------------------------------------------------------
@pytest.fixture
def dashboard(dsn):
    """The app module pointed at a fresh test database (restored afterwards); its BASIC_AUTH is switched by the
    tests. Without the database a page load would start an embedded server in the project's ./data/pg."""
    from dataclasses import replace

    os.environ.setdefault("SYMBOLS", ",".join(SYMBOLS))
    import app as dashboard_app

    original = dashboard_app.source.settings
    dashboard_app.source.configure(replace(original, database_url=dsn))
    yield dashboard_app
    dashboard_app.source.configure(original)


def test_no_auth_when_unset(dashboard, monkeypatch) -> None:
    monkeypatch.setattr(dashboard, "BASIC_AUTH", None)
    client = dashboard.server.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/_dash-layout").status_code == 200
    assert dashboard.load_basic_auth(load_settings({})) is None


def test_hook_guards_every_route_in_process(dashboard, monkeypatch) -> None:
    monkeypatch.setattr(dashboard, "BASIC_AUTH", (USER, PASSWORD))
    client = dashboard.server.test_client()
    for path in ("/", "/_dash-layout", "/_dash-dependencies", "/export/alerts.csv", "/no-such-route"):
        response = client.get(path)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == REALM_HEADER
    assert client.get("/_dash-layout", headers={"Authorization": basic(USER, PASSWORD)}).status_code == 200
    assert dashboard.load_basic_auth(load_settings({"DASH_USER": USER, "DASH_PASSWORD": PASSWORD})) == (USER, PASSWORD)


def test_credentials_come_from_settings_and_the_password_is_never_printed() -> None:
    settings = load_settings({"DASH_USER": USER, "DASH_PASSWORD": PASSWORD})
    assert (settings.dash_user, settings.dash_password) == (USER, PASSWORD)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert load_settings({}).dash_user is None and load_settings({"DASH_PASSWORD": ""}).dash_password is None
