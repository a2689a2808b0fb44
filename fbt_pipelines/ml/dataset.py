"""The training table of one market: features plus the forward-return label."""

from __future__ import annotations

import pandas as pd

from fbt_pipelines.ml.features import build_features, forward_return_label


def feature_table(prices: pd.DataFrame, horizon: int = 5, carry: pd.Series | None = None,
                  roll_dates: pd.Series | None = None, dead_zone: float = 0.0) -> pd.DataFrame:
    """Features of ``prices`` (continuous, Panama) with ``label``, ``horizon``
    and ``dead_zone`` (see :func:`forward_return_label`)."""
    table = build_features(prices, carry, roll_dates)
    table["label"] = forward_return_label(prices, horizon, dead_zone).to_numpy()
    table["horizon"] = horizon
    table["dead_zone"] = float(dead_zone)
    return table
