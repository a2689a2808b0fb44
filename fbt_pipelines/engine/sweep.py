"""Parameter sweeps (grid or random) and walk-forward selection for one market.

Parallelism: threads, not processes. The Numba kernel releases the GIL
(``nogil=True``), so backtests of different parameter sets run on all cores
without pickling prices or results across a process boundary (fbt's rule:
no pickle between processes).

Walk-forward: every parameter set is backtested once over the whole period
(sizing uses fixed capital, so a set's daily P&L does not depend on earlier
windows); each window picks the set with the best in-sample Sharpe and takes
that set's P&L over the next out-of-sample window; the stitched
out-of-sample P&L is the walk-forward result. Switching sets between windows
is assumed to cost nothing extra (each set's own trades and rolls are
costed); this is stated in the output.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.backtest import backtest_market
from fbt_pipelines.engine.futures_engine import EngineConfig
from fbt_pipelines.engine.strategies import STRATEGIES, validate_params
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.portfolio.sizing import VolTargetConfig

ANNUAL = np.sqrt(252.0)


def parameter_sets(strategy: str, grid: Mapping[str, Sequence[Any]], mode: str = "grid", n: int = 20,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Every combination (``grid``) or ``n`` distinct seeded draws (``random``),
    each validated; invalid combinations (e.g. fast >= slow) are dropped."""
    if mode not in ("grid", "random"):
        raise StrategyError(f"sweep mode must be 'grid' or 'random', got {mode!r}")
    names = sorted(grid)
    combos = [dict(zip(names, values)) for values in itertools.product(*(grid[k] for k in names))]
    if mode == "random":
        rng = np.random.default_rng(seed)
        combos = [combos[i] for i in sorted(rng.choice(len(combos), size=min(n, len(combos)), replace=False))]
    out = []
    template = STRATEGIES.get(strategy)
    probe = [np.ones(8)] * len(template.inputs) if template else []
    for combo in combos:
        try:
            params = validate_params(strategy, combo)
            template.fn(*probe, **params)  # the function's own checks (e.g. fast < slow)
            out.append(params)
        except StrategyError as exc:
            if "unknown" in str(exc):
                raise
    if not out:
        raise StrategyError(f"{strategy}: no valid parameter set in {dict(grid)}")
    return out


def _sharpe(pnl: np.ndarray, capital: float) -> float:
    r = pnl / capital
    sd = r.std(ddof=1)
    return float(r.mean() / sd * ANNUAL) if sd > 0 else float("nan")


@dataclass(frozen=True)
class SweepResult:
    """``table``: one row per parameter set (params JSON, net P&L USD, Sharpe,
    max drawdown, trades, rolls); ``pnl``: daily P&L (USD) per set, columns in
    the table's order, indexed by ts."""

    table: pd.DataFrame
    pnl: pd.DataFrame


def run_sweep(prices: pd.DataFrame, spec: ContractSpec, strategy: str, sets: Sequence[Mapping[str, Any]],
              sizing: VolTargetConfig, engine: EngineConfig, predictions: pd.DataFrame | None = None,
              features: pd.DataFrame | None = None, workers: int = 2) -> SweepResult:
    """Backtest every parameter set (threads; see the module docstring)."""

    def one(params: Mapping[str, Any]):
        return backtest_market(prices, spec, strategy, params, sizing, engine, predictions, features=features)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, sets))
    rows, pnl = [], {}
    for i, bt in enumerate(results):
        key = json.dumps(bt.params, sort_keys=True)
        rows.append({"set": i, "params": key, **{k: bt.summary[k] for k in
                     ("net_pnl", "sharpe", "max_drawdown", "trades", "rolls", "roll_costs")}})
        pnl[i] = bt.result.bars["pnl"].to_numpy()
    ts = pd.DatetimeIndex(results[0].result.bars["ts"])
    return SweepResult(pd.DataFrame(rows), pd.DataFrame(pnl, index=ts))


def walk_forward(sweep: SweepResult, capital: float, train_years: int = 3, test_years: int = 1) -> pd.DataFrame:
    """Stitched out-of-sample P&L: per window, the set with the best Sharpe on
    the previous ``train_years`` (anchored rolling window), applied to the next
    ``test_years``. Returns ts, set, pnl (USD), equity (USD), window."""
    pnl = sweep.pnl
    years = pnl.index.year
    first, last = int(years.min()), int(years.max())
    parts = []
    for k, test_start in enumerate(range(first + train_years, last + 1, test_years)):
        train = (years >= test_start - train_years) & (years < test_start)
        test = (years >= test_start) & (years < test_start + test_years)
        if not test.any():
            break
        scores = [_sharpe(pnl.loc[train, c].to_numpy(), capital) for c in pnl.columns]
        best = int(np.nanargmax(np.nan_to_num(scores, nan=-np.inf)))
        parts.append(pd.DataFrame({"ts": pnl.index[test], "set": best, "pnl": pnl.loc[test, best].to_numpy(),
                                   "window": k, "in_sample_sharpe": scores[best]}))
    if not parts:
        raise StrategyError(f"walk-forward needs more than {train_years} years of data ({first}-{last})")
    out = pd.concat(parts, ignore_index=True)
    out["equity"] = capital + out["pnl"].cumsum()
    return out


def overfitting_report(sweep: SweepResult, capital: float) -> dict[str, float]:
    """Deflated Sharpe of the best set and the probability of backtest
    overfitting (CSCV) for a sweep: is the best parameter set luck?"""
    from scipy.stats import kurtosis, skew

    from fbt_pipelines.risk.overfitting import deflated_sharpe_ratio, probability_of_backtest_overfitting

    returns = sweep.pnl / capital
    daily_sharpe = (returns.mean() / returns.std(ddof=1)).replace([np.inf, -np.inf], np.nan).fillna(0.0)
    best = int(daily_sharpe.to_numpy().argmax())
    r = returns.iloc[:, best].to_numpy()
    out = {"pbo": float(probability_of_backtest_overfitting(sweep.pnl, n_splits=10))}
    if len(daily_sharpe) > 1 and np.std(r) > 0:
        out["deflated_sharpe"] = float(deflated_sharpe_ratio(
            float(daily_sharpe.iloc[best]), len(daily_sharpe), float(daily_sharpe.var(ddof=1)), len(r),
            float(skew(r)), float(kurtosis(r, fisher=False))))
    return out
