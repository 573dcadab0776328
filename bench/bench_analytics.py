"""Benchmark full_pair_analytics (median of several runs) for each regression type.

Run: python bench/bench_analytics.py [--runs N]
Targets: <= 150 ms for 3,600 x 1 s bars and 1,440 x 1 min bars; <= 1.5 s for 86,400 x 1 s bars.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# On a 2-core shared box OpenBLAS worker threads spin and fight the other processes; pin BLAS to one
# thread (set OPENBLAS_NUM_THREADS yourself to override).  Must happen before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import analytics as an  # noqa: E402

REGRESSIONS = ("ols", "huber", "theil_sen", "rolling_ols", "kalman")
CASES = ((3_600, 1, 0.150), (1_440, 60, 0.150), (86_400, 1, 1.5))


def synthetic_bars(n: int, bar_seconds: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two cointegrated BTC/ETH-like bar frames with a few missing bars."""
    rng = np.random.default_rng(seed)
    lx = np.log(3000.0) + np.cumsum(rng.normal(0, 2e-4, n))
    s = np.zeros(n)
    e = rng.normal(0, 1e-4, n)
    for i in range(1, n):
        s[i] = 0.98 * s[i - 1] + e[i]
    ly = 1.2 + 1.05 * lx + s
    idx = pd.date_range("2024-08-09", periods=n, freq=f"{bar_seconds}s", tz="UTC", name="ts")

    def frame(lp: np.ndarray, drop_seed: int) -> pd.DataFrame:
        c = np.exp(lp)
        r = np.random.default_rng(drop_seed)
        vol = r.exponential(2.0, n)
        df = pd.DataFrame({"open": np.r_[c[0], c[:-1]], "high": c * 1.0002, "low": c * 0.9998, "close": c,
                           "volume": vol, "quote_volume": vol * c, "vwap": c,
                           "trade_count": r.integers(1, 50, n), "taker_buy_volume": vol / 2}, index=idx)
        keep = r.random(n) > 0.02
        return df[keep]
    return frame(ly, seed + 1), frame(lx, seed + 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    print(f"{'bars':>7} {'bar_s':>5} {'regression':>11} {'median_ms':>10} {'min_ms':>8} {'cpu_ms':>8} {'target_ms':>9}  ok")
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}  load average: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    all_ok = True
    for n, bar_s, target in CASES:
        a, b = synthetic_bars(n, bar_s)
        runs = args.runs if n < 50_000 else max(3, args.runs // 2)
        for reg in REGRESSIONS:
            p = an.PairParams(bar_seconds=bar_s, regression=reg)
            an.full_pair_analytics(a, b, p)  # warm-up
            ts, cpu = [], []
            for _ in range(runs):
                t0, c0 = time.perf_counter(), time.process_time()
                res = an.full_pair_analytics(a, b, p)
                ts.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            med = statistics.median(ts)
            ok = med <= target
            all_ok &= ok
            assert res.adf is not None
            print(f"{n:>7} {bar_s:>5} {reg:>11} {med * 1e3:>10.1f} {min(ts) * 1e3:>8.1f} {statistics.median(cpu) * 1e3:>8.1f} {target * 1e3:>9.0f}  "
                  f"{'yes' if ok else 'NO'}", flush=True)
    print("all targets met" if all_ok else "SOME TARGETS MISSED")
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
