"""One strategy on one market: signal -> whole contracts -> engine -> summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.futures_engine import BacktestResult, EngineConfig, run_backtest
from fbt_pipelines.engine.strategies import strategy_signal, validate_params
from fbt_pipelines.portfolio.sizing import VolTargetConfig, contracts_for_risk


@dataclass(frozen=True)
class MarketBacktest:
    strategy: str
    params: dict[str, Any]
    result: BacktestResult
    summary: dict[str, float]


def with_predictions(prices: pd.DataFrame, predictions: pd.DataFrame | None,
                     features: pd.DataFrame | None = None) -> pd.DataFrame:
    """Prices with the strategy inputs beyond prices: ``prob_up`` (NaN where no
    out-of-sample prediction) and ``roll_yield`` (from the features, NaN if absent)."""
    out = prices
    if predictions is None or predictions.empty:
        out = out.assign(prob_up=np.nan)
    else:
        out = out.merge(predictions[["ts", "prob_up"]], on="ts", how="left")
    if features is None or features.empty or "roll_yield" not in features:
        return out.assign(roll_yield=np.nan) if "roll_yield" not in out else out
    return out.drop(columns=["roll_yield"], errors="ignore").merge(features[["ts", "roll_yield"]], on="ts", how="left")


def equity_headline(equity: np.ndarray) -> dict[str, float]:
    """Sharpe, CAGR, max drawdown and ruin of a daily equity path (USD).

    Sharpe: mean / st. dev. (ddof 1) of daily simple returns x sqrt(252), NaN
    when the st. dev. is ~0 (as :func:`fbt_pipelines.risk.metrics.risk_metrics`).
    An account whose equity reaches zero or below is *ruined* (the engine has
    no forced liquidation): ``ruined`` = 1, Sharpe and CAGR are NaN (returns on
    a non-positive base mean nothing) and ``max_drawdown`` is the loss from the
    peak as a fraction of it (above 1 when more than the peak was lost).
    """
    equity = np.asarray(equity, dtype=float)
    ruined = bool((equity <= 0).any())
    max_drawdown = float(np.max(1.0 - equity / np.maximum.accumulate(equity)))
    sharpe = cagr = float("nan")
    if not ruined and len(equity) > 2:
        r = equity[1:] / equity[:-1] - 1.0
        sd = r.std(ddof=1)
        sharpe = float(r.mean() / sd * np.sqrt(252.0)) if sd > 1e-12 else float("nan")
        cagr = float((equity[-1] / equity[0]) ** (252.0 / len(r)) - 1.0)
    return {"sharpe": sharpe, "cagr": cagr, "max_drawdown": max_drawdown, "ruined": float(ruined)}


def summarise(result: BacktestResult) -> dict[str, float]:
    """Headline numbers of a backtest (USD, fractions, counts); see
    :func:`equity_headline` for Sharpe, CAGR, drawdown and ruin."""
    trades = result.trades
    return {
        "net_pnl": result.net_pnl,
        "final_equity": result.final_equity,
        **equity_headline(result.bars["equity"].to_numpy(float)),
        # rows with 0 contracts only record refused (unaffordable) contracts: not fills
        "trades": float(((trades["kind"] == "trade") & (trades["contracts"] != 0)).sum()),
        "rolls": float((trades["kind"] == "roll").sum()),
        "commission": float(trades["commission"].sum()),
        "slippage": float(trades["slippage"].sum()),
        "roll_costs": float(trades.loc[trades["kind"] == "roll", ["commission", "slippage"]].to_numpy().sum()),
        "refused_contracts": float(trades["refused"].sum()),
        "max_margin": float(result.bars["margin"].max()),
    }


def backtest_market(
    prices: pd.DataFrame,
    spec: ContractSpec,
    strategy: str,
    params: Mapping[str, Any],
    sizing: VolTargetConfig,
    engine: EngineConfig,
    predictions: pd.DataFrame | None = None,
    weight: float = 1.0,
    margins: np.ndarray | None = None,
    features: pd.DataFrame | None = None,
) -> MarketBacktest:
    """Signal from ``strategy`` sized by volatility target, traded by the engine
    (``margins``: initial margin per contract per bar, USD; catalogue value if None)."""
    frame = with_predictions(prices, predictions, features)
    params = validate_params(strategy, params)  # defaults filled, integers as integers
    signal = strategy_signal(strategy, frame, params)
    target = contracts_for_risk(frame, signal, spec, weight, sizing)
    result = run_backtest(frame, target, spec, engine, margins)
    return MarketBacktest(strategy, params, result, summarise(result))
