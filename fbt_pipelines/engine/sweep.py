"""Parameter sweeps (grid or random) and walk-forward selection for one market.

Parallelism: threads, not processes. The Numba kernel releases the GIL
(``nogil=True``); no prices or results are pickled across a process boundary
(fbt's rule). The per-set work is the signal (pandas/NumPy) and one kernel
call: inputs, volatility sizing and costs are prepared once per market.

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
from fbt_pipelines.engine.backtest import equity_headline, with_predictions
from fbt_pipelines.engine.futures_engine import EngineConfig
from fbt_pipelines.engine.kernel import FILL_NEXT_CLOSE, FILL_NEXT_OPEN, ROLL, TRADE, simulate_futures_nb
from fbt_pipelines.engine.strategies import STRATEGIES, strategy_signal, validate_params
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.portfolio.sizing import VolTargetConfig, cash_vol_per_contract, whole_contracts

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
              features: pd.DataFrame | None = None, workers: int = 2,
              margins: np.ndarray | None = None) -> SweepResult:
    """Backtest every parameter set (threads; see the module docstring).

    Same accounting as :func:`fbt_pipelines.engine.backtest.backtest_market`
    (and tested equal to it), without its per-set frames: the inputs, the
    volatility sizing and the cost parameters are prepared once, each set
    computes its signal and calls the kernel, and the summary comes from the
    kernel's arrays.
    """
    frame = with_predictions(prices, predictions, features)
    cash_vol = cash_vol_per_contract(frame, spec, sizing)
    budget = sizing.capital * sizing.annual_risk_target * sizing.idm
    n = len(frame)
    open_, close = frame["open"].to_numpy(float), frame["close"].to_numpy(float)
    roll = frame["roll"].to_numpy(bool)
    margin = (np.full(n, float(spec.initial_margin)) if margins is None
              else np.ascontiguousarray(margins, dtype=np.float64))
    commission = float(spec.commission if engine.commission is None else engine.commission)
    slippage = float(engine.slippage_ticks * spec.tick_size)
    fill = FILL_NEXT_OPEN if engine.fill == "next_open" else FILL_NEXT_CLOSE
    capital = float(engine.initial_capital)

    def one(params: Mapping[str, Any]):
        params = validate_params(strategy, params)
        target = whole_contracts(strategy_signal(strategy, frame, params), cash_vol, budget)
        _, equity, _, _, _, kind, qty, _, comm, slip, _ = simulate_futures_nb(
            target, open_, close, roll, float(spec.multiplier), commission, slippage, margin, capital, fill)
        rolls = kind == ROLL
        headline = equity_headline(equity)
        return params, equity, {
            "net_pnl": float(equity[-1] - capital), "sharpe": headline["sharpe"],
            "max_drawdown": headline["max_drawdown"],
            "trades": float(np.count_nonzero((kind == TRADE) & (qty != 0))), "rolls": float(rolls.sum()),
            "roll_costs": float(comm[rolls].sum() + slip[rolls].sum()),
        }

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, sets))
    rows = [{"set": i, "params": json.dumps(p, sort_keys=True), **summary}
            for i, (p, _, summary) in enumerate(results)]
    pnl = {i: np.diff(equity, prepend=capital) for i, (_, equity, _) in enumerate(results)}
    return SweepResult(pd.DataFrame(rows), pd.DataFrame(pnl, index=pd.DatetimeIndex(frame["ts"])))


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
