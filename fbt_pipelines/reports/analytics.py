"""Report analytics: monthly returns, rolling statistics, round trips of trades.

Pure pandas / NumPy (no plotting, no storage). Conventions follow
:mod:`fbt_pipelines.risk.metrics`: returns are simple daily returns as
fractions, annualisation uses 252 sessions, sample standard deviations
(``ddof=1``), undefined values are NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.primitives.performance import ZERO_VOL, annualisation, sharpe_from_moments, validate_equity

__all__ = ["ROUND_TRIP_COLUMNS", "monte_carlo_bands", "monthly_returns", "rolling_sharpe", "rolling_vol", "round_trips",
           "trade_stats"]

def _equity(equity: pd.Series) -> pd.Series:
    if isinstance(equity, pd.Series) and not isinstance(equity.index, pd.DatetimeIndex):
        raise ValueError("equity must be indexed by session timestamps (DatetimeIndex)")
    validate_equity(equity, "equity", min_points=0)
    return equity.astype(float)


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """Return of each calendar month as a fraction of start-of-month equity.

    The start-of-month equity is the last value of the previous month (the
    first value of the series for the first month); the month's return is
    ``last value in the month / start-of-month equity - 1``. So equity
    100 -> 110 during January and 110 -> 99 during February gives
    January 0.10 and February -0.10.

    Returns a frame indexed by year (int, ascending) with columns 1..12
    (month numbers); months without data are NaN.
    """
    eq = _equity(equity)
    cols = pd.Index(range(1, 13), name="month")
    if eq.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="year"), dtype=float)
    month_end = eq.groupby([eq.index.year, eq.index.month]).last()
    start = month_end.shift(1)
    start.iloc[0] = eq.iloc[0]
    table = (month_end / start - 1.0).unstack()
    table.index.name, table.columns.name = "year", "month"
    return table.reindex(columns=cols).astype(float)


def _rolling_returns(equity: pd.Series, window: int) -> pd.core.window.rolling.Rolling:
    if int(window) != window or window < 2:
        raise ValueError(f"window must be an integer >= 2 (daily returns), got {window!r}")
    eq = _equity(equity)
    return eq.pct_change().rolling(int(window), min_periods=int(window))


def rolling_vol(equity: pd.Series, window: int = 126, periods_per_year: int = 252) -> pd.Series:
    """Annualised volatility of the last ``window`` daily returns, per session.

    ``std(r[t-window+1..t], ddof=1) * sqrt(periods_per_year)``; indexed like
    ``equity``; NaN until ``window`` returns exist (the first ``window``
    sessions).
    """
    std = _rolling_returns(equity, window).std(ddof=1)
    return (std * annualisation(periods_per_year)).mask(std <= ZERO_VOL, 0.0).rename("rolling_vol")


def rolling_sharpe(equity: pd.Series, window: int = 126, periods_per_year: int = 252) -> pd.Series:
    """Annualised Sharpe ratio (risk-free 0) of the last ``window`` daily returns.

    ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` over the window
    ending at each session; indexed like ``equity``; NaN until ``window``
    returns exist and wherever the window's std is zero (<= 1e-12).
    """
    rolling = _rolling_returns(equity, window)
    return sharpe_from_moments(rolling.mean(), rolling.std(ddof=1), periods_per_year).rename("rolling_sharpe")


ROUND_TRIP_COLUMNS = [
    "market", "side", "entry_ts", "exit_ts", "max_contracts", "fills", "rolls",
    "gross_pnl", "commission", "slippage", "roll_costs", "net_pnl", "holding_days", "open",
]


def _multiplier_for(multiplier: float | Mapping[str, float] | None, market: str) -> float:
    if multiplier is None:
        return 1.0
    if isinstance(multiplier, Mapping):
        return float(multiplier[market])
    return float(multiplier)


def round_trips(
    trades: pd.DataFrame,
    multiplier: float | Mapping[str, float] | None = None,
    last_close: float | Mapping[str, float] | None = None,
    last_ts: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Flat-to-flat round trips reconstructed from engine fills.

    A round trip starts when the position leaves zero and ends when it is
    back at zero; a fill that flips the sign closes one round trip and opens
    the next (its commission and slippage are split pro rata by contracts).
    Size changes in between are part of the same round trip. Roll records
    (``kind == "roll"``) do not change the position; their commission and
    slippage are charged to the round trip they occur in.

    P&L uses the fill prices in back-adjusted (Panama) points, exact across
    rolls: ``gross_pnl = -sum(contracts * price) * multiplier``. The engine's
    fill ``price`` already includes slippage, so ``net_pnl = gross_pnl -
    commission - roll_costs`` (``slippage`` of non-roll fills is shown for
    information, it is inside ``gross_pnl``). With ``multiplier=None`` P&L is
    in points x contracts and ``net_pnl`` equals ``gross_pnl`` (the costs,
    in currency, are reported but not subtracted).

    ``trades`` has the engine's columns (ts, kind, contracts, price,
    commission, slippage; a ``root`` column, if present, separates markets
    and selects per-market ``multiplier`` / ``last_close`` mappings). Rows with
    0 contracts (refused-only records) are ignored. A position still open at
    the end is returned with ``open=True``, marked at ``last_close`` (adjusted
    points) when given and otherwise left out. ``holding_days`` are calendar
    days from the first fill to the closing fill (or ``last_ts``, else the
    last fill, for an open one).
    """
    rows: list[dict] = []
    if trades is None or trades.empty:
        return pd.DataFrame(columns=ROUND_TRIP_COLUMNS)
    frame = trades[trades["contracts"] != 0].copy()
    frame["_rank"] = (frame["kind"] == "roll").astype(int)  # a bar's fill (open) precedes its roll (close)
    frame = frame.sort_values(["ts", "_rank"], kind="mergesort")
    groups = frame.groupby("root", sort=True) if "root" in frame.columns else [("", frame)]
    for market, fills in groups:
        mult = _multiplier_for(multiplier, market)
        pos = 0
        cur: dict | None = None
        for r in fills.itertuples(index=False):
            qty, price = int(r.contracts), float(r.price)
            comm, slip = float(r.commission), float(r.slippage)
            if r.kind == "roll":
                if cur is not None:
                    cur["rolls"] += 1
                    cur["roll_costs"] += comm + slip
                continue
            parts: list[int]
            if pos != 0 and np.sign(pos + qty) == -np.sign(pos):  # flip: close all, open the rest
                parts = [-pos, qty + pos]
            else:
                parts = [qty]
            for part in parts:
                share = abs(part) / abs(qty)
                if cur is None:
                    cur = _open(market, r.ts, part)
                cur["cash"] -= part * price
                cur["commission"] += comm * share
                cur["slippage"] += slip * share
                cur["fills"] += 1
                pos += part
                cur["max_contracts"] = max(cur["max_contracts"], abs(pos))
                if pos == 0:
                    cur["exit_ts"] = r.ts
                    rows.append(_close(cur, mult, open_=False, net_of_costs=multiplier is not None))
                    cur = None
        if cur is not None:
            mark = last_close.get(market) if isinstance(last_close, Mapping) else last_close
            if mark is not None and np.isfinite(mark):
                cur["cash"] += pos * float(mark)
                cur["exit_ts"] = last_ts if last_ts is not None else fills["ts"].iloc[-1]
                rows.append(_close(cur, mult, open_=True, net_of_costs=multiplier is not None))
    return pd.DataFrame(rows, columns=ROUND_TRIP_COLUMNS)


def _open(market: str, ts: pd.Timestamp, side: int) -> dict:
    # "cash" accumulates -contracts x price (points); the P&L once flat again
    return {"market": market, "side": "long" if side > 0 else "short", "entry_ts": ts, "exit_ts": pd.NaT,
            "max_contracts": 0, "fills": 0, "rolls": 0, "cash": 0.0, "commission": 0.0, "slippage": 0.0,
            "roll_costs": 0.0}


def _close(cur: dict, mult: float, open_: bool, net_of_costs: bool) -> dict:
    gross = cur.pop("cash") * mult
    held = pd.Timestamp(cur["exit_ts"]) - pd.Timestamp(cur["entry_ts"])
    net = gross - cur["commission"] - cur["roll_costs"] if net_of_costs else gross
    return {**cur, "gross_pnl": gross, "net_pnl": net,
            "holding_days": held / pd.Timedelta(days=1), "open": open_}


def trade_stats(trades: pd.DataFrame, trips: pd.DataFrame) -> dict[str, float]:
    """Headline numbers of the fills and the round trips.

    Counts; ``win_rate`` (fraction of closed round trips with net P&L > 0),
    ``best`` / ``worst`` / ``average`` net P&L of closed round trips,
    ``median_holding_days``; costs in currency: ``roll_costs`` (commission +
    slippage of roll records) and ``other_costs`` (of every other fill);
    :func:`reason_counts` (stops, targets, trailing stops, limit fills,
    margin calls). NaN where undefined (no closed round trip).
    """
    closed = trips[~trips["open"].astype(bool)] if len(trips) else trips
    net = closed["net_pnl"].to_numpy(float) if len(closed) else np.array([])
    is_roll = (trades["kind"] == "roll").to_numpy() if len(trades) else np.array([], dtype=bool)
    costs = (trades["commission"].to_numpy(float) + trades["slippage"].to_numpy(float)) if len(trades) else np.array([])
    fills = int(((trades["kind"] == "trade") & (trades["contracts"] != 0)).sum()) if len(trades) else 0
    nan = float("nan")
    return {
        "fills": float(fills),
        "rolls": float(is_roll.sum()),
        "round_trips": float(len(closed)),
        "open_round_trips": float(len(trips) - len(closed)),
        "win_rate": float((net > 0).mean()) if net.size else nan,
        "best": float(net.max()) if net.size else nan,
        "worst": float(net.min()) if net.size else nan,
        "average": float(net.mean()) if net.size else nan,
        "median_holding_days": float(np.median(closed["holding_days"].to_numpy(float))) if net.size else nan,
        "commission": float(trades["commission"].sum()) if len(trades) else 0.0,
        "slippage": float(trades["slippage"].sum()) if len(trades) else 0.0,
        "roll_costs": float(costs[is_roll].sum()),
        "other_costs": float(costs[~is_roll].sum()),
        **reason_counts(trades),
    }


EXIT_REASONS = ("stop", "target", "trailing_stop", "limit", "margin_call")  # trade reasons counted by reason_counts


def reason_counts(trades: pd.DataFrame) -> dict[str, float]:
    """Records per order reason (``stop``, ``target``, ``trailing_stop``,
    ``limit`` fills and ``margin_call`` records, keys ``<reason>s``); 0 when
    the trades have no ``reason`` column (runs stored before reasons existed)."""
    reasons = trades["reason"] if "reason" in trades.columns else pd.Series([], dtype=object)
    return {f"{r}s": float((reasons == r).sum()) for r in EXIT_REASONS}


def margin_call_dates(trades: pd.DataFrame) -> list[pd.Timestamp]:
    """The ts of every margin-call record (the fill that liquidated; UTC), in order."""
    if "reason" not in trades.columns or not len(trades):
        return []
    return [pd.Timestamp(t) for t in trades.loc[trades["reason"] == "margin_call", "ts"]]


BAND_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def monte_carlo_bands(
    equity: pd.Series, n_paths: int = 1000, seed: int = 0, mean_block: float = 20,
    quantiles: tuple[float, ...] = BAND_QUANTILES,
) -> pd.DataFrame:
    """Percentile bands of equity paths resampled from the curve's own daily returns.

    The daily returns of ``equity`` are resampled ``n_paths`` times by
    stationary bootstrap (blocks of mean length ``mean_block`` sessions, see
    :func:`fbt_pipelines.risk.monte_carlo.bootstrap_paths`) over the same
    number of sessions; each path compounds from the first equity value
    (USD). Returns a frame indexed like ``equity`` with one column per
    quantile (``q05``, ``q25``, ``q50``, ``q75``, ``q95`` for the defaults);
    the first row is the starting equity in every column. The same ``seed``
    gives the same bands.
    """
    from fbt_pipelines.risk.monte_carlo import bootstrap_paths

    eq = _equity(equity)
    returns = eq.pct_change().to_numpy()[1:]
    columns = [f"q{round(q * 100):02d}" for q in quantiles]
    if returns.size == 0:
        return pd.DataFrame([[float(eq.iloc[0])] * len(columns)] * len(eq), index=eq.index, columns=columns)
    paths = bootstrap_paths(returns, n_paths, returns.size, mean_block=mean_block, seed=seed)
    growth = np.cumprod(1.0 + paths, axis=1) * float(eq.iloc[0])
    bands = np.quantile(growth, quantiles, axis=0).T
    start = np.full((1, len(quantiles)), float(eq.iloc[0]))
    return pd.DataFrame(np.vstack([start, bands]), index=eq.index, columns=columns)
