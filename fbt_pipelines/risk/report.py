"""Assemble the portfolio's risk report from the book (no storage, no Dagster).

Inputs are the frames the ``portfolio`` asset writes (see
:mod:`fbt_pipelines.portfolio.book`), the markets' continuous prices and the
per-market strategy backtests; every money figure is USD, every return a
simple daily fraction, dates UTC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.portfolio.book import market_exposure
from fbt_pipelines.primitives.returns import contract_returns
from fbt_pipelines.risk import correlation as corr_mod
from fbt_pipelines.risk.metrics import (beta_correlation, cornish_fisher_cvar, cornish_fisher_var, cost_share,
                                        daily_returns, parametric_cvar, parametric_var, turnover_contracts,
                                        turnover_notional, ulcer_index)
from fbt_pipelines.risk.scenarios import scenario_table

__all__ = ["DEFAULT_SHOCKS", "DEFAULT_WINDOWS", "RiskExtras", "market_returns", "strategy_returns", "risk_extras"]

# Hypothetical shocks by asset class (fraction moves), applied to every held market of that class.
DEFAULT_SHOCKS: dict[str, dict[str, float]] = {
    "all_down_5pct": {"*": -0.05},
    "all_up_5pct": {"*": 0.05},
    "equity_crash_20pct": {"equity": -0.20},
    "oil_spike_30pct": {"energy": 0.30},
    "rates_up_bonds_down_3pct": {"rates": -0.03},
    "usd_rally_fx_down_5pct": {"fx": -0.05},
}
# Named historical windows (applied when the data covers them; on the synthetic sample
# data these dates carry the generator's paths, not the historical events).
DEFAULT_WINDOWS: tuple[tuple[str, str, str], ...] = (
    ("covid_crash_2020", "2020-02-19", "2020-03-23"),
    ("rates_shock_2022", "2022-01-03", "2022-10-21"),
    ("volmageddon_2018", "2018-01-26", "2018-02-08"),
)


def market_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """ts x root daily returns of the held contracts from long continuous prices.

    Input columns: ts, root, close, raw_close; ``contract_returns`` per market.
    """
    frames = {}
    for root, group in prices.sort_values(["root", "ts"]).groupby("root", sort=True):
        g = group.reset_index(drop=True)
        frames[root] = pd.Series(contract_returns(g).to_numpy(), index=pd.DatetimeIndex(g["ts"]))
    return pd.DataFrame(frames).sort_index().iloc[1:] if frames else pd.DataFrame()


def strategy_returns(equity: pd.DataFrame) -> pd.DataFrame:
    """ts x strategy daily returns of each strategy traded in every market.

    From the long per-market backtest paths (root, strategy, ts, pnl, equity):
    ``sum over markets of pnl[t] / sum over markets of equity[t-1]`` per
    strategy (each market's equity carried on sessions it does not trade);
    NaN when that equity sum is not positive (a ruined account).
    """
    out = {}
    for strategy, group in equity.groupby("strategy", sort=True):
        pnl = group.pivot_table(index="ts", columns="root", values="pnl", aggfunc="sum").sort_index().fillna(0.0)
        eq = group.pivot_table(index="ts", columns="root", values="equity", aggfunc="last").sort_index().ffill()
        prev = eq.shift(1).sum(axis=1, min_count=1)
        r = pnl.sum(axis=1) / prev.where(prev > 0)
        out[strategy] = r.iloc[1:]
    return pd.DataFrame(out)


def _expand_shocks(shocks: Mapping[str, Mapping[str, float]], asset_classes: Mapping[str, str]) -> dict:
    """{name: {key: move}} -> {name: {root: move}}.

    Keys are a root, an asset class or ``*``.
    """
    out = {}
    for name, moves in shocks.items():
        per_root = {}
        for root, cls in asset_classes.items():
            for key in (root, cls, "*"):
                if key in moves:
                    per_root[root] = float(moves[key])
                    break
        out[name] = per_root
    return out


@dataclass
class RiskExtras:
    """What the risk report adds to :class:`~fbt_pipelines.risk.metrics.RiskMetrics`.

    ``scalars``: flat name -> number (see :func:`risk_extras`). ``scenarios``:
    :func:`~fbt_pipelines.risk.scenarios.scenario_table` of today's book.
    ``correlation``: long rows (kind, a, b, correlation) for ``market``,
    ``strategy`` (full period) and ``market_rolling`` (last rolling window).
    ``exposure``: the current book per market (root, position, notional_usd,
    exposure = |notional| / equity).
    """

    scalars: dict[str, float] = field(default_factory=dict)
    scenarios: pd.DataFrame = field(default_factory=pd.DataFrame)
    correlation: pd.DataFrame = field(default_factory=pd.DataFrame)
    market_correlation: pd.DataFrame = field(default_factory=pd.DataFrame)
    strategy_correlation: pd.DataFrame = field(default_factory=pd.DataFrame)
    exposure: pd.DataFrame = field(default_factory=pd.DataFrame)


def _long_corr(kind: str, matrix: pd.DataFrame) -> pd.DataFrame:
    return corr_mod.correlation_table(matrix).assign(kind=kind)[["kind", "a", "b", "correlation"]]


def risk_extras(equity: pd.DataFrame, positions: pd.DataFrame, trades: pd.DataFrame, mreturns: pd.DataFrame,
                sreturns: pd.DataFrame | None, asset_classes: Mapping[str, str], benchmark: str | None = None,
                shocks: Mapping[str, Mapping[str, float]] | None = None,
                windows: Sequence[tuple[str, str, str]] = DEFAULT_WINDOWS, rolling_window: int = 63,
                worst_days: Sequence[int] = (1, 5, 20)) -> RiskExtras:
    """Desk metrics, scenarios and correlations of the portfolio.

    Scalars (fractions of equity unless a unit is named):

    - ``ulcer_index``; ``parametric_var_95/99``, ``parametric_cvar_95/99``,
      ``cf_var_95/99``, ``cf_cvar_95/99`` (one day, Gaussian and
      Cornish-Fisher);
    - ``turnover_notional`` (notional traded per year / average equity, fills
      only), ``turnover_contracts`` (mean over markets of contracts traded per
      year / average |position|), ``cost_share`` (costs / gross P&L),
      ``total_costs_usd``, ``net_pnl_usd``;
    - ``beta``, ``benchmark_correlation`` of daily portfolio returns to ``benchmark``'s
      (the market's held-contract returns), ``benchmark_sessions``;
    - ``max_leverage``, ``last_leverage`` (gross notional / equity),
      ``max_market_exposure`` (largest |notional| / equity of any market on
      any session), ``last_gross_exposure_usd``, ``last_net_exposure_usd``;
    - ``avg_market_correlation``, ``avg_strategy_correlation`` (mean
      off-diagonal, full period), ``avg_market_correlation_rolling`` (last
      ``rolling_window`` sessions);
    - ``worst_scenario_pnl_usd`` and ``worst_scenario``.
    """
    eq = equity.set_index("ts")["equity"]
    r = daily_returns(eq)
    s: dict[str, float] = {"ulcer_index": ulcer_index(eq)}
    for level in (0.95, 0.99):
        pct = round(level * 100)
        s[f"parametric_var_{pct}"] = parametric_var(r, level)
        s[f"parametric_cvar_{pct}"] = parametric_cvar(r, level)
        s[f"cf_var_{pct}"] = cornish_fisher_var(r, level)
        s[f"cf_cvar_{pct}"] = cornish_fisher_cvar(r, level)
    fills = trades[trades["kind"] != "roll"] if len(trades) else trades
    s["turnover_notional"] = turnover_notional(float(fills["notional_usd"].sum()) if len(fills) else 0.0, eq)
    per_market = [turnover_contracts(g["position"].to_numpy()) for _, g in positions.groupby("root")]
    per_market = [x for x in per_market if math.isfinite(x)]
    s["turnover_contracts"] = float(np.mean(per_market)) if per_market else math.nan
    costs = float(equity["costs"].sum())
    net = float(equity["pnl"].sum())
    s.update(total_costs_usd=costs, net_pnl_usd=net, cost_share=cost_share(costs, net))

    if benchmark is None and len(mreturns.columns):
        benchmark = "ES" if "ES" in mreturns.columns else str(mreturns.columns[0])
    if benchmark is not None:
        if benchmark not in mreturns.columns:
            raise ValueError(f"benchmark market {benchmark!r} has no prices (markets: {list(mreturns.columns)})")
        beta, c, n = beta_correlation(r, mreturns[benchmark])
        s.update(beta=beta, benchmark_correlation=c, benchmark_sessions=float(n))

    lev = equity["leverage"].replace([np.inf, -np.inf], np.nan)
    s["max_leverage"] = float(lev.max())
    s["last_leverage"] = float(lev.iloc[-1])
    s["last_gross_exposure_usd"] = float(equity["gross_exposure"].iloc[-1])
    s["last_net_exposure_usd"] = float(equity["net_exposure"].iloc[-1])
    mexp = market_exposure(positions, equity)
    s["max_market_exposure"] = float(mexp.max().max())
    last_pos = positions.sort_values("ts").groupby("root").tail(1).set_index("root")
    notional = last_pos["notional_usd"].astype(float)
    exposure = pd.DataFrame({"root": notional.index, "position": last_pos["position"].to_numpy(),
                             "notional_usd": notional.to_numpy(),
                             "exposure": (notional.abs() / float(eq.iloc[-1])).to_numpy()})

    mcorr = corr_mod.correlation_matrix(mreturns) if mreturns.shape[1] else pd.DataFrame()
    tables = [_long_corr("market", mcorr)] if mreturns.shape[1] > 1 else []
    s["avg_market_correlation"] = corr_mod.average_pairwise(mcorr) if mreturns.shape[1] > 1 else math.nan
    if mreturns.shape[1] > 1 and len(mreturns) >= rolling_window:
        recent = corr_mod.correlation_matrix(mreturns.iloc[-rolling_window:], min_periods=rolling_window // 2)
        tables.append(_long_corr(f"market_rolling_{rolling_window}d", recent))
        s["avg_market_correlation_rolling"] = corr_mod.average_pairwise(recent)
    scorr = pd.DataFrame()
    if sreturns is not None and sreturns.shape[1] > 1:
        scorr = corr_mod.correlation_matrix(sreturns)
        tables.append(_long_corr("strategy", scorr))
        s["avg_strategy_correlation"] = corr_mod.average_pairwise(scorr)
    correlation = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["kind", "a", "b", "correlation"])

    held = notional[notional.index.isin(mreturns.columns)]
    scen = scenario_table(held, mreturns, _expand_shocks(shocks if shocks is not None else DEFAULT_SHOCKS,
                                                         {k: asset_classes.get(k, "") for k in held.index}),
                          windows, worst_days)
    totals = scen[scen["root"] == "total"]
    if len(totals):
        worst = totals.loc[totals["pnl_usd"].idxmin()]
        s["worst_scenario_pnl_usd"] = float(worst["pnl_usd"])
        s["worst_scenario"] = str(worst["scenario"])
    return RiskExtras(scalars=s, scenarios=scen, correlation=correlation, market_correlation=mcorr,
                      strategy_correlation=scorr, exposure=exposure)


def round_trip_pnl(positions: pd.DataFrame) -> np.ndarray:
    """USD P&L of every trade (a run of same-signed positions) in every market.

    From the book's positions (root, ts, position, pnl): a trade opens when
    a market's position leaves 0 or flips sign and lasts while the sign
    holds. Session t's P&L belongs to the position held into it (the close
    of t-1), or to the new position when the market was flat before t (the
    entry session's costs and open-to-close move). A trade still open at the
    end counts with its P&L so far. Ordered by market, then time.
    """
    out: list[float] = []
    for _, g in positions.sort_values(["root", "ts"]).groupby("root", sort=True):
        sign = np.sign(g["position"].to_numpy())
        pnl = g["pnl"].to_numpy(float)
        seg = np.cumsum(np.r_[True, sign[1:] != sign[:-1]])
        owner = seg.copy()
        held_before = np.r_[False, sign[:-1] != 0]
        owner[held_before] = seg[np.flatnonzero(held_before) - 1]
        seg_sign = {s: sg for s, sg in zip(seg, sign)}
        sums = pd.Series(pnl).groupby(owner).sum()
        out.extend(float(v) for s, v in sums.items() if seg_sign[s] != 0)
    return np.asarray(out, dtype=float)


def trade_reshuffle_summary(trade_pnl: np.ndarray, capital: float, n_paths: int, dd_threshold: float,
                            seed: int = 0) -> dict[str, float]:
    """Max drawdown (fraction of equity) over random orderings of the trades.

    ``trades``, ``max_drawdown_p5/p50/p95`` and ``prob_drawdown_exceeds``
    (share of orderings deeper than ``dd_threshold``). Every ordering ends
    at the same equity; only the path, hence the drawdown, changes.
    """
    from fbt_pipelines.risk.monte_carlo import max_drawdown_paths, trade_reshuffle_paths

    if trade_pnl.size < 2:
        return {"trades": float(trade_pnl.size)}
    paths = trade_reshuffle_paths(trade_pnl, n_paths, seed=seed, capital=capital)
    if (paths <= 0).any():  # a ruined ordering: relative drawdown beyond 100 %
        paths = np.maximum(paths, 1e-9)
    dd = max_drawdown_paths(paths, relative=True)
    p5, p50, p95 = np.percentile(dd, [5, 50, 95])
    return {"trades": float(trade_pnl.size), "max_drawdown_p5": float(p5), "max_drawdown_p50": float(p50),
            "max_drawdown_p95": float(p95), "prob_drawdown_exceeds": float((dd > dd_threshold).mean())}
