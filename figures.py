"""Plotly figure builders for the dashboard (pure: DataFrames in, figure dicts out).

Each chart is a cached *skeleton* (layout + styled empty traces, built once with plotly's validators)
plus *arrays* (one dict per trace: x, y, open, ...). The trace list never depends on the data, so
  - a view change sends `fill(skeleton, arrays)` (a whole figure), and
  - a bar close sends `patch(arrays)`: a dash.Patch that REPLACES each trace's arrays by index and never
    touches the layout, so zoom, pan, hover and legend toggles survive live updates.
Arrays travel as plotly typed arrays ({'dtype': 'f8', 'bdata': base64}); times as epoch milliseconds on
date axes. This keeps payloads about half the size of JSON number lists and skips plotly validation.
"""
from __future__ import annotations

import base64
import copy
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import Patch
from plotly.subplots import make_subplots

# Colours (TradingView-like dark palette)
BG = "#131722"
PANEL = "#1a1e2b"
GRID = "#2a2e39"
TEXT = "#d1d4dc"
MUTED = "#787b86"
UP = "#26a69a"
DOWN = "#ef5350"
ACCENT = "#2962ff"
SERIES_A = "#f7a21b"
SERIES_B = "#42a5f5"
BAND = "rgba(120,150,255,0.55)"
SUPPORT = "rgba(38,166,154,0.8)"
RESISTANCE = "rgba(239,83,80,0.8)"
FONT_SIZE = 11
MARGIN = dict(l=52, r=10, t=22, b=22)
UIREVISION = "keep"                       # constant: plotly keeps user zoom across full-figure updates too
VOLUME_ROW_SHARE = 0.22
PAIR_ROW_HEIGHTS = (0.28, 0.26, 0.26, 0.20)
MARKER_SIZE = 9
NORMALISED_BASE = 100.0
NS_PER_MS = 1_000_000
GL_MIN_POINTS = 5_000                     # above this many points per series: Scattergl (WebGL)

Figure = dict[str, Any]
Arrays = list[dict[str, Any]]             # per trace index: {"x": ..., "y": ...}


# ---------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------
def typed(values: Any) -> dict[str, str]:
    """Float64 typed array for plotly.js (NaN = gap)."""
    array = np.ascontiguousarray(np.asarray(values, dtype="<f8"))
    return {"dtype": "f8", "bdata": base64.b64encode(array.tobytes()).decode("ascii")}


def times(index: pd.Index | pd.Series) -> dict[str, str]:
    """Datetimes -> epoch milliseconds typed array (date axes read numbers as ms)."""
    stamps = pd.DatetimeIndex(index)
    if len(stamps) == 0:
        return typed([])
    if stamps.tz is None:
        stamps = stamps.tz_localize("UTC")
    return typed(stamps.as_unit("ns").asi8 / NS_PER_MS)


def _column(frame: pd.DataFrame | None, name: str) -> np.ndarray:
    """A float column, or an empty array."""
    if frame is None or frame.empty or name not in frame:
        return np.array([], dtype=float)
    return frame[name].to_numpy(dtype=float)


# ---------------------------------------------------------------------------------------------------
# Skeleton helpers
# ---------------------------------------------------------------------------------------------------
def _style(fig: go.Figure, **layout: Any) -> Figure:
    """Dark theme, crosshair spikes, constant uirevision, then `layout` overrides; returns the JSON dict."""
    fig.update_layout(
        template="plotly_dark", paper_bgcolor=BG, plot_bgcolor=BG, font=dict(color=TEXT, size=FONT_SIZE),
        margin=MARGIN, uirevision=UIREVISION, hovermode="x", autosize=True,
        legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom", bgcolor="rgba(0,0,0,0)", font=dict(size=10)),
        hoverlabel=dict(bgcolor=PANEL, font_size=FONT_SIZE), dragmode="zoom", hoverdistance=-1, spikedistance=-1,
    )
    spikes = dict(showspikes=True, spikemode="across", spikesnap="cursor", spikethickness=1,
                  spikedash="dot", spikecolor=MUTED, gridcolor=GRID, zerolinecolor=GRID)
    fig.update_xaxes(**spikes)
    fig.update_yaxes(**spikes)
    fig.update_layout(**layout)
    return fig.to_plotly_json()


def fill(skeleton: Figure, arrays: Arrays, shapes: list[dict] | None = None) -> Figure:
    """A whole figure: a copy of the skeleton with each trace's arrays (and optional extra shapes)."""
    fig = {"data": [dict(trace, **arr) for trace, arr in zip(skeleton["data"], arrays)],
           "layout": copy.deepcopy(skeleton["layout"])}
    if shapes:
        fig["layout"]["shapes"] = list(fig["layout"].get("shapes", [])) + shapes
    return fig


def patch(arrays: Arrays, shapes: list[dict] | None = None) -> Patch:
    """A Patch replacing trace arrays by index (and the shapes, when given); layout/zoom untouched."""
    out = Patch()
    for i, arr in enumerate(arrays):
        for key, value in arr.items():
            out["data"][i][key] = value
    if shapes is not None:
        out["layout"]["shapes"] = shapes
    return out


# ---------------------------------------------------------------------------------------------------
# Candles + volume, one symbol (traces: 0 candles, 1 up volume, 2 down volume)
# ---------------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def candles_skeleton(symbol: str) -> Figure:
    """Candlestick over a volume pane, shared x axis."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.02,
                        row_heights=[1 - VOLUME_ROW_SHARE, VOLUME_ROW_SHARE])
    fig.add_trace(go.Candlestick(x=[], open=[], high=[], low=[], close=[], name=symbol,
                                 increasing=dict(line=dict(color=UP, width=1), fillcolor=UP),
                                 decreasing=dict(line=dict(color=DOWN, width=1), fillcolor=DOWN)), row=1, col=1)
    fig.add_trace(go.Bar(x=[], y=[], name="volume up", marker_color=UP, opacity=0.6), row=2, col=1)
    fig.add_trace(go.Bar(x=[], y=[], name="volume down", marker_color=DOWN, opacity=0.6), row=2, col=1)
    fig.update_xaxes(type="date", rangeslider_visible=False)
    fig.update_yaxes(side="right", row=1, col=1)
    return _style(fig, bargap=0.1, showlegend=False)


def candles_arrays(bars: pd.DataFrame) -> Arrays:
    """Arrays of the candles skeleton."""
    opens, closes = _column(bars, "open"), _column(bars, "close")
    up = closes >= opens
    volume = _column(bars, "volume")
    x = bars.index if len(bars) else pd.DatetimeIndex([])
    return [{"x": times(x), "open": typed(opens), "high": typed(_column(bars, "high")),
             "low": typed(_column(bars, "low")), "close": typed(closes)},
            {"x": times(x[up]), "y": typed(volume[up])},
            {"x": times(x[~up]), "y": typed(volume[~up])}]


def level_shapes(levels: pd.DataFrame | None) -> list[dict]:
    """Support/resistance levels as full-width dashed lines on the price pane."""
    if levels is None or levels.empty:
        return []
    return [dict(type="line", xref="x domain", x0=0, x1=1, yref="y", y0=float(lvl), y1=float(lvl),
                 line=dict(width=1, dash="dash", color=SUPPORT if kind == "support" else RESISTANCE))
            for lvl, kind in zip(levels["level"], levels["kind"])]


def candles_figure(symbol: str, bars: pd.DataFrame, levels: pd.DataFrame | None = None) -> Figure:
    """Whole candles figure with S/R lines."""
    return fill(candles_skeleton(symbol), candles_arrays(bars), level_shapes(levels))


# ---------------------------------------------------------------------------------------------------
# Pair panes (traces: 0-1 normalised A/B, 2 spread, 3-5 band upper/lower/mean, 6 z, 7 long entries,
# 8 short entries, 9 exits, 10 rolling correlation)
# ---------------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def pair_skeleton(symbol_a: str, symbol_b: str, entry_z: float, exit_z: float, stop_z: float,
                  webgl: bool = False) -> Figure:
    """Four stacked panes sharing the x axis; entry/exit/stop lines on the z pane; WebGL for long series."""
    Scatter = go.Scattergl if webgl else go.Scatter  # noqa: N806 (a trace class)
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.025,
                        row_heights=list(PAIR_ROW_HEIGHTS))
    line = lambda color, width=1.2, dash=None: dict(color=color, width=width, dash=dash)  # noqa: E731
    fig.add_trace(Scatter(x=[], y=[], name=f"{symbol_a} (=100)", line=line(SERIES_A)), row=1, col=1)
    fig.add_trace(Scatter(x=[], y=[], name=f"{symbol_b} (=100)", line=line(SERIES_B)), row=1, col=1)
    fig.add_trace(Scatter(x=[], y=[], name="spread", line=line(TEXT, 1)), row=2, col=1)
    fig.add_trace(Scatter(x=[], y=[], name=f"±{entry_z:g}σ band", line=line(BAND, 1)), row=2, col=1)
    fig.add_trace(Scatter(x=[], y=[], name="band low", line=line(BAND, 1), showlegend=False), row=2, col=1)
    fig.add_trace(Scatter(x=[], y=[], name="mean", line=line(MUTED, 1, "dot")), row=2, col=1)
    fig.add_trace(Scatter(x=[], y=[], name="z", line=line(ACCENT)), row=3, col=1)
    for name, symbol, color in (("long entry", "triangle-up", UP), ("short entry", "triangle-down", DOWN),
                                ("exit", "x", TEXT)):
        fig.add_trace(Scatter(x=[], y=[], name=name, mode="markers",
                                   marker=dict(symbol=symbol, size=MARKER_SIZE, color=color,
                                               line=dict(width=1, color=BG))), row=3, col=1)
    fig.add_trace(Scatter(x=[], y=[], name="rolling corr", line=line(SERIES_B, 1)), row=4, col=1)
    levels = [(entry_z, DOWN, "dash"), (-entry_z, UP, "dash"), (exit_z, MUTED, "dot")]
    if stop_z:
        levels += [(stop_z, DOWN, "solid"), (-stop_z, UP, "solid")]
    fig.update_layout(shapes=[dict(type="line", xref="x3 domain", x0=0, x1=1, yref="y3", y0=lvl, y1=lvl,
                                   line=dict(color=color, width=1, dash=dash)) for lvl, color, dash in levels])
    for row, title in enumerate(("norm.", "spread", "z", "corr"), start=1):
        fig.update_yaxes(title_text=title, title_standoff=2, side="right", row=row, col=1)
    fig.update_xaxes(type="date")
    fig.update_yaxes(range=[-1.05, 1.05], row=4, col=1)
    return _style(fig, showlegend=True)


def pair_arrays(series: pd.DataFrame, window: int, entry_z: float, trades: pd.DataFrame | None) -> Arrays:
    """Arrays of the pair skeleton; the band is the causal rolling mean ± entry_z·std of the spread."""
    x = times(series.index) if len(series) else typed([])
    out: Arrays = []
    for column in ("price_a", "price_b"):
        prices = _column(series, column)
        finite = prices[np.isfinite(prices)]
        base = finite[0] if len(finite) else np.nan
        out.append({"x": x, "y": typed(prices / base * NORMALISED_BASE)})
    spread = pd.Series(_column(series, "spread"))
    rolling = spread.rolling(window, min_periods=window)
    mean, std = rolling.mean(), rolling.std()
    for values in (spread, mean + entry_z * std, mean - entry_z * std, mean):
        out.append({"x": x, "y": typed(values)})
    out.append({"x": x, "y": typed(_column(series, "zscore"))})
    out.extend(trade_arrays(trades))
    out.append({"x": x, "y": typed(_column(series, "rolling_corr"))})
    return out


def trade_arrays(trades: pd.DataFrame | None) -> Arrays:
    """Backtest markers: long entries, short entries (at entry fill, entry z), exits (at exit fill, exit z)."""
    if trades is None or trades.empty:
        return [{"x": typed([]), "y": typed([])} for _ in range(3)]
    out = []
    for side in ("long", "short"):
        rows = trades[trades["side"] == side]
        out.append({"x": times(rows["entry_time"]), "y": typed(rows["entry_z"])})
    closed = trades[trades["exit_time"].notna()]
    out.append({"x": times(closed["exit_time"]), "y": typed(closed["exit_z"])})
    return out


def pair_figure(series: pd.DataFrame, window: int, entry_z: float, exit_z: float, stop_z: float,
                trades: pd.DataFrame | None, symbol_a: str, symbol_b: str) -> Figure:
    """Whole pair figure."""
    return fill(pair_skeleton(symbol_a, symbol_b, float(entry_z), float(exit_z), float(stop_z or 0),
                              len(series) > GL_MIN_POINTS), pair_arrays(series, window, entry_z, trades))


# ---------------------------------------------------------------------------------------------------
# Small panels
# ---------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def heatmap_skeleton() -> Figure:
    """Correlation heatmap, -1..1 diverging."""
    fig = go.Figure(go.Heatmap(z=[], x=[], y=[], zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                               texttemplate="%{z:.2f}", colorbar=dict(thickness=8)))
    fig = go.Figure(_style(fig, hovermode="closest", showlegend=False))
    fig.update_xaxes(showspikes=False)
    fig.update_yaxes(showspikes=False, autorange="reversed")
    return fig.to_plotly_json()


def heatmap_arrays(corr: pd.DataFrame | None) -> Arrays:
    """z/x/y of the heatmap (plain lists: small)."""
    if corr is None or corr.empty:
        return [{"z": [], "x": [], "y": []}]
    values = [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in corr.to_numpy()]
    return [{"z": values, "x": list(map(str, corr.columns)), "y": list(map(str, corr.index))}]


def heatmap_figure(corr: pd.DataFrame | None) -> Figure:
    """Whole heatmap figure."""
    return fill(heatmap_skeleton(), heatmap_arrays(corr))


@lru_cache(maxsize=1)
def lead_lag_skeleton() -> Figure:
    """Cross-correlation by lag."""
    fig = go.Figure(go.Bar(x=[], y=[], marker_color=ACCENT, name="corr"))
    fig.update_xaxes(title_text="lag (bars; > 0: A leads B)", title_standoff=2)
    return _style(fig, showlegend=False, hovermode="closest")


def lead_lag_arrays(lead_lag: pd.DataFrame | None) -> Arrays:
    """x = lag, y = correlation."""
    return [{"x": typed(_column(lead_lag, "lag")), "y": typed(_column(lead_lag, "corr"))}]


def lead_lag_figure(lead_lag: pd.DataFrame | None) -> Figure:
    """Whole lead-lag figure."""
    return fill(lead_lag_skeleton(), lead_lag_arrays(lead_lag))


@lru_cache(maxsize=2)
def equity_skeleton(webgl: bool = False) -> Figure:
    """Backtest equity (quote currency, after fees)."""
    fig = go.Figure((go.Scattergl if webgl else go.Scatter)(x=[], y=[], name="equity", line=dict(color=UP, width=1.2)))
    fig.update_xaxes(type="date")
    fig.update_yaxes(side="right")
    return _style(fig, showlegend=False)


def equity_arrays(equity: pd.DataFrame | None) -> Arrays:
    """x = time, y = equity."""
    x = times(equity.index) if equity is not None and len(equity) else typed([])
    return [{"x": x, "y": typed(_column(equity, "equity"))}]


def equity_figure(equity: pd.DataFrame | None) -> Figure:
    """Whole equity figure."""
    return fill(equity_skeleton(equity is not None and len(equity) > GL_MIN_POINTS), equity_arrays(equity))
