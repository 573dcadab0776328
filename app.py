"""Pair-trading dashboard (Dash): `python app.py` or `gunicorn app:server -w 4`.

Map of this file:
  DataSource  - per-process lazy DB pool + the analytics cache (one computation per view and bar, shared by
                every worker process through SharedViewCache: diskcache in CACHE_DIR)
  layout      - header ticker, controls, panels (ids are the callbacks' contract)
  callbacks   - sync_url (URL <-> controls -> `view` store), tick (1 s: ticker, feed health, bar clock),
                refresh (view change: whole figures; bar close: Patch of trace arrays), run_adf, download
  auth        - optional HTTP Basic auth on every route (DASH_USER + DASH_PASSWORD), a before_request hook
  alerts UI   - rule editor/grid (edit_rules, load_rule via alerts.py), poll_alerts (1 s: toast, badge, history)
Figures live in figures.py, URL parameters and CSV in exports.py, every number in analytics.py.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import sys
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import dash_ag_grid as dag
import diskcache
import numpy as np
import pandas as pd
import psycopg2
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update
from psycopg2.pool import ThreadedConnectionPool

import alerts
import analytics
import database
import exports
import figures
from exports import LOOKBACKS, PRICE_MODES, REGRESSIONS, View
from settings import EXIT_BAD_SETTINGS, Settings, configure_logging, load_settings_or_exit

log = logging.getLogger("dashboard")

TICK_MS = 1_000                    # header ticker / feed health / bar clock refresh
STALE_SECONDS = 10.0               # last tick older than this -> visible warning
CACHE_ENTRIES = 64                 # analytics results kept per process (LRU, the fast path)
SHARED_CACHE_FORMAT = 1            # part of every shared-cache key: bump when ViewData's pickled shape changes
SHARED_CACHE_GRACE_SECONDS = 60    # a shared entry lives one bar of its timeframe plus this, then expires
SHARED_CACHE_SIZE_LIMIT = 512 * 1024 ** 2  # bytes on disk; least recently stored entries are culled beyond it
COMPUTE_LOCK_SECONDS = 120.0       # a process that died while computing frees its lock after this
COMPUTE_POLL_SECONDS = 0.005       # how often a process waiting for another's computation looks for the result
POOL_MAX_CONNECTIONS = 8
ONE_BAR = timedelta(seconds=1)     # bars_1s resolution: end of window = newest bar start + 1 s
TICKS_EXPORT_LIMIT = 200_000
ALERT_EVENTS_LIMIT = 500
REFRESH_STALL_SECONDS = 30.0       # a refresh that never answered (error) stops holding back the bar clock
STATS_TABLE_ROWS_PER_KEY = 1       # on-screen stats table: the latest bucket per symbol and interval
GRAPH_CONFIG = {"displaylogo": False, "scrollZoom": True, "responsive": True,
                "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
CONTROL_FIELDS = exports.view_fields()
AUTH_REALM = "pair-dashboard"


# ---------------------------------------------------------------------------------------------------
# Data: connection pool per process (created after gunicorn forks) and the analytics cache
# ---------------------------------------------------------------------------------------------------
@dataclass
class ViewData:
    """Everything the panels of one view show, computed once per (view, newest bar)."""

    view: View
    anchor: datetime | None                       # newest 1 s bar of A/B: the window ends here
    bars: dict[str, pd.DataFrame]                 # symbol -> bars of the window (A, B and the others)
    pair: analytics.PairAnalytics
    corr_all: pd.DataFrame | None                 # returns correlation of all symbols
    start: datetime | None = None                 # the window [start, end) the bars were read from
    end: datetime | None = None
    computed_at: float = field(default_factory=time.time)
    compute_ms: float = 0.0


class SharedViewCache:
    """ViewData shared by every process of the dashboard (`gunicorn app:server -w 4`): diskcache in CACHE_DIR.

    `get` reads an entry; `compute_once` makes sure one process computes a key while the others wait and then
    read its result. The lock is diskcache's own recipe (`diskcache.Lock`: an atomic `add` of a lock entry that
    expires, so a process killed mid-computation cannot block the key for ever), with a token so a process only
    ever releases its own lock, and a wait that also watches for the result. Any disk or unpickling error
    degrades to computing in the process (logged), never to a failed request.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._cache: diskcache.Cache | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def _disk(self) -> diskcache.Cache:
        """The Cache object of this process (opened after gunicorn forks, like the connection pool)."""
        with self._lock:
            if self._cache is None or self._pid != os.getpid():
                self._cache = diskcache.Cache(str(self.directory), size_limit=SHARED_CACHE_SIZE_LIMIT,
                                              eviction_policy="least-recently-stored")
                self._pid = os.getpid()
            return self._cache

    def close(self) -> None:
        with self._lock:
            if self._cache is not None and self._pid == os.getpid():
                self._cache.close()
            self._cache, self._pid = None, None

    def get(self, key: str) -> Any:
        """The stored value, or None (absent, expired or unreadable)."""
        try:
            return self._disk().get(key, retry=True)
        except Exception as error:  # noqa: BLE001 - a stale pickle or a disk problem is a miss, not an error page
            log.warning("shared analytics cache unreadable (%s: %s); computing here", type(error).__name__, error)
            return None

    def set_latest(self, pointer: str, key: str, expire: float) -> None:
        """Remember `key` as the newest entry of a view (read back with `get(pointer)`)."""
        try:
            self._disk().set(pointer, key, expire=expire, retry=True)
        except Exception as error:  # noqa: BLE001
            log.warning("shared analytics cache not written (%s: %s)", type(error).__name__, error)

    def compute_once(self, key: str, compute: Callable[[], Any], expire: float) -> tuple[Any, bool]:
        """(value, computed here?): the first caller computes and stores; concurrent callers wait and reuse it."""
        lock_key, token = f"lock:{key}", f"{os.getpid()}:{uuid.uuid4().hex}"
        # compute() stays outside this try: its own errors must reach the caller once, not be taken for a
        # cache failure and computed a second time.
        holder_stuck = False
        try:
            disk = self._disk()
            deadline = time.monotonic() + COMPUTE_LOCK_SECONDS
            while not disk.add(lock_key, token, expire=COMPUTE_LOCK_SECONDS, retry=True):
                value = disk.get(key, retry=True)
                if value is not None:
                    return value, False
                if time.monotonic() > deadline:
                    holder_stuck = True
                    break
                time.sleep(COMPUTE_POLL_SECONDS)
        except Exception as error:  # noqa: BLE001
            log.warning("shared analytics cache unavailable (%s: %s); computing here", type(error).__name__, error)
            return compute(), True
        if holder_stuck:  # do not wait for ever
            return compute(), True
        try:
            value = self.get(key)  # stored by the previous holder while we were acquiring
            if value is not None:
                return value, False
            value = compute()
            try:
                disk.set(key, value, expire=expire, retry=True)
            except Exception as error:  # noqa: BLE001
                log.warning("shared analytics cache not written (%s: %s)", type(error).__name__, error)
            return value, True
        finally:
            try:
                with disk.transact(retry=True):
                    if disk.get(lock_key) == token:
                        disk.delete(lock_key)
            except Exception as error:  # noqa: BLE001 - the lock expires by itself
                log.warning("shared analytics cache lock not released (%s: %s)", type(error).__name__, error)


class DataSource:
    """Lazy per-process DB access plus the analytics cache: an in-process LRU in front of a cache shared by
    every worker process (so N tabs on any of the workers cost one computation per view and bar)."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self._pool: ThreadedConnectionPool | None = None
        self._pool_pid: int | None = None
        self._slots = threading.BoundedSemaphore(POOL_MAX_CONNECTIONS)  # callers wait instead of PoolError
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, ViewData] = OrderedDict()
        self._latest: dict[tuple, ViewData] = {}  # view key -> newest result (the ticker needs no fresh one)
        self._latest_keys: dict[tuple, str] = {}  # view key -> shared-cache key of that result
        self._key_locks: dict[tuple, threading.Lock] = {}
        self.shared = SharedViewCache(settings.cache_dir)
        self.stats = {"computed": 0, "memory_hits": 0, "shared_hits": 0}  # this process's view_data outcomes

    def configure(self, settings) -> None:
        """Point at other settings/database (tests, benchmarks): drops the pool and the in-process cache."""
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.closeall()
            self.settings, self._pool, self._pool_pid = settings, None, None
            self._cache.clear()
            self._latest.clear()
            self._latest_keys.clear()
            self._key_locks.clear()
            self.shared.close()
            self.shared = SharedViewCache(settings.cache_dir)

    # -- connections --------------------------------------------------------------------------------
    def _get_pool(self) -> ThreadedConnectionPool:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                dsn = database.ensure_database(self.settings)
                self._pool = ThreadedConnectionPool(1, POOL_MAX_CONNECTIONS, dsn)
                self._pool_pid = os.getpid()
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled autocommit connection (waits for a free one); a broken one is discarded."""
        pool = self._get_pool()
        with self._slots:
            conn = pool.getconn()
            conn.autocommit = True
            broken = False
            try:
                yield conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            finally:
                pool.putconn(conn, close=broken or bool(conn.closed))

    # -- reads (exports.ExportSource) -----------------------------------------------------------------
    def symbols(self) -> tuple[str, ...]:
        """The ingested symbols."""
        return self.settings.symbols

    def latest_time(self, symbols: tuple[str, ...]) -> datetime | None:
        """Start of the newest 1 s bar among `symbols`."""
        times = [ts for ts, _ in self.last_prices(symbols).values()]
        return max(times) if times else None

    def bars(self, symbol: str, tf: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Bars of one symbol in [start, end)."""
        with self.connection() as conn:
            return database.read_bars(conn, symbol, database.TIMEFRAME_SECONDS[tf], start, end)

    def ticks(self, symbol: str, start: datetime, end: datetime, limit: int) -> pd.DataFrame:
        """Raw ticks of one symbol in [start, end)."""
        with self.connection() as conn:
            return database.read_ticks(conn, symbol, start, end, limit)

    def last_prices(self, symbols: tuple[str, ...]) -> dict[str, tuple[datetime, float]]:
        """symbol -> (newest 1 s bar start, its close)."""
        with self.connection() as conn:
            return read_symbol_last_closes(conn, symbols)  # Uploads: upload:NAME symbols too

    def health(self) -> pd.DataFrame:
        """The ingester's feed_health rows."""
        with self.connection() as conn:
            return database.read_feed_health(conn)

    def alerts(self) -> pd.DataFrame:
        """Alert event history (newest first) from alerts.py; empty when the module or its tables are absent."""
        try:
            import alerts
        except ImportError:
            return exports.empty_alerts_frame()
        try:
            with self.connection() as conn:
                return alerts.events_frame(alerts.list_events(conn, limit=ALERT_EVENTS_LIMIT))
        except psycopg2.Error as error:
            log.warning("alert events unavailable: %s", error)
            return exports.empty_alerts_frame()

    def pair(self, view: View) -> analytics.PairAnalytics:
        """Pair analytics of a view (cached)."""
        return self.view_data(view).pair

    # -- analytics cache ------------------------------------------------------------------------------
    def view_data(self, view: View) -> ViewData:
        """ViewData for the newest bar: computed once per (view, bar of the view's timeframe) across all the
        dashboard's processes. Fast path: this process's LRU; then the shared cache; else one process computes
        (threads of a process wait on a per-key lock, processes on the shared cache's lock)."""
        anchor = self.latest_time((view.a, view.b))
        bar = int(anchor.timestamp() // view.bar_seconds) if anchor else None
        key = (view.key(), bar, upload_version(view))  # one computation per view, bar (and upload), shared by all tabs
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.stats["memory_hits"] += 1
            else:
                key_lock = self._key_locks.setdefault(key, threading.Lock())
        if hit is not None:
            log.debug("view from the process cache (pid %d): %s", os.getpid(), key)
            return hit
        with key_lock:  # concurrent tabs of this process asking for the same view wait for one computation
            with self._lock:
                hit = self._cache.get(key)
            if hit is None:
                hit = self._shared_view_data(key, view, anchor)
                with self._lock:
                    self._cache[key] = hit
                    self._latest[view.key()] = hit
                    self._latest_keys[view.key()] = self._shared_key(key)
                    while len(self._cache) > CACHE_ENTRIES:
                        old_key, _ = self._cache.popitem(last=False)
                        self._key_locks.pop(old_key, None)
            else:
                with self._lock:
                    self.stats["memory_hits"] += 1
                log.debug("view from the process cache (pid %d): %s", os.getpid(), key)
        return hit

    def _shared_key(self, key: tuple) -> str:
        """A key every process derives alike: format, database (hashed: a URL may hold a password), view, bar."""
        database_id = self.settings.database_url or f"embedded:{self.settings.pg_data_dir}"
        return "view:" + hashlib.sha256(repr((SHARED_CACHE_FORMAT, database_id, key)).encode()).hexdigest()

    def _shared_view_data(self, key: tuple, view: View, anchor: datetime | None) -> ViewData:
        """From the shared cache, or computed here once (other processes asking meanwhile wait for it)."""
        shared_key = self._shared_key(key)
        data = self.shared.get(shared_key)
        computed = False
        if data is None:
            data, computed = self.shared.compute_once(shared_key, lambda: self._compute(view, anchor),
                                                      expire=view.bar_seconds + SHARED_CACHE_GRACE_SECONDS)
            if computed:
                self.shared.set_latest(self._shared_key((view.key(),)), shared_key,
                                       expire=view.bar_seconds + SHARED_CACHE_GRACE_SECONDS)
        with self._lock:
            self.stats["computed" if computed else "shared_hits"] += 1
        if computed:
            log.debug("view computed in %.0f ms (pid %d): %s", data.compute_ms, os.getpid(), key)
        else:
            log.debug("view from the shared cache (pid %d): %s", os.getpid(), key)
        return data

    def latest_view_data(self, view: View) -> ViewData | None:
        """The newest cached result for a view, without computing (for the 1 s ticker). This process's while it
        is younger than one bar; after that (or when this worker never had one: a tick may reach any worker) the
        newest result any process stored, read from the shared cache only when it is a different entry."""
        with self._lock:
            data, known = self._latest.get(view.key()), self._latest_keys.get(view.key())
        if data is not None and time.time() - data.computed_at < view.bar_seconds:
            return data
        newest_key = self.shared.get(self._shared_key((view.key(),)))
        if not isinstance(newest_key, str) or newest_key == known:
            return data
        newest = self.shared.get(newest_key)
        if newest is None:
            return data
        with self._lock:
            self._latest[view.key()], self._latest_keys[view.key()] = newest, newest_key
        return newest

    def _compute(self, view: View, anchor: datetime | None) -> ViewData:
        started = time.perf_counter()
        end = (anchor or datetime.now(timezone.utc)) + ONE_BAR
        start = end - timedelta(seconds=view.lookback)
        with self.connection() as conn:
            bars = {s: read_symbol_bars(conn, s, view.bar_seconds, start, end)  # Uploads: upload:NAME too
                    for s in dict.fromkeys((*self.symbols(), view.a, view.b))}
        pair = analytics.full_pair_analytics(bars[view.a], bars[view.b], pair_params(view))
        closes = {s: frame["close"] for s, frame in bars.items() if len(frame)}
        corr_all = None
        if len(closes) >= 2 and min(len(c) for c in closes.values()) >= analytics.MIN_BARS_CORRELATION:
            corr_all = analytics.return_correlation_matrix(closes, view.bar_seconds)
        elapsed = (time.perf_counter() - started) * 1000
        log.debug("computed %s %s-%s in %.0f ms", view.tf, view.a, view.b, elapsed)
        return ViewData(view, anchor, bars, pair, corr_all, start, end, compute_ms=elapsed)


def pair_params(view: View) -> analytics.PairParams:
    """View -> analytics.PairParams."""
    return analytics.PairParams(
        bar_seconds=view.bar_seconds, window=view.window, regression=view.regression,
        use_log_prices=view.price == "log", entry_z=view.entry, exit_z=view.exit, stop_z=view.stop or None,
        fee_bps=view.fees, min_volume=view.minvol, min_trades=view.mintrades, symbol_a=view.a, symbol_b=view.b)


# ---------------------------------------------------------------------------------------------------
# Formatting helpers (pure)
# ---------------------------------------------------------------------------------------------------
def fmt(value: Any, digits: int = 4) -> str:
    """Number -> short text; None/NaN -> an em dash."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{float(value):,.{digits}g}" if abs(float(value)) < 1e-3 else f"{float(value):,.{digits}f}"


def grid_rows(frame: pd.DataFrame, index_name: str | None = None) -> tuple[list[dict], list[dict]]:
    """DataFrame -> (AG Grid rowData, columnDefs) with ISO times and rounded floats."""
    if index_name is not None:
        frame = frame.reset_index(names=index_name)
    frame = frame.copy()
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            frame[column] = series.dt.strftime("%Y-%m-%d %H:%M:%S")
        elif pd.api.types.is_float_dtype(series):
            frame[column] = series.map(lambda v: None if not np.isfinite(v) else float(f"{v:.6g}"))
        elif series.dtype == object:
            frame[column] = series.map(lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, datetime) else v)
    column_defs = [{"field": str(c), "headerName": str(c)} for c in frame.columns]
    return frame.astype(object).where(frame.notna(), None).to_dict("records"), column_defs


def readiness_text(readiness: analytics.Readiness | None) -> str:
    """'' when ready, else 'collecting data: n / N bars'."""
    return "" if readiness is None or readiness.ready else readiness.message()


def stats_table(pair: analytics.PairAnalytics) -> pd.DataFrame:
    """On-screen per-interval stats: the newest bucket of each symbol and interval."""
    table = exports.stats_frame(pair.price_stats)
    if table.empty:
        return table
    return table.groupby(["symbol", "interval_s"], sort=False).tail(STATS_TABLE_ROWS_PER_KEY)


def metric_rows(pair: analytics.PairAnalytics) -> list[tuple[str, str, str]]:
    """(name, value, readiness) rows of the statistical-tests panel."""
    rd = pair.readiness
    fit = pair.static_fit
    rows = [
        ("β (static, " + (fit.method if fit else "—") + ")", fmt(fit.beta if fit else None), readiness_text(rd["static_fit"])),
        ("ADF stat / p", f"{fmt(pair.adf.statistic, 3)} / {fmt(pair.adf.pvalue, 3)}" if pair.adf else "—",
         readiness_text(rd["adf"])),
        ("Coint A~B p", fmt(pair.coint_ab.pvalue, 3) if pair.coint_ab else "—", readiness_text(rd["coint"])),
        ("Coint B~A p", fmt(pair.coint_ba.pvalue, 3) if pair.coint_ba else "—", readiness_text(rd["coint"])),
        ("Half-life (bars)", fmt(pair.half_life, 1), readiness_text(rd["half_life"])),
        ("Hurst", fmt(pair.hurst, 3), readiness_text(rd["hurst"])),
        ("Return corr", fmt(pair.correlation, 3), readiness_text(rd["correlation"])),
    ]
    return rows


def backtest_rows(pair: analytics.PairAnalytics) -> list[tuple[str, str, str]]:
    """(name, value, readiness) rows of the backtest summary."""
    bt = pair.backtest
    ready = readiness_text(pair.readiness["backtest"])
    if bt is None:
        return [("Backtest", "—", ready)]
    return [("Trades (closed)", fmt(bt.n_trades), ""), ("Total PnL", fmt(bt.total_pnl), ""),
            ("Return", f"{bt.total_return * 100:.3f} %", ""), ("Sharpe (ann.)", fmt(bt.sharpe, 2), ""),
            ("Max drawdown", f"{bt.max_drawdown * 100:.3f} %", ""),
            ("Win rate", "—" if not np.isfinite(bt.win_rate) else f"{bt.win_rate * 100:.1f} %", "")]


def kv_table(rows: list[tuple[str, str, str]]) -> html.Table:
    """A dense two-column key/value table with a readiness note per row."""
    return html.Table(className="kv", children=[
        html.Tr([html.Td(name), html.Td(value, className="num"),
                 html.Td(note, className="collecting") if note else html.Td()]) for name, value, note in rows])


# ---------------------------------------------------------------------------------------------------
# App + layout
# ---------------------------------------------------------------------------------------------------
settings = load_settings_or_exit()
configure_logging(settings.log_level)


def load_basic_auth(settings: Settings) -> tuple[str, str] | None:
    """(user, password) when both DASH_USER and DASH_PASSWORD are set, None when neither; exit 2 on one."""
    user, password = settings.dash_user or "", settings.dash_password or ""
    if bool(user) != bool(password):
        missing = "DASH_PASSWORD" if user else "DASH_USER"
        given = "DASH_USER" if user else "DASH_PASSWORD"
        print(f"bad setting: {missing} is empty but {given} is set: set both for HTTP Basic auth, or neither",
              file=sys.stderr)
        raise SystemExit(EXIT_BAD_SETTINGS)
    return (user, password) if user else None


def basic_auth_ok(header: str | None, credentials: tuple[str, str]) -> bool:
    """An 'Authorization: Basic ...' header matches the credentials (constant-time comparison)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(user.encode(), credentials[0].encode())
    password_ok = hmac.compare_digest(password.encode(), credentials[1].encode())
    return bool(sep) and user_ok and password_ok


BASIC_AUTH = load_basic_auth(settings)  # HTTP Basic auth on every route when both are set
source = DataSource(settings)
DEFAULT_VIEW = exports.default_view(settings.symbols)

CSS = """
:root{--h-candles:300px;--h-pair:640px;--h-small:200px;--h-equity:160px;--h-grid:220px;--bg:#131722;--panel:#1a1e2b;--line:#2a2e39;--text:#d1d4dc;--muted:#787b86;--up:#26a69a;--down:#ef5350;--accent:#2962ff}
*{box-sizing:border-box}
html,body{margin:0;background:var(--bg);color:var(--text);font:12px/1.35 -apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif}
a{color:#5b8cff}
.topbar{display:flex;align-items:center;gap:14px;padding:4px 10px;border-bottom:1px solid var(--line);background:#0f121a;position:sticky;top:0;z-index:20;flex-wrap:wrap}
.brand{font-weight:700;letter-spacing:.08em;color:#fff}
.badge{padding:1px 6px;border-radius:3px;font-size:10px;font-weight:700}
.badge.demo{background:#ff9800;color:#000}.badge.live{background:var(--up);color:#000}.badge.stale{background:var(--down);color:#fff}
.tick{display:flex;gap:14px;flex-wrap:wrap;font-variant-numeric:tabular-nums}
.tick .item{display:flex;flex-direction:column;line-height:1.15}.tick .lab{color:var(--muted);font-size:10px}.tick .val{font-size:13px;font-weight:600}
.pos{color:var(--up)}.neg{color:var(--down)}
.controls{display:flex;flex-wrap:wrap;gap:6px 10px;padding:6px 10px;border-bottom:1px solid var(--line);align-items:flex-end}
.ctl{display:flex;flex-direction:column;gap:2px}.ctl>label{color:var(--muted);font-size:10px;text-transform:uppercase}
.ctl input{background:var(--panel);color:var(--text);border:1px solid var(--line);border-radius:3px;height:28px;padding:0 4px;width:64px;font-size:12px}
.ctl .dd{width:92px}.ctl .dd.wide{width:124px}
body{--Dash-Fill-Inverse-Strong:#1a1e2b;--Dash-Text-Primary:#d1d4dc;--Dash-Text-Strong:#fff;--Dash-Text-Weak:#9598a1;--Dash-Text-Disabled:#5d606b;--Dash-Stroke-Strong:#434651;--Dash-Stroke-Weak:#2a2e39;--Dash-Fill-Interactive-Strong:#2962ff;--Dash-Fill-Interactive-Weak:rgba(41,98,255,.12);--Dash-Fill-Primary-Hover:rgba(255,255,255,.06);--Dash-Fill-Primary-Active:rgba(255,255,255,.1);--Dash-Fill-Disabled:#222633;--Dash-Spacing:3px}
.dash-dropdown{min-height:28px;font-size:12px}
.btn{background:var(--accent);color:#fff;border:0;border-radius:3px;height:24px;padding:0 10px;cursor:pointer;font-size:11px}
.btn.small{height:20px;padding:0 6px;background:#2a2e39;color:var(--text)}
.btn:hover{filter:brightness(1.2)}
.notice{background:#3b2f0b;color:#ffcc80;padding:3px 10px;border-bottom:1px solid var(--line)}
.notice:empty,.stale-banner:empty{display:none}
.stale-banner{background:#4a1515;color:#ffb4b4;padding:3px 10px;font-weight:600;border-bottom:1px solid var(--line)}
.main{display:grid;grid-template-columns:minmax(0,2.2fr) minmax(0,1fr);gap:6px;padding:6px}
.col{display:flex;flex-direction:column;gap:6px;min-width:0}
.row2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:6px}
.row3{display:grid;grid-template-columns:minmax(0,1.2fr) minmax(0,1.3fr) minmax(0,.8fr) minmax(0,1fr);gap:6px;padding:0 6px 6px}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:4px;padding:4px 6px;min-width:0}
.ph{display:flex;align-items:center;gap:8px;margin-bottom:2px;min-height:20px}
.ph .title{font-weight:600;color:#fff;font-size:12px}.ph .grow{flex:1}
.collecting{color:#ffb74d;font-size:11px}
.kv{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}.kv td{padding:2px 4px;border-bottom:1px solid var(--line)}.kv td.num{text-align:right;font-weight:600}
.adf{font-size:11px;color:var(--text);margin-top:4px}
.badge.alerts{background:#2a2e39;color:var(--muted);cursor:pointer}.badge.alerts.unseen{background:#ff9800;color:#000}
.btn.danger{background:var(--down)}
.rules>summary{cursor:pointer;padding:2px 0}.rules .controls{border-bottom:0;padding:6px 0}
.ctl input[type=checkbox]{width:16px;height:16px;margin:6px 0}.alert-toast .toast-header svg{color:#ff9800}
.rule-msg{font-size:11px;align-self:center}.rule-msg.ok{color:var(--up)}.rule-msg.bad{color:#ffb4b4;font-weight:600}
.alert-toast{position:fixed;top:44px;right:12px;z-index:50;min-width:280px;max-width:420px;background:#2a1c0b;border:1px solid #ff9800;border-radius:4px;color:#ffe0b2;box-shadow:0 4px 16px rgba(0,0,0,.5)}
.alert-toast .toast-header{display:flex;align-items:center;gap:6px;padding:4px 8px;border-bottom:1px solid #5a3d12;font-weight:700;color:#fff}
.alert-toast .toast-body{padding:6px 8px}.alert-toast .btn-close{margin-left:auto;background:none;border:0;color:#fff;cursor:pointer}.alert-toast .btn-close::after{content:"×"}
@media (min-width:2200px){:root{--h-candles:460px;--h-pair:900px;--h-small:320px;--h-equity:260px;--h-grid:360px}body{font-size:14px}}
@media (max-width:1200px){.main{grid-template-columns:minmax(0,1fr)}.row3{grid-template-columns:minmax(0,1fr) minmax(0,1fr)}}
"""

INDEX_STRING = """<!DOCTYPE html>
<html><head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}<style>""" + CSS + """</style></head>
<body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body></html>"""

GRID_THEME = {"function": ("themeBalham.withParams({backgroundColor: '#1a1e2b', foregroundColor: '#d1d4dc', "
                           "headerBackgroundColor: '#131722', borderColor: '#2a2e39', accentColor: '#2962ff', "
                           "fontSize: 11, rowHeight: 22, headerHeight: 24, oddRowBackgroundColor: '#181c27'})")}


# The feed-health grid's columns never change: set once in the layout, not resent by the 1 s tick.
HEALTH_COLUMNS = [{"field": c, "headerName": c} for c in
                  ("symbol", "connected", "lag_s", "ticks_s", "gaps_filled", "last_tick_age_s", "reconnects")]


def grid(grid_id: str, columns: list[dict] | None = None) -> dag.AgGrid:
    """A dense dark AG Grid (`columns`: fixed column definitions, never sent again by a callback)."""
    return dag.AgGrid(id=grid_id, rowData=[], columnDefs=columns or [], className="grid",
                      defaultColDef={"resizable": True, "sortable": True, "filter": True, "minWidth": 70, "flex": 1},
                      dashGridOptions={"theme": GRID_THEME, "animateRows": False, "suppressCellFocus": True},
                      style={"height": "var(--h-grid)"})


def panel(title: str, body: list, panel_id: str, downloads: tuple[tuple[str, str], ...] = ()) -> html.Div:
    """A titled panel with a readiness note and CSV buttons (button id, label) beside the title."""
    buttons = [html.Button(label, id=f"dl-{key}", className="btn small", title=f"Download {label}") for key, label in downloads]
    return html.Div(className="panel", id=f"panel-{panel_id}", children=[
        html.Div(className="ph", children=[html.Span(title, className="title"),
                                           html.Span(id=f"ready-{panel_id}", className="collecting"),
                                           html.Span(className="grow"), *buttons]),
        *body])


def graph(graph_id: str, figure, height_var: str) -> dcc.Graph:
    """A graph with the shared config; its height is a CSS variable (bigger on 4K screens)."""
    return dcc.Graph(id=graph_id, figure=figure, config=GRAPH_CONFIG, style={"height": f"var({height_var})"})


def control(label: str, component) -> html.Div:
    """A labelled control."""
    return html.Div(className="ctl", children=[html.Label(label), component])


def number(field_name: str, step: float, low: float, high: float) -> dcc.Input:
    """A numeric input bound to a View field (debounced: updates on Enter/blur)."""
    return dcc.Input(id=f"ctl-{field_name}", type="number", step=step, min=low, max=high, debounce=True,
                     value=getattr(DEFAULT_VIEW, field_name))


def dropdown(field_name: str, options: list[dict], css: str = "dd", searchable: bool = False) -> dcc.Dropdown:
    """A dropdown bound to a View field."""
    return dcc.Dropdown(id=f"ctl-{field_name}", options=options, value=getattr(DEFAULT_VIEW, field_name),
                        clearable=False, searchable=searchable, className=css)


def empty_figures() -> dict[str, Any]:
    """Placeholder figures with the full trace structure (so Patch updates always have their targets)."""
    empty_bars = pd.DataFrame(columns=list(database.BAR_COLUMNS), index=pd.DatetimeIndex([], tz="UTC"))
    empty_series = pd.DataFrame(columns=["price_a", "price_b", "spread", "zscore", "rolling_corr"])
    return {
        "candles-a": figures.candles_figure("A", empty_bars),
        "candles-b": figures.candles_figure("B", empty_bars),
        "pair": figures.pair_figure(empty_series, DEFAULT_VIEW.window, DEFAULT_VIEW.entry, DEFAULT_VIEW.exit,
                                    DEFAULT_VIEW.stop, None, "A", "B"),
        "heatmap": figures.heatmap_figure(None),
        "leadlag": figures.lead_lag_figure(None),
        "equity": figures.equity_figure(None),
    }


# Alerts UI layout (its callbacks are in the 'Alerts UI' section at the end)
ALERT_POLL_LIMIT = 50              # new events read per 1 s poll (the badge counts them all the same)
ALERT_TOAST_MS = 8_000
ALERT_UNSEEN_IDS_KEPT = 1_000    # new event ids remembered per page for the unseen count
RULE_FORM_FIELDS = ("name", "metric", "operator", "threshold", "symbol_a", "symbol_b", "timeframe", "window_bars",
                    "cooldown_seconds", "webhook_url", "enabled")
RULE_FORM_IDS = {name: f"rule-{name.replace('_', '-')}" for name in RULE_FORM_FIELDS}
RULE_GRID_COLUMNS = [{"field": "id", "headerName": "id", "maxWidth": 60},
                     {"field": "name", "headerName": "name"},
                     {"field": "rule", "headerName": "rule", "flex": 3},
                     {"field": "enabled", "headerName": "enabled", "maxWidth": 90},
                     {"field": "cooldown_s", "headerName": "cooldown_s", "maxWidth": 100},
                     {"field": "webhook", "headerName": "webhook"}]
ENABLED_VALUE = "on"
NEW_RULE_DEFAULTS = {"metric": "zscore", "operator": "crosses_above", "threshold": "2", "timeframe": "1m",
                     "window_bars": alerts.DEFAULT_WINDOW_BARS, "cooldown_seconds": alerts.DEFAULT_COOLDOWN_SECONDS}


def rule_form() -> html.Div:
    """The rule editor: fields, action buttons and the validation message."""
    symbols = [{"label": s, "value": s} for s in settings.symbols]
    ids, d = RULE_FORM_IDS, NEW_RULE_DEFAULTS

    def text_input(name: str, placeholder: str, width: str = "90px", kind: str = "text", value: Any = None) -> dcc.Input:
        return dcc.Input(id=ids[name], type=kind, placeholder=placeholder, value=value, style={"width": width})

    return html.Div(className="controls", children=[
        control("Name", text_input("name", "rule name", "140px")),
        control("Metric", dcc.Dropdown(id=ids["metric"], className="dd wide", clearable=False, value=d["metric"],
                                       options=[{"label": alerts.METRIC_LABELS[m], "value": m} for m in alerts.METRICS])),
        control("Operator", dcc.Dropdown(id=ids["operator"], className="dd wide", clearable=False,
                                         value=d["operator"], options=list(alerts.OPERATORS))),
        control("Threshold", text_input("threshold", "e.g. 2", value=d["threshold"])),
        control("Symbol A", dcc.Dropdown(id=ids["symbol_a"], className="dd wide", options=symbols,
                                         value=DEFAULT_VIEW.a, clearable=False, searchable=True)),
        control("Symbol B (pair)", dcc.Dropdown(id=ids["symbol_b"], className="dd wide", options=symbols,
                                                value=DEFAULT_VIEW.b, searchable=True)),
        control("Timeframe", dcc.Dropdown(id=ids["timeframe"], className="dd", clearable=False, value=d["timeframe"],
                                          options=list(database.TIMEFRAME_SECONDS))),
        control("Window (bars)", text_input("window_bars", "bars", "64px", "number", d["window_bars"])),
        control("Cooldown (s)", text_input("cooldown_seconds", "s", "72px", "number", d["cooldown_seconds"])),
        control("Webhook URL (optional)", text_input("webhook_url", "https://…", "180px")),
        control("Enabled", dcc.Checklist(id=ids["enabled"], options=[{"label": "", "value": ENABLED_VALUE}],
                                         value=[ENABLED_VALUE])),
        html.Button("Create", id="rule-create", className="btn"),
        html.Button("Update", id="rule-update", className="btn"),
        html.Button("Enable/Disable", id="rule-toggle", className="btn"),
        html.Button("Delete", id="rule-delete", className="btn danger"),
        html.Span(id="rule-message", className="rule-msg"),
    ])


def rules_panel() -> html.Details:
    """Collapsible 'Alert rules' panel: the editor above the rule list (select a row to edit it)."""
    rules_grid = dag.AgGrid(
        id="rules-grid", rowData=[], columnDefs=RULE_GRID_COLUMNS, className="grid", getRowId="params.data.id",
        defaultColDef={"resizable": True, "sortable": True, "filter": True, "minWidth": 60, "flex": 1},
        dashGridOptions={"theme": GRID_THEME, "animateRows": False, "suppressCellFocus": True,
                         "rowSelection": {"mode": "singleRow", "checkboxes": False, "enableClickSelection": True}},
        style={"height": "var(--h-grid)"})
    return html.Details(id="rules-details", className="panel rules", children=[
        html.Summary(html.Span("Alert rules · create / edit / disable / delete", className="title")),
        rule_form(), rules_grid])


def alerts_toast() -> Any:
    """The toast shown when new alert events arrive (fixed, top right)."""
    import dash_bootstrap_components as dbc

    return dbc.Toast(id="alert-toast", header="Alert", is_open=False, dismissable=True, duration=ALERT_TOAST_MS,
                     icon="danger", className="alert-toast", children="")


def build_layout() -> html.Div:
    """The whole page."""
    symbols = [{"label": s, "value": s} for s in settings.symbols] + upload_options()  # Uploads: upload:NAME
    blank = empty_figures()
    badge = html.Span("DEMO", className="badge demo", id="demo-badge") if settings.demo else html.Span()
    controls = html.Div(className="controls", children=[
        control("Symbol A", dropdown("a", symbols, "dd wide", searchable=True)),
        control("Symbol B", dropdown("b", symbols, "dd wide", searchable=True)),
        control("Timeframe", dropdown("tf", [{"label": t, "value": t} for t in database.TIMEFRAME_SECONDS])),
        control("Lookback", dropdown("lookback", [{"label": k, "value": v} for k, v in LOOKBACKS.items()])),
        control("Window (bars)", number("window", 1, *exports.WINDOW_RANGE)),
        control("Regression", dropdown("regression", [{"label": v, "value": k} for k, v in REGRESSIONS.items()], "dd wide")),
        control("Prices", dropdown("price", [{"label": v, "value": k} for k, v in PRICE_MODES.items()], "dd wide")),
        control("Entry z", number("entry", 0.1, *exports.ENTRY_RANGE)),
        control("Exit z", number("exit", 0.1, *exports.EXIT_RANGE)),
        control("Stop z (0=off)", number("stop", 0.5, *exports.STOP_RANGE)),
        control("Fees (bps)", number("fees", 0.5, *exports.FEES_RANGE)),
        control("Min volume", number("minvol", "any", *exports.MIN_VOLUME_RANGE)),
        control("Min trades", number("mintrades", 1, *exports.MIN_TRADES_RANGE)),
    ])
    return html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="view"),
        dcc.Store(id="bar-key"),       # {"key": tf:bucket of the newest bar, "at": epoch s it was set}
        dcc.Store(id="rendered"),      # {"view": view the figures show, "key": bar-key they show}
        dcc.Interval(id="tick", interval=TICK_MS),
        dcc.Download(id="download"),
        dcc.Store(id="alerts-seen"),   # {"last_id": newest alert event id polled, "ids": new ids since page load}
        dcc.Store(id="alerts-ack", data=0),  # badge click: events up to this id are seen (set in the browser)
        alerts_toast(),
        html.Div(className="topbar", children=[
            html.Span("PAIRDESK", className="brand"), badge,
            html.Span(id="feed-badge", className="badge live", children="…"),
            html.Span(id="alerts-badge", className="badge alerts", children="ALERTS 0",
                      title="alert events since this page opened (click: mark seen)"),
            html.Div(id="ticker", className="tick"),
        ]),
        html.Div(id="notice", className="notice"),
        html.Div(id="stale-banner", className="stale-banner"),
        controls,
        upload_panel(),  # Uploads
        html.Div(className="main", children=[
            html.Div(className="col", children=[
                html.Div(className="row2", children=[
                    panel("Candles A", [graph("candles-a", blank["candles-a"], "--h-candles")], "candles-a",
                          (("bars-a", "CSV"), ("ticks-a", "Ticks"))),
                    panel("Candles B", [graph("candles-b", blank["candles-b"], "--h-candles")], "candles-b",
                          (("bars-b", "CSV"), ("ticks-b", "Ticks"))),
                ]),
                panel("Pair: normalised prices · spread & band · z-score & trades · rolling correlation",
                      [graph("pair", blank["pair"], "--h-pair")], "pair", (("pair", "CSV"),)),
            ]),
            html.Div(className="col", children=[
                panel("Statistical tests", [html.Div(id="metrics"),
                                            html.Div(className="ph", children=[
                                                html.Button("Run ADF", id="run-adf", className="btn"),
                                                dcc.Dropdown(id="adf-regression", className="dd", clearable=False,
                                                             value="c", options=[{"label": f"ADF trend: {r}", "value": r}
                                                                                 for r in ("c", "ct", "n")])]),
                                            html.Div(id="adf-result", className="adf")], "tests"),
                panel("Backtest", [html.Div(id="backtest-summary"), graph("equity", blank["equity"], "--h-equity")],
                      "backtest", (("equity", "CSV"),)),
                panel("Return correlation (all symbols)", [graph("heatmap", blank["heatmap"], "--h-small")], "heatmap"),
                panel("Lead-lag (A vs B returns)", [graph("leadlag", blank["leadlag"], "--h-small")], "leadlag"),
            ]),
        ]),
        html.Div(className="row3", children=[
            panel("Per-interval stats (latest bucket)", [grid("stats-grid")], "stats", (("stats", "CSV"),)),
            panel("Backtest trades", [grid("trades-grid")], "trades", (("trades", "CSV"),)),
            panel("Alerts · event history", [html.Div(id="alerts-note", className="collecting"),
                                              grid("alerts-grid")], "alerts", (("alerts", "CSV"),)),
            panel("Feed health", [grid("health-grid", HEALTH_COLUMNS)], "health"),
        ]),
        html.Div(style={"padding": "0 6px 6px"}, children=[rules_panel()]),
        html.Div(className="controls", children=[html.Span("Stable CSV URLs:"), html.Div(id="export-links")]),
    ])


# ---------------------------------------------------------------------------------------------------
# Uploads: OHLC CSV upload (parsing/validation in uploads.py, SQL in database.py). A dataset is the symbol
# `upload:NAME` ("NAME (uploaded)") in the A/B dropdowns and goes through the same DataSource/analytics path
# as live symbols. Placed before `app` because build_layout uses it; callbacks register via dash.callback.
# ---------------------------------------------------------------------------------------------------
import uploads  # noqa: E402
from dash import callback  # noqa: E402

UPLOAD_ZONE_STYLE = {"border": "1px dashed #434651", "borderRadius": "3px", "padding": "5px 10px", "cursor": "pointer",
                     "color": "#9598a1"}
UPLOAD_OK_STYLE = {"fontSize": "11px", "color": "#26a69a"}
UPLOAD_BAD_STYLE = {"fontSize": "11px", "color": "#ffb4b4", "fontWeight": 600}


def uploaded_datasets(names: list[str] | None = None) -> list[dict]:
    """Uploaded datasets (all or `names`); [] when there are none or the uploads tables are missing."""
    try:
        with source.connection() as conn:
            return database.list_uploaded_datasets(conn, names)
    except psycopg2.Error as error:
        log.debug("uploaded datasets unavailable: %s", error)
        return []


def upload_options() -> list[dict]:
    """Dropdown entries of the uploaded datasets (none while the layout is built at import: no DB then)."""
    from flask import has_request_context

    return [uploads.dropdown_option(d["name"]) for d in uploaded_datasets()] if has_request_context() else []


def read_symbol_bars(conn, symbol: str, bar_seconds: int, start: datetime, end: datetime) -> pd.DataFrame:
    """database.read_bars; for `upload:NAME` the dataset's newest bars before `end`, as many as the lookback holds."""
    name = uploads.dataset_of(symbol)
    if name is None:
        return database.read_bars(conn, symbol, bar_seconds, start, end)
    limit = max(1, int((end - start).total_seconds() // bar_seconds))
    return database.read_uploaded_bars(conn, name, end=end, bar_seconds=bar_seconds, limit=limit)


def read_symbol_last_closes(conn, symbols) -> dict:
    """database.read_last_closes; `upload:NAME` symbols answer with their dataset's newest bar."""
    names = {uploads.dataset_of(s): s for s in symbols if uploads.dataset_of(s)}
    if not names:
        return database.read_last_closes(conn, symbols)
    closes = database.read_last_closes(conn, [s for s in symbols if uploads.dataset_of(s) is None])
    closes.update({names[n]: value for n, value in database.read_uploaded_last_closes(conn, list(names)).items()})
    return closes


def upload_version(view: View) -> tuple:
    """(name, uploaded_at) of the view's uploaded datasets, so a re-upload is a new cache entry; () if live."""
    names = [n for n in (uploads.dataset_of(view.a), uploads.dataset_of(view.b)) if n]
    return tuple((d["name"], d["uploaded_at"]) for d in uploaded_datasets(names)) if names else ()


def parse_view_with_uploads(args: dict[str, str]) -> tuple[View, list[str]]:
    """exports.parse_view, also accepting a/b = `upload:NAME` for an uploaded dataset."""
    from dataclasses import replace

    picked = {k: str(args[k]) for k in ("a", "b") if str(args.get(k) or "").startswith(uploads.UPLOAD_PREFIX)}
    if not picked:
        return exports.parse_view(args, source.symbols())
    known = {uploads.upload_symbol(d["name"]) for d in uploaded_datasets()}
    chosen = {k: v for k, v in picked.items() if v in known}
    notices = [f"{k}={uploads.safe_text(v)}: no such uploaded dataset (using the default)"
               for k, v in picked.items() if v not in known]
    rest = {k: v for k, v in args.items() if k not in picked}
    for leg, other in (("a", "b"), ("b", "a")):  # a live stand-in for the uploaded leg, never equal to the other
        if leg in chosen and other in rest:
            rest[leg] = next((s for s in source.symbols() if s != str(rest[other]).strip().upper()), rest[other])
    view, parse_notices = exports.parse_view(rest, source.symbols())
    view = replace(view, **chosen)
    if view.a == view.b:
        notices.append(f"a and b are both {uploads.safe_text(view.a)}: pick two different symbols")
        view = replace(view, b=next((s for s in source.symbols() if s != view.a), view.b))
    return view, parse_notices + notices


def store_upload(contents: str | None, filename: str | None, name: str | None) -> uploads.UploadResult:
    """Parse + validate an upload and store its valid bars under the chosen (or file-derived) name."""
    result = uploads.parse_upload(contents, filename, (name or "").strip() or uploads.default_name(filename))
    if result.ok:
        try:
            with source.connection() as conn:
                database.store_uploaded_bars(conn, result.name, result.filename, result.frame)
        except psycopg2.Error as error:
            log.warning("upload %s not stored: %s", result.name, error)
            result.error = "the bars could not be stored (database error); nothing was changed"
    return result


def upload_panel() -> html.Div:
    """The 'Upload OHLC' row: dataset name, file drop zone, result notice, and the uploaded-view label."""
    limits = f"CSV, ≤ {uploads.MAX_UPLOAD_BYTES // (1024 * 1024)} MB, ≤ {uploads.MAX_UPLOAD_ROWS:,} rows"
    return html.Div(className="controls", id="upload-section", children=[
        control("Upload OHLC · dataset name", dcc.Input(id="upload-name", type="text", maxLength=40,
                                                         placeholder="from file name", style={"width": "150px"})),
        dcc.Upload(id="upload-file", multiple=False, accept=".csv,.txt,.tsv,text/csv,text/plain",
                   style=UPLOAD_ZONE_STYLE, children=html.Span(["Drop or ", html.A("choose"), f" an OHLC file ({limits})"])),
        html.Div(id="upload-result", style=UPLOAD_OK_STYLE),
        html.Span(id="upload-view-badge", className="badge demo"),
    ])


@callback(Output("upload-result", "children"), Output("upload-result", "style"), Output("ctl-a", "options"),
          Output("ctl-b", "options"), Input("upload-file", "contents"), State("upload-file", "filename"),
          State("upload-name", "value"), prevent_initial_call=True)
def upload_csv(contents: str | None, filename: str | None, name: str | None) -> tuple:
    """A dropped file -> stored dataset (or a rejection), the per-kind report, refreshed symbol dropdowns."""
    result = store_upload(contents, filename, name)
    options = [{"label": s, "value": s} for s in source.symbols()] + upload_options()
    report = [html.Div(line) for line in result.messages()]
    return report, UPLOAD_OK_STYLE if result.error is None else UPLOAD_BAD_STYLE, options, options


@callback(Output("upload-view-badge", "children"), Input("view", "data"))
def upload_view_badge(view_data: dict | None) -> str:
    """'UPLOADED DATA …' while A or B is an uploaded dataset ('' for live views)."""
    legs = {leg: uploads.dataset_of((view_data or {}).get(leg)) for leg in ("a", "b")}
    names = [n for n in legs.values() if n]
    if not names:
        return ""
    meta = {d["name"]: d for d in uploaded_datasets(names)}
    parts = [f"{leg.upper()} = {n} (uploaded {uploads.safe_text(meta[n]['filename'], 40)}, {meta[n]['rows']:,} bars of "
             f"{meta[n]['bar_seconds']} s, to {meta[n]['last_ts']:%Y-%m-%d %H:%M} UTC)"
             for leg, n in legs.items() if n in meta]
    return "UPLOADED DATA, not live: " + "; ".join(parts)


app = Dash(__name__, title="Pair analytics", update_title=None, compress=True, assets_ignore=".*")  # gzip/br via flask-compress
app.index_string = INDEX_STRING
app.layout = build_layout
server = app.server


@server.before_request
def require_basic_auth() -> Any:
    """Every route (page, _dash-*, /export/*) needs HTTP Basic auth when DASH_USER/DASH_PASSWORD are set."""
    from flask import Response, request

    if BASIC_AUTH is None or basic_auth_ok(request.headers.get("Authorization"), BASIC_AUTH):
        return None
    return Response("authentication required\n", status=401, mimetype="text/plain",
                    headers={"WWW-Authenticate": f'Basic realm="{AUTH_REALM}"'})


exports.register_routes(server, source)


# ---------------------------------------------------------------------------------------------------
# Callbacks (thin: parse, query/compute via DataSource, build with figures/exports)
# ---------------------------------------------------------------------------------------------------
CONTROL_OUTPUTS = [Output(f"ctl-{name}", "value") for name in CONTROL_FIELDS]
CONTROL_INPUTS = [Input(f"ctl-{name}", "value") for name in CONTROL_FIELDS]


@app.callback(*CONTROL_OUTPUTS, Output("url", "search"), Output("view", "data"), Output("notice", "children"),
              Input("url", "search"), *CONTROL_INPUTS)
def sync_url(search: str | None, *values: Any) -> tuple:
    """URL -> controls on load/navigation; controls -> URL on edits. Bad values fall back with a notice."""
    from urllib.parse import parse_qsl

    from_url = ctx.triggered_id in (None, "url")
    if from_url:
        args = dict(parse_qsl((search or "").lstrip("?"), keep_blank_values=True))
    else:
        args = {name: "" if value is None else str(value) for name, value in zip(CONTROL_FIELDS, values)}
    view, notices = parse_view_with_uploads(args)  # Uploads: exports.parse_view + upload:NAME symbols
    control_values = [getattr(view, name) for name in CONTROL_FIELDS]
    changed = [v if (from_url or notices) else no_update for v in control_values]
    query = view.query()
    notice = "Ignored: " + "; ".join(notices) if notices else ""
    return (*changed, query if query != (search or "") else no_update, asdict(view), notice)


def ticker_items(view: View, prices: dict[str, tuple[datetime, float]], data: ViewData | None) -> list:
    """Header ticker: last price and change of A and B, live spread, z and beta."""
    items = []
    for symbol, column in ((view.a, "price_a"), (view.b, "price_b")):
        last = prices.get(symbol, (None, np.nan))[1]
        first = np.nan
        if data is not None and len(data.pair.series):
            first = float(data.pair.series[column].iloc[0])
        change = (last / first - 1) * 100 if np.isfinite(first) and first else np.nan
        items.append(html.Div(className="item", children=[
            html.Span(symbol, className="lab"),
            html.Span([fmt(last, 2), " ", html.Span(f"{change:+.2f}%" if np.isfinite(change) else "",
                                                   className="pos" if change >= 0 else "neg")], className="val",
                      id=f"last-{'a' if column == 'price_a' else 'b'}")]))
    spread, z, beta = live_signal(view, prices, data)
    for label, value, digits, item_id in (("spread", spread, 5, "live-spread"), ("z", z, 2, "live-z"),
                                          ("β", beta, 4, "live-beta")):
        items.append(html.Div(className="item", children=[html.Span(label, className="lab"),
                                                          html.Span(fmt(value, digits), className="val", id=item_id)]))
    return items


def live_signal(view: View, prices: dict, data: ViewData | None) -> tuple[float, float, float]:
    """Spread and z at the live prices with the newest bar's beta/alpha and the last window's mean/std."""
    if data is None or view.a not in prices or view.b not in prices or not len(data.pair.series):
        return np.nan, np.nan, np.nan
    series = data.pair.series
    beta, alpha = float(series["beta"].iloc[-1]), float(series["alpha"].iloc[-1])
    transform = np.log if view.price == "log" else float
    spread = float(transform(prices[view.a][1]) - beta * transform(prices[view.b][1]) - alpha)
    recent = series["spread"].iloc[-view.window:].dropna()
    std = float(recent.std()) if len(recent) >= view.window else np.nan
    z = (spread - float(recent.mean())) / std if np.isfinite(std) and std > 0 else np.nan
    return spread, z, beta


def health_rows(health: pd.DataFrame, prices: dict, now: datetime) -> tuple[list[dict], dict[str, list[str]]]:
    """Feed-health grid rows and, per symbol, why its data is stale (no feed row, disconnected, old tick)."""
    rows, stale = [], {}
    by_symbol = {r["symbol"]: r for r in health.to_dict("records")} if len(health) else {}
    for symbol in source.symbols():
        record = by_symbol.get(symbol)
        last_ts = prices.get(symbol, (None,))[0]
        age = (now - last_ts).total_seconds() - ONE_BAR.total_seconds() if last_ts else np.nan
        connected = bool(record["connected"]) if record else False
        reasons = ["no feed health"] if record is None else ([] if connected else ["disconnected"])
        if not np.isfinite(age) or age > STALE_SECONDS:
            reasons.append(f"last tick {age:.0f} s ago" if np.isfinite(age) else "no ticks")
        if reasons:
            stale[symbol] = reasons
        rows.append({"symbol": symbol, "connected": "yes" if connected else "no",
                     "lag_s": round(record["lag_seconds"], 3) if record and record["lag_seconds"] is not None else None,
                     "ticks_s": round(record["ticks_per_second"], 1) if record else None,
                     "gaps_filled": record["gaps_filled"] if record else None,
                     "last_tick_age_s": round(age, 1) if np.isfinite(age) else None,
                     "reconnects": record["reconnects"] if record else None})
    return rows, stale


def stale_banner(stale: dict[str, list[str]]) -> str:
    """One line: which symbols are stale and why ('' when all fresh)."""
    if not stale:
        return ""
    hint = " — is the ingester running?" if any("no feed health" in r for r in stale.values()) else ""
    return "⚠ STALE DATA: " + "; ".join(f"{s} ({', '.join(r)})" for s, r in stale.items()) + hint


@app.callback(Output("ticker", "children"), Output("health-grid", "rowData"), Output("stale-banner", "children"),
              Output("feed-badge", "children"), Output("feed-badge", "className"), Output("bar-key", "data"),
              Input("tick", "n_intervals"), State("view", "data"), State("bar-key", "data"), State("rendered", "data"))
def tick(_: int | None, view_data: dict | None, bar_key: dict | None, rendered: dict | None) -> tuple:
    """Every second: tick-level numbers, feed health, and the bar clock (changes only when a bar closes)."""
    if not view_data:
        return (no_update,) * 6
    view = View(**view_data)
    now = datetime.now(timezone.utc)
    prices = source.last_prices(source.symbols())
    rows, stale_symbols = health_rows(source.health(), prices, now)
    times = [prices[s][0] for s in (view.a, view.b) if s in prices]
    newest = max(times).timestamp() if times else 0
    key = f"{view.tf}:{int(newest // view.bar_seconds)}"
    stale = view.a in stale_symbols or view.b in stale_symbols
    return (ticker_items(view, prices, source.latest_view_data(view)), rows, stale_banner(stale_symbols),
            "STALE" if stale else "LIVE", "badge stale" if stale else "badge live",
            next_bar_key(key, bar_key, rendered, time.time()))


def next_bar_key(key: str, bar_key: dict | None, rendered: dict | None, now: float) -> dict | Any:
    """A new bar-key only when a bar closed AND the charts already show the previous one.

    Dash drops a pending callback's result when its input changes again, so a refresh slower than one bar
    would be superseded forever; waiting for `rendered` (or REFRESH_STALL_SECONDS) guarantees progress."""
    if bar_key is not None and key == bar_key.get("key"):
        return no_update
    waiting = bar_key is not None and (rendered or {}).get("key") != bar_key
    if waiting and now - float(bar_key.get("at", 0)) < REFRESH_STALL_SECONDS:
        return no_update
    return {"key": key, "at": now}


FIGURE_IDS = ("candles-a", "candles-b", "pair", "heatmap", "leadlag", "equity")
READY_IDS = ("candles-a", "candles-b", "pair", "heatmap", "leadlag", "backtest", "tests", "stats", "trades")


def view_charts(data: ViewData) -> dict[str, tuple[figures.Figure, figures.Arrays, list[dict] | None]]:
    """Per graph id: (skeleton, trace arrays, shapes or None) of a view."""
    view, pair = data.view, data.pair
    trades = pair.backtest.trades if pair.backtest is not None else None
    equity = pair.backtest.equity if pair.backtest is not None else None
    webgl = len(pair.series) > figures.GL_MIN_POINTS
    return {
        "candles-a": (figures.candles_skeleton(view.a), figures.candles_arrays(data.bars[view.a]),
                      figures.level_shapes(pair.levels.get(view.a))),
        "candles-b": (figures.candles_skeleton(view.b), figures.candles_arrays(data.bars[view.b]),
                      figures.level_shapes(pair.levels.get(view.b))),
        "pair": (figures.pair_skeleton(view.a, view.b, view.entry, view.exit, view.stop, webgl),
                 figures.pair_arrays(pair.series, view.window, view.entry, trades), None),
        "heatmap": (figures.heatmap_skeleton(), figures.heatmap_arrays(data.corr_all), None),
        "leadlag": (figures.lead_lag_skeleton(), figures.lead_lag_arrays(pair.lead_lag), None),
        "equity": (figures.equity_skeleton(webgl), figures.equity_arrays(equity), None),
    }


def view_readiness(data: ViewData) -> dict[str, str]:
    """Readiness note per panel ('' when ready)."""
    rd = data.pair.readiness
    bars_note = "" if data.pair.n_aligned else "collecting data: 0 / 1 bars"
    corr_note = "" if data.corr_all is not None else f"collecting data: needs {analytics.MIN_BARS_CORRELATION} bars of every symbol"
    return {"candles-a": bars_note, "candles-b": bars_note, "pair": readiness_text(rd["zscore"]),
            "heatmap": corr_note, "leadlag": readiness_text(rd["lead_lag"]),
            "backtest": readiness_text(rd["backtest"]), "tests": readiness_text(rd["adf"]),
            "stats": "" if data.pair.price_stats else "collecting data", "trades": readiness_text(rd["backtest"])}


def export_links(view: View) -> list:
    """Links to the stable /export URLs of this view."""
    pair_query = view.query()
    links = [("pair.csv", f"/export/pair.csv{pair_query}"), ("stats.csv", f"/export/stats.csv{pair_query}"),
             ("backtest.csv", f"/export/backtest.csv{pair_query}"), ("alerts.csv", "/export/alerts.csv"),
             (f"bars {view.a}", f"/export/bars.csv?symbol={view.a}&tf={view.tf}"),
             (f"ticks {view.a}", f"/export/ticks.csv?symbol={view.a}")]
    return [html.A(label, href=href, target="_blank", style={"marginRight": "12px"}) for label, href in links]


@app.callback(*[Output(i, "figure") for i in FIGURE_IDS], *[Output(f"ready-{i}", "children") for i in READY_IDS],
              Output("metrics", "children"), Output("backtest-summary", "children"),
              Output("stats-grid", "rowData"), Output("stats-grid", "columnDefs"),
              Output("trades-grid", "rowData"), Output("trades-grid", "columnDefs"),
              Output("alerts-grid", "rowData"), Output("alerts-grid", "columnDefs"), Output("export-links", "children"),
              Output("rendered", "data"),
              Input("view", "data"), Input("bar-key", "data"), State("rendered", "data"),
              *[State(g, "columnDefs") for g in ("stats-grid", "trades-grid", "alerts-grid")])
def refresh(view_data: dict | None, bar_key: dict | None, rendered: dict | None, stats_shown: list | None = None,
            trades_shown: list | None = None, alerts_shown: list | None = None) -> tuple:
    """New view: whole figures. Bar close on the same view: Patch replacing trace arrays (zoom/pan/legend kept).

    Grid columnDefs are sent only when they differ from what the grid shows (see `changed_columns`)."""
    if not view_data:
        return (no_update,) * (len(FIGURE_IDS) + len(READY_IDS) + 10)
    data = source.view_data(View(**view_data))
    charts = view_charts(data)
    if rendered is not None and rendered.get("view") == view_data:
        figs = [figures.patch(arrays, shapes) for _, arrays, shapes in (charts[i] for i in FIGURE_IDS)]
    else:
        figs = [figures.fill(*charts[i]) for i in FIGURE_IDS]
    ready = view_readiness(data)
    stats_rows, stats_cols = grid_rows(stats_table(data.pair))
    trade_rows, trade_cols = grid_rows(exports.trades_frame(data.pair))
    alert_rows, alert_cols = grid_rows(source.alerts())
    return (*figs, *[ready[i] for i in READY_IDS], kv_table(metric_rows(data.pair)),
            kv_table(backtest_rows(data.pair)), stats_rows, changed_columns(stats_cols, stats_shown),
            trade_rows, changed_columns(trade_cols, trades_shown), alert_rows, changed_columns(alert_cols, alerts_shown),
            export_links(data.view), {"view": view_data, "key": bar_key})


def changed_columns(columns: list[dict], shown: list[dict] | None) -> list[dict] | Any:
    """`columns`, or no_update when the grid already shows exactly these.

    Setting columnDefs again is not free in AG Grid: on a grid still without rows (no alerts, no trades yet)
    each reset adds column-state listeners that AG Grid only releases when the first rows arrive, so resending
    them every bar grew the page's JS heap without bound (bench/README.md, dashboard heap)."""
    return no_update if shown == columns else columns


@app.callback(Output("adf-result", "children"), Input("run-adf", "n_clicks"), State("view", "data"),
              State("adf-regression", "value"), prevent_initial_call=True)
def run_adf(_: int, view_data: dict, regression: str) -> Any:
    """ADF test of the in-sample spread of the current view, on demand."""
    pair = source.pair(View(**view_data))
    spread = pair.static_spread
    if spread is None or not pair.readiness["adf"].ready:
        return html.Span(readiness_text(pair.readiness["adf"]) or "no spread yet", className="collecting")
    result = analytics.adf_test(spread.to_numpy(), regression=regression)
    verdict = "stationary (reject unit root at 5 %)" if result.pvalue < 0.05 else "not stationary at 5 %"
    critical = ", ".join(f"{k}: {v:.3f}" for k, v in result.critical_values.items())
    return kv_table([("ADF statistic", fmt(result.statistic, 4), ""), ("p-value", fmt(result.pvalue, 4), ""),
                     ("lags / nobs", f"{result.usedlag} / {result.nobs}", ""), ("critical", critical, ""),
                     ("verdict", verdict, "")])


DOWNLOAD_KEYS = ("bars-a", "bars-b", "ticks-a", "ticks-b", "pair", "stats", "equity", "trades", "alerts")


def download_file(key: str, view: View) -> tuple[str, str]:
    """(csv text, file name) for a download button."""
    if key == "alerts":
        return exports.frame_csv(source.alerts(), index=False), "alerts.csv"
    data = source.view_data(view)
    symbol = view.a if key.endswith("-a") else view.b
    if key.startswith("bars"):
        return exports.frame_csv(data.bars[symbol]), f"bars_{symbol}_{view.tf}.csv"
    if key.startswith("ticks"):
        ticks = source.ticks(symbol, data.start, data.end, TICKS_EXPORT_LIMIT)
        return exports.frame_csv(ticks, index=False), f"ticks_{symbol}.csv"
    builders: dict[str, Callable[[], tuple[pd.DataFrame, bool]]] = {
        "pair": lambda: (exports.pair_frame(data.pair.series), True),
        "stats": lambda: (exports.stats_frame(data.pair.price_stats), False),
        "equity": lambda: (data.pair.backtest.equity if data.pair.backtest else pd.DataFrame(), True),
        "trades": lambda: (exports.trades_frame(data.pair), False),
    }
    frame, index = builders[key]()
    return exports.frame_csv(frame, index=index), f"{key}_{view.a}_{view.b}.csv"


@app.callback(Output("download", "data"), *[Input(f"dl-{k}", "n_clicks") for k in DOWNLOAD_KEYS],
              State("view", "data"), prevent_initial_call=True)
def download(*args: Any) -> dict:
    """Any CSV button -> dcc.Download of the same file its /export URL serves."""
    view_data = args[-1]
    key = str(ctx.triggered_id).removeprefix("dl-")
    text, name = download_file(key, View(**view_data))
    return dcc.send_string(text, name)


# ---------------------------------------------------------------------------------------------------
# Alerts UI: rule editor (CRUD through alerts.py), live toast + unseen badge, event history
# ---------------------------------------------------------------------------------------------------
def form_rule(values: dict[str, Any]) -> dict[str, Any]:
    """Form values -> the dict alerts.validate_rule takes (symbol B only for pair metrics, blanks -> defaults)."""
    data = {name: values.get(name) for name in RULE_FORM_FIELDS}
    data["enabled"] = ENABLED_VALUE in (values.get("enabled") or [])
    if data["metric"] not in alerts.PAIR_METRICS:
        data["symbol_b"] = None
    for name in ("window_bars", "cooldown_seconds", "webhook_url"):
        if data[name] in ("", None):
            data.pop(name)
    return data


def rule_rows(rules: list) -> list[dict]:
    """alerts.Rule list -> rules-grid rows."""
    return [{"id": r.id, "name": r.name, "rule": r.describe(), "enabled": "yes" if r.enabled else "no",
             "cooldown_s": r.cooldown_seconds, "webhook": r.webhook_url or ""} for r in rules]


def rule_action(action: str | None, rule_id: int | None, values: dict[str, Any]) -> str:
    """Run one editor action through alerts.py; returns the status line (raises RuleError on bad input)."""
    if action in ("rule-update", "rule-toggle", "rule-delete") and rule_id is None:
        raise alerts.RuleError("rule", "select a rule in the list first")
    with source.connection() as conn:
        if action == "rule-create":
            return f"created rule #{alerts.create_rule(conn, form_rule(values))}"
        if action == "rule-update":
            found = alerts.update_rule(conn, rule_id, form_rule(values))
            return f"updated rule #{rule_id}" if found else f"rule #{rule_id} no longer exists"
        if action == "rule-toggle":
            rule = alerts.get_rule(conn, rule_id)
            if rule is None:
                return f"rule #{rule_id} no longer exists"
            alerts.set_enabled(conn, rule_id, not rule.enabled)
            return f"{'disabled' if rule.enabled else 'enabled'} rule #{rule_id}"
        if action == "rule-delete":
            return f"deleted rule #{rule_id}" if alerts.delete_rule(conn, rule_id) else f"rule #{rule_id} no longer exists"
    return ""


def list_rule_rows() -> list[dict]:
    """Current rules as grid rows."""
    with source.connection() as conn:
        return rule_rows(alerts.list_rules(conn))


@app.callback(Output("rule-message", "children"), Output("rule-message", "className"), Output("rules-grid", "rowData"),
              Output("rules-grid", "selectedRows"),
              Input("rule-create", "n_clicks"), Input("rule-update", "n_clicks"), Input("rule-toggle", "n_clicks"),
              Input("rule-delete", "n_clicks"), State("rules-grid", "selectedRows"),
              *[State(RULE_FORM_IDS[name], "value") for name in RULE_FORM_FIELDS])
def edit_rules(_c: Any, _u: Any, _t: Any, _d: Any, selected: list[dict] | None, *form: Any) -> tuple:
    """Create / update / enable-disable / delete a rule; a RuleError is shown next to the form."""
    rule_id = int(selected[0]["id"]) if selected else None
    try:
        message, css = rule_action(ctx.triggered_id, rule_id, dict(zip(RULE_FORM_FIELDS, form))), "rule-msg ok"
    except alerts.RuleError as error:
        message, css = f"✗ {error}", "rule-msg bad"
    except psycopg2.Error as error:
        log.warning("alert rules unavailable: %s", error)
        return "alert rules unavailable (database error)", "rule-msg bad", no_update, no_update
    selection = [] if ctx.triggered_id == "rule-delete" and css.endswith("ok") else no_update
    try:
        return message, css, list_rule_rows(), selection
    except psycopg2.Error as error:
        log.warning("alert rules unavailable: %s", error)
        return message, css, no_update, selection


@app.callback(*[Output(RULE_FORM_IDS[name], "value") for name in RULE_FORM_FIELDS],
              Input("rules-grid", "selectedRows"), prevent_initial_call=True)
def load_rule(selected: list[dict] | None) -> tuple:
    """A selected rule fills the form."""
    if not selected:
        return (no_update,) * len(RULE_FORM_FIELDS)
    with source.connection() as conn:
        rule = alerts.get_rule(conn, int(selected[0]["id"]))
    if rule is None:
        return (no_update,) * len(RULE_FORM_FIELDS)
    values = rule.to_dict()
    values["threshold"] = f"{rule.threshold:g}"
    values["enabled"] = [ENABLED_VALUE] if rule.enabled else []
    return tuple(values[name] for name in RULE_FORM_FIELDS)


def new_events(last_id: int | None) -> tuple[int | None, list]:
    """(newest event id, events newer than last_id, newest first); on the first call only the newest id."""
    with source.connection() as conn:
        if last_id is None:
            newest = alerts.list_events(conn, limit=1)
            return (newest[0].id if newest else 0), []
        events = alerts.list_events(conn, after_id=last_id, limit=ALERT_POLL_LIMIT)
    return (events[0].id if events else last_id), events


def badge(unseen: int) -> tuple[str, str]:
    """(text, class) of the unseen-alerts badge."""
    return f"ALERTS {unseen}", "badge alerts unseen" if unseen else "badge alerts"


@app.callback(Output("alerts-seen", "data"), Output("alerts-badge", "children"), Output("alerts-badge", "className"),
              Output("alert-toast", "header"), Output("alert-toast", "children"), Output("alert-toast", "is_open"),
              Output("alerts-grid", "rowData", allow_duplicate=True),
              Output("alerts-grid", "columnDefs", allow_duplicate=True),
              Input("tick", "n_intervals"), State("alerts-seen", "data"), State("alerts-ack", "data"),
              State("alerts-grid", "columnDefs"), prevent_initial_call=True)
def poll_alerts(_: int | None, seen: dict | None, ack: int | None, alerts_shown: list | None = None) -> tuple:
    """Every second: events newer than the last polled id -> toast, unseen badge, history (no-op otherwise)."""
    seen = dict(seen or {"last_id": None, "ids": []})
    try:
        last_id, events = new_events(seen.get("last_id"))
    except psycopg2.Error as error:
        log.warning("alert events unavailable: %s", error)
        return (no_update,) * 8
    if last_id == seen.get("last_id") and not events:
        return (no_update,) * 8
    ids = [*(seen.get("ids") or []), *sorted(e.id for e in events)][-ALERT_UNSEEN_IDS_KEPT:]
    seen.update(last_id=last_id, ids=ids)
    text, css = badge(sum(1 for i in ids if i > (ack or 0)))
    if not events:
        return seen, text, css, no_update, no_update, no_update, no_update, no_update
    newest = events[0]
    header = f"{len(events)} new alert{'s' if len(events) > 1 else ''} · {newest.rule_name}"
    rows, columns = grid_rows(source.alerts())
    return seen, text, css, header, newest.message, True, rows, changed_columns(columns, alerts_shown)


# Badge click, in the browser (a server round trip could be superseded by the next 1 s poll): all seen.
app.clientside_callback(
    """function(_, seen) {
        const ids = (seen && seen.ids) || [];
        return [ids.length ? Math.max(...ids) : ((seen && seen.last_id) || 0), "ALERTS 0", "badge alerts", false];
    }""",
    Output("alerts-ack", "data"), Output("alerts-badge", "children", allow_duplicate=True),
    Output("alerts-badge", "className", allow_duplicate=True), Output("alert-toast", "is_open", allow_duplicate=True),
    Input("alerts-badge", "n_clicks"), State("alerts-seen", "data"), prevent_initial_call=True)

log.debug("dashboard loaded in process %d (analytics cache shared through %s)", os.getpid(), settings.cache_dir)

if __name__ == "__main__":
    log.info("dashboard on http://%s:%d%s%s", settings.dash_host, settings.dash_port, " (DEMO)" if settings.demo else "",
             f" (HTTP Basic auth, user {BASIC_AUTH[0]!r})" if BASIC_AUTH else "")
    app.run(host=settings.dash_host, port=settings.dash_port, debug=False)
