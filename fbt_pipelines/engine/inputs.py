"""The frame a strategy reads: continuous prices plus the inputs beyond prices."""

from __future__ import annotations

import numpy as np
import pandas as pd


def strategy_inputs(prices: pd.DataFrame, predictions: pd.DataFrame | None = None,
                    features: pd.DataFrame | None = None) -> pd.DataFrame:
    """Prices with ``prob_up`` (the model's out-of-sample probability; NaN where
    there is none) and ``roll_yield`` (from the features; NaN if absent), joined on ts (UTC)."""
    out = prices
    if predictions is None or predictions.empty:
        out = out.assign(prob_up=np.nan)
    else:
        out = out.merge(predictions[["ts", "prob_up"]], on="ts", how="left")
    if features is None or features.empty or "roll_yield" not in features:
        return out.assign(roll_yield=np.nan) if "roll_yield" not in out else out
    return out.drop(columns=["roll_yield"], errors="ignore").merge(features[["ts", "roll_yield"]], on="ts", how="left")
