"""Data-quality measures of stored bars (pure; the checks decide pass/fail)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def spike_count(bars: pd.DataFrame, threshold: float = 10.0) -> int:
    """Closes whose log return (within one contract, in time order) exceeds
    ``threshold`` times that contract's robust scale (1.4826 x the median
    absolute log return). Contracts with fewer than 10 closes are not tested.
    Vectorised: one sort by (contract, ts), per-contract medians by groupby."""
    if len(bars) < 2:
        return 0
    codes = pd.Categorical(bars["contract"]).codes.astype(np.int64)
    ts = pd.to_datetime(bars["ts"], utc=True).to_numpy("datetime64[ns]").view(np.int64)
    order = np.lexsort((ts, codes))
    c = codes[order]
    logc = np.log(bars["close"].to_numpy(float)[order])
    same = c[1:] == c[:-1]
    d = np.abs(np.diff(logc))[same]
    g = c[1:][same]
    stats = pd.DataFrame({"g": g, "d": d}).groupby("g")["d"].agg(["median", "size"])
    scale = (stats["median"] * 1.4826).where((stats["size"] >= 9) & (stats["median"] > 0))
    limit = scale.reindex(np.arange(codes.max() + 1)).to_numpy() * threshold
    return int(np.nansum(d > limit[g]))
