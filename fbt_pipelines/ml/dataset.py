"""The training table of one market: features plus the forward-return label."""

from __future__ import annotations

import pandas as pd

from fbt_pipelines.ml.features import build_features, forward_return_label


def feature_table(prices: pd.DataFrame, horizon: int = 5, carry: pd.Series | None = None) -> pd.DataFrame:
    """Features of ``prices`` (continuous, Panama) with ``label`` and ``horizon``."""
    table = build_features(prices, carry)
    table["label"] = forward_return_label(prices, horizon).to_numpy()
    table["horizon"] = horizon
    return table
