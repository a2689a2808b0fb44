"""Volatility-targeted position sizing in whole contracts (pysystemtrade style)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.primitives.performance import annualisation
from fbt_pipelines.primitives.returns import contract_returns


@dataclass(frozen=True)
class VolTargetConfig:
    """Sizing settings.

    Attributes
    ----------
    capital : float
        Trading capital, USD.
    annual_risk_target : float
        Target annualised st. dev. of portfolio returns (0.20 = 20%).
    idm : float
        Instrument diversification multiplier (>= 1): scales each market's
        share back up for the diversification across markets.
    vol_span : int
        EWMA span (sessions) of the daily-return volatility estimate.
    """

    capital: float = 1_000_000.0
    annual_risk_target: float = 0.20
    idm: float = 1.5
    vol_span: int = 35

    def __post_init__(self) -> None:
        if self.capital <= 0 or not 0 < self.annual_risk_target < 2 or self.idm < 1 or self.vol_span < 2:
            raise ValueError(f"invalid sizing config {self}")

    def budget(self, weight: float = 1.0) -> float:
        """USD of annual risk given to a market of portfolio ``weight``:
        ``capital * annual_risk_target * weight * idm`` (the one budget formula)."""
        return self.capital * self.annual_risk_target * weight * self.idm


def contracts_for_risk(
    prices: pd.DataFrame, signal: np.ndarray, spec: ContractSpec, weight: float, config: VolTargetConfig
) -> np.ndarray:
    """Whole contracts per bar so that this market's share of the portfolio
    runs at the risk target.

    ``contracts = signal * capital * target * weight * idm
    / (annual_vol * raw_close * multiplier)``, rounded to the nearest whole
    contract, where ``annual_vol`` is the EWMA st. dev. of the held
    contract's daily returns x sqrt(252) and ``raw_close * multiplier`` is one
    contract's notional in USD. Zero where the volatility is not yet known.
    """
    return whole_contracts(signal, cash_vol_per_contract(prices, spec, config), config.budget(weight))


def cash_vol_per_contract(prices: pd.DataFrame, spec: ContractSpec, config: VolTargetConfig) -> np.ndarray:
    """Annualised USD volatility of one contract per bar (NaN until known)."""
    daily_vol = contract_returns(prices).ewm(span=config.vol_span, min_periods=config.vol_span).std()
    notional = prices["raw_close"].astype(float) * spec.multiplier
    return (daily_vol * annualisation() * notional).to_numpy()


def whole_contracts(signal: np.ndarray, cash_vol: np.ndarray, budget: float) -> np.ndarray:
    """``round(signal * budget / cash_vol)``, 0 where that is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.asarray(signal, dtype=float) * budget / cash_vol
    raw = np.where(np.isfinite(raw), raw, 0.0)
    return np.round(raw).astype(np.int64)


# --- buffering (pysystemtrade) --------------------------------------------------------------------


def buffer_width(cash_vol: np.ndarray, budget: float, fraction: float = 0.10) -> np.ndarray:
    """Half-width of the no-trade buffer in contracts, per bar.

    pysystemtrade's position buffer: ``fraction`` (default 10 %) of the
    position an average signal (|signal| = 1) would hold,
    ``fraction * budget / cash_vol``, with ``budget`` the USD of annual risk
    given to this market (:meth:`VolTargetConfig.budget`) and ``cash_vol``
    the annualised USD volatility of one contract. NaN where unknown.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"buffer fraction must be in [0, 1), got {fraction}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return fraction * abs(budget) / np.asarray(cash_vol, dtype=float)


def buffered_positions(optimal: np.ndarray, buffer: np.ndarray | float, start: int = 0) -> np.ndarray:
    """Whole contracts held after buffering, bar by bar.

    For each bar the no-trade zone is ``[round(optimal - buffer),
    round(optimal + buffer)]`` (contracts; ``optimal`` is the unrounded
    position a sizing rule wants). If the position carried from the previous
    bar lies inside the zone nothing is traded; below it, the position is
    raised to the lower edge; above it, cut to the upper edge (trading to the
    buffer's edge, not to the optimum, as pysystemtrade does). A bar whose
    optimum or buffer is not finite holds the previous position. ``start`` is
    the position before the first bar.
    """
    opt = np.asarray(optimal, dtype=float)
    buf = np.broadcast_to(np.asarray(buffer, dtype=float), opt.shape)
    out = np.empty(opt.shape, dtype=np.int64)
    held = int(start)
    for i in range(opt.size):
        if np.isfinite(opt[i]) and np.isfinite(buf[i]):
            lower, upper = np.round(opt[i] - abs(buf[i])), np.round(opt[i] + abs(buf[i]))
            if held < lower:
                held = int(lower)
            elif held > upper:
                held = int(upper)
        out[i] = held
    return out


# --- margin cap, fixed fractional, fractional Kelly -------------------------------------------------


def margin_cap(contracts: np.ndarray | int, equity: np.ndarray | float, initial_margin: float,
               max_margin_fraction: float = 0.5) -> np.ndarray:
    """Cut each position so its initial margin is at most a fraction of equity.

    ``|contracts| <= floor(max_margin_fraction * equity / initial_margin)``
    (equity and margin in the same currency, USD); the sign is kept. With no
    positive equity, 0 contracts.
    """
    if initial_margin <= 0:
        raise ValueError(f"initial_margin must be > 0, got {initial_margin}")
    if not 0 < max_margin_fraction <= 1:
        raise ValueError(f"max_margin_fraction must be in (0, 1], got {max_margin_fraction}")
    c = np.asarray(contracts, dtype=np.int64)
    eq = np.maximum(np.asarray(equity, dtype=float), 0.0)
    allowed = np.floor(max_margin_fraction * eq / initial_margin + 1e-9).astype(np.int64)
    return (np.sign(c) * np.minimum(np.abs(c), allowed)).astype(np.int64)


def fixed_fractional_contracts(equity: float, risk_fraction: float, stop_points: float, multiplier: float,
                               fx_rate: float = 1.0, initial_margin: float | None = None,
                               max_margin_fraction: float = 0.5) -> int:
    """Contracts that lose ``risk_fraction`` of equity if the stop is hit.

    ``floor(equity * risk_fraction / (stop_points * multiplier * fx_rate))``:
    equity in USD, stop distance in price points, multiplier in contract
    currency per point, ``fx_rate`` USD per unit of contract currency. Rounded
    down so the loss at the stop never exceeds the fraction. Unsigned: apply
    the trade's direction yourself. With ``initial_margin`` (USD per
    contract) the result is capped by :func:`margin_cap`.
    """
    if not 0 < risk_fraction < 1:
        raise ValueError(f"risk_fraction must be in (0, 1), got {risk_fraction}")
    if stop_points <= 0 or multiplier <= 0 or fx_rate <= 0:
        raise ValueError("stop_points, multiplier and fx_rate must be > 0")
    if equity <= 0:
        return 0
    n = int(np.floor(equity * risk_fraction / (stop_points * multiplier * fx_rate) + 1e-9))
    return n if initial_margin is None else int(margin_cap(n, equity, initial_margin, max_margin_fraction))


def kelly_fraction(returns: np.ndarray | pd.Series, fraction: float = 0.5, cap: float = 2.0) -> float:
    """Fractional Kelly leverage from a strategy's own daily returns.

    The full (continuous) Kelly leverage is ``mean / variance`` of the
    strategy's daily returns at 1x notional (fractions per day, sample
    variance ddof=1); it maximises expected log growth for normal returns.
    Returned: ``fraction * mean / variance`` clipped to ``[0, cap]`` (no
    leverage for a losing strategy; ``cap`` bounds notional / equity). NaN
    returns are dropped; fewer than 2 or zero variance gives 0.
    """
    if not 0 < fraction <= 1 or cap <= 0:
        raise ValueError(f"fraction must be in (0, 1] and cap > 0; got {fraction}, {cap}")
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return 0.0
    var = float(r.var(ddof=1))
    if var <= 1e-18:
        return 0.0
    return float(np.clip(fraction * r.mean() / var, 0.0, cap))


def kelly_contracts(equity: float, leverage: float, price: float, multiplier: float, fx_rate: float = 1.0,
                    direction: int = 1, initial_margin: float | None = None,
                    max_margin_fraction: float = 0.5) -> int:
    """Contracts whose notional is ``leverage x equity``:
    ``direction * floor(leverage * equity / (price * multiplier * fx_rate))``
    (equity USD, price in points, multiplier contract currency per point,
    fx_rate USD per unit of contract currency), capped by :func:`margin_cap`
    when ``initial_margin`` (USD per contract) is given."""
    if price <= 0 or multiplier <= 0 or fx_rate <= 0:
        raise ValueError("price, multiplier and fx_rate must be > 0")
    if equity <= 0 or leverage <= 0:
        return 0
    n = int(np.sign(direction)) * int(np.floor(leverage * equity / (price * multiplier * fx_rate) + 1e-9))
    return n if initial_margin is None else int(margin_cap(n, equity, initial_margin, max_margin_fraction))
