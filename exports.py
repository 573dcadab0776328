"""The dashboard's public URL interface: view parameters (page query string and /export/*.csv) and CSV.

One grammar serves both: `parse_view(args, symbols, strict=False)` turns a query string into a `View`,
falling back to defaults with a notice per bad value (the page), or raising `BadParameter` (HTTP 400,
the /export routes). CSV builders are pure functions of DataFrames, shared by the download buttons and
the Flask routes, so a button and its URL give the same file.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping, Protocol
from urllib.parse import urlencode

import pandas as pd
from flask import Flask, Response

from database import TIMEFRAME_SECONDS

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
REGRESSIONS = {"ols": "OLS", "huber": "Huber", "theil_sen": "Theil–Sen", "rolling_ols": "Rolling OLS",
               "kalman": "Kalman"}
PRICE_MODES = {"log": "Log price", "price": "Price"}
LOOKBACKS = {"5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "4h": 14_400, "12h": 43_200, "1d": 86_400}
MIN_LOOKBACK_SECONDS = 60
MAX_LOOKBACK_SECONDS = 86_400            # "up to one day"
MAX_CHART_BARS = 20_000                  # the page clips lookback so one chart holds at most this many bars
WINDOW_RANGE = (5, 5_000)
ENTRY_RANGE = (0.1, 10.0)
EXIT_RANGE = (-5.0, 5.0)
STOP_RANGE = (0.0, 20.0)                 # 0 = no stop
FEES_RANGE = (0.0, 100.0)
MIN_VOLUME_RANGE = (0.0, 1e12)
MIN_TRADES_RANGE = (0, 1_000_000)
MAX_EXPORT_TICKS = 1_000_000
DEFAULT_EXPORT_SPAN = timedelta(hours=1)
CSV_MIMETYPE = "text/csv"


class BadParameter(ValueError):
    """A query parameter outside what is allowed; the message is the one-line HTTP 400 reason."""


@dataclass(frozen=True)
class View:
    """Everything that defines what the page shows; its fields are the query-string keys."""

    a: str
    b: str
    tf: str = "5s"
    lookback: int = 3600
    window: int = 120
    regression: str = "ols"
    price: str = "log"
    entry: float = 2.0
    exit: float = 0.0
    stop: float = 0.0
    fees: float = 1.0
    minvol: float = 0.0
    mintrades: int = 0

    @property
    def bar_seconds(self) -> int:
        """Seconds per bar of the timeframe."""
        return TIMEFRAME_SECONDS[self.tf]

    def key(self) -> tuple:
        """Hashable identity (cache key part)."""
        return tuple(asdict(self).values())

    def query(self) -> str:
        """'?a=BTCUSDT&b=...' for the page URL and for /export links."""
        return "?" + urlencode(asdict(self))


def default_view(symbols: tuple[str, ...]) -> View:
    """The first two ingested symbols with the default settings."""
    first = symbols[0] if symbols else "BTCUSDT"
    second = symbols[1] if len(symbols) > 1 else first
    return View(a=first, b=second)


def _number(raw: str, kind: type, low: float, high: float, name: str) -> float:
    """int/float from text within [low, high], else BadParameter."""
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise BadParameter(f"{name}={raw!r}: must be a number from {low} to {high}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise BadParameter(f"{name}={raw!r}: must be a number from {low} to {high}")
    return value


def parse_symbol(raw: str | None, symbols: tuple[str, ...], name: str) -> str:
    """An upper-case symbol matching SYMBOL_RE and among the ingested symbols."""
    value = (raw or "").strip().upper()
    if not SYMBOL_RE.match(value):
        raise BadParameter(f"{name}={raw!r}: must be a symbol like BTCUSDT (A-Z, 0-9, 2-20 chars)")
    if value not in symbols:
        raise BadParameter(f"{name}={value}: not an ingested symbol (ingested: {', '.join(symbols)})")
    return value


def parse_tf(raw: str | None) -> str:
    """A timeframe label from TIMEFRAME_SECONDS."""
    if raw not in TIMEFRAME_SECONDS:
        raise BadParameter(f"tf={raw!r}: must be one of {', '.join(TIMEFRAME_SECONDS)}")
    return raw


def parse_lookback(raw: str) -> int:
    """'1h' (a LOOKBACKS label) or whole seconds from 60 to 86400."""
    if raw in LOOKBACKS:
        return LOOKBACKS[raw]
    return int(_number(raw, int, MIN_LOOKBACK_SECONDS, MAX_LOOKBACK_SECONDS, "lookback"))


def parse_time(raw: str, name: str) -> datetime:
    """ISO-8601 time (naive means UTC)."""
    text = re.sub(r" (\d\d:?\d\d)$", r"+\1", str(raw).strip())  # an unencoded '+' arrives as a space
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        raise BadParameter(f"{name}={raw!r}: must be an ISO-8601 time like 2024-01-01T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _choice(raw: str, allowed: Mapping[str, str], name: str) -> str:
    if raw not in allowed:
        raise BadParameter(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
    return raw


# query key -> parser of its text (symbols are handled separately: they need the ingested list)
_FIELD_PARSERS: dict[str, Callable[[str], object]] = {
    "tf": parse_tf,
    "lookback": parse_lookback,
    "window": lambda r: int(_number(r, int, *WINDOW_RANGE, "window")),
    "regression": lambda r: _choice(r, REGRESSIONS, "regression"),
    "price": lambda r: _choice(r, PRICE_MODES, "price"),
    "entry": lambda r: _number(r, float, *ENTRY_RANGE, "entry"),
    "exit": lambda r: _number(r, float, *EXIT_RANGE, "exit"),
    "stop": lambda r: _number(r, float, *STOP_RANGE, "stop"),
    "fees": lambda r: _number(r, float, *FEES_RANGE, "fees"),
    "minvol": lambda r: _number(r, float, *MIN_VOLUME_RANGE, "minvol"),
    "mintrades": lambda r: int(_number(r, int, *MIN_TRADES_RANGE, "mintrades")),
}


def parse_view(args: Mapping[str, str], symbols: tuple[str, ...], strict: bool = False,
               max_bars: int | None = MAX_CHART_BARS) -> tuple[View, list[str]]:
    """Query args -> (View, notices). strict: raise BadParameter; else each bad value -> default + notice."""
    view = default_view(symbols)
    notices: list[str] = []
    values: dict[str, object] = {}

    def fail(error: BadParameter) -> None:
        if strict:
            raise error
        notices.append(f"{error} (using the default)")

    for name in ("a", "b"):
        if args.get(name) is not None or strict:
            try:
                values[name] = parse_symbol(args.get(name), symbols, name)
            except BadParameter as error:
                fail(error)
    for name, parse in _FIELD_PARSERS.items():
        raw = args.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[name] = parse(str(raw))
        except BadParameter as error:
            fail(error)
    view = replace(view, **values)
    if view.a == view.b:
        other = next((s for s in symbols if s != view.a), view.b)
        fail(BadParameter(f"a and b are both {view.a}: pick two different symbols"))
        view = replace(view, b=other)
    if view.exit >= view.entry:
        fail(BadParameter(f"exit={view.exit} must be below entry={view.entry}"))
        view = replace(view, entry=View.entry, exit=View.exit)
    if view.stop and view.stop <= view.entry:
        fail(BadParameter(f"stop={view.stop} must be above entry={view.entry} (or 0 for none)"))
        view = replace(view, stop=0.0)
    if max_bars:  # the page: lookback snaps to a menu value and a chart holds at most max_bars bars
        allowed = [s for s in LOOKBACKS.values() if s // view.bar_seconds <= max_bars] or [min(LOOKBACKS.values())]
        snapped = max([s for s in allowed if s <= view.lookback] or [min(allowed)])
        if snapped != view.lookback:
            notices.append(f"lookback {view.lookback}s at {view.tf} shown as {snapped}s "
                           f"(menu values, at most {max_bars} bars per chart)")
            view = replace(view, lookback=snapped)
    return view, notices


def view_fields() -> tuple[str, ...]:
    """The View field names (= query keys = control ids)."""
    return tuple(f.name for f in fields(View))


# ---------------------------------------------------------------------------------------------------
# CSV builders
# ---------------------------------------------------------------------------------------------------
def frame_csv(frame: pd.DataFrame, index: bool = True) -> str:
    """CSV text with ISO-8601 UTC times."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=index, date_format="%Y-%m-%dT%H:%M:%S.%fZ", float_format="%.10g")
    return buffer.getvalue()


def stats_frame(price_stats: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """analytics price_stats {'BTCUSDT_60s': frame} -> one long table with symbol and interval columns."""
    parts = []
    for key, frame in price_stats.items():
        symbol, _, interval = key.rpartition("_")
        part = frame.reset_index()
        part.insert(0, "interval_s", int(interval.rstrip("s")))
        part.insert(0, "symbol", symbol)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["symbol", "interval_s", "ts"])
    return pd.concat(parts, ignore_index=True)


PAIR_SERIES_COLUMNS = ("price_a", "price_b", "beta", "alpha", "spread", "zscore", "rolling_corr")


def pair_frame(series: pd.DataFrame) -> pd.DataFrame:
    """The pair series export: prices, beta, spread, z, rolling correlation per aligned bar."""
    return series.loc[:, [c for c in PAIR_SERIES_COLUMNS if c in series.columns]]


ALERT_COLUMNS = ("ts", "rule_id", "rule", "symbol", "value", "message")


def empty_alerts_frame() -> pd.DataFrame:
    """Header-only alerts table (until alerts.py is wired)."""
    return pd.DataFrame(columns=list(ALERT_COLUMNS))


# ---------------------------------------------------------------------------------------------------
# Flask routes
# ---------------------------------------------------------------------------------------------------
class ExportSource(Protocol):
    """What the routes need from the app's data layer."""

    def symbols(self) -> tuple[str, ...]: ...
    def latest_time(self, symbols: tuple[str, ...]) -> datetime | None: ...
    def bars(self, symbol: str, tf: str, start: datetime, end: datetime) -> pd.DataFrame: ...
    def ticks(self, symbol: str, start: datetime, end: datetime, limit: int) -> pd.DataFrame: ...
    def pair(self, view: View): ...
    def alerts(self) -> pd.DataFrame: ...


def _csv_response(text: str, name: str) -> Response:
    return Response(text, mimetype=CSV_MIMETYPE, headers={"Content-Disposition": f"attachment; filename={name}"})


def _bad(error: BadParameter) -> Response:
    return Response(str(error).splitlines()[0] + "\n", status=400, mimetype="text/plain")


def time_range(args: Mapping[str, str], source: ExportSource, symbols: tuple[str, ...]) -> tuple[datetime, datetime]:
    """start/end from the query (ISO-8601), defaulting to the hour up to the newest bar."""
    latest = source.latest_time(symbols) or datetime.now(timezone.utc)
    end = parse_time(args["end"], "end") if args.get("end") else latest + timedelta(seconds=1)
    start = parse_time(args["start"], "start") if args.get("start") else end - DEFAULT_EXPORT_SPAN
    if start >= end:
        raise BadParameter(f"start={start.isoformat()} must be before end={end.isoformat()}")
    if end - start > timedelta(seconds=MAX_LOOKBACK_SECONDS):
        raise BadParameter(f"start..end spans more than {MAX_LOOKBACK_SECONDS} s")
    return start, end


def register_routes(server: Flask, source: ExportSource) -> None:
    """GET /export/{bars,pair,stats,backtest,alerts,ticks}.csv on the Dash Flask server."""
    from flask import request

    def args() -> dict[str, str]:
        return {k: v for k, v in request.args.items()}

    def pair_view() -> View:
        view, _ = parse_view(args(), source.symbols(), strict=True, max_bars=None)
        return view

    @server.get("/export/bars.csv")
    def export_bars() -> Response:
        try:
            query = args()
            symbol = parse_symbol(query.get("symbol"), source.symbols(), "symbol")
            tf = parse_tf(query.get("tf", "1m"))
            start, end = time_range(query, source, (symbol,))
        except BadParameter as error:
            return _bad(error)
        return _csv_response(frame_csv(source.bars(symbol, tf, start, end)), f"bars_{symbol}_{tf}.csv")

    @server.get("/export/ticks.csv")
    def export_ticks() -> Response:
        try:
            query = args()
            symbol = parse_symbol(query.get("symbol"), source.symbols(), "symbol")
            start, end = time_range(query, source, (symbol,))
            limit = int(_number(query.get("limit", str(MAX_EXPORT_TICKS)), int, 1, MAX_EXPORT_TICKS, "limit"))
        except BadParameter as error:
            return _bad(error)
        return _csv_response(frame_csv(source.ticks(symbol, start, end, limit), index=False), f"ticks_{symbol}.csv")

    def pair_route(name: str, build: Callable[[object], pd.DataFrame], index: bool) -> Callable[[], Response]:
        def handler() -> Response:
            try:
                view = pair_view()
            except BadParameter as error:
                return _bad(error)
            return _csv_response(frame_csv(build(source.pair(view)), index=index), f"{name}_{view.a}_{view.b}.csv")

        handler.__name__ = f"export_{name}"
        return handler

    server.add_url_rule("/export/pair.csv", view_func=pair_route("pair", lambda p: pair_frame(p.series), True))
    server.add_url_rule("/export/stats.csv", view_func=pair_route("stats", lambda p: stats_frame(p.price_stats), False))
    server.add_url_rule("/export/backtest.csv", view_func=pair_route("backtest", trades_frame, False))

    @server.get("/export/alerts.csv")
    def export_alerts() -> Response:
        return _csv_response(frame_csv(source.alerts(), index=False), "alerts.csv")


TRADE_COLUMNS = ("signal_time", "entry_time", "exit_signal_time", "exit_time", "side", "qty_a", "qty_b",
                 "entry_z", "exit_z", "entry_price_a", "entry_price_b", "exit_price_a", "exit_price_b",
                 "fees", "pnl", "return", "stopped", "open")


def trades_frame(pair) -> pd.DataFrame:
    """Backtest trades of a PairAnalytics (header only while the backtest is not ready)."""
    if pair.backtest is None:
        return pd.DataFrame(columns=list(TRADE_COLUMNS))
    return pair.backtest.trades
