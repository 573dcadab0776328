"""Start and supervise the whole product: database, (demo exchange,) ingester, alert evaluator, dashboard.

    python run_all.py                 live Binance
    python run_all.py --demo          offline: a local exchange that speaks Binance's protocol
    python run_all.py --symbols btcusdt,ethusdt --port 8051

Children run as subprocesses in their own sessions, so Ctrl-C reaches only this supervisor, which then
stops them in order (the ingester first, so it flushes) and the embedded database, leaving no orphan.
A child that crashes is restarted with capped exponential backoff.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import database
from settings import EXIT_BAD_SETTINGS, PROJECT_DIR, Settings, SettingsError, configure_logging, load_settings_or_exit, parse_symbols

log = logging.getLogger("run_all")

POLL_SECONDS = 0.5
RESTART_BASE_SECONDS = 1.0
RESTART_CAP_SECONDS = 30.0
HEALTHY_RUN_SECONDS = 60.0  # a child that ran this long starts its restart backoff afresh
STOP_GRACE_SECONDS = 6.0  # the ingester needs up to 5 s to flush
DEMO_READY_SECONDS = 10.0
DATABASE_CHECK_SECONDS = 2.0


@dataclass
class Child:
    """One supervised subprocess."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, cwd=PROJECT_DIR, start_new_session=True)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def stop(self, grace: float) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL the child's whole process group."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", self.name, grace)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # also any grandchildren (e.g. gunicorn workers)
        except ProcessLookupError:
            pass
        self.process.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="use the local demo exchange (offline)")
    parser.add_argument("--symbols", help="comma-separated symbols, e.g. btcusdt,ethusdt")
    parser.add_argument("--port", type=int, help="dashboard port (default DASH_PORT or 8050)")
    parser.add_argument("--demo-rate", type=float, default=200.0, help="demo trades per second (all symbols)")
    parser.add_argument("--replay", nargs="*", help="demo: replay these capture files instead of synthetic data")
    return parser.parse_args(argv)


def build_children(settings: Settings, args: argparse.Namespace, dsn: str) -> list[Child]:
    env = dict(os.environ, DATABASE_URL=dsn, SYMBOLS=",".join(settings.symbols), DASH_PORT=str(settings.dash_port),
               DASH_HOST=settings.dash_host, PYTHONUNBUFFERED="1")
    children: list[Child] = []
    if args.demo:
        port = free_port()
        demo_argv = [sys.executable, "demo_exchange.py", "--host", "127.0.0.1", "--port", str(port),
                     "--symbols", ",".join(s.lower() for s in settings.symbols), "--rate", str(args.demo_rate)]
        if args.replay:
            demo_argv += ["--replay", *args.replay]
        children.append(Child("demo-exchange", demo_argv, dict(env)))
        env.update(DEMO="1", BINANCE_WS_URL=f"ws://127.0.0.1:{port}", BINANCE_REST_URL=f"http://127.0.0.1:{port}")
    children.append(Child("ingester", [sys.executable, "main.py"], dict(env)))
    children.append(Child("alerts", [sys.executable, "alerts.py"], dict(env)))
    children.append(Child("dashboard", [sys.executable, "app.py"], dict(env)))
    return children


def supervise(children: list[Child], stop_requested: list[bool], settings: Settings) -> None:
    """Restart crashed children (and a dead embedded database) with backoff until a stop is requested."""
    next_database_check = 0.0
    while not stop_requested[0]:
        now = time.monotonic()
        if not settings.database_url and now >= next_database_check:
            next_database_check = now + DATABASE_CHECK_SECONDS
            if not database.embedded_database_running(settings):
                log.warning("embedded PostgreSQL is not running; restarting it (the ingester buffers meanwhile)")
                database.ensure_database(settings)
        for child in children:
            code = child.process.poll() if child.process else None
            if child.process is not None and code is None:
                continue
            if code == EXIT_BAD_SETTINGS:
                log.error("%s stopped on a bad setting (see its message above); stopping everything", child.name)
                stop_requested[0] = True
                return
            if child.process is not None and child.next_start == 0.0:
                ran = now - child.started_at
                child.restarts = 0 if ran >= HEALTHY_RUN_SECONDS else child.restarts + 1
                delay = min(RESTART_CAP_SECONDS, RESTART_BASE_SECONDS * 2 ** child.restarts)
                log.warning("%s exited with code %s; restarting in %.0f s", child.name, code, delay)
                child.next_start = now + delay
            if now >= child.next_start:
                child.next_start = 0.0
                child.start()
        time.sleep(POLL_SECONDS)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    overrides: dict[str, object] = {"demo": True} if args.demo else {}
    try:
        if args.symbols:
            overrides["symbols"] = parse_symbols(args.symbols, "--symbols")
        if args.port is not None and not 1 <= args.port <= 65535:
            raise SettingsError(f"--port={args.port}: must be a TCP port from 1 to 65535")
    except SettingsError as error:
        print(f"bad setting: {error}", file=sys.stderr)
        return 2
    if args.port is not None:
        overrides["dash_port"] = args.port
    settings = load_settings_or_exit(**overrides)
    configure_logging(settings.log_level)

    stop_requested = [False]

    def request_stop(signum: int, _frame) -> None:
        stop_requested[0] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    dsn = database.ensure_database(settings)
    database.apply_migrations(dsn)
    children = build_children(settings, args, dsn)
    try:
        for child in children:
            child.start()
            if child.name == "demo-exchange":
                port = int(child.argv[child.argv.index("--port") + 1])
                if not wait_for_port("127.0.0.1", port, DEMO_READY_SECONDS):
                    log.error("demo exchange did not open port %d", port)
        log.info("dashboard: http://%s:%d/%s", settings.dash_host, settings.dash_port, "  (DEMO data)" if args.demo else "")
        supervise(children, stop_requested, settings)
    finally:
        log.info("stopping")
        for child in children:  # the ingester first: it flushes its buffer while the database is up
            if child.name == "ingester":
                child.stop(STOP_GRACE_SECONDS)
        for child in children:
            child.stop(STOP_GRACE_SECONDS)
        database.stop_embedded_database(settings)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
