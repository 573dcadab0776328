"""`python run_all.py --demo`: ticks arrive within 10 s, the dashboard answers, a killed database comes back,
Ctrl-C leaves no process."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from run_all import free_port
from tests.conftest import PROJECT_DIR
from tests.ingest_helpers import tick_count, wait_until


def http_ok(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=5).status == 200
    except OSError:
        return False


@pytest.fixture
def pg_dir():
    path = Path(tempfile.mkdtemp(prefix="run-all-pg-"))  # pytest's tmp dirs are closed to the server's user
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_demo_runs_everything_and_ctrl_c_leaves_nothing_behind(pg_dir, tmp_path):
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PG_DATA_DIR": str(pg_dir), "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "run_all.log"
    with open(log_path, "wb") as log:
        supervisor = subprocess.Popen([sys.executable, "run_all.py", "--demo", "--port", str(port)],
                                      cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    dsn = f"postgresql://postgres:@/postgres?host={pg_dir}"
    try:
        assert wait_until(lambda: "dashboard: http://127.0.0.1" in log_path.read_text(), 30), log_path.read_text()
        shown = time.monotonic()
        assert wait_until(lambda: tick_count(dsn) > 0, 10), log_path.read_text()[-3000:]
        print(f"first ticks {time.monotonic() - shown:.1f} s after the URL was printed")
        assert wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), 180), log_path.read_text()[-3000:]
        crashed = int((pg_dir / "postmaster.pid").read_text().split()[0])
        os.kill(crashed, signal.SIGKILL)  # the supervisor notices and restarts the embedded database
        assert wait_until(lambda: "restarting it" in log_path.read_text(), 30), log_path.read_text()[-3000:]
        assert wait_until(lambda: log_path.read_text().count("embedded PostgreSQL ready") >= 2, 30)
        before = tick_count(dsn)
        assert wait_until(lambda: tick_count(dsn) > before, 30), log_path.read_text()[-3000:]
        family = [supervisor.pid] + [p.pid for p in psutil.Process(supervisor.pid).children(recursive=True)]
        postmaster = int((pg_dir / "postmaster.pid").read_text().split()[0])
        assert len(family) >= 4  # supervisor, demo exchange, ingester, dashboard (+ alerts)
    finally:
        supervisor.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
        code = supervisor.wait(timeout=40)
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    time.sleep(0.5)
    survivors = [pid for pid in family + [postmaster] if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], log[-3000:]
    assert "Traceback" not in log, log[-5000:]
