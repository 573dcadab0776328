"""Alerts: the rule model and its validation, the evaluator process, and webhook delivery.

    python alerts.py            evaluate every enabled rule, forever (run_all.py starts it)

Where things are (top to bottom):
  Rule model      `Rule`, `validate_rule(dict) -> Rule` (raises `RuleError` naming the field)
  Dashboard API   create_rule, update_rule, set_enabled, delete_rule, get_rule, list_rules,
                  list_events, events_frame, events_csv
  Trigger logic   `RuleState`, `step(rule, state, value, observed_at)`: pure edge trigger
  Metrics         `bar_metric_series(...)`: causal metric values per closed bar (via analytics.py)
  Evaluator       `Evaluator`: one process, one PostgreSQL advisory lock, one connection
  Webhooks        `WebhookSender`: a thread pool that POSTs signed JSON with retries, off the hot path

Semantics of a rule ``metric operator threshold``:
  * '>' / '<' fire when the condition is true and the rule is armed; a new (or edited, or re-enabled)
    rule starts armed, so it fires at once if the condition already holds.
  * 'crosses_above' / 'crosses_below' start disarmed: they arm only once the value has been seen on the
    other side, so they fire on a real crossing (prev <= threshold < value for crosses_above).
  * After firing, a rule is disarmed. It re-arms when the condition has been false beyond the hysteresis
    band h: value <= threshold - h for '>'/crosses_above, value >= threshold + h for '<'/crosses_below.
    It then fires again only when the condition is true AND cooldown_seconds have passed since the last
    event (measured in observed time: bar close / tick time). A re-armed rule whose condition comes back
    during the cooldown fires at the first observation after the cooldown if the condition still holds.
  * Bar metrics (zscore, spread, return, correlation, hedge_ratio, adf_pvalue) are evaluated once per
    closed bar of the rule's timeframe, from bars up to and including that bar (causal). A bar is closed
    when a later 1-second bar of every leg is stored, or CLOSE_GRACE_SECONDS after its end by the clock.
    Bars missed while the evaluator was down are replayed, at most MAX_CATCHUP_BARS per rule.
  * Tick metrics (price, feed_lag, staleness) are evaluated every cycle (at least once a second, and at once
    when the ingester commits bars). price is the last trade price; when one ingester batch updated several
    1-second bars since the last cycle, each bar's close is observed in turn.
  * State (armed, last value, last observed time, last fired time) lives in alert_state and is written in
    the same transaction as the events, so a restart neither re-fires nor forgets. Editing, disabling or
    re-enabling a rule bumps its version, which resets its state; deleting it deletes its state and keeps
    its events (rule_id NULL). An event is only inserted if its rule still exists, is enabled and unedited.

When it runs: one process holds PostgreSQL advisory lock database.ALERT_EVALUATOR_LOCK_ID on its only
connection (a second `python alerts.py` waits for it, so nothing fires twice). It LISTENs on
'alerts_wakeup', which triggers on bars_1s (each ingester commit) and alert_rules NOTIFY, and otherwise wakes
just after every whole second. bench/bench_alerts.py (20 z-score rules as load, busy 2-CPU machine): event
stored p50 18 ms / p95 143 ms after the satisfying tick commits, p50 82 ms / p95 231 ms after the commit that
closes the bar; 1-second polling alone measured p95 851 ms / 990 ms.

Webhooks: a rule's optional webhook_url receives a POST of the event as JSON (see webhook_body) with headers
X-Alert-Event-Id and X-Alert-Signature: sha256=<hex HMAC-SHA256 of the raw body with ALERT_WEBHOOK_SECRET>
(receivers: recompute and compare with hmac.compare_digest; dedupe on the event id, delivery is
at-least-once). Timeout ALERT_WEBHOOK_TIMEOUT_SECONDS, up to ALERT_WEBHOOK_ATTEMPTS tries with backoff
1, 2, 4 ... s on network errors, 5xx and 429; other 4xx and redirects fail at once. The outcome is stored on
the event (webhook_status, webhook_attempts, webhook_error); deliveries left pending resume on restart.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import math
import select
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlparse

import numpy as np
import orjson
import pandas as pd
import psycopg2

import analytics
import database
from database import TIMEFRAME_SECONDS
from settings import SYMBOL_PATTERN, Settings, configure_logging, load_settings_or_exit

log = logging.getLogger("alerts")

# ---------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------
PAIR_METRICS = ("zscore", "spread", "correlation", "hedge_ratio", "adf_pvalue")
SYMBOL_BAR_METRICS = ("return",)
TICK_METRICS = ("price", "feed_lag", "staleness")
METRICS = PAIR_METRICS + SYMBOL_BAR_METRICS + TICK_METRICS
METRIC_LABELS = {
    "zscore": "spread z-score", "spread": "log spread", "correlation": "return correlation",
    "hedge_ratio": "hedge ratio", "adf_pvalue": "ADF p-value", "return": "return", "price": "price",
    "feed_lag": "feed lag (s)", "staleness": "seconds since last trade",
}
OPERATORS = (">", "<", "crosses_above", "crosses_below")
ABOVE_OPERATORS = (">", "crosses_above")
LEVEL_OPERATORS = (">", "<")
HEDGE_METHODS = analytics.STATIC_REGRESSIONS + analytics.CAUSAL_REGRESSIONS
DEFAULT_HEDGE_METHOD = "rolling_ols"  # the dashboard's default (analytics.PairParams)
DEFAULT_TIMEFRAME = "1s"
DEFAULT_WINDOW_BARS = analytics.DEFAULT_WINDOW
DEFAULT_COOLDOWN_SECONDS = 300.0
MAX_COOLDOWN_SECONDS = 7 * 86_400.0
NAME_MAX_CHARS = 80
URL_MAX_CHARS = 2048
MIN_WINDOW_BARS = 2
MAX_WINDOW_BARS = 10_000
# hysteresis band used when a rule gives none, in the metric's units (price: a fraction of the threshold)
DEFAULT_HYSTERESIS = {
    "zscore": 0.25, "spread": 0.0005, "correlation": 0.05, "hedge_ratio": 0.01, "adf_pvalue": 0.01,
    "return": 0.0005, "feed_lag": 1.0, "staleness": 1.0,
}
DEFAULT_PRICE_HYSTERESIS_FRACTION = 0.0005  # 5 bp of the threshold
THRESHOLD_RANGES = {"correlation": (-1.0, 1.0), "adf_pvalue": (0.0, 1.0), "feed_lag": (0.0, math.inf),
                    "staleness": (0.0, math.inf), "price": (0.0, math.inf)}
READ_ONLY_FIELDS = ("id", "version", "created_at", "updated_at")
MAX_EVENTS_LIMIT = 10_000
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# evaluation order inside a cycle: cheap metrics first, so their events are stored before slow ones run
RULE_COST_ORDER = {"price": 0, "feed_lag": 0, "staleness": 0, "return": 1, "spread": 2, "hedge_ratio": 2,
                   "zscore": 2, "correlation": 2, "adf_pvalue": 3}

# evaluator timing
TICK_SECONDS = 1.0            # tick metrics and the clock fallback are evaluated at least this often
TICK_OFFSET_SECONDS = 0.02    # wake just after each whole second (bar closes are on whole seconds)
TICK_REPASS_SECONDS = 0.2   # while slow bar rules run, look at tick rules again this often
CLOSE_GRACE_SECONDS = 3.0     # a bar is closed by the clock this long after its end (ingester batches <= 2 s)
MAX_CATCHUP_BARS = 300        # closed bars replayed per rule after a pause of the evaluator
MAX_ADF_CATCHUP_BARS = 5      # ADF costs a regression per bar: replay fewer
LOOKBACK_SLACK = 1.5          # read this many times the bars a metric needs (missing bars are absent rows)
LOCK_RETRY_SECONDS = 1.0
RECONNECT_SECONDS = 2.0

# webhooks
DEFAULT_WEBHOOK_TIMEOUT_SECONDS = Settings.alert_webhook_timeout_seconds
DEFAULT_WEBHOOK_ATTEMPTS = Settings.alert_webhook_attempts
WEBHOOK_BACKOFF_BASE_SECONDS = 1.0  # wait base * 2^(attempt-1) between attempts
WEBHOOK_BACKOFF_CAP_SECONDS = 30.0
WEBHOOK_WORKERS = 4
SIGNATURE_HEADER = "X-Alert-Signature"  # "sha256=" + hex HMAC-SHA256(secret, raw body)
EVENT_ID_HEADER = "X-Alert-Event-Id"
USER_AGENT = "pair-dashboard-alerts/1"


# ---------------------------------------------------------------------------------------------------
# Rule model and validation
# ---------------------------------------------------------------------------------------------------
class RuleError(ValueError):
    """A rule field is invalid; the message starts with the field name."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


@dataclass(frozen=True)
class Rule:
    """One alert rule; `id`/`version` are set once stored (version is bumped by every edit)."""

    name: str
    metric: str
    operator: str
    threshold: float
    symbol_a: str
    symbol_b: str | None = None
    timeframe: str = DEFAULT_TIMEFRAME
    window_bars: int = DEFAULT_WINDOW_BARS
    hedge_method: str = DEFAULT_HEDGE_METHOD
    hysteresis: float = 0.0
    cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS
    webhook_url: str | None = None
    enabled: bool = True
    id: int | None = None
    version: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_pair(self) -> bool:
        return self.metric in PAIR_METRICS

    @property
    def is_tick(self) -> bool:
        return self.metric in TICK_METRICS

    @property
    def bar_seconds(self) -> int:
        return TIMEFRAME_SECONDS[self.timeframe]

    @property
    def symbols(self) -> tuple[str, ...]:
        return (self.symbol_a, self.symbol_b) if self.symbol_b else (self.symbol_a,)

    def describe(self) -> str:
        """'BTCUSDT/ETHUSDT spread z-score (1m, 60 bars) crosses_above 2'."""
        where = "/".join(self.symbols)
        shape = "" if self.is_tick else f" ({self.timeframe}, {self.window_bars} bars)"
        return f"{where} {METRIC_LABELS[self.metric]}{shape} {self.operator} {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-friendly except the datetimes."""
        return asdict(self)


def _number(name: str, raw: Any) -> float:
    if isinstance(raw, bool) or raw is None:
        raise RuleError(name, f"must be a number (got {raw!r})")
    try:
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        raise RuleError(name, f"must be a number (got {raw!r})") from None
    if not math.isfinite(value):
        raise RuleError(name, f"must be a finite number (got {raw!r})")
    return value


def _whole(name: str, raw: Any, low: int, high: int) -> int:
    value = _number(name, raw)
    if value != int(value) or not low <= value <= high:
        raise RuleError(name, f"must be a whole number from {low} to {high} (got {raw!r})")
    return int(value)


def _choice(name: str, raw: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    value = raw.strip().lower().replace(" ", "_").replace("-", "_") if isinstance(raw, str) else raw
    if value not in allowed:
        raise RuleError(name, f"must be one of {', '.join(allowed)} (got {raw!r})")
    return value


def _symbol(name: str, raw: Any) -> str:
    value = raw.strip().upper() if isinstance(raw, str) else ""
    if not SYMBOL_PATTERN.match(value):
        raise RuleError(name, f"must be a symbol like BTCUSDT (A-Z, 0-9, 2-20 chars; got {raw!r})")
    return value


def _name(raw: Any) -> str:
    value = raw.strip() if isinstance(raw, str) else ""
    if not value or len(value) > NAME_MAX_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise RuleError("name", f"must be 1-{NAME_MAX_CHARS} printable characters (got {raw!r})")
    return value


def _webhook_url(raw: Any) -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    value = raw.strip() if isinstance(raw, str) else ""
    parsed = urlparse(value)
    if (parsed.scheme not in ("http", "https") or not parsed.hostname or len(value) > URL_MAX_CHARS
            or any(c.isspace() or ord(c) < 32 for c in value)):
        raise RuleError("webhook_url", f"must be an http:// or https:// URL of at most {URL_MAX_CHARS} chars "
                                       f"(got {raw!r})")
    return value


def validate_rule(data: Mapping[str, Any] | Rule) -> Rule:
    """Check and normalise a rule given as a dict (keys as Rule's fields); raise RuleError naming the field."""
    if isinstance(data, Rule):
        data = data.to_dict()
    if not isinstance(data, Mapping):
        raise RuleError("rule", f"must be a mapping of field names to values (got {type(data).__name__})")
    known = {f.name for f in fields(Rule)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise RuleError(unknown[0], f"unknown field (allowed: {', '.join(sorted(known - set(READ_ONLY_FIELDS)))})")
    for required in ("name", "metric", "operator", "threshold", "symbol_a"):
        if data.get(required) is None:
            raise RuleError(required, "is required")

    name = _name(data["name"])
    metric = _choice("metric", data["metric"], METRICS)
    operator = _choice("operator", data["operator"], OPERATORS)
    threshold = _number("threshold", data["threshold"])
    low, high = THRESHOLD_RANGES.get(metric, (-math.inf, math.inf))
    if not low <= threshold <= high:
        raise RuleError("threshold", f"must be between {low:g} and {high:g} for {metric} (got {threshold:g})")
    symbol_a = _symbol("symbol_a", data["symbol_a"])
    raw_b = data.get("symbol_b")
    if metric in PAIR_METRICS:
        if raw_b is None or raw_b == "":
            raise RuleError("symbol_b", f"is required: {metric} is a pair metric")
        symbol_b: str | None = _symbol("symbol_b", raw_b)
        if symbol_b == symbol_a:
            raise RuleError("symbol_b", f"must differ from symbol_a ({symbol_a})")
    else:
        if raw_b not in (None, ""):
            raise RuleError("symbol_b", f"must be empty: {metric} is a one-symbol metric")
        symbol_b = None

    timeframe = _choice("timeframe", data.get("timeframe") or DEFAULT_TIMEFRAME, TIMEFRAME_SECONDS)
    raw_window = data.get("window_bars")
    if metric in TICK_METRICS:
        window_bars = 1  # tick metrics have no window
    else:
        low_w = {"return": 1, "adf_pvalue": analytics.MIN_BARS_ADF}.get(metric, MIN_WINDOW_BARS)
        window_bars = _whole("window_bars", DEFAULT_WINDOW_BARS if raw_window is None else raw_window,
                             low_w, MAX_WINDOW_BARS)
    hedge_method = _choice("hedge_method", data.get("hedge_method") or DEFAULT_HEDGE_METHOD, HEDGE_METHODS)

    raw_h = data.get("hysteresis")
    if raw_h is None or raw_h == "":
        hysteresis = (abs(threshold) * DEFAULT_PRICE_HYSTERESIS_FRACTION if metric == "price"
                      else DEFAULT_HYSTERESIS[metric])
    else:
        hysteresis = _number("hysteresis", raw_h)
        if hysteresis < 0:
            raise RuleError("hysteresis", f"must be >= 0 (got {raw_h!r})")
    raw_cooldown = data.get("cooldown_seconds")
    cooldown = _number("cooldown_seconds", DEFAULT_COOLDOWN_SECONDS if raw_cooldown in (None, "") else raw_cooldown)
    if not 0 <= cooldown <= MAX_COOLDOWN_SECONDS:
        raise RuleError("cooldown_seconds", f"must be from 0 to {MAX_COOLDOWN_SECONDS:g} (got {raw_cooldown!r})")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError("enabled", f"must be true or false (got {enabled!r})")

    return Rule(name=name, metric=metric, operator=operator, threshold=threshold, symbol_a=symbol_a,
                symbol_b=symbol_b, timeframe=timeframe, window_bars=window_bars, hedge_method=hedge_method,
                hysteresis=hysteresis, cooldown_seconds=cooldown, webhook_url=_webhook_url(data.get("webhook_url")),
                enabled=enabled, id=data.get("id"), version=data.get("version"),
                created_at=data.get("created_at"), updated_at=data.get("updated_at"))


def _rule_values(rule: Rule) -> dict[str, Any]:
    return {f: getattr(rule, f) for f in database.ALERT_RULE_FIELDS}


def _rule_from_row(row: Mapping[str, Any]) -> Rule:
    return Rule(**{f.name: row[f.name] for f in fields(Rule)})


# ---------------------------------------------------------------------------------------------------
# Dashboard API (psycopg2 connections, e.g. database.connect_sync(dsn))
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertEvent:
    """One fired alert (webhook_status: none, pending, delivered, failed)."""

    id: int
    rule_id: int | None
    rule_version: int
    rule_name: str
    metric: str
    symbols: str
    operator: str
    observed_at: datetime
    fired_at: datetime
    value: float
    threshold: float
    message: str
    webhook_url: str | None
    webhook_status: str
    webhook_attempts: int
    webhook_error: str | None
    webhook_done_at: datetime | None


def create_rule(conn, data: Mapping[str, Any] | Rule) -> int:
    """Validate and store a new rule; return its id (raises RuleError)."""
    return database.insert_alert_rule(conn, _rule_values(validate_rule(data)))


def update_rule(conn, rule_id: int, data: Mapping[str, Any] | Rule) -> bool:
    """Validate and replace every field of a rule (its state resets); False if there is no such rule."""
    return database.update_alert_rule(conn, rule_id, _rule_values(validate_rule(data)))


def set_enabled(conn, rule_id: int, enabled: bool) -> bool:
    """Enable or disable a rule (a change resets its state); False if there is no such rule."""
    if not isinstance(enabled, bool):
        raise RuleError("enabled", f"must be true or false (got {enabled!r})")
    return database.set_alert_rule_enabled(conn, rule_id, enabled)


def delete_rule(conn, rule_id: int) -> bool:
    """Delete a rule (its events are kept, with rule_id NULL); False if there is no such rule."""
    return database.delete_alert_rule(conn, rule_id)


def get_rule(conn, rule_id: int) -> Rule | None:
    """One stored rule, or None."""
    rows = database.fetch_alert_rules(conn, rule_id=rule_id)
    return _rule_from_row(rows[0]) if rows else None


def list_rules(conn, enabled_only: bool = False) -> list[Rule]:
    """Stored rules, by id."""
    return [_rule_from_row(row) for row in database.fetch_alert_rules(conn, enabled_only=enabled_only)]


def list_events(conn, since: datetime | None = None, limit: int = 500, after_id: int | None = None,
                rule_id: int | None = None) -> list[AlertEvent]:
    """Events newest first: fired at/after `since`, with id > `after_id` (for live polling), of one rule."""
    limit = max(1, min(int(limit), MAX_EVENTS_LIMIT))
    rows = database.fetch_alert_events(conn, since=since, after_id=after_id, rule_id=rule_id, limit=limit)
    return [AlertEvent(**row) for row in rows]


EVENT_FRAME_COLUMNS = tuple(f.name for f in fields(AlertEvent))


def events_frame(events: Iterable[AlertEvent]) -> pd.DataFrame:
    """Events as a DataFrame (one row per event, columns EVENT_FRAME_COLUMNS, times in UTC)."""
    frame = pd.DataFrame([asdict(e) for e in events], columns=list(EVENT_FRAME_COLUMNS))
    for column in ("observed_at", "fired_at", "webhook_done_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _defuse_formula(text: Any) -> Any:
    """Prefix text a spreadsheet would run as a formula (=, +, -, @, tab, CR) with an apostrophe."""
    return "'" + text if isinstance(text, str) and text[:1] in CSV_FORMULA_PREFIXES else text


def events_csv(events: Iterable[AlertEvent]) -> str:
    """Events as CSV text (ISO-8601 UTC times) for the download button; user text cannot become a formula."""
    frame = events_frame(events)
    for column in ("rule_name", "message", "symbols", "webhook_url", "webhook_error"):
        frame[column] = frame[column].map(_defuse_formula)
    return frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------------
# Trigger logic (pure)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleState:
    """What the evaluator remembers about a rule between observations."""

    armed: bool
    last_value: float | None = None
    last_observed: datetime | None = None
    last_fired: datetime | None = None


def initial_state(rule: Rule) -> RuleState:
    """Level rules ('>', '<') start armed; crossing rules arm once the value is seen on the other side."""
    return RuleState(armed=rule.operator in LEVEL_OPERATORS)


def step(rule: Rule, state: RuleState, value: float, observed_at: datetime) -> tuple[RuleState, bool]:
    """Apply one observation: return (new state, fired?). See the module docstring for the rules."""
    above = rule.operator in ABOVE_OPERATORS
    condition = value > rule.threshold if above else value < rule.threshold
    rearm = (value <= rule.threshold - rule.hysteresis) if above else (value >= rule.threshold + rule.hysteresis)
    armed = state.armed or rearm
    cooled = (state.last_fired is None
              or (observed_at - state.last_fired).total_seconds() >= rule.cooldown_seconds)
    fired = armed and condition and cooled
    return RuleState(armed=armed and not fired, last_value=value, last_observed=observed_at,
                     last_fired=observed_at if fired else state.last_fired), fired


def event_message(rule: Rule, value: float) -> str:
    """'name: BTCUSDT/ETHUSDT spread z-score (1s, 60 bars) = 2.31, crosses_above 2'."""
    where = "/".join(rule.symbols)
    shape = "" if rule.is_tick else f" ({rule.timeframe}, {rule.window_bars} bars)"
    return (f"{rule.name}: {where} {METRIC_LABELS[rule.metric]}{shape} = {value:.6g}, "
            f"{rule.operator} {rule.threshold:g}")


# ---------------------------------------------------------------------------------------------------
# Metrics (pure: bars in, values out)
# ---------------------------------------------------------------------------------------------------
def lookback_bars(rule: Rule, catchup: int) -> int:
    """How many bars of the rule's timeframe to read so its last `catchup` values are computable."""
    w = rule.window_bars
    if rule.metric in ("zscore", "spread", "hedge_ratio"):
        need = analytics.readiness_needs(analytics.PairParams(window=w, regression=rule.hedge_method))["zscore"]
    elif rule.metric == "adf_pvalue":
        need = w
    else:  # return, correlation: W returns need W+1 prices
        need = w + 1
    return int(need * LOOKBACK_SLACK) + catchup + 1


def bar_metric_series(rule: Rule, bars_a: pd.DataFrame, bars_b: pd.DataFrame | None, last_n: int,
                      aligned: pd.DataFrame | None = None) -> pd.Series:
    """Causal metric value per bar (index: bar start, UTC), NaN where not computable; ADF for the last_n only.

    Pair metrics use log prices y = ln A, x = ln B as-of aligned (analytics.align_pair):
      hedge_ratio = beta_t, spread_t = y_t - beta_t x_t - alpha_t with (beta_t, alpha_t) the causal hedge path,
      zscore_t = (spread_t - mean_W) / std_W, correlation_t = rolling Pearson of log returns over W,
      adf_pvalue_t = MacKinnon p-value of ADF on the spread of a fit over bars t-W+1..t.
    return_t = close_t / close_{t-W} - 1 (W stored bars back).
    `aligned` (columns a, b from analytics.align_pair) may be passed instead of aligning bars_a/bars_b again.
    """
    w = rule.window_bars
    if rule.metric == "return":
        close = bars_a["close"]
        return close / close.shift(w) - 1.0
    if aligned is None:
        aligned = analytics.align_pair(bars_a["close"], bars_b["close"], rule.bar_seconds)
    if len(aligned) == 0:
        return pd.Series(dtype=float)
    price_a, price_b = aligned["a"].to_numpy(float), aligned["b"].to_numpy(float)
    y, x = np.log(price_a), np.log(price_b)
    if rule.metric == "correlation":
        values = analytics.rolling_correlation(analytics.log_returns(price_a), analytics.log_returns(price_b), w)
    elif rule.metric == "adf_pvalue":
        values = np.full(len(y), np.nan)
        method = rule.hedge_method if rule.hedge_method in analytics.STATIC_REGRESSIONS else "ols"
        for end in range(max(w, len(y) - last_n), len(y) + 1):
            ys, xs = y[end - w:end], x[end - w:end]
            fit = analytics.static_hedge(ys, xs, method)
            try:
                values[end - 1] = analytics.adf_test(analytics.spread_series(ys, xs, fit.beta, fit.alpha)).pvalue
            except (ValueError, np.linalg.LinAlgError):
                pass
    else:
        beta, alpha = analytics.causal_hedge_path(y, x, rule.hedge_method, w)
        spread = analytics.spread_series(y, x, beta, alpha)
        values = {"hedge_ratio": beta, "spread": spread,
                  "zscore": analytics.rolling_zscore(spread, w)}[rule.metric]
    return pd.Series(values, index=aligned.index, dtype=float)


# ---------------------------------------------------------------------------------------------------
# Evaluator (IO: one connection that holds the advisory lock, reads bars, writes state and events)
# ---------------------------------------------------------------------------------------------------
def _floor_time(moment: datetime, seconds: int) -> datetime:
    epoch = moment.timestamp()
    return datetime.fromtimestamp(math.floor(epoch / seconds) * seconds, tz=timezone.utc)


def _between(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Rows of a time-indexed frame with start <= index < end."""
    index = frame.index
    return frame.iloc[index.searchsorted(pd.Timestamp(start)):index.searchsorted(pd.Timestamp(end))]


class Evaluator:
    """Evaluates every enabled rule at each bar close (woken by NOTIFY) and at least every TICK_SECONDS."""

    def __init__(self, dsn: str, webhooks: "WebhookSender | None" = None, listen: bool = True,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.dsn = dsn
        self.webhooks = webhooks
        self.listen = listen
        self.clock = clock
        self.conn = None
        self.cycles = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.has_lock = threading.Event()
        self._aligned: dict[tuple, pd.DataFrame] = {}

    # -- lifecycle ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask run() to return after the current cycle."""
        self._stop.set()

    def start_in_thread(self) -> "Evaluator":
        """run() in a daemon thread (tests, benchmarks)."""
        self._thread = threading.Thread(target=self.run, name="alert-evaluator", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 10.0) -> None:
        """stop() and wait for the thread started by start_in_thread()."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Connect, take the lock, evaluate until stop(); reconnect after a database outage."""
        if self.webhooks is not None:
            self.webhooks.start()
        try:
            while not self._stop.is_set():
                try:
                    self.connect()
                    if self.acquire_lock():
                        self._loop()
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                    log.warning("database unavailable (%s); reconnecting in %.0f s", str(error).strip(),
                                RECONNECT_SECONDS)
                    self._stop.wait(RECONNECT_SECONDS)
                finally:
                    self.close()
        finally:
            if self.webhooks is not None:
                self.webhooks.stop()

    def connect(self) -> None:
        """Open the evaluator's connection (not autocommit: each cycle's writes commit together)."""
        self.close()
        self.conn = psycopg2.connect(self.dsn, application_name="alerts-evaluator")

    def close(self) -> None:
        self.has_lock.clear()
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
            self.conn = None

    def acquire_lock(self) -> bool:
        """Wait for the evaluator advisory lock (a second instance waits here); False if stopped first."""
        waiting_logged = False
        while not self._stop.is_set():
            got = database.try_alert_evaluator_lock(self.conn)
            if got:
                log.info("alert evaluator running (lock %d held)", database.ALERT_EVALUATOR_LOCK_ID)
                self.has_lock.set()
                return True
            if not waiting_logged:
                log.info("another alert evaluator holds the lock; waiting")
                waiting_logged = True
            self._stop.wait(LOCK_RETRY_SECONDS)
        return False

    def _loop(self) -> None:
        if self.listen:
            database.listen_for_alert_wakeups(self.conn)
        while not self._stop.is_set():
            try:
                self.evaluate_once()
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                raise  # run() reconnects and takes the lock again
            except Exception:  # a bug or a bad row: log it, keep evaluating
                log.exception("evaluation cycle failed")
                self.conn.rollback()
            self._wait_for_wakeup()

    def _wait_for_wakeup(self) -> None:
        """Sleep until just after the next whole second, or until a NOTIFY (new bars, edited rules) arrives."""
        now = time.time()
        timeout = max(0.0, math.floor(now / TICK_SECONDS) * TICK_SECONDS + TICK_SECONDS + TICK_OFFSET_SECONDS - now)
        if not self.listen:
            self._stop.wait(timeout)
            return
        if not self.conn.notifies:
            select.select([self.conn], [], [], timeout)
            self.conn.poll()
        self.conn.notifies.clear()

    # -- one cycle -----------------------------------------------------------------------------------
    def evaluate_once(self, now: datetime | None = None) -> list[int]:
        """Evaluate every enabled rule once; return the new event ids.

        Tick rules go first, then bar rules cheapest first; a rule that fires is committed at once (events +
        state in one transaction), and tick rules are looked at again every TICK_REPASS_SECONDS while slow bar
        rules run, so no rule's event waits for another's computation. The state of rules that did not fire
        is committed together at the end of the cycle.
        """
        if self.conn is None:
            self.connect()
        now = now or self.clock()
        conn = self.conn
        rules = sorted((_rule_from_row(r) for r in database.fetch_alert_rules(conn, enabled_only=True)),
                       key=lambda r: (RULE_COST_ORDER[r.metric], r.window_bars, r.id))
        stored = database.fetch_alert_states(conn)
        states: dict[int, RuleState | None] = {}
        for rule in rules:
            row = stored.get(rule.id)
            states[rule.id] = RuleState(*row[1:]) if row and row[0] == rule.version else None
        tick_rules = [r for r in rules if r.is_tick]
        bar_rules = [r for r in rules if not r.is_tick]
        quiet: dict[int, Rule] = {}  # evaluated without firing: their state is saved at the end
        event_ids = self._tick_pass(tick_rules, states, quiet, now)

        bar_symbols = sorted({s for r in bar_rules for s in r.symbols})
        with conn.cursor() as cur:
            latest = database.latest_bars(cur, bar_symbols) if bar_symbols else {}
        plans = {r.id: self._bar_plan(r, states[r.id], latest, now) for r in bar_rules}
        bars = self._read_bars({r.id: r for r in bar_rules}, plans)
        self._aligned = {}
        last_tick_pass = time.monotonic()
        for rule in bar_rules:
            if plans[rule.id] is None:
                continue
            if tick_rules and time.monotonic() - last_tick_pass > TICK_REPASS_SECONDS:
                event_ids += self._tick_pass(tick_rules, states, quiet, self.clock() if now is None else now)
                last_tick_pass = time.monotonic()
            try:
                observations = self._observe_bars(rule, states[rule.id], plans[rule.id], bars)
            except Exception:  # one broken rule must not stop the others
                log.exception("rule %s (%s): evaluation failed", rule.id, rule.name)
                conn.rollback()
                continue
            event_ids += self._apply(rule, states, quiet, observations)

        with conn.cursor() as cur:
            for rule in quiet.values():
                state = states[rule.id]
                database.save_alert_state(cur, rule.id, rule.version, state.armed, state.last_value,
                                          state.last_observed, state.last_fired)
        conn.commit()
        self.cycles += 1
        return event_ids

    def _tick_pass(self, rules: list[Rule], states: dict, quiet: dict, now: datetime) -> list[int]:
        """Evaluate the tick rules on the newest stored data."""
        if not rules:
            return []
        symbols = sorted({s for r in rules for s in r.symbols})
        with self.conn.cursor() as cur:
            latest = database.latest_bars(cur, symbols)
            health = database.alert_feed_health(cur, symbols) if any(r.metric != "price" for r in rules) else {}
        event_ids: list[int] = []
        for rule in rules:
            try:
                observations = self._observe_tick(rule, states[rule.id], latest, health, now)
            except Exception:
                log.exception("rule %s (%s): evaluation failed", rule.id, rule.name)
                self.conn.rollback()
                continue
            event_ids += self._apply(rule, states, quiet, observations)
        return event_ids

    def _apply(self, rule: Rule, states: dict, quiet: dict, observations: list[tuple[datetime, float]]) -> list[int]:
        """Step the rule through its observations; commit at once if it fired, else leave it to the cycle's end."""
        if not observations:
            return []
        current = states[rule.id] or initial_state(rule)
        fired: list[tuple[datetime, float]] = []
        for observed_at, value in observations:
            current, did_fire = step(rule, current, value, observed_at)
            if did_fire:
                fired.append((observed_at, value))
        states[rule.id] = current
        if not fired:
            quiet[rule.id] = rule
            return []
        quiet.pop(rule.id, None)
        return self._commit_fired(rule, current, fired)

    def _commit_fired(self, rule: Rule, state: RuleState, fired: list[tuple[datetime, float]]) -> list[int]:
        """Store a rule's events and its state in one transaction, then queue the webhooks."""
        ids = []
        with self.conn.cursor() as cur:
            for observed_at, value in fired:
                event_id = database.insert_alert_event(cur, rule.id, rule.version, observed_at, value,
                                                       event_message(rule, value))
                if event_id is not None:
                    ids.append(event_id)
            database.save_alert_state(cur, rule.id, rule.version, state.armed, state.last_value,
                                      state.last_observed, state.last_fired)
        self.conn.commit()
        for event_id in ids:
            log.info("alert event %d: %s", event_id, rule.name)
            if rule.webhook_url and self.webhooks is not None:
                self.webhooks.submit(event_id)
        return ids

    def _observe_tick(self, rule: Rule, state: RuleState | None, latest: Mapping[str, tuple],
                      health: Mapping[str, tuple], now: datetime) -> list[tuple[datetime, float]]:
        """New (observed_at, value) pairs of a tick metric since its last observation, oldest first."""
        last = state.last_observed if state else None
        if rule.metric == "price":  # the close of every 1 s bar updated since the last look (a batch may hold several)
            _, close, close_ts = latest.get(rule.symbol_a, (None, None, None))
            if close_ts is None or (last is not None and close_ts <= last):
                return []
            if last is None:
                return [(close_ts, float(close))]
            with self.conn.cursor() as cur:
                return [(ts, float(price)) for ts, price in database.new_closes(cur, rule.symbol_a, last,
                                                                               MAX_CATCHUP_BARS)]
        if rule.metric == "feed_lag":
            lag, _, updated_at = health.get(rule.symbol_a, (None, None, None))
            return [] if lag is None or (last and updated_at <= last) else [(updated_at, float(lag))]
        # staleness: seconds since the last stored trade, growing even when the ingester is down
        last_trade = health.get(rule.symbol_a, (None, None, None))[1] or latest.get(rule.symbol_a, (None,) * 3)[2]
        return [] if last_trade is None else [(now, (now - last_trade).total_seconds())]

    def _bar_plan(self, rule: Rule, state: RuleState | None, latest: Mapping[str, tuple],
                  now: datetime) -> tuple[datetime, int, datetime] | None:
        """(cutoff = close of the newest closed bar, bars to evaluate, first bar to read), or None if nothing new."""
        tf = rule.bar_seconds
        starts = [latest.get(s, (None,))[0] for s in rule.symbols]
        if any(s is None for s in starts):
            return None  # a leg has no data at all
        data_cutoff = _floor_time(min(starts), tf)  # bars starting before it have a later 1 s bar stored
        clock_cutoff = _floor_time(now - timedelta(seconds=CLOSE_GRACE_SECONDS), tf)
        cutoff = max(data_cutoff, clock_cutoff)
        last = state.last_observed if state else None
        if last is not None and cutoff <= last:
            return None
        max_catchup = MAX_ADF_CATCHUP_BARS if rule.metric == "adf_pvalue" else MAX_CATCHUP_BARS
        catchup = 1 if last is None else min(max_catchup, max(1, int((cutoff - last).total_seconds() // tf)))
        return cutoff, catchup, cutoff - timedelta(seconds=tf * lookback_bars(rule, catchup))

    def _read_bars(self, rules: Mapping[int, Rule], plans: Mapping[int, tuple | None]) -> dict[tuple, pd.DataFrame]:
        """One read per (symbol, timeframe) covering every rule's range this cycle."""
        spans: dict[tuple[str, int], tuple[datetime, datetime]] = {}
        for rule_id, plan in plans.items():
            if plan is None:
                continue
            cutoff, _, start = plan
            for symbol in rules[rule_id].symbols:
                key = (symbol, rules[rule_id].bar_seconds)
                low, high = spans.get(key, (start, cutoff))
                spans[key] = (min(low, start), max(high, cutoff))
        return {key: database.read_bars(self.conn, key[0], key[1], low, high) for key, (low, high) in spans.items()}

    def _observe_bars(self, rule: Rule, state: RuleState | None, plan: tuple | None,
                      bars: Mapping[tuple, pd.DataFrame]) -> list[tuple[datetime, float]]:
        """Values at the closes of the bars closed since the last observation (only the newest for a fresh state)."""
        if plan is None:
            return []
        cutoff, catchup, start = plan
        tf = rule.bar_seconds
        frames = [_between(bars[(symbol, tf)], start, cutoff) for symbol in rule.symbols]
        if any(len(f) == 0 for f in frames):
            return []
        aligned = None
        if rule.is_pair:  # align each pair once per cycle over the widest range read, then cut this rule's part
            key = (rule.symbol_a, rule.symbol_b, tf)
            if key not in self._aligned:
                self._aligned[key] = analytics.align_pair(bars[(rule.symbol_a, tf)]["close"],
                                                          bars[(rule.symbol_b, tf)]["close"], tf)
            aligned = _between(self._aligned[key], start, cutoff)
        series = bar_metric_series(rule, frames[0], frames[1] if rule.is_pair else None, catchup, aligned)
        closes = series.index + pd.Timedelta(seconds=tf)
        floor = cutoff - timedelta(seconds=tf * catchup)
        if state is not None and state.last_observed is not None:
            floor = max(floor, state.last_observed)
        keep = (closes > floor) & np.isfinite(series.to_numpy())
        return [(ts.to_pydatetime(), float(v)) for ts, v in zip(closes[keep], series.to_numpy()[keep])]


# ---------------------------------------------------------------------------------------------------
# Webhooks (their own threads and connections: a slow or dead receiver never delays evaluation)
# ---------------------------------------------------------------------------------------------------
def sign(secret: str, body: bytes) -> str:
    """Signature header value: 'sha256=' + hex(HMAC-SHA256(secret, body))."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(event: Mapping[str, Any]) -> bytes:
    """The JSON POSTed for an event (times ISO-8601 UTC)."""
    def iso(moment: datetime | None) -> str | None:
        return None if moment is None else moment.astimezone(timezone.utc).isoformat()

    return orjson.dumps({
        "event_id": event["id"], "rule_id": event["rule_id"], "rule_name": event["rule_name"],
        "metric": event["metric"], "symbols": event["symbols"], "operator": event["operator"],
        "threshold": event["threshold"], "value": event["value"], "observed_at": iso(event["observed_at"]),
        "fired_at": iso(event["fired_at"]), "message": event["message"],
    })


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a POST must not silently turn into a GET elsewhere
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_webhook(url: str, body: bytes, secret: str | None, event_id: int, timeout: float) -> int:
    """POST once; return the HTTP status (raises OSError/HTTPError on failure)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_ID_HEADER: str(event_id)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with _OPENER.open(request, timeout=timeout) as response:
        return response.status


def _retryable(error: Exception) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    return True  # connection refused, timeout, DNS: worth another try


class WebhookSender:
    """Delivers event webhooks from a thread pool, with retries and backoff; records the outcome per event."""

    def __init__(self, dsn: str, secret: str | None, timeout: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
                 attempts: int = DEFAULT_WEBHOOK_ATTEMPTS, backoff_base: float = WEBHOOK_BACKOFF_BASE_SECONDS,
                 workers: int = WEBHOOK_WORKERS) -> None:
        self.dsn = dsn
        self.secret = secret
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the pool and resume deliveries left pending by a previous run."""
        self._stop.clear()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="alert-webhook")
        if not self.secret:
            log.warning("ALERT_WEBHOOK_SECRET is not set: webhooks are sent unsigned")
        try:
            conn = database.connect_sync(self.dsn)
            try:
                for event in database.fetch_pending_webhooks(conn):
                    self.submit(event["id"])
            finally:
                conn.close()
        except psycopg2.Error as error:
            log.warning("could not resume pending webhooks: %s", error)

    def stop(self) -> None:
        """Stop retrying (unfinished deliveries stay 'pending' and resume at the next start)."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def submit(self, event_id: int) -> None:
        """Queue one event's delivery (returns at once)."""
        if self._pool is not None:
            self._pool.submit(self._deliver_logged, event_id)

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = database.connect_sync(self.dsn)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _deliver_logged(self, event_id: int) -> None:
        try:
            self.deliver(event_id)
        except Exception:
            self._local.conn = None
            log.exception("webhook for event %d: delivery crashed", event_id)

    def deliver(self, event_id: int) -> str:
        """Try up to `attempts` times (backoff base*2^k, capped); store and return the final status."""
        conn = self._conn()
        event = database.fetch_alert_event(conn, event_id)
        if event is None or event["webhook_status"] != "pending" or not event["webhook_url"]:
            return "skipped"
        body = webhook_body(event)
        attempts = event["webhook_attempts"]
        while attempts < self.attempts and not self._stop.is_set():
            attempts += 1
            try:
                status = post_webhook(event["webhook_url"], body, self.secret, event_id, self.timeout)
                database.set_webhook_status(conn, event_id, "delivered", attempts, None)
                log.info("webhook for event %d delivered (HTTP %d, attempt %d)", event_id, status, attempts)
                return "delivered"
            except Exception as error:  # noqa: BLE001 - every failure is recorded on the event
                detail = f"HTTP {error.code}" if isinstance(error, urllib.error.HTTPError) else repr(error)
                final = attempts >= self.attempts or not _retryable(error)
                database.set_webhook_status(conn, event_id, "failed" if final else "pending", attempts, detail[:500])
                log.warning("webhook for event %d attempt %d failed: %s", event_id, attempts, detail)
                if final:
                    return "failed"
                self._stop.wait(min(WEBHOOK_BACKOFF_CAP_SECONDS, self.backoff_base * 2 ** (attempts - 1)))
        return "pending"


# ---------------------------------------------------------------------------------------------------
# Process
# ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the evaluator until SIGTERM/SIGINT."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    settings = load_settings_or_exit()
    configure_logging(settings.log_level)
    dsn = database.ensure_database(settings)
    database.apply_migrations(dsn)
    webhooks = WebhookSender(dsn, settings.alert_webhook_secret, settings.alert_webhook_timeout_seconds,
                             settings.alert_webhook_attempts)
    evaluator = Evaluator(dsn, webhooks)

    def request_stop(signum: int, _frame) -> None:
        log.info("signal %d: stopping", signum)
        evaluator.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    evaluator.run()
    log.info("alert evaluator stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
