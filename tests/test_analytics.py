"""Tests for analytics.py: equality with statsmodels/scipy, known-answer synthetic data, hand-computed
backtest, no look-ahead, as-of alignment, readiness, and a run on the real Binance capture."""
from __future__ import annotations

import gzip
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.regression.rolling import RollingOLS
from statsmodels.tsa.stattools import adfuller, coint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import analytics as an  # noqa: E402

RTOL = 1e-9
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-spot-capture"


# ---------------------------------------------------------------------------------------------- helpers
def random_walk(n: int, seed: int, level: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return level + scale * np.cumsum(np.random.default_rng(seed).standard_normal(n))


def ar1(n: int, phi: float, seed: int, sigma: float = 1.0) -> np.ndarray:
    e = np.random.default_rng(seed).normal(0.0, sigma, n)
    out = np.empty(n)
    out[0] = e[0]
    for i in range(1, n):
        out[i] = phi * out[i - 1] + e[i]
    return out


def make_bars(close: np.ndarray, index: pd.DatetimeIndex, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    vol = rng.exponential(1.0, len(close)) + 0.01
    return pd.DataFrame({"open": np.r_[close[0], close[:-1]], "high": close * 1.0005, "low": close * 0.9995,
                         "close": close, "volume": vol, "quote_volume": vol * close, "vwap": close,
                         "trade_count": rng.integers(1, 20, len(close)), "taker_buy_volume": vol / 2},
                        index=index)


def pair_bars(n: int, seed: int = 3, bar_seconds: int = 1, beta: float = 1.3, alpha: float = 0.5,
              phi: float = 0.9):
    lx = np.log(2500.0) + random_walk(n, seed, scale=3e-4)
    ly = alpha + beta * lx + ar1(n, phi, seed + 1, 2e-4)
    idx = pd.date_range("2024-08-09", periods=n, freq=f"{bar_seconds}s", tz="UTC", name="ts")
    return make_bars(np.exp(ly), idx, seed + 2), make_bars(np.exp(lx), idx, seed + 3)


# ---------------------------------------------------------------------------------------------- regressions
def test_ols_matches_statsmodels():
    x = random_walk(800, 1, 100.0)
    y = 3.0 + 0.7 * x + np.random.default_rng(2).standard_normal(800)
    ref = sm.OLS(y, sm.add_constant(x)).fit().params
    beta, alpha = an.hedge_ratio_ols(y, x)
    np.testing.assert_allclose([alpha, beta], ref, rtol=RTOL)


@pytest.mark.parametrize("n,seed", [(300, 1), (2000, 2)])
def test_huber_matches_statsmodels_rlm(n, seed):
    rng = np.random.default_rng(seed)
    x = random_walk(n, seed, 50.0)
    y = 1.0 + 2.0 * x + rng.standard_t(2, n)          # heavy tails so Huber differs from OLS
    ref = sm.RLM(y, sm.add_constant(x), M=sm.robust.norms.HuberT()).fit().params
    beta, alpha = an.hedge_ratio_huber(y, x)
    np.testing.assert_allclose([alpha, beta], ref, rtol=RTOL)
    assert abs(beta - an.hedge_ratio_ols(y, x)[0]) > 1e-6


def test_rolling_ols_matches_statsmodels():
    n, w = 1500, 60
    x = random_walk(n, 4, 0.0, 0.05)
    y = 3.0 + 1.7 * x + 0.02 * np.random.default_rng(5).standard_normal(n)
    # reset=1 recomputes X'X each step, so statsmodels itself has no running-sum drift
    ref = RollingOLS(y, sm.add_constant(x), window=w).fit(reset=1).params
    beta, alpha = an.rolling_ols(y, x, w)
    assert np.isnan(beta[: w - 1]).all() and np.isnan(ref[: w - 1]).all()
    np.testing.assert_allclose(beta[w - 1:], ref[w - 1:, 1], rtol=RTOL)
    np.testing.assert_allclose(alpha[w - 1:], ref[w - 1:, 0], rtol=RTOL)


@pytest.mark.parametrize("n", [50, 400, an.THEIL_SEN_EXACT_MAX])
def test_theil_sen_matches_scipy(n):
    rng = np.random.default_rng(n)
    x = np.round(random_walk(n, n, 10.0), 1)          # rounding creates ties in x (excluded pairs)
    y = 2.0 - 0.5 * x + rng.standard_t(3, n)
    ref = stats.theilslopes(y, x)
    beta, alpha = an.hedge_ratio_theil_sen(y, x)
    np.testing.assert_allclose([beta, alpha], [ref.slope, ref.intercept], rtol=RTOL)


def test_theil_sen_subsample_above_cap_is_deterministic_and_close():
    n = 3 * an.THEIL_SEN_EXACT_MAX
    x = random_walk(n, 9, 10.0)
    y = 1.0 + 0.8 * x + np.random.default_rng(10).standard_normal(n)
    b1 = an.hedge_ratio_theil_sen(y, x)
    assert b1 == an.hedge_ratio_theil_sen(y, x)
    assert abs(b1[0] - 0.8) < 0.02


# ---------------------------------------------------------------------------------------------- ADF / coint
ADF_CASES = [("rw", 500), ("ar1", 500), ("rw_level", 2000), ("ar1", 2000), ("rw", 20000)]


def _series(kind: str, n: int) -> np.ndarray:
    if kind == "rw":
        return random_walk(n, n + 1)
    if kind == "rw_level":
        return random_walk(n, n + 2, 60000.0, 5.0)    # price-like level: conditioning stress
    return ar1(n, 0.95, n + 3)


@pytest.mark.parametrize("kind,n", ADF_CASES)
def test_adf_matches_statsmodels(kind, n):
    x = _series(kind, n)
    regs = ["c", "n", "ct"] if n <= 500 else ["c"]
    for reg in regs:
        ref = adfuller(x, regression=reg, autolag="AIC", result_object=True)
        got = an.adf_test(x, regression=reg)
        assert got.usedlag == ref.lags and got.nobs == ref.nobs
        np.testing.assert_allclose(got.statistic, ref.statistic, rtol=RTOL)
        np.testing.assert_allclose(got.pvalue, ref.pvalue, rtol=RTOL)
        np.testing.assert_allclose(got.icbest, ref.icbest, rtol=RTOL)
        for k in ("1%", "5%", "10%"):
            np.testing.assert_allclose(got.critical_values[k], ref.critical_values[k], rtol=RTOL)


def test_adf_bic_and_tstat_autolag_match():
    x = ar1(600, 0.9, 77) + 0.3 * ar1(600, 0.5, 78)
    for al in ("BIC", "t-stat"):
        ref = adfuller(x, autolag=al, result_object=True)
        got = an.adf_test(x, autolag=al.lower())
        assert got.usedlag == ref.lags
        np.testing.assert_allclose(got.statistic, ref.statistic, rtol=RTOL)


def test_adf_chooses_nonzero_lag_like_statsmodels():
    # AR(2) in differences forces a positive lag choice
    e = np.random.default_rng(5).standard_normal(1000)
    d = np.zeros(1000)
    for i in range(2, 1000):
        d[i] = 0.5 * d[i - 1] - 0.3 * d[i - 2] + e[i]
    x = np.cumsum(d)
    for reg in ("c", "ct", "ctt"):
        ref = adfuller(x, regression=reg, autolag="AIC", result_object=True)
        got = an.adf_test(x, regression=reg)
        assert got.usedlag == ref.lags >= 2
        np.testing.assert_allclose(got.statistic, ref.statistic, rtol=RTOL)
        np.testing.assert_allclose(got.pvalue, ref.pvalue, rtol=RTOL)


@pytest.mark.parametrize("n", [500, 2000])
def test_coint_matches_statsmodels_both_directions(n):
    x = random_walk(n, 21, 100.0)
    y = 2.0 + 1.5 * x + ar1(n, 0.9, 22)
    for a, b in ((y, x), (x, y)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = coint(a, b)
        got = an.coint_test(a, b)
        np.testing.assert_allclose(got.statistic, ref[0], rtol=RTOL)
        np.testing.assert_allclose(got.pvalue, ref[1], rtol=RTOL)
        np.testing.assert_allclose(list(got.critical_values.values()), ref[2], rtol=RTOL)


# ---------------------------------------------------------------------------------------------- correlations
def test_pearson_rolling_matrix_and_lead_lag():
    rng = np.random.default_rng(3)
    ra = rng.standard_normal(1000)
    rb = 0.6 * ra + 0.8 * rng.standard_normal(1000)
    np.testing.assert_allclose(an.pearson(ra, rb), stats.pearsonr(ra, rb).statistic, rtol=RTOL)
    rc = an.rolling_correlation(ra, rb, 50)
    assert np.isnan(rc[:49]).all()
    for t in (49, 500, 999):
        np.testing.assert_allclose(rc[t], stats.pearsonr(ra[t - 49:t + 1], rb[t - 49:t + 1]).statistic,
                                   rtol=RTOL)
    idx = pd.date_range("2024-01-01", periods=1001, freq="1s", tz="UTC")
    closes = {"A": pd.Series(100 * np.exp(np.r_[0, np.cumsum(ra)] * 1e-3), idx),
              "B": pd.Series(50 * np.exp(np.r_[0, np.cumsum(rb)] * 1e-3), idx)}
    cm = an.return_correlation_matrix(closes, 1)
    lr = np.diff(np.log(np.column_stack([closes["A"], closes["B"]])), axis=0)
    np.testing.assert_allclose(cm.to_numpy(), np.corrcoef(lr.T), rtol=RTOL)
    # lead-lag: B copies A two bars later -> peak at lag +2 (A leads)
    lagged = np.r_[rng.standard_normal(2), ra[:-2]]
    ll = an.lead_lag_correlation(ra, lagged, 5)
    assert ll.loc[ll["corr"].idxmax(), "lag"] == 2
    assert ll["corr"].max() > 0.99


# ---------------------------------------------------------------------------------------------- known answers
def test_synthetic_cointegrated_pair_recovers_beta_and_half_life():
    n, beta, alpha, hl = 20000, 1.8, 3.0, 20.0
    phi = 2.0 ** (-1.0 / hl)
    x = random_walk(n, 31, 100.0)
    s = ar1(n, phi, 32, 0.5)
    y = alpha + beta * x + s
    b, a = an.hedge_ratio_ols(y, x)
    assert abs(b - beta) < 0.01 and abs(a - alpha) < 1.0
    for fn in (an.hedge_ratio_huber, an.hedge_ratio_theil_sen):
        assert abs(fn(y, x)[0] - beta) < 0.01
    kb, _ = an.kalman_hedge(y, x)
    rb, _ = an.rolling_ols(y, x, 500)
    assert abs(np.nanmedian(kb[1000:]) - beta) < 0.05
    assert abs(np.nanmedian(rb) - beta) < 0.1
    est_hl = an.half_life(y - b * x - a)
    assert est_hl is not None and abs(est_hl - hl) / hl < 0.15
    assert an.half_life(random_walk(n, 33)) is None or an.half_life(random_walk(n, 33)) > 200
    assert an.hurst_exponent(s) < 0.4
    assert abs(an.hurst_exponent(random_walk(n, 34)) - 0.5) < 0.1
    assert an.adf_test(y - b * x - a).pvalue < 0.01
    assert an.coint_test(y, x).pvalue < 0.01


def test_backtest_hand_computed_trades_fees_next_bar_fills():
    z = np.array([0.0, 2.5, 1.0, -0.5, -2.2, -1.0, 0.1, 0.0])
    pa = np.array([100, 101, 102, 100, 99, 98, 99, 100], dtype=float)
    pb = np.array([50, 50, 51, 50, 50, 49, 49, 50], dtype=float)
    res = an.backtest_mean_reversion(z, pa, pb, 2.0, entry_z=2.0, exit_z=0.0, fee_bps=10.0)
    t = res.trades
    assert list(t["side"]) == ["short", "long"]
    # short: signal bar 1, fill bar 2 (102, 51); exit signal bar 3 (z=-0.5), fill bar 4 (99, 50)
    assert list(t["entry_price_a"]) == [102.0, 98.0] and list(t["exit_price_a"]) == [99.0, 100.0]
    assert list(t["qty_b"]) == [2.0, -2.0]
    fee1 = 1e-3 * (102 + 2 * 51) + 1e-3 * (99 + 2 * 50)
    pnl1 = (-1) * (99 - 102) + 2 * (50 - 51) - fee1            # 1 - 0.403
    fee2 = 1e-3 * (98 + 2 * 49) + 1e-3 * (100 + 2 * 50)
    pnl2 = (100 - 98) - 2 * (50 - 49) - fee2                   # 0 - 0.396
    np.testing.assert_allclose(t["pnl"], [pnl1, pnl2], rtol=1e-12)
    np.testing.assert_allclose(t["entry_z"], [2.5, -2.2])
    np.testing.assert_allclose(t["exit_z"], [-0.5, 0.1])
    np.testing.assert_allclose(res.total_pnl, pnl1 + pnl2, rtol=1e-12)
    np.testing.assert_allclose(res.equity["equity"].iloc[-1], pnl1 + pnl2, rtol=1e-12)
    assert res.win_rate == 0.5 and res.n_trades == 2
    # the equity curve is flat before the first fill (no look-ahead)
    assert (res.equity["pnl"].iloc[:2] == 0).all()


def test_backtest_stop_and_last_bar_signal_not_filled():
    z = np.array([0.0, -2.5, -3.5, -1.0, -2.1])
    p = np.array([10.0, 10, 10, 10, 10])
    res = an.backtest_mean_reversion(z, p, p, 1.0, stop_z=3.0, fee_bps=0.0)
    t = res.trades
    assert len(t) == 1 and bool(t["stopped"].iloc[0])      # stop at bar 2, filled bar 3
    assert t["exit_time"].iloc[0] == 3
    # z=-2.1 at the last bar has no next bar to fill in -> no trade opened


# ---------------------------------------------------------------------------------------------- causality
@pytest.mark.parametrize("regression", ["rolling_ols", "kalman", "huber", "theil_sen", "ols"])
def test_truncating_future_never_changes_past(regression):
    a, b = pair_bars(1500, seed=11)
    p = an.PairParams(bar_seconds=1, regression=regression, window=40, entry_z=1.5)
    full = an.full_pair_analytics(a, b, p)
    cut = 1100
    part = an.full_pair_analytics(a.iloc[:cut], b.iloc[:cut], p)
    fs, ps = full.series.iloc[:cut], part.series
    for col in ("beta", "alpha", "spread", "zscore", "rolling_corr"):
        np.testing.assert_allclose(ps[col].to_numpy(), fs[col].to_numpy(), rtol=1e-12, atol=0,
                                   equal_nan=True, err_msg=col)
    ft, pt = full.backtest.trades, part.backtest.trades
    closed = pt[~pt["open"]]
    assert len(closed) > 0
    pd.testing.assert_frame_equal(closed.reset_index(drop=True), ft.iloc[: len(closed)].reset_index(drop=True))
    lt = an.latest_signal(a.iloc[:cut], b.iloc[:cut], p)
    np.testing.assert_allclose([lt.beta, lt.zscore], [fs["beta"].iloc[-1], fs["zscore"].iloc[-1]], rtol=1e-12)


def test_rolling_zscore_is_causal_and_correct():
    s = np.random.default_rng(1).standard_normal(300)
    z = an.rolling_zscore(s, 20)
    assert np.isnan(z[:19]).all()
    t = 150
    w = s[t - 19:t + 1]
    np.testing.assert_allclose(z[t], (s[t] - w.mean()) / w.std(ddof=1), rtol=1e-12)
    s2 = s.copy()
    s2[t + 1:] = 1e6                                          # change the future
    np.testing.assert_array_equal(an.rolling_zscore(s2, 20)[: t + 1], z[: t + 1])


# ---------------------------------------------------------------------------------------------- alignment
def test_asof_alignment_keeps_points_and_respects_staleness():
    t0 = pd.Timestamp("2024-08-09", tz="UTC")
    sec = [pd.Timedelta(seconds=k) for k in range(8)]
    a = pd.Series([1.0, 2, 3, 4, 5, 6, 7, 8], index=pd.DatetimeIndex([t0 + s for s in sec], name="ts"))
    # B misses bars 1, 3, 4, 5 and has a bar stamped 300 ms into bucket 6
    b_idx = [t0, t0 + sec[2], t0 + sec[6] + pd.Timedelta(milliseconds=300), t0 + sec[7]]
    b = pd.Series([10.0, 12, 16, 17], index=pd.DatetimeIndex(b_idx, name="ts"))
    exact = pd.concat([a, b], axis=1, join="inner")
    assert len(exact) == 3                                    # exact-timestamp join loses bars
    al = an.align_pair(a, b, bar_seconds=1, max_stale_bars=2)
    got = {int((ts - t0).total_seconds()): (r.a, r.b) for ts, r in al.iterrows()}
    # bar 1 and 3, 4 use B carried forward (age 1, 1, 2); bar 5 (age 3) is dropped; 6 maps the off-grid bar
    assert got == {0: (1, 10), 1: (2, 10), 2: (3, 12), 3: (4, 12), 4: (5, 12), 6: (7, 16), 7: (8, 17)}
    assert list(al["age_b"]) == [0, 1, 0, 1, 2, 0, 0]
    assert len(an.align_pair(a, b, 1, 0)) == 4                # zero staleness: only both-present buckets
    many = an.align_many({"A": a, "B": b, "C": a * 2}, 1, 2)
    assert list(many.columns) == ["A", "B", "C"] and len(many) == 7


def test_liquidity_filter_drops_thin_bars():
    a, _ = pair_bars(50)
    a = a.assign(volume=np.r_[np.zeros(10), np.ones(40)], trade_count=np.r_[np.ones(45, int), np.zeros(5, int)])
    out = an.filter_liquidity(a, min_volume=0.5, min_trades=1)
    assert len(out) == 35


# ---------------------------------------------------------------------------------------------- readiness / API
def test_readiness_not_ready_with_counts_on_short_input():
    a, b = pair_bars(70)
    p = an.PairParams(window=60, regression="rolling_ols")
    res = an.full_pair_analytics(a, b, p)
    r = res.readiness
    assert r["zscore"] == an.Readiness(False, 70, 119)
    assert r["zscore"].message() == "collecting data: 70 / 119 bars"
    assert r["adf"] == an.Readiness(False, 70, an.MIN_BARS_ADF) and res.adf is None
    assert r["hedge_ratio"].ready and r["static_fit"].ready
    assert res.backtest is None and not res.latest.readiness.ready
    assert np.isnan(res.series["zscore"]).all()
    empty = an.full_pair_analytics(a.iloc[:0], b.iloc[:0], p)
    assert empty.n_aligned == 0 and empty.readiness["static_fit"] == an.Readiness(False, 0, 30)


@pytest.mark.parametrize("regression", ["ols", "huber", "theil_sen", "rolling_ols", "kalman"])
def test_full_pair_analytics_all_regressions_serialise(regression):
    a, b = pair_bars(800, seed=5, bar_seconds=60)
    p = an.PairParams(bar_seconds=60, regression=regression, use_log_prices=regression != "ols")
    res = an.full_pair_analytics(a, b, p)
    assert all(v.ready for v in res.readiness.values())
    assert res.static_fit.in_sample
    if p.use_log_prices:                                      # raw prices: beta is in price units
        assert abs(res.static_fit.beta - 1.3) < 0.2
    assert res.adf.pvalue < 0.05 and res.coint_ab.pvalue < 0.05
    json.dumps(res.to_dict())
    frames = res.to_frames()
    assert {"series", "trades", "equity"} <= set(frames) and "stats_A_3600s" in frames
    st = frames["stats_A_300s"]
    assert st["n_bars"].sum() == 800 and (st["max"] >= st["min"]).all()
    lv = res.levels["A"]
    assert set(lv["kind"]) <= {"support", "resistance"} and len(lv) > 0


def test_price_stats_values():
    idx = pd.date_range("2024-01-01", periods=6, freq="1min", tz="UTC", name="ts")
    c = np.array([10.0, 11, 12, 11, 10, 13])
    bars = make_bars(c, idx).drop(index=idx[4])               # a missing bar stays missing
    st = an.price_stats(bars, 180)
    assert list(st["n_bars"]) == [3, 2]
    r0 = st.iloc[0]
    assert r0["last"] == 12 and r0["mean"] == 11 and np.isclose(r0["std"], 1.0)
    np.testing.assert_allclose(r0["realised_vol"], math.sqrt(math.log(1.1) ** 2 + math.log(12 / 11) ** 2))
    np.testing.assert_allclose(st.iloc[1]["return"], 13 / 12 - 1)   # open of bar 3 = close of bar 2
    qv = (bars["quote_volume"].iloc[:3].sum()) / bars["volume"].iloc[:3].sum()
    np.testing.assert_allclose(r0["vwap"], qv)


# ---------------------------------------------------------------------------------------------- real data
def _trade_bars(files: list[Path]) -> dict[str, pd.DataFrame]:
    rows = []
    for f in files:
        with gzip.open(f, "rt") as fh:
            for line in fh:
                if "@trade" not in line:
                    continue
                frame = json.loads(line.split(" ", 1)[1])
                if not frame.get("stream", "").endswith("@trade"):
                    continue
                d = frame["data"]
                rows.append((d["s"], d["t"], d["T"], float(d["p"]), float(d["q"]), d["m"]))
    df = pd.DataFrame(rows, columns=["s", "t", "T", "p", "q", "m"]).drop_duplicates(["s", "t"])
    out = {}
    for sym, g in df.sort_values(["s", "T", "t"]).groupby("s"):
        g = g.assign(sec=g["T"] // 1000, qv=g["p"] * g["q"], tb=np.where(~g["m"], g["q"], 0.0))
        b = g.groupby("sec").agg(open=("p", "first"), high=("p", "max"), low=("p", "min"), close=("p", "last"),
                                 volume=("q", "sum"), quote_volume=("qv", "sum"), trade_count=("t", "size"),
                                 taker_buy_volume=("tb", "sum"))
        b["vwap"] = b["quote_volume"] / b["volume"]
        b.index = pd.DatetimeIndex(pd.to_datetime(b.index * 1_000_000_000, utc=True), name="ts")
        out[sym] = b
    return out


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real capture not present at {DATA_DIR}")
def test_real_binance_btc_eth():
    bars = _trade_bars(sorted(DATA_DIR.glob("*.gz")))
    btc, eth = bars["BTCUSDT"], bars["ETHUSDT"]
    assert len(btc) > 300 and len(eth) > 300
    p = an.PairParams(bar_seconds=1, regression="kalman", symbol_a="BTCUSDT", symbol_b="ETHUSDT",
                      max_stale_bars=10)
    res = an.full_pair_analytics(btc, eth, p)
    # ETH trades less often than BTC: as-of alignment keeps more bars than the exact join
    assert res.n_aligned > len(btc.index.intersection(eth.index))
    assert res.readiness["zscore"].ready and res.adf is not None
    ok = res.series["zscore"].dropna()
    assert len(ok) > 100 and np.isfinite(ok).all()
    assert 0 < res.static_fit.beta < 3                    # log BTC vs log ETH elasticity
    assert 0.3 < res.correlation < 1.0                    # BTC/ETH 1 s returns co-move
    json.dumps(res.to_dict())
    ref = adfuller(res.static_spread.to_numpy(), autolag="AIC", result_object=True)
    np.testing.assert_allclose(res.adf.statistic, ref.statistic, rtol=RTOL)
    assert res.adf.usedlag == ref.lags
