"""Headline numbers of one backtest result."""

from __future__ import annotations

from fbt_pipelines.engine.futures_engine import BacktestResult
from fbt_pipelines.primitives.performance import equity_headline


def summarise(result: BacktestResult) -> dict[str, float]:
    """Headline numbers of a backtest (USD, fractions, counts); see
    :func:`~fbt_pipelines.primitives.performance.equity_headline` for Sharpe,
    CAGR, drawdown and ruin. ``margin_calls``: calls issued (one record each,
    reason ``margin_call``); ``margin_call_contracts``: contracts they
    liquidated; ``account_stopped``: 1.0 when the account stopped trading
    (equity at or below zero at a close; the date is
    :attr:`BacktestResult.account_stopped`)."""
    trades = result.trades
    calls = trades["reason"] == "margin_call"
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
        "margin_calls": float(calls.sum()),
        "margin_call_contracts": float(trades.loc[calls, "contracts"].abs().sum()),
        "account_stopped": float(result.account_stopped is not None),
    }
