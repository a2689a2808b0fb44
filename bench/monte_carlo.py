"""Speed of fbt's Monte Carlo: stationary-bootstrap paths and their summary (a script, not a test).

    .venv/bin/python bench/monte_carlo.py [--paths 10000] [--horizon 2520] [--mean-block 20] [--repeat 3]

Source series: 2,520 synthetic daily returns (10 years), seeded, Student-t
(4 dof) scaled to 1 % daily volatility plus 0.04 % drift, with a slow
volatility cycle so there is some clustering for the blocks to keep. From
it, ``--paths`` stationary-bootstrap paths of ``--horizon`` days (default
10,000 x 2,520 = 25.2 M returns, 202 MB of float64) are generated with
:func:`bootstrap_paths` and summarised with :func:`monte_carlo_summary`
(capital 1 M USD, 20 % drawdown threshold, 95 % Sharpe interval). Each of
``--repeat`` runs times generation and summary separately (time.perf_counter);
the median run is reported with paths/second. Target: < 10 s for the
default size on a 2-core machine. Single-threaded NumPy; no Numba, so there
is no compile step to warm up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fbt_pipelines.risk.monte_carlo import bootstrap_paths, monte_carlo_summary

CAPITAL = 1_000_000.0


def source_returns(days: int = 2_520, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = 0.01 * (1.0 + 0.5 * np.sin(np.arange(days) * 2 * np.pi / 250.0))
    shocks = rng.standard_t(4, days) / np.sqrt(2.0)  # t(4) has variance 2
    return 0.0004 + vol * shocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--horizon", type=int, default=2_520)
    ap.add_argument("--mean-block", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    returns = source_returns()
    runs = []
    for k in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        paths = bootstrap_paths(returns, args.paths, args.horizon, mean_block=args.mean_block, seed=k)
        t1 = time.perf_counter()
        summary = monte_carlo_summary(paths, CAPITAL, dd_threshold=0.2)
        t2 = time.perf_counter()
        runs.append((t2 - t0, t1 - t0, t2 - t1, summary))
        del paths
    total, gen, summ, summary = sorted(runs, key=lambda run: run[0])[len(runs) // 2]

    n = args.paths
    print(f"source: {returns.size} daily returns; {n:,} paths x {args.horizon:,} days "
          f"(mean block {args.mean_block:g}), {n * args.horizon * 8 / 1e6:,.0f} MB of returns")
    print(f"runs (total s): {', '.join(f'{r[0]:.2f}' for r in runs)}; median run:")
    print(f"  {'stage':<12} {'seconds':>8} {'paths/s':>12}")
    for name, secs in (("generation", gen), ("summary", summ), ("total", total)):
        print(f"  {name:<12} {secs:>8.3f} {n / secs:>12,.0f}")
    print(f"target < 10 s: {'met' if total < 10 else 'MISSED'}")
    print("median run's percentiles (5/50/95):")
    print(summary.percentiles.to_string(float_format=lambda v: f"{v:,.4f}"))
    print(f"P(max drawdown > 20 %) = {summary.prob_drawdown_exceeds:.3f}; "
          f"Sharpe 95 % interval = ({summary.sharpe_ci[0]:.3f}, {summary.sharpe_ci[1]:.3f})")


if __name__ == "__main__":
    main()
