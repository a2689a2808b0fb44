"""Data-quality measures of stored bars (pure; the checks decide pass/fail)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def spike_count(bars: pd.DataFrame, threshold: float = 10.0) -> int:
    """Closes whose log return (within one contract) exceeds ``threshold``
    times that contract's median absolute log return (a robust spike test)."""
    count = 0
    for _, g in bars.sort_values("ts").groupby("contract"):
        r = np.log(g["close"].to_numpy(float))
        if len(r) < 10:
            continue
        d = np.abs(np.diff(r))
        mad = np.median(d)
        if mad > 0:
            count += int((d > threshold * mad * 1.4826).sum())
    return count
