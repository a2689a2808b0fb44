"""One market's whole-contract targets for the portfolio.

From the strategy signal, volatility targeting and (optionally)
pysystemtrade's position buffer.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.inputs import strategy_inputs
from fbt_pipelines.engine.strategies import strategy_signal, validate_params
from fbt_pipelines.portfolio.sizing import (VolTargetConfig, buffer_width, buffered_positions,
                                            cash_vol_per_contract, whole_contracts)


def market_targets(prices: pd.DataFrame, spec: ContractSpec, strategy: str, params: Mapping[str, Any],
                   sizing: VolTargetConfig, weight: float, buffer_fraction: float = 0.0,
                   predictions: pd.DataFrame | None = None,
                   features: pd.DataFrame | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """(strategy input frame, whole contracts wanted after each bar's close).

    Without a buffer: :func:`~fbt_pipelines.portfolio.sizing.contracts_for_risk`
    (the optimum rounded). With ``buffer_fraction > 0``: the unrounded optimum
    ``signal x budget / cash_vol`` goes through
    :func:`~fbt_pipelines.portfolio.sizing.buffered_positions` with a buffer of
    ``buffer_fraction`` of the average position (``budget / cash_vol``), so
    the position only trades when it drifts outside optimum +- buffer.
    """
    frame = strategy_inputs(prices, predictions, features)
    signal = strategy_signal(strategy, frame, validate_params(strategy, params))
    return frame, targets_from_signal(signal, cash_vol_per_contract(frame, spec, sizing), sizing.budget(weight),
                                      buffer_fraction)


def targets_from_signal(signal: np.ndarray, cash_vol: np.ndarray, budget: float,
                        buffer_fraction: float = 0.0) -> np.ndarray:
    """Whole contracts wanted after each bar's close for ``signal``.

    ``signal`` is in standard risk positions; given one contract's annualised
    USD volatility per bar and the risk budget (USD): the optimum
    ``signal x budget / cash_vol`` rounded, or with ``buffer_fraction > 0``
    kept inside pysystemtrade's buffer of ``buffer_fraction`` x the average
    position (``budget / cash_vol``).
    """
    signal = np.asarray(signal, dtype=float)
    if buffer_fraction <= 0:
        return whole_contracts(signal, cash_vol, budget)
    with np.errstate(divide="ignore", invalid="ignore"):
        optimal = signal * budget / cash_vol
    optimal = np.where(np.isfinite(optimal), optimal, 0.0)
    width = np.nan_to_num(buffer_width(cash_vol, budget, buffer_fraction), nan=0.0, posinf=0.0)
    return buffered_positions(optimal, width)
