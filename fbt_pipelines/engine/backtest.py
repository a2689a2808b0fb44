"""One strategy on one market: signal -> whole contracts -> engine -> summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.futures_engine import BacktestResult, EngineConfig, run_backtest
from fbt_pipelines.engine.strategies import strategy_signal
from fbt_pipelines.portfolio.sizing import VolTargetConfig, contracts_for_risk
from fbt_pipelines.risk.metrics import risk_metrics


@dataclass(frozen=True)
class MarketBacktest:
    strategy: str
    params: dict[str, Any]
    result: BacktestResult
    summary: dict[str, float]


def with_predictions(prices: pd.DataFrame, predictions: pd.DataFrame | None) -> pd.DataFrame:
    """Prices with a ``prob_up`` column (NaN where no out-of-sample prediction)."""
    if predictions is None or predictions.empty:
        return prices.assign(prob_up=np.nan)
    return prices.merge(predictions[["ts", "prob_up"]], on="ts", how="left")


def summarise(result: BacktestResult) -> dict[str, float]:
    """Headline numbers of a backtest (USD, fractions, counts)."""
    trades = result.trades
    m = risk_metrics(result.bars.set_index("ts")["equity"])
    return {
        "net_pnl": result.net_pnl,
        "final_equity": result.final_equity,
        "sharpe": m.sharpe,
        "cagr": m.cagr,
        "max_drawdown": m.max_drawdown,
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
) -> MarketBacktest:
    """Signal from ``strategy`` sized by volatility target, traded by the engine
    (``margins``: initial margin per contract per bar, USD; catalogue value if None)."""
    frame = with_predictions(prices, predictions)
    signal = strategy_signal(strategy, frame, params)
    target = contracts_for_risk(frame, signal, spec, weight, sizing)
    result = run_backtest(frame, target, spec, engine, margins)
    return MarketBacktest(strategy, dict(params), result, summarise(result))
