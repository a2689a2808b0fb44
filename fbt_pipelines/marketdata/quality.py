"""Data-quality measures of stored bars (pure; the checks decide pass/fail)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _moves(bars: pd.DataFrame, threshold: float) -> tuple[np.ndarray, ...]:
    """Each contract's moves in time order and the limit a large one passes.

    Returns ``(r, g, day, limit)``: signed log return, contract code, the
    session (UTC ns) it ends on, and ``threshold`` x the contract's robust
    scale (1.4826 x median |r|; NaN for contracts with fewer than 10 closes).
    """
    codes = pd.Categorical(bars["contract"]).codes.astype(np.int64)
    ts = pd.to_datetime(bars["ts"], utc=True).to_numpy("datetime64[ns]").view(np.int64)
    order = np.lexsort((ts, codes))
    c = codes[order]
    logc = np.log(bars["close"].to_numpy(float)[order])
    same = c[1:] == c[:-1]
    r = np.diff(logc)[same]
    g = c[1:][same]
    day = ts[order][1:][same]
    stats = pd.DataFrame({"g": g, "d": np.abs(r)}).groupby("g")["d"].agg(["median", "size"])
    scale = (stats["median"] * 1.4826).where((stats["size"] >= 9) & (stats["median"] > 0))
    limit = (scale.reindex(np.arange(codes.max() + 1)).to_numpy() * threshold)[g]
    return r, g, day, limit


def large_move_count(bars: pd.DataFrame, threshold: float = 10.0) -> int:
    """Closes whose move is large for their contract: the ingest's ``spikes`` warning.

    A move is the log return within one contract, in time order; it is large
    when above ``threshold`` times that contract's robust scale (1.4826 x the
    median absolute log return; contracts with fewer than 10 closes are not
    tested). One file at a time, without the market's other contracts: the
    bulk and SQL ingest paths count the same (``bulk_csv.spike_count_in_blocks``,
    ``sql_validation._spike_count``). :func:`spike_count` (the asset check)
    then tells market moves from bad prints.
    """
    if len(bars) < 2:
        return 0
    r, _, _, limit = _moves(bars, threshold)
    with np.errstate(invalid="ignore"):
        return int(np.sum(np.abs(r) > limit))  # NaN limit (untested contract): never


def spike_count(bars: pd.DataFrame, threshold: float = 10.0) -> int:
    """Closes whose move looks like a bad print, not like the market moving.

    A move is the log return within one contract, in time order; it is large
    when above ``threshold`` times that contract's robust scale (1.4826 x
    the median absolute log return; contracts with fewer than 10 closes are
    not tested). A large move is a spike when the market's other contracts
    did not make it (it is still above the limit after subtracting their mean
    move on that session; a contract alone on its session has nothing to
    subtract), or when it is undone: the same contract's next move (or
    previous one) is also large and of the other sign.

    Issue 20: the check was wrong, not the sample data. Its generator draws
    Student-t(5) returns, which exceed 10 robust standard deviations about
    once in 8,000 sessions: GC on 2024-10-08 (+11.6%) and 6E on 2016-05-27
    (+4.0%), moved alike in every listed contract and not undone. The first
    form of this rule counted every large move, so real market moves (or
    these) warned. Vectorised: one sort by (contract, ts), per-contract
    medians and per-session sums by groupby.
    """
    if len(bars) < 2:
        return 0
    r, g, day, limit = _moves(bars, threshold)
    d = np.abs(r)
    with np.errstate(invalid="ignore"):
        large = d > limit            # NaN limit (untested contract): never
    # the other contracts' mean move on the same session (0 when alone)
    by_day = pd.DataFrame({"day": day, "r": r}).groupby("day")["r"].agg(["sum", "size"])
    total = by_day["sum"].reindex(day).to_numpy()
    n = by_day["size"].reindex(day).to_numpy()
    others = np.where(n > 1, (total - r) / np.maximum(n - 1, 1), 0.0)
    with np.errstate(invalid="ignore"):
        alone = np.abs(r - others) > limit
    # undone: the neighbouring move of the same contract is large and of the other sign
    # (neighbours in the filtered arrays are neighbours in time when both belong to g)
    nxt = np.zeros_like(large)
    nxt[:-1] = large[1:] & (g[1:] == g[:-1]) & (r[1:] * r[:-1] < 0)
    prv = np.zeros_like(large)
    prv[1:] = large[:-1] & (g[1:] == g[:-1]) & (r[1:] * r[:-1] < 0)
    return int(np.sum(large & (alone | nxt | prv)))
