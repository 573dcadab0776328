"""Pair-trading analytics: pure functions, arrays/DataFrames in, results out.

No SQL, no Dash, no IO.  Input bars follow the SQL layer's convention: one DataFrame per symbol,
index = tz-aware UTC ``DatetimeIndex`` named ``ts`` (bucket start), columns ``open, high, low, close,
volume, quote_volume, vwap, trade_count, taker_buy_volume``.  A missing bar is an absent row.

Causality: every series used for a signal, an alert or the backtest (hedge ratio, spread, z-score)
at bar t is computed from bars <= t only.  Whole-sample ("static") fits are labelled in-sample.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Mapping

import numpy as np
import pandas as pd
from statsmodels.tsa.adfvalues import mackinnoncrit, mackinnonp

# ----------------------------------------------------------------------------------------------
# Settings (named defaults; no magic numbers scattered through the code)
# ----------------------------------------------------------------------------------------------
DEFAULT_WINDOW = 60                     # rolling window W (bars) for rolling OLS / z-score / corr
DEFAULT_ENTRY_Z = 2.0
DEFAULT_EXIT_Z = 0.0
DEFAULT_FEE_BPS = 1.0                   # fee per leg per fill, basis points of traded notional
DEFAULT_MAX_STALE_BARS = 5              # as-of alignment: max age of a carried-forward close
BPS = 1e-4
SECONDS_PER_YEAR = 365 * 86_400         # crypto trades 24/7: Sharpe annualised on calendar time
HUBER_T = 1.345                         # statsmodels HuberT default tuning constant
HUBER_MAXITER = 50                      # statsmodels RLM.fit defaults
HUBER_TOL = 1e-8
MAD_NORMAL_CONST = 0.6744897501960817   # scipy.stats.norm.ppf(0.75), statsmodels mad() default
THEIL_SEN_EXACT_MAX = 1000              # above this many points Theil-Sen uses a deterministic subsample
KALMAN_DELTA = 1e-4                     # random-walk state noise: Q = delta/(1-delta) * n0 * P0
KALMAN_WARMUP_MIN = 10                  # min bars in the OLS warm-up that initialises the filter
HURST_MAX_LAG = 100                     # Hurst: lags 2..HURST_MAX_LAG of the lagged-difference std
LEAD_LAG_MAX = 10                       # lead-lag cross-correlation lags -k..k
PIVOT_HALF_WIDTH = 5                    # swing pivot: extreme of the 2k+1 bars centred on it
LEVEL_CLUSTER_TOL = 0.001               # pivots within 0.1 % of each other merge into one level
MAX_LEVELS = 6                          # S/R levels kept per symbol (strongest first)
VOLUME_PROFILE_BINS = 50
VOLUME_PROFILE_TOP = 3
STATS_INTERVALS = (60, 300, 900, 3600)  # seconds; intervals < bar_seconds are skipped
EXPANDING_REFIT_MIN_STEP = 60           # causal static-estimator refit schedule (see causal_hedge_path)
EXPANDING_REFIT_GROWTH = 4              # refit when the sample has grown by 1/GROWTH since the last one
CAUSAL_HUBER_MAXITER = 5               # expanding Huber refits: warm-started, capped iterations
CAUSAL_HUBER_RTOL = 1e-8                # ... and deviance tolerance relative to sample size
CAUSAL_THEIL_SEN_MAX = 400              # expanding Theil-Sen refits: deterministic subsample cap
_SLIDING_CHUNK_ELEMS = 4_000_000        # memory bound for exact sliding-window moments

# Minimum aligned bars per analytic (readiness gates)
MIN_BARS_REGRESSION = 30
MIN_BARS_ADF = 100
MIN_BARS_HALF_LIFE = 30
MIN_BARS_HURST = 100
MIN_BARS_CORRELATION = 30

Regression = Literal["ols", "huber", "theil_sen", "rolling_ols", "kalman"]
STATIC_REGRESSIONS = ("ols", "huber", "theil_sen")
CAUSAL_REGRESSIONS = ("rolling_ols", "kalman")

BAR_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "trade_count",
               "taker_buy_volume")


# ----------------------------------------------------------------------------------------------
# Result containers
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Readiness:
    """Whether an analytic has enough aligned bars: ready = have >= need."""
    ready: bool
    have: int
    need: int

    @classmethod
    def of(cls, have: int, need: int) -> "Readiness":
        """Readiness(ready = have >= need)."""
        return cls(bool(have >= need), int(have), int(need))

    def message(self) -> str:
        """Human text for the UI: 'ready' or 'collecting data: n / N bars'."""
        return "ready" if self.ready else f"collecting data: {self.have} / {self.need} bars"


@dataclass(frozen=True)
class HedgeFit:
    """y = alpha + beta * x fitted on the whole sample (in-sample, NOT causal)."""
    method: str
    beta: float
    alpha: float
    nobs: int
    in_sample: bool = True


@dataclass(frozen=True)
class ADFResult:
    """Augmented Dickey-Fuller test (same numbers as statsmodels adfuller)."""
    statistic: float
    pvalue: float
    usedlag: int
    nobs: int
    critical_values: dict[str, float]
    icbest: float | None
    regression: str = "c"


@dataclass(frozen=True)
class CointResult:
    """Engle-Granger test of y on x (same numbers as statsmodels coint)."""
    statistic: float
    pvalue: float
    critical_values: dict[str, float]
    usedlag: int | None = None


@dataclass
class BacktestResult:
    """Mean-reversion backtest output; pnl in quote currency, returns relative to entry notional."""
    trades: pd.DataFrame
    equity: pd.DataFrame           # columns: position, pnl, equity, ret, cum_ret
    total_pnl: float
    total_return: float
    sharpe: float
    max_drawdown: float
    win_rate: float
    n_trades: int


@dataclass(frozen=True)
class LatestSignal:
    """Light result for the 1-second ticker/alerts (last bar only, causal)."""
    ts: pd.Timestamp | None
    beta: float
    alpha: float
    spread: float
    zscore: float
    readiness: Readiness


@dataclass
class PairParams:
    """Settings for full_pair_analytics (all analytics take their defaults from here)."""
    bar_seconds: int = 1
    window: int = DEFAULT_WINDOW
    regression: Regression = "rolling_ols"
    use_log_prices: bool = True
    entry_z: float = DEFAULT_ENTRY_Z
    exit_z: float = DEFAULT_EXIT_Z
    stop_z: float | None = None
    fee_bps: float = DEFAULT_FEE_BPS
    min_volume: float = 0.0
    min_trades: int = 0
    max_stale_bars: int = DEFAULT_MAX_STALE_BARS
    adf_regression: Literal["c", "ct", "ctt", "n"] = "c"
    kalman_delta: float = KALMAN_DELTA
    kalman_obs_var: float | None = None      # None: residual variance of the OLS warm-up
    lead_lag_max: int = LEAD_LAG_MAX
    stats_intervals: tuple[int, ...] = STATS_INTERVALS
    symbol_a: str = "A"
    symbol_b: str = "B"


@dataclass
class PairAnalytics:
    """Everything for one pair; y = A (dependent), x = B. See to_dict()/to_frames() for export."""
    params: PairParams
    n_bars_a: int
    n_bars_b: int
    n_aligned: int
    series: pd.DataFrame                  # per aligned bar: price_a, price_b, y, x, beta, alpha,
    #                                       spread, zscore, ret_a, ret_b, rolling_corr (all causal)
    static_fit: HedgeFit | None           # in-sample fit of params.regression (OLS for causal types)
    static_spread: pd.Series | None       # in-sample spread y - beta*x - alpha (labelled in-sample)
    adf: ADFResult | None                 # ADF on the in-sample static spread
    coint_ab: CointResult | None          # Engle-Granger: A on B
    coint_ba: CointResult | None          # Engle-Granger: B on A
    half_life: float | None               # bars; None when not mean reverting
    hurst: float | None
    correlation: float | None             # Pearson correlation of log returns, whole sample
    corr_matrix: pd.DataFrame | None
    lead_lag: pd.DataFrame | None
    price_stats: dict[str, pd.DataFrame]  # keys f"{symbol}_{interval}s"
    levels: dict[str, pd.DataFrame]
    backtest: BacktestResult | None
    latest: LatestSignal
    readiness: dict[str, Readiness]

    def to_dict(self) -> dict:
        """Plain JSON-friendly scalars/dicts (no DataFrames) for the API/UI."""
        def _f(v):
            if v is None:
                return None
            if isinstance(v, (float, np.floating)):
                return None if not np.isfinite(v) else float(v)
            return v
        bt = self.backtest
        return {
            "params": asdict(self.params),
            "n_bars_a": self.n_bars_a, "n_bars_b": self.n_bars_b, "n_aligned": self.n_aligned,
            "static_fit": asdict(self.static_fit) if self.static_fit else None,
            "adf": asdict(self.adf) if self.adf else None,
            "coint_ab": asdict(self.coint_ab) if self.coint_ab else None,
            "coint_ba": asdict(self.coint_ba) if self.coint_ba else None,
            "half_life": _f(self.half_life), "hurst": _f(self.hurst),
            "correlation": _f(self.correlation),
            "backtest": None if bt is None else {
                "total_pnl": _f(bt.total_pnl), "total_return": _f(bt.total_return),
                "sharpe": _f(bt.sharpe), "max_drawdown": _f(bt.max_drawdown),
                "win_rate": _f(bt.win_rate), "n_trades": bt.n_trades},
            "latest": {**asdict(self.latest), "ts": None if self.latest.ts is None
                       else self.latest.ts.isoformat(),
                       "readiness": asdict(self.latest.readiness)},
            "readiness": {k: {**asdict(v), "message": v.message()} for k, v in self.readiness.items()},
        }

    def to_frames(self) -> dict[str, pd.DataFrame]:
        """DataFrames for CSV export (series, trades, equity, stats, levels, lead-lag, corr)."""
        out: dict[str, pd.DataFrame] = {"series": self.series}
        if self.static_spread is not None:
            out["static_spread_in_sample"] = self.static_spread.to_frame("spread_in_sample")
        if self.backtest is not None:
            out["trades"] = self.backtest.trades
            out["equity"] = self.backtest.equity
        if self.lead_lag is not None:
            out["lead_lag"] = self.lead_lag
        if self.corr_matrix is not None:
            out["corr_matrix"] = self.corr_matrix
        for k, v in self.price_stats.items():
            out[f"stats_{k}"] = v
        for k, v in self.levels.items():
            out[f"levels_{k}"] = v
        return out


# ----------------------------------------------------------------------------------------------
# Data preparation
# ----------------------------------------------------------------------------------------------
def filter_liquidity(bars: pd.DataFrame, min_volume: float = 0.0, min_trades: int = 0) -> pd.DataFrame:
    """Keep bars with volume >= min_volume and trade_count >= min_trades (others become missing)."""
    keep = np.ones(len(bars), dtype=bool)
    if min_volume > 0:
        keep &= bars["volume"].to_numpy(dtype=float) >= min_volume
    if min_trades > 0:
        keep &= bars["trade_count"].to_numpy() >= min_trades
    return bars[keep]


def _ts_ns(index: pd.Index) -> np.ndarray:
    """DatetimeIndex -> int64 nanoseconds since epoch (UTC)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is None:
        idx = idx.tz_localize("UTC")
    return idx.tz_convert("UTC").as_unit("ns").asi8


def _asof(values: np.ndarray, src_ns: np.ndarray, grid_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Last value at or before each grid time and its age in ns (NaN/inf before the first point)."""
    pos = np.searchsorted(src_ns, grid_ns, side="right") - 1
    ok = pos >= 0
    out = np.full(len(grid_ns), np.nan)
    age = np.full(len(grid_ns), np.inf)
    out[ok] = values[pos[ok]]
    age[ok] = (grid_ns[ok] - src_ns[pos[ok]]).astype(float)
    return out, age


def _ns_index(ns: np.ndarray) -> pd.DatetimeIndex:
    """int64 ns since epoch -> tz-aware UTC DatetimeIndex named ts."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), name="ts").tz_localize("UTC")


def _clean_series(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, de-duplicated (last wins), NaN-free (ns, values) of a series."""
    s = s.dropna()
    ns = _ts_ns(s.index)
    v = s.to_numpy(dtype=float)
    if len(ns) > 1 and not np.all(ns[1:] > ns[:-1]):
        order = np.argsort(ns, kind="stable")
        ns, v = ns[order], v[order]
        last = np.r_[ns[1:] != ns[:-1], True]
        ns, v = ns[last], v[last]
    return ns, v


def align_many(closes: Mapping[str, pd.Series], bar_seconds: int,
               max_stale_bars: int = DEFAULT_MAX_STALE_BARS) -> pd.DataFrame:
    """As-of align N series on the union grid floor(ts/bar)*bar; keep rows where every age <= limit."""
    if not closes:
        return pd.DataFrame()
    bar_ns = int(bar_seconds) * 1_000_000_000
    cleaned = {k: _clean_series(v) for k, v in closes.items()}
    all_ns = [ns for ns, _ in cleaned.values() if len(ns)]
    if not all_ns:
        return pd.DataFrame(columns=list(closes), index=pd.DatetimeIndex([], tz="UTC", name="ts"))
    grid = np.unique(np.concatenate(all_ns) // bar_ns * bar_ns)
    limit = max_stale_bars * bar_ns
    cols, keep = {}, np.ones(len(grid), dtype=bool)
    for k, (ns, v) in cleaned.items():
        # a bar stamped inside [g, g+bar) counts as known at g (bucket start convention)
        val, age = _asof(v, ns // bar_ns * bar_ns, grid)
        keep &= age <= limit
        cols[k] = val
    index = _ns_index(grid[keep])
    return pd.DataFrame({k: c[keep] for k, c in cols.items()}, index=index)


def align_pair(close_a: pd.Series, close_b: pd.Series, bar_seconds: int,
               max_stale_bars: int = DEFAULT_MAX_STALE_BARS) -> pd.DataFrame:
    """As-of align two closes (last known value, age <= max_stale_bars*bar) -> columns a, b, age_a, age_b."""
    bar_ns = int(bar_seconds) * 1_000_000_000
    (na, va), (nb, vb) = _clean_series(close_a), _clean_series(close_b)
    if len(na) == 0 or len(nb) == 0:
        return pd.DataFrame({"a": [], "b": [], "age_a": [], "age_b": []},
                            index=pd.DatetimeIndex([], tz="UTC", name="ts"))
    na, nb = na // bar_ns * bar_ns, nb // bar_ns * bar_ns
    grid = np.unique(np.concatenate([na, nb]))
    a, age_a = _asof(va, na, grid)
    b, age_b = _asof(vb, nb, grid)
    limit = max_stale_bars * bar_ns
    keep = (age_a <= limit) & (age_b <= limit)
    index = _ns_index(grid[keep])
    return pd.DataFrame({"a": a[keep], "b": b[keep],
                         "age_a": (age_a[keep] // bar_ns).astype(np.int64),
                         "age_b": (age_b[keep] // bar_ns).astype(np.int64)}, index=index)


# ----------------------------------------------------------------------------------------------
# Price statistics, liquidity, support/resistance
# ----------------------------------------------------------------------------------------------
def price_stats(bars: pd.DataFrame, interval_seconds: int) -> pd.DataFrame:
    """Per interval bucket: last, mean, std(close), min(low), max(high), return = last/first_open - 1,
    realised_vol = sqrt(sum r^2) of bar log returns r = ln(c_t/c_prev), volume, vwap = sum(qv)/sum(v), trades."""
    cols = ["last", "mean", "std", "min", "max", "return", "realised_vol", "volume", "vwap", "trades",
            "n_bars"]
    if len(bars) == 0:
        return pd.DataFrame(columns=cols, index=pd.DatetimeIndex([], tz="UTC", name="ts"))
    ns = _ts_ns(bars.index)
    order = None
    if len(ns) > 1 and not np.all(ns[1:] >= ns[:-1]):
        order = np.argsort(ns, kind="stable")
        ns = ns[order]

    def col(name: str) -> np.ndarray:
        v = bars[name].to_numpy(dtype=float)
        return v if order is None else v[order]
    step = int(interval_seconds) * 1_000_000_000
    bucket = ns // step * step
    starts = np.r_[0, np.nonzero(np.diff(bucket))[0] + 1]
    ends = np.r_[starts[1:], len(ns)]
    cnt = (ends - starts).astype(float)
    close = col("close")
    r2 = np.r_[0.0, np.diff(np.log(close)) ** 2]
    mean = np.add.reduceat(close, starts) / cnt
    dev = close - np.repeat(mean, ends - starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.add.reduceat(dev * dev, starts) / (cnt - 1))
    vol = np.add.reduceat(col("volume"), starts)
    qv = np.add.reduceat(col("quote_volume"), starts)
    last = close[ends - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(vol > 0, qv / np.where(vol > 0, vol, 1.0), np.nan)
    out = pd.DataFrame({
        "last": last, "mean": mean, "std": np.where(cnt > 1, std, np.nan),
        "min": np.minimum.reduceat(col("low"), starts), "max": np.maximum.reduceat(col("high"), starts),
        "return": last / col("open")[starts] - 1.0, "realised_vol": np.sqrt(np.add.reduceat(r2, starts)),
        "volume": vol, "vwap": vwap,
        "trades": np.add.reduceat(col("trade_count"), starts).astype(np.int64),
        "n_bars": (ends - starts).astype(np.int64)},
        index=_ns_index(bucket[starts]))
    return out


def support_resistance(bars: pd.DataFrame, half_width: int = PIVOT_HALF_WIDTH,
                       tol: float = LEVEL_CLUSTER_TOL, max_levels: int = MAX_LEVELS,
                       profile_bins: int = VOLUME_PROFILE_BINS,
                       profile_top: int = VOLUME_PROFILE_TOP) -> pd.DataFrame:
    """Swing pivots (high/low = extreme of the 2k+1 centred bars, confirmed k bars later) clustered within
    tol, plus volume-profile nodes (top bins of volume by vwap); columns level, kind, source, touches, strength."""
    cols = ["level", "kind", "source", "touches", "strength"]
    n = len(bars)
    if n < 2 * half_width + 1:
        return pd.DataFrame(columns=cols)
    hi = bars["high"].to_numpy(dtype=float)
    lo = bars["low"].to_numpy(dtype=float)
    last = float(bars["close"].iloc[-1])
    w = 2 * half_width + 1
    hwin = np.lib.stride_tricks.sliding_window_view(hi, w)
    lwin = np.lib.stride_tricks.sliding_window_view(lo, w)
    centre = np.arange(half_width, n - half_width)
    piv_hi = hi[centre][hi[centre] >= hwin.max(axis=1)]
    piv_lo = lo[centre][lo[centre] <= lwin.min(axis=1)]
    rows = []
    pivots = np.sort(np.r_[piv_hi, piv_lo])
    if len(pivots):
        # single-linkage clustering of sorted pivot prices (relative gap > tol starts a new level)
        breaks = np.r_[0, np.nonzero(np.diff(pivots) / pivots[:-1] > tol)[0] + 1, len(pivots)]
        for s, e in zip(breaks[:-1], breaks[1:]):
            lvl = float(pivots[s:e].mean())
            rows.append((lvl, "resistance" if lvl >= last else "support", "pivot", int(e - s),
                         float(e - s)))
    rows.sort(key=lambda r: -r[4])
    rows = rows[:max_levels]
    vol = bars["volume"].to_numpy(dtype=float)
    px = bars["vwap"].to_numpy(dtype=float) if "vwap" in bars else bars["close"].to_numpy(dtype=float)
    px = np.where(np.isfinite(px) & (px > 0), px, bars["close"].to_numpy(dtype=float))
    if np.nansum(vol) > 0 and np.nanmax(px) > np.nanmin(px):
        hist, edges = np.histogram(px, bins=profile_bins, weights=vol)
        top = np.argsort(hist)[::-1][:profile_top]
        total = hist.sum()
        for i in top:
            if hist[i] <= 0:
                continue
            lvl = float(0.5 * (edges[i] + edges[i + 1]))
            rows.append((lvl, "resistance" if lvl >= last else "support", "volume_profile",
                         int(np.count_nonzero((px >= edges[i]) & (px <= edges[i + 1]))),
                         float(hist[i] / total)))
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------------------------
# Rolling moments (exact: centred sums over each window, no running-sum cancellation)
# ----------------------------------------------------------------------------------------------
def _rolling_moments(x: np.ndarray, y: np.ndarray | None, window: int):
    """Per bar t (window ending at t): mean_x, mean_y, Sxx, Syy, Sxy as centred sums; NaN for t < W-1."""
    n = len(x)
    out = [np.full(n, np.nan) for _ in range(5)]
    if window < 1 or n < window:
        return out
    mx, my, sxx, syy, sxy = out
    chunk = max(1, _SLIDING_CHUNK_ELEMS // window)
    xv = np.lib.stride_tricks.sliding_window_view(x, window)
    yv = None if y is None else np.lib.stride_tricks.sliding_window_view(y, window)
    for s in range(0, len(xv), chunk):
        e = min(s + chunk, len(xv))
        o = slice(s + window - 1, e + window - 1)
        xw = xv[s:e]
        m = xw.mean(axis=1)
        dx = xw - m[:, None]
        mx[o] = m
        sxx[o] = np.einsum("ij,ij->i", dx, dx)
        if yv is not None:
            yw = yv[s:e]
            m2 = yw.mean(axis=1)
            dy = yw - m2[:, None]
            my[o] = m2
            syy[o] = np.einsum("ij,ij->i", dy, dy)
            sxy[o] = np.einsum("ij,ij->i", dx, dy)
    return out


# ----------------------------------------------------------------------------------------------
# Hedge ratios
# ----------------------------------------------------------------------------------------------
def _prices(a: np.ndarray, use_log: bool) -> np.ndarray:
    return np.log(a) if use_log else np.asarray(a, dtype=float)


def hedge_ratio_ols(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """OLS with intercept: beta = Sxy/Sxx, alpha = mean(y) - beta*mean(x); returns (beta, alpha)."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    mx, my = x.mean(), y.mean()
    dx = x - mx
    beta = float(dx @ (y - my) / (dx @ dx))
    return beta, float(my - beta * mx)


def _wls_line(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    sw = w.sum()
    mx, my = (w @ x) / sw, (w @ y) / sw
    dx = x - mx
    beta = (w * dx) @ (y - my) / ((w * dx) @ dx)
    return float(beta), float(my - beta * mx)


def hedge_ratio_huber(y: np.ndarray, x: np.ndarray, t: float = HUBER_T, maxiter: int = HUBER_MAXITER,
                      tol: float = HUBER_TOL, start: tuple[float, float] | None = None) -> tuple[float, float]:
    """Huber M-estimate by IRLS, w = min(1, t/|r/s|), s = MAD(r)/0.6745, stop on |dev change| <= tol
    (replicates statsmodels RLM(y, [1, x], HuberT()).fit() defaults); returns (beta, alpha)."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    n = len(y)
    df_resid = n - 2

    def deviance(resid: np.ndarray, w: np.ndarray) -> float:
        # statsmodels: M(resid / tmp_results.scale).sum(), with WLS scale = sum(w r^2)/df_resid
        sc = float((w * resid) @ resid) / df_resid
        z = np.abs(resid / sc)
        return float(np.where(z <= t, 0.5 * z * z, z * t - 0.5 * t * t).sum())

    beta, alpha = hedge_ratio_ols(y, x) if start is None else start
    resid = y - (alpha + beta * x)
    scale = float(np.median(np.abs(resid)) / MAD_NORMAL_CONST)
    dev_prev = deviance(resid, np.ones(n))
    for iteration in range(2, maxiter + 1):
        if scale == 0.0:
            break
        z = np.abs(resid / scale)
        w = np.where(z <= t, 1.0, t / np.where(z <= t, 1.0, z))
        beta, alpha = _wls_line(y, x, w)
        resid = y - (alpha + beta * x)
        scale = float(np.median(np.abs(resid)) / MAD_NORMAL_CONST)
        dev = deviance(resid, w)
        if not abs(dev - dev_prev) > tol:
            break
        dev_prev = dev
    return beta, alpha


def _theil_sen_exact(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    dx = np.subtract.outer(x, x)
    sel = dx > 0                                     # each unordered pair once, ties in x excluded
    slopes = np.subtract.outer(y, y)[sel] / dx[sel]
    if slopes.size == 0:
        return float("nan"), float("nan")
    k = slopes.size
    mid = k // 2
    if k % 2:
        med = float(np.partition(slopes, mid)[mid])
    else:
        p = np.partition(slopes, [mid - 1, mid])
        med = float((p[mid - 1] + p[mid]) / 2.0)
    return med, float(np.median(y) - med * np.median(x))


def hedge_ratio_theil_sen(y: np.ndarray, x: np.ndarray,
                          max_exact: int = THEIL_SEN_EXACT_MAX) -> tuple[float, float]:
    """Theil-Sen: beta = median over pairs (x_i != x_j) of (y_j-y_i)/(x_j-x_i), alpha = med(y) - beta*med(x)
    (scipy.stats.theilslopes, method='separate').  Exact O(n^2) for n <= max_exact; above that it is
    computed exactly on a deterministic evenly spaced subsample of max_exact points (bounded cost)."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n > max_exact:
        idx = np.unique(np.linspace(0, n - 1, max_exact).round().astype(np.int64))
        y, x = y[idx], x[idx]
    return _theil_sen_exact(y, x)


def rolling_ols(y: np.ndarray, x: np.ndarray, window: int = DEFAULT_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Rolling OLS over bars t-W+1..t: beta_t = Sxy/Sxx, alpha_t = ybar - beta*xbar (statsmodels RollingOLS)."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    mx, my, sxx, _, sxy = _rolling_moments(x, y, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = sxy / sxx
    return beta, my - beta * mx


def kalman_hedge(y: np.ndarray, x: np.ndarray, delta: float = KALMAN_DELTA,
                 obs_var: float | None = None, warmup: int = DEFAULT_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Kalman filter, state s=[beta, alpha], s_t = s_{t-1} + w (Q = delta/(1-delta) * n0 * P0),
    y_t = beta_t x_t + alpha_t + e (Ve); initialised by OLS on the first n0 = max(warmup, 10) bars
    (P0 = Ve (X'X)^-1, Ve = its residual variance unless obs_var given); filtered state uses bars <= t.
    Returns (beta, alpha) paths, NaN before bar n0-1."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    n = len(y)
    beta_out = np.full(n, np.nan)
    alpha_out = np.full(n, np.nan)
    n0 = max(int(warmup), KALMAN_WARMUP_MIN)
    if n < n0:
        return beta_out, alpha_out
    x0, y0 = x[:n0], y[:n0]
    b, a = hedge_ratio_ols(y0, x0)
    res = y0 - a - b * x0
    ve = float(res @ res / max(n0 - 2, 1)) if obs_var is None else float(obs_var)
    if not ve > 0:
        ve = 1e-12 * max(float(np.var(y0)), 1e-300)
    sxx = float(x0 @ x0)
    sx = float(x0.sum())
    det = sxx * n0 - sx * sx
    # (X'X)^-1 for X=[x, 1]: [[n, -sx], [-sx, sxx]] / det
    p11, p12, p22 = ve * n0 / det, -ve * sx / det, ve * sxx / det
    q = delta / (1.0 - delta) * n0
    q11, q12, q22 = q * p11, q * p12, q * p22
    beta_out[n0 - 1], alpha_out[n0 - 1] = b, a
    xs = x[n0:].tolist()
    ys = y[n0:].tolist()
    bo, ao = [0.0] * len(xs), [0.0] * len(xs)
    for i in range(len(xs)):
        xt = xs[i]
        # predict: R = P + Q
        r11, r12, r22 = p11 + q11, p12 + q12, p22 + q22
        # innovation with H = [x, 1]
        e = ys[i] - (b * xt + a)
        rh1 = r11 * xt + r12
        rh2 = r12 * xt + r22
        s = xt * rh1 + rh2 + ve
        k1, k2 = rh1 / s, rh2 / s
        b += k1 * e
        a += k2 * e
        p11 = r11 - k1 * rh1
        p12 = r12 - k1 * rh2
        p22 = r22 - k2 * rh2
        bo[i], ao[i] = b, a
    beta_out[n0:] = bo
    alpha_out[n0:] = ao
    return beta_out, alpha_out


def static_hedge(y: np.ndarray, x: np.ndarray, method: str) -> HedgeFit:
    """Whole-sample (in-sample) fit of y = alpha + beta x with method ols|huber|theil_sen."""
    fn = {"ols": hedge_ratio_ols, "huber": hedge_ratio_huber, "theil_sen": hedge_ratio_theil_sen}[method]
    beta, alpha = fn(y, x)
    return HedgeFit(method, beta, alpha, len(y), True)


def expanding_refit_points(n: int, first: int, min_step: int = EXPANDING_REFIT_MIN_STEP,
                           growth: int = EXPANDING_REFIT_GROWTH) -> np.ndarray:
    """Bar indices r_k (fit on bars 0..r_k): r_0 = first-1, r_{k+1} = r_k + max(min_step, (r_k+1)//growth).
    Depends only on bar index, so truncating the future never moves a past refit."""
    pts = []
    r = first - 1
    while r < n:
        pts.append(r)
        r += max(min_step, (r + 1) // growth)
    return np.array(pts, dtype=np.int64)


def causal_hedge_path(y: np.ndarray, x: np.ndarray, method: str, window: int = DEFAULT_WINDOW,
                      delta: float = KALMAN_DELTA, obs_var: float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Causal (beta_t, alpha_t) using bars <= t: rolling OLS / Kalman directly; for static methods the
    estimator refitted on an expanding window at expanding_refit_points (held until the next refit)."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    n = len(y)
    if method == "rolling_ols":
        return rolling_ols(y, x, window)
    if method == "kalman":
        return kalman_hedge(y, x, delta, obs_var, window)
    beta = np.full(n, np.nan)
    alpha = np.full(n, np.nan)
    first = max(window, MIN_BARS_REGRESSION)
    pts = expanding_refit_points(n, first, max(EXPANDING_REFIT_MIN_STEP, window))
    prev: tuple[float, float] | None = None
    for k, r in enumerate(pts):
        ys, xs = y[: r + 1], x[: r + 1]
        if method == "ols":
            b, a = hedge_ratio_ols(ys, xs)
        elif method == "huber":
            # warm start from the previous refit; relative deviance tolerance, few iterations
            b, a = hedge_ratio_huber(ys, xs, maxiter=CAUSAL_HUBER_MAXITER,
                                     tol=CAUSAL_HUBER_RTOL * (r + 1), start=prev)
        else:
            b, a = hedge_ratio_theil_sen(ys, xs, CAUSAL_THEIL_SEN_MAX)
        prev = (b, a)
        end = pts[k + 1] if k + 1 < len(pts) else n
        beta[r:end] = b
        alpha[r:end] = a
    return beta, alpha


# ----------------------------------------------------------------------------------------------
# Spread, z-score
# ----------------------------------------------------------------------------------------------
def spread_series(y: np.ndarray, x: np.ndarray, beta: np.ndarray | float, alpha: np.ndarray | float) -> np.ndarray:
    """spread_t = y_t - beta_t * x_t - alpha_t."""
    return np.asarray(y, dtype=float) - np.asarray(beta) * np.asarray(x, dtype=float) - np.asarray(alpha)


def rolling_zscore(s: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """z_t = (s_t - mean(s_{t-W+1..t})) / std(s_{t-W+1..t}, ddof=1); NaN until W valid values."""
    s = np.asarray(s, dtype=float)
    m, _, sxx, _, _ = _rolling_moments(s, None, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(sxx / (window - 1))
        z = (s - m) / sd
    z[~np.isfinite(z)] = np.nan
    return z


# ----------------------------------------------------------------------------------------------
# ADF / Engle-Granger (fast autolag: one Gram/Cholesky of the full lag matrix)
# ----------------------------------------------------------------------------------------------
def _trend_matrix(nobs: int, regression: str) -> np.ndarray | None:
    if regression == "n":
        return None
    t = np.arange(1, nobs + 1, dtype=float)
    cols = [np.ones(nobs)]
    if regression in ("ct", "ctt"):
        cols.append(t)
    if regression == "ctt":
        cols.append(t * t)
    return np.column_stack(cols)


def _partial_out(A: np.ndarray, D: np.ndarray | None) -> np.ndarray:
    """Residuals of every column of A on the deterministic columns D (Frisch-Waugh-Lovell)."""
    if D is None:
        return A
    if D.shape[1] == 1:
        return A - A.mean(axis=0)
    Q, _ = np.linalg.qr(D)
    return A - Q @ (Q.T @ A)


def _adf_design(x: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows t = lags..n-2 of [x_t, dx_{t-1}, ..., dx_{t-lags}] and dx_t (statsmodels' lagmat trim='both')."""
    dx = np.diff(x)
    nobs = len(dx) - lags
    A = np.empty((nobs, lags + 2), order="F")      # column-major: each column is one contiguous copy
    A[:, 0] = x[lags: lags + nobs]
    for j in range(1, lags + 1):
        A[:, j] = dx[lags - j: lags - j + nobs]
    A[:, lags + 1] = dx[lags:]
    return A, dx


def _chol_upper(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-normalised A -> (R upper of the Gram matrix, column norms)."""
    norms = np.sqrt(np.einsum("ij,ij->j", A, A))
    norms[norms == 0] = 1.0
    An = A / norms
    G = An.T @ An
    L = np.linalg.cholesky(G)
    return L.T, norms


def _adf_gram(x: np.ndarray, lags: int, center: bool) -> tuple[np.ndarray, int]:
    """Gram matrix of the ADF columns [x_t, dx_t-1..dx_t-lags, dx_t] over rows t = lags..n-2 without
    building the n x (lags+2) matrix: diff-lag products are full-length lagged dot products minus short
    head/tail corrections (O(n*lags) flops, no large GEMM).  center=True partials out a constant."""
    dx = np.diff(x)
    m = len(dx)
    K = lags
    nobs = m - K
    lev = x[K:m]
    if center:
        lev = lev - lev.mean()           # shift-invariant with a constant; avoids cancellation
    G = np.empty((K + 2, K + 2))
    # dx-column c (c = 0..K) is dx[K-c : m-c]; c = 0 is the dependent variable dx_t
    dcols = np.empty(K + 1)              # column sums (for centring): telescoping sum of dx
    for c in range(K + 1):
        dcols[c] = x[m - c] - x[K - c]
    D = np.empty((K + 1, K + 1))
    for h in range(K + 1):
        F = float(np.dot(dx[h:], dx[: m - h]))                   # sum_{u=h}^{m-1} dx[u] dx[u-h]
        # head: p_h[u] for u = h..K-1 ; tail: p_h[u] for u = m-K..m-1 (only the last K-h needed)
        head = dx[h:K] * dx[0: K - h]
        hc = np.r_[0.0, np.cumsum(head)]                           # hc[c-h] = sum_{u=h}^{c-1}
        tail = dx[m - (K - h): m] * dx[m - (K - h) - h: m - h] if K - h > 0 else np.empty(0)
        tc = np.r_[0.0, np.cumsum(tail[::-1])]                     # tc[i] = sum of last i terms
        i_idx = np.arange(0, K - h + 1)                             # pairs (i, j=i+h)
        vals = F - hc[(K - i_idx) - h] - tc[i_idx]
        D[i_idx, i_idx + h] = vals
        D[i_idx + h, i_idx] = vals
    G[1:, 1:] = D
    G[0, 0] = float(np.dot(lev, lev))
    for c in range(K + 1):
        v = float(np.dot(lev, dx[K - c: m - c]))
        G[0, c + 1] = G[c + 1, 0] = v
    if center:
        sums = np.r_[lev.sum(), dcols]
        G -= np.outer(sums, sums) / nobs
    # reorder to [level, lag1..lagK, y]
    order = [0] + list(range(2, K + 2)) + [1]
    return G[np.ix_(order, order)], nobs


def _chol_gram(G: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor of the unit-diagonal (correlation-scaled) Gram matrix."""
    d = np.sqrt(np.diag(G))
    d[d == 0] = 1.0
    return np.linalg.cholesky(G / np.outer(d, d)).T, d


def adf_test(x: np.ndarray, regression: str = "c", maxlag: int | None = None,
             autolag: str | None = "aic") -> ADFResult:
    """ADF: dx_t = d_t + g x_{t-1} + sum_j c_j dx_{t-j} + e; stat = t(g); lag by min AIC/BIC (or t-stat)
    with statsmodels' sample/maxlag rules, p-value/crit from MacKinnon; equals adfuller(x, regression, autolag)."""
    x = np.asarray(x, dtype=float)
    if x.max() == x.min():
        raise ValueError("Invalid input, x is constant")
    n = len(x)
    ntrend = len(regression) if regression != "n" else 0
    if maxlag is None:
        maxlag = int(np.ceil(12.0 * np.power(n / 100.0, 1 / 4.0)))
        maxlag = min(n // 2 - ntrend - 1, maxlag)
        if maxlag < 0:
            raise ValueError("sample size is too short to use selected regression component")
    elif maxlag > n // 2 - ntrend - 1:
        raise ValueError("maxlag must be less than (nobs/2 - 1 - ntrend)")
    icbest = None
    if autolag:
        autolag = autolag.lower()
        if regression in ("c", "n"):
            G, nobs = _adf_gram(x, maxlag, center=regression == "c")
            R, norms = _chol_gram(G)
        else:
            A, _ = _adf_design(x, maxlag)
            nobs = A.shape[0]
            A = _partial_out(A, _trend_matrix(nobs, regression))
            R, norms = _chol_upper(A)
        p = maxlag + 1                     # columns: level, lag1..lagK ; y at index p
        z = R[:p, p]
        rho2 = R[p, p] ** 2
        tail = np.cumsum((z ** 2)[::-1])[::-1]          # tail[k] = sum_{i>=k} z_i^2
        ssr_scaled = np.r_[tail[1:], 0.0] + rho2          # k lags -> columns 0..k -> sum_{i>k}
        ssr = ssr_scaled * norms[p] ** 2
        kparams = ntrend + 1 + np.arange(maxlag + 1)
        nobs2 = nobs / 2.0
        llf = -nobs2 * np.log(2 * np.pi) - nobs2 * np.log(ssr / nobs) - nobs2
        if autolag == "aic":
            ic = -2 * llf + 2 * kparams
        elif autolag == "bic":
            ic = -2 * llf + np.log(nobs) * kparams
        elif autolag == "t-stat":
            ic = None
        else:
            raise ValueError(f"unknown autolag {autolag}")
        if ic is not None:
            bestlag = int(np.argmin(ic))   # first minimum = smallest lag on ties, like min((ic, k))
            icbest = float(ic[bestlag])
        else:
            stop = 1.6448536269514722
            bestlag, icbest = maxlag, 0.0
            for k in range(maxlag, -1, -1):
                s2 = ssr_scaled[k] / (nobs - kparams[k])
                icbest = float(abs(z[k]) / np.sqrt(s2))
                bestlag = k
                if icbest >= stop:
                    break
        usedlag = bestlag
    else:
        usedlag = maxlag
    p = usedlag + 1
    k_total = p + ntrend
    # level column last: its t-value is R[p-1, p] / sqrt(s2) in the scaled factor (scale invariant)
    order = list(range(1, usedlag + 1)) + [0, usedlag + 1]
    if regression in ("c", "n"):
        G, nobs = _adf_gram(x, usedlag, center=regression == "c")
        R, _ = _chol_gram(G[np.ix_(order, order)])
    else:
        A, _ = _adf_design(x, usedlag)
        nobs = A.shape[0]
        A = _partial_out(A, _trend_matrix(nobs, regression))
        A[:, :usedlag + 1] = A[:, [*range(1, usedlag + 1), 0]]
        R, _ = _chol_upper(A)
    s2_scaled = R[p, p] ** 2 / (nobs - k_total)
    adfstat = float(np.sign(R[p - 1, p - 1]) * R[p - 1, p] / np.sqrt(s2_scaled))
    pvalue = float(mackinnonp(adfstat, regression=regression, N=1))
    cv = mackinnoncrit(N=1, regression=regression, nobs=nobs)
    return ADFResult(adfstat, pvalue, int(usedlag), int(nobs),
                     {"1%": float(cv[0]), "5%": float(cv[1]), "10%": float(cv[2])}, icbest, regression)


_SQRTEPS = float(np.sqrt(np.finfo(float).eps))


def coint_test(y0: np.ndarray, y1: np.ndarray, trend: str = "c", maxlag: int | None = None,
               autolag: str | None = "aic") -> CointResult:
    """Engle-Granger: ADF ('n') on residuals of y0 = d + b y1 + u; p = MacKinnon(N=2, trend), equals
    statsmodels coint(y0, y1, trend, maxlag=maxlag, autolag=autolag)."""
    y0 = np.asarray(y0, dtype=float)
    y1 = np.asarray(y1, dtype=float)
    nobs = len(y0)
    if trend == "c":
        b, a = hedge_ratio_ols(y0, y1)
        resid = y0 - a - b * y1
        tss = float(((y0 - y0.mean()) ** 2).sum())
    else:
        D = _trend_matrix(nobs, trend)
        X = np.column_stack([y1] + ([] if D is None else [D]))
        coef, *_ = np.linalg.lstsq(X, y0, rcond=None)
        resid = y0 - X @ coef
        tss = float(((y0 - y0.mean()) ** 2).sum()) if D is not None else float(y0 @ y0)
    rsq = 1.0 - float(resid @ resid) / tss
    usedlag = None
    if rsq < 1 - 100 * _SQRTEPS:
        r = adf_test(resid, regression="n", maxlag=maxlag, autolag=autolag)
        stat, usedlag = r.statistic, r.usedlag
    else:
        stat = -np.inf
    k_vars = 2
    if trend == "n":
        crit = [np.nan] * 3
    else:
        crit = mackinnoncrit(N=k_vars, regression=trend, nobs=nobs - 1)
    pval = float(mackinnonp(stat, regression=trend, N=k_vars))
    return CointResult(float(stat), pval, {"1%": float(crit[0]), "5%": float(crit[1]),
                                           "10%": float(crit[2])}, usedlag)


def half_life(s: np.ndarray) -> float | None:
    """OLS ds_t = a + b s_{t-1}; HL = -ln2 / ln(1+b) bars (exact for AR(1) phi=1+b); None unless -1<b<0."""
    s = np.asarray(s, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) < 3:
        return None
    b, _ = hedge_ratio_ols(np.diff(s), s[:-1])
    if not (np.isfinite(b) and -1.0 < b < 0.0):
        return None
    return float(-np.log(2.0) / np.log1p(b))


def hurst_exponent(s: np.ndarray, max_lag: int = HURST_MAX_LAG) -> float | None:
    """Hurst from lagged differences: std(s_{t+L} - s_t) ~ L^H, H = slope of log std on log L, L=2..max_lag."""
    s = np.asarray(s, dtype=float)
    s = s[np.isfinite(s)]
    max_lag = min(max_lag, len(s) // 2)
    if max_lag < 3:
        return None
    lags = np.arange(2, max_lag + 1)
    tau = np.array([np.std(s[L:] - s[:-L]) for L in lags])
    ok = tau > 0
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(lags[ok]), np.log(tau[ok]), 1)[0])


# ----------------------------------------------------------------------------------------------
# Correlation
# ----------------------------------------------------------------------------------------------
def log_returns(p: np.ndarray) -> np.ndarray:
    """r_t = ln(p_t / p_{t-1}); r_0 = NaN."""
    p = np.asarray(p, dtype=float)
    return np.r_[np.nan, np.diff(np.log(p))]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """rho = sum(da db) / sqrt(sum da^2 sum db^2) over pairs where both are finite."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.all():
        a, b = a[ok], b[ok]
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / den) if den > 0 else float("nan")


def rolling_correlation(ret_a: np.ndarray, ret_b: np.ndarray, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """Rolling Pearson correlation of returns over bars t-W+1..t: Sxy / sqrt(Sxx Syy)."""
    _, _, sxx, syy, sxy = _rolling_moments(np.asarray(ret_a, float), np.asarray(ret_b, float), window)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = sxy / np.sqrt(sxx * syy)
    c[~np.isfinite(c)] = np.nan
    return c


def return_correlation_matrix(closes: Mapping[str, pd.Series] | pd.DataFrame, bar_seconds: int | None = None,
                              max_stale_bars: int = DEFAULT_MAX_STALE_BARS) -> pd.DataFrame:
    """Pearson correlation matrix of log returns of N symbols after as-of alignment (align_many)."""
    if isinstance(closes, pd.DataFrame):
        aligned = closes
    else:
        aligned = align_many(closes, int(bar_seconds), max_stale_bars)
    rets = np.log(aligned).diff().iloc[1:]
    return rets.corr()


def lead_lag_correlation(ret_a: np.ndarray, ret_b: np.ndarray, max_lag: int = LEAD_LAG_MAX) -> pd.DataFrame:
    """c(k) = corr(r_a[t], r_b[t+k]) for k = -K..K; a peak at k > 0 means A leads B by k bars."""
    a = np.asarray(ret_a, dtype=float)
    b = np.asarray(ret_b, dtype=float)
    n = len(a)
    rows = []
    for k in range(-max_lag, max_lag + 1):
        if abs(k) >= n - 2:
            rows.append((k, np.nan))
            continue
        if k >= 0:
            rows.append((k, pearson(a[: n - k], b[k:])))
        else:
            rows.append((k, pearson(a[-k:], b[: n + k])))
    return pd.DataFrame(rows, columns=["lag", "corr"])


# ----------------------------------------------------------------------------------------------
# Backtest
# ----------------------------------------------------------------------------------------------
def backtest_mean_reversion(z: np.ndarray | pd.Series, price_a: np.ndarray, price_b: np.ndarray,
                            beta: np.ndarray | float, entry_z: float = DEFAULT_ENTRY_Z,
                            exit_z: float = DEFAULT_EXIT_Z, stop_z: float | None = None,
                            fee_bps: float = DEFAULT_FEE_BPS, bar_seconds: int = 1,
                            index: pd.Index | None = None, value_hedge: bool = False) -> BacktestResult:
    """Spread mean reversion: short when z>entry, long when z<-entry, exit when z crosses exit_z (or
    |z|>stop_z); fill at the NEXT bar's price; q_A=side, q_B=-side*beta_s (x p_A/p_B if value_hedge);
    fee = fee_bps*1e-4*(|q_A|p_A+|q_B|p_B) per fill; Sharpe = mean(r)/std(r)*sqrt(bars/year)."""
    if isinstance(z, pd.Series):
        index = z.index if index is None else index
        z = z.to_numpy(dtype=float)
    z = np.asarray(z, dtype=float)
    pa = np.asarray(price_a, dtype=float)
    pb = np.asarray(price_b, dtype=float)
    n = len(z)
    beta_arr = np.broadcast_to(np.asarray(beta, dtype=float), (n,))
    if index is None:
        index = pd.RangeIndex(n)
    fee = fee_bps * BPS
    valid_beta = np.isfinite(beta_arr)
    with np.errstate(invalid="ignore"):
        short_ok = (z > entry_z) & valid_beta
        long_ok = (z < -entry_z) & valid_beta
        entries = np.nonzero(short_ok | long_ok)[0]
        exit_long = z >= exit_z
        exit_short = z <= exit_z
        if stop_z is not None:
            stopped = np.abs(z) > stop_z
            exit_long |= stopped
            exit_short |= stopped
            rearm = np.nonzero(np.abs(z) <= entry_z)[0]
        ex_long_idx = np.nonzero(exit_long)[0]
        ex_short_idx = np.nonzero(exit_short)[0]
    trades = []
    t = 0
    while True:
        k = np.searchsorted(entries, t)
        if k >= len(entries):
            break
        s = int(entries[k])
        if s + 1 >= n:
            break
        side = -1 if short_ok[s] else 1
        qb = -side * beta_arr[s] * (pa[s] / pb[s] if value_hedge else 1.0)
        f = s + 1
        ex = ex_short_idx if side == -1 else ex_long_idx
        j = np.searchsorted(ex, s + 1)
        e_sig = int(ex[j]) if j < len(ex) else None
        g = e_sig + 1 if e_sig is not None and e_sig + 1 < n else None
        was_stop = (stop_z is not None and e_sig is not None and abs(z[e_sig]) > stop_z
                    and not ((side == 1 and z[e_sig] >= exit_z) or (side == -1 and z[e_sig] <= exit_z)))
        trades.append((s, f, e_sig, g, side, float(qb), was_stop))
        if g is None:
            break
        if was_stop:
            r = np.searchsorted(rearm, e_sig + 1)
            if r >= len(rearm):
                break
            t = int(rearm[r])
        else:
            t = e_sig                  # the exit bar may also carry an opposite entry signal (flip)
    pos_a = np.zeros(n)
    pos_b = np.zeros(n)
    fees = np.zeros(n)
    capital = np.zeros(n)
    m = len(trades)
    tr = np.array([(s, f, -1 if e is None else e, -1 if g is None else g, side, st)
                   for s, f, e, g, side, _, st in trades], dtype=np.int64).reshape(m, 6)
    qbs = np.array([t[5] for t in trades], dtype=float)
    fee_in = np.zeros(m)
    fee_out = np.zeros(m)
    pnl = np.zeros(m)
    notional = np.zeros(m)
    for k in range(m):
        s, f, e_sig, g, side, _ = tr[k]
        qb = qbs[k]
        end = g if g >= 0 else n - 1
        pos_a[f + 1: end + 1] = side
        pos_b[f + 1: end + 1] = qb
        notional[k] = abs(side) * pa[f] + abs(qb) * pb[f]
        capital[f: end + 1] = notional[k]
        fee_in[k] = fee * notional[k]
        fees[f] += fee_in[k]
        if g >= 0:
            fee_out[k] = fee * (abs(side) * pa[g] + abs(qb) * pb[g])
            fees[g] += fee_out[k]
        pnl[k] = side * (pa[end] - pa[f]) + qb * (pb[end] - pb[f]) - fee_in[k] - fee_out[k]
    s_i, f_i, e_i, g_i, side_i = (tr[:, c] for c in range(5))
    has_e, has_g = e_i >= 0, g_i >= 0

    def at(idx: np.ndarray, ok: np.ndarray, arr):
        if isinstance(arr, pd.Index):
            vals = pd.Series(arr.take(np.where(ok, idx, 0)))
            vals[~ok] = None
            return vals.to_numpy()
        return np.where(ok, arr[np.where(ok, idx, 0)], np.nan)
    tdf = pd.DataFrame({
        "signal_time": index.take(s_i), "entry_time": index.take(f_i),
        "exit_signal_time": at(e_i, has_e, index), "exit_time": at(g_i, has_g, index),
        "side": np.where(side_i == 1, "long", "short"), "qty_a": side_i.astype(float), "qty_b": qbs,
        "entry_z": z[s_i], "exit_z": at(e_i, has_e, z), "entry_price_a": pa[f_i], "entry_price_b": pb[f_i],
        "exit_price_a": at(g_i, has_g, pa), "exit_price_b": at(g_i, has_g, pb),
        "fees": fee_in + fee_out, "pnl": pnl,
        "return": np.divide(pnl, notional, out=np.full(m, np.nan), where=notional > 0),
        "stopped": tr[:, 5].astype(bool), "open": ~has_g})
    dpa = np.r_[0.0, np.diff(pa)]
    dpb = np.r_[0.0, np.diff(pb)]
    pnl_bar = pos_a * dpa + pos_b * dpb - fees
    pnl_bar = np.nan_to_num(pnl_bar)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = np.where(capital > 0, pnl_bar / np.where(capital > 0, capital, 1.0), 0.0)
    equity = np.cumsum(pnl_bar)
    cum_ret = np.cumsum(ret)
    peak = np.maximum.accumulate(np.r_[0.0, cum_ret])[1:]
    max_dd = float(np.max(peak - cum_ret)) if n else 0.0
    sd = float(np.std(ret, ddof=1)) if n > 1 else float("nan")
    sharpe = float(np.mean(ret) / sd * np.sqrt(SECONDS_PER_YEAR / bar_seconds)) if sd > 0 else float("nan")
    closed = tdf[~tdf["open"]] if len(tdf) else tdf
    win_rate = float((closed["pnl"] > 0).mean()) if len(closed) else float("nan")
    eq = pd.DataFrame({"position": pos_a, "qty_b": pos_b, "pnl": pnl_bar, "equity": equity, "ret": ret,
                       "cum_ret": cum_ret}, index=index)
    return BacktestResult(tdf, eq, float(equity[-1]) if n else 0.0, float(cum_ret[-1]) if n else 0.0,
                          sharpe, max_dd, win_rate, int(len(closed)))


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------
def readiness_needs(params: PairParams) -> dict[str, int]:
    """Minimum aligned bars per analytic for these params."""
    w = params.window
    hedge_need = {"rolling_ols": w, "kalman": max(w, KALMAN_WARMUP_MIN)}.get(
        params.regression, max(w, MIN_BARS_REGRESSION))
    return {
        "static_fit": MIN_BARS_REGRESSION,
        "hedge_ratio": hedge_need,
        "zscore": hedge_need + w - 1,
        "adf": MIN_BARS_ADF,
        "coint": MIN_BARS_ADF,
        "half_life": MIN_BARS_HALF_LIFE,
        "hurst": MIN_BARS_HURST,
        "correlation": MIN_BARS_CORRELATION,
        "rolling_correlation": w + 1,
        "lead_lag": max(MIN_BARS_CORRELATION, 2 * params.lead_lag_max + 3),
        "backtest": hedge_need + w,
    }


def _causal_signal(y: np.ndarray, x: np.ndarray, params: PairParams):
    beta, alpha = causal_hedge_path(y, x, params.regression, params.window, params.kalman_delta,
                                    params.kalman_obs_var)
    spread = spread_series(y, x, beta, alpha)
    z = rolling_zscore(spread, params.window)
    return beta, alpha, spread, z


def _aligned_from_bars(bars_a: pd.DataFrame, bars_b: pd.DataFrame, params: PairParams) -> pd.DataFrame:
    a = filter_liquidity(bars_a, params.min_volume, params.min_trades)
    b = filter_liquidity(bars_b, params.min_volume, params.min_trades)
    return align_pair(a["close"], b["close"], params.bar_seconds, params.max_stale_bars)


def latest_signal(bars_a: pd.DataFrame, bars_b: pd.DataFrame, params: PairParams) -> LatestSignal:
    """Light path for the 1 s ticker/alerts: causal beta, alpha, spread and z at the last aligned bar."""
    al = _aligned_from_bars(bars_a, bars_b, params)
    need = readiness_needs(params)["zscore"]
    rd = Readiness.of(len(al), need)
    if params.regression == "rolling_ols" and len(al) > need:
        al = al.iloc[-need:]                       # exact: rolling values only need the last 2W-1 bars
    if len(al) == 0:
        return LatestSignal(None, np.nan, np.nan, np.nan, np.nan, Readiness.of(0, need))
    y = _prices(al["a"].to_numpy(), params.use_log_prices)
    x = _prices(al["b"].to_numpy(), params.use_log_prices)
    beta, alpha, spread, z = _causal_signal(y, x, params)
    return LatestSignal(al.index[-1], float(beta[-1]), float(alpha[-1]), float(spread[-1]), float(z[-1]), rd)


def full_pair_analytics(bars_a: pd.DataFrame, bars_b: pd.DataFrame, params: PairParams | None = None
                        ) -> PairAnalytics:
    """All pair analytics in one call (y = A, x = B); each gated by Readiness (have >= need aligned bars)."""
    params = params or PairParams()
    needs = readiness_needs(params)
    al = _aligned_from_bars(bars_a, bars_b, params)
    n = len(al)
    rd = {k: Readiness.of(n, v) for k, v in needs.items()}
    pa = al["a"].to_numpy(dtype=float)
    pb = al["b"].to_numpy(dtype=float)
    y = _prices(pa, params.use_log_prices)
    x = _prices(pb, params.use_log_prices)
    beta, alpha, spread, z = _causal_signal(y, x, params)
    ra, rb = log_returns(pa), log_returns(pb)
    rc = rolling_correlation(ra, rb, params.window)
    series = pd.DataFrame({"price_a": pa, "price_b": pb, "y": y, "x": x, "beta": beta, "alpha": alpha,
                           "spread": spread, "zscore": z, "ret_a": ra, "ret_b": rb,
                           "rolling_corr": rc}, index=al.index)

    static_fit = static_spread = adf = cab = cba = None
    hl = hu = corr = None
    if rd["static_fit"].ready:
        method = params.regression if params.regression in STATIC_REGRESSIONS else "ols"
        static_fit = static_hedge(y, x, method)
        static_spread = pd.Series(spread_series(y, x, static_fit.beta, static_fit.alpha), index=al.index,
                                  name="spread_in_sample")
    if rd["adf"].ready and static_spread is not None:
        sv = static_spread.to_numpy()
        try:
            adf = adf_test(sv, regression=params.adf_regression)
        except (ValueError, np.linalg.LinAlgError):
            adf = None
    if rd["coint"].ready:
        try:
            cab = coint_test(y, x)
            cba = coint_test(x, y)
        except (ValueError, np.linalg.LinAlgError):
            cab = cba = None
    if rd["half_life"].ready and static_spread is not None:
        hl = half_life(static_spread.to_numpy())
    if rd["hurst"].ready and static_spread is not None:
        hu = hurst_exponent(static_spread.to_numpy())
    cm = ll = None
    if rd["correlation"].ready:
        corr = pearson(ra, rb)
        cm = pd.DataFrame([[1.0, corr], [corr, 1.0]], index=[params.symbol_a, params.symbol_b],
                          columns=[params.symbol_a, params.symbol_b])
    if rd["lead_lag"].ready:
        ll = lead_lag_correlation(ra[1:], rb[1:], params.lead_lag_max)
    stats: dict[str, pd.DataFrame] = {}
    levels: dict[str, pd.DataFrame] = {}
    for sym, bars in ((params.symbol_a, bars_a), (params.symbol_b, bars_b)):
        for iv in params.stats_intervals:
            if iv >= params.bar_seconds:
                stats[f"{sym}_{iv}s"] = price_stats(bars, iv)
        levels[sym] = support_resistance(bars)
    bt = None
    if rd["backtest"].ready:
        bt = backtest_mean_reversion(z, pa, pb, beta, params.entry_z, params.exit_z, params.stop_z,
                                     params.fee_bps, params.bar_seconds, al.index,
                                     value_hedge=params.use_log_prices)
    latest = LatestSignal(al.index[-1] if n else None,
                          float(beta[-1]) if n else np.nan, float(alpha[-1]) if n else np.nan,
                          float(spread[-1]) if n else np.nan, float(z[-1]) if n else np.nan, rd["zscore"])
    return PairAnalytics(params, len(bars_a), len(bars_b), n, series, static_fit, static_spread, adf, cab,
                         cba, hl, hu, corr, cm, ll, stats, levels, bt, latest, rd)
