"""Scenario analysis of today's positions: historical replays and hypothetical shocks.

Every scenario is applied to the CURRENT book, held unchanged through the
scenario (no trading, no stops). A market's book is its signed notional in
USD, ``contracts x raw price x multiplier x fx`` (see
:mod:`fbt_pipelines.portfolio.book`); a futures position gains
``notional x return`` for a return of the held contract, so

- a **percentage shock** ``s`` (0.10 = +10 %) to a market makes
  ``notional x s`` USD;
- a **historical replay** over sessions t1..t2 makes
  ``notional x (prod(1 + r_t) - 1)`` USD, with ``r_t`` the market's daily
  returns (held contract's own, fractions) inside the window; a market with
  no return in the window makes 0 and is flagged;
- the **worst N-session windows** are found by ranking the sum of today's
  linear daily P&L ``sum_m notional_m x r_m,t`` over every N-session window
  of the data, keeping non-overlapping windows, worst first;
- **volatility and correlation stresses** are one-day parametric VaR at a
  level (99 % by default) with the covariance of daily returns rescaled
  (volatility x k) or its correlations set to 1; per-market figures are
  Euler contributions ``z x N_m (Sigma N)_m / sigma_p``, which add up to the
  total.

All P&L is USD; losses are negative P&L, VaR is a positive loss.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["apply_shock", "historical_replay", "worst_windows", "stressed_var", "scenario_table"]


def _notional(notional: pd.Series) -> pd.Series:
    if not isinstance(notional, pd.Series) or notional.empty:
        raise ValueError("notional must be a non-empty Series: root -> signed USD notional")
    values = notional.astype(float)
    if not np.isfinite(values).all():
        raise ValueError("notional has NaN or inf")
    return values


def apply_shock(notional: pd.Series, moves: Mapping[str, float]) -> pd.Series:
    """P&L per market (USD) of instantaneous percentage moves.

    ``moves``: root -> move as a fraction (-0.10 = a 10 % fall); markets not
    named do not move. A named market the book does not hold makes 0.
    """
    n = _notional(notional)
    bad = {k: v for k, v in moves.items() if not math.isfinite(v) or v <= -1}
    if bad:
        raise ValueError(f"moves must be finite fractions > -1, got {bad}")
    shocks = pd.Series({root: float(moves.get(root, 0.0)) for root in n.index})
    return (n * shocks).rename("pnl_usd")


def historical_replay(notional: pd.Series, returns: pd.DataFrame, start: str | pd.Timestamp,
                      end: str | pd.Timestamp) -> tuple[pd.Series, list[str]]:
    """P&L per market (USD) if a past window of sessions happened again to today's book.

    The window: the sessions from ``start`` to ``end`` (inclusive, UTC dates).

    ``returns``: ts x root daily returns (fractions). Returns (pnl by root,
    roots without any return in the window: they make 0).
    """
    n = _notional(notional)
    lo, hi = _utc_day(start), _utc_day(end) + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    if hi < lo:
        raise ValueError(f"replay window ends ({end}) before it starts ({start})")
    window = returns.loc[(returns.index >= lo) & (returns.index <= hi)]
    if window.empty:
        raise ValueError(f"no session between {lo.date()} and {hi.date()} in the return history "
                         f"({returns.index.min().date()} .. {returns.index.max().date()})")
    pnl, missing = {}, []
    for root in n.index:
        r = window[root].dropna() if root in window else pd.Series(dtype=float)
        if r.empty:
            missing.append(root)
            pnl[root] = 0.0
        else:
            pnl[root] = float(n[root] * (np.prod(1.0 + r.to_numpy(float)) - 1.0))
    return pd.Series(pnl, name="pnl_usd"), missing


def _utc_day(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).normalize()


def worst_windows(notional: pd.Series, returns: pd.DataFrame, days: int, count: int = 3) -> pd.DataFrame:
    """The ``count`` worst non-overlapping windows of ``days`` sessions for today's book.

    Ranks every window by ``sum_t sum_m notional_m x r_m,t`` (linear P&L,
    missing returns count 0), then keeps the worst, skipping windows that
    overlap one already kept. Returns rows start, end, linear_pnl_usd
    (sorted worst first); replay each with :func:`historical_replay` for the
    compounded per-market P&L.
    """
    if days < 1 or count < 1:
        raise ValueError("days and count must be >= 1")
    n = _notional(notional)
    cols = [r for r in n.index if r in returns.columns]
    daily = returns[cols].fillna(0.0).to_numpy(float) @ n[cols].to_numpy(float) if cols else \
        np.zeros(len(returns))
    if len(daily) < days:
        raise ValueError(f"{len(daily)} sessions of returns, fewer than a {days}-session window")
    sums = np.convolve(daily, np.ones(days), mode="valid")  # sums[i] = daily[i : i + days]
    order = np.argsort(sums, kind="stable")
    taken: list[int] = []
    for i in order:
        if all(abs(int(i) - j) >= days for j in taken):
            taken.append(int(i))
            if len(taken) == count:
                break
    idx = returns.index
    return pd.DataFrame({"start": [idx[i] for i in taken], "end": [idx[i + days - 1] for i in taken],
                         "linear_pnl_usd": [float(sums[i]) for i in taken]})


def stressed_var(notional: pd.Series, returns: pd.DataFrame, level: float = 0.99, vol_factor: float = 1.0,
                 correlation_one: bool = False) -> pd.Series:
    """One-day parametric VaR (USD, positive = loss) of today's book, per market and total.

    Covariance of daily returns from ``returns`` (pairwise complete sessions,
    ddof=1), volatilities x ``vol_factor``, correlations set to 1 if
    ``correlation_one``. ``sigma_p = sqrt(N' Sigma N)``; total VaR
    ``z_level x sigma_p`` (mean ignored); market m's Euler contribution
    ``z x N_m (Sigma N)_m / sigma_p`` (the contributions add up to the total).
    Index: the book's roots plus ``total``.
    """
    if not 0 < level < 1 or not vol_factor > 0:
        raise ValueError("level must be in (0, 1) and vol_factor > 0")
    n = _notional(notional)
    missing = [r for r in n.index if r not in returns.columns]
    if missing:
        raise ValueError(f"no return history for {missing}")
    cov = returns[list(n.index)].cov().to_numpy(float)
    sd = np.sqrt(np.diag(cov)) * vol_factor
    if correlation_one:
        corr = np.ones_like(cov)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = cov / np.outer(np.sqrt(np.diag(cov)), np.sqrt(np.diag(cov)))
    sigma = np.nan_to_num(corr * np.outer(sd, sd))
    w = n.to_numpy(float)
    marginal = sigma @ w
    sigma_p = math.sqrt(max(float(w @ marginal), 0.0))
    z = NormalDist().inv_cdf(level)
    contrib = z * w * marginal / sigma_p if sigma_p > 0 else np.zeros_like(w)
    return pd.Series(list(contrib) + [z * sigma_p], index=list(n.index) + ["total"], name="var_usd")


def scenario_table(notional: pd.Series, returns: pd.DataFrame,
                   shocks: Mapping[str, Mapping[str, float]] | None = None,
                   named_windows: Sequence[tuple[str, str, str]] = (),
                   worst_days: Sequence[int] = (1, 5, 20), worst_count: int = 1,
                   level: float = 0.99) -> pd.DataFrame:
    """Every scenario on today's book: one row per scenario per market plus a ``total``.

    Columns scenario, kind (shock | replay | worst | stress), window (dates,
    for replays), root, pnl_usd (for stresses: minus the VaR contribution, so
    a loss is negative throughout).

    ``shocks``: name -> {root: move}. ``named_windows``: (name, start, end);
    a window outside the data is skipped. ``worst_days``: window lengths
    for the worst historical windows. Stresses: VaR at ``level`` as is,
    volatility x2, correlations 1, and both.
    """
    rows: list[dict] = []

    def add(name: str, kind: str, window: str, pnl: pd.Series) -> None:
        for root, value in pnl.items():
            rows.append({"scenario": name, "kind": kind, "window": window, "root": root, "pnl_usd": float(value)})
        if "total" not in pnl.index:
            rows.append({"scenario": name, "kind": kind, "window": window, "root": "total",
                         "pnl_usd": float(pnl.sum())})

    for name, moves in (shocks or {}).items():
        add(name, "shock", "", apply_shock(notional, moves))
    first, last = returns.index.min(), returns.index.max()
    for name, start, end in named_windows:
        if _utc_day(end) < first or _utc_day(start) > last:
            continue
        pnl, _ = historical_replay(notional, returns, start, end)
        add(name, "replay", f"{_utc_day(start).date()}..{_utc_day(end).date()}", pnl)
    for days in worst_days:
        if len(returns) < days:
            continue
        for k, w in enumerate(worst_windows(notional, returns, days, worst_count).itertuples(), 1):
            pnl, _ = historical_replay(notional, returns, w.start, w.end)
            label = f"worst_{days}d" + (f"_{k}" if worst_count > 1 else "")
            add(label, "worst", f"{w.start.date()}..{w.end.date()}", pnl)
    pct = round(level * 100)
    for name, factor, one in ((f"var_{pct}", 1.0, False), (f"var_{pct}_vol_x2", 2.0, False),
                              (f"var_{pct}_corr_1", 1.0, True), (f"var_{pct}_vol_x2_corr_1", 2.0, True)):
        add(name, "stress", "", -stressed_var(notional, returns, level, factor, one))
    return pd.DataFrame(rows, columns=["scenario", "kind", "window", "root", "pnl_usd"])
