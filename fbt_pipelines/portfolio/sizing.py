"""Volatility-targeted position sizing in whole contracts (pysystemtrade style)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.ml.features import contract_returns

ANNUAL_SESSIONS = 252


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
    return whole_contracts(signal, cash_vol_per_contract(prices, spec, config),
                           config.capital * config.annual_risk_target * weight * config.idm)


def cash_vol_per_contract(prices: pd.DataFrame, spec: ContractSpec, config: VolTargetConfig) -> np.ndarray:
    """Annualised USD volatility of one contract per bar (NaN until known)."""
    daily_vol = contract_returns(prices).ewm(span=config.vol_span, min_periods=config.vol_span).std()
    notional = prices["raw_close"].astype(float) * spec.multiplier
    return (daily_vol * np.sqrt(ANNUAL_SESSIONS) * notional).to_numpy()


def whole_contracts(signal: np.ndarray, cash_vol: np.ndarray, budget: float) -> np.ndarray:
    """``round(signal * budget / cash_vol)``, 0 where that is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.asarray(signal, dtype=float) * budget / cash_vol
    raw = np.where(np.isfinite(raw), raw, 0.0)
    return np.round(raw).astype(np.int64)
