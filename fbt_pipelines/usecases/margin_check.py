"""The backtests' margin check: every close below maintenance margin was margin-called.

Why not "margin in use never exceeds equity" (the check's first form): the
engine caps new positions at the initial margin but, as a broker, calls the
account only when equity falls below the *maintenance* margin (lower). Equity
between the two, or below maintenance on the close that issues the call, is
the margin model working, not a fault: a vol-targeted buy-and-hold losing most
of its capital on the sample data (ES, 6E) tripped the old check although every
call was made (issue 20). What would be a fault is a close below maintenance
that no margin call followed; that fails the check. Closes with margin above
equity and the margin calls are reported (market, strategy, UTC dates, USD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

#: Sides compared to the cent, as the engine does (an exact tie is no call).
MARGIN_TOL = 0.005
#: Dates listed per strategy in the metadata at most (the counts are complete).
MAX_DATES = 20


def _day(ts: Any) -> str:
    return f"{pd.Timestamp(ts):%Y-%m-%d}"


def strategy_margin_report(bars: pd.DataFrame, maintenance: np.ndarray, called: Iterable[Any],
                           stopped: Any | None) -> dict[str, Any]:
    """One strategy's margin story on one market: breaches, closes over equity, calls.

    ``bars``: the engine's bars (ts UTC, position in contracts, equity and
    margin in use, USD); ``maintenance``: maintenance margin per contract at
    each bar (USD; NaN: margin calls off); ``called``: the ts of the closes
    that issued a margin call; ``stopped``: the ts at which the account
    stopped (equity at or below zero) or None.

    Returns ``unhandled`` (UTC dates of the closes whose equity was below
    maintenance x contracts with no call issued and the account not stopped;
    the last close is exempt: no later bar can liquidate), ``over_equity``
    (closes with margin in use above equity: ``closes``, ``first``, ``last``,
    ``worst`` date and ``worst_shortfall_usd``), ``margin_calls`` (count,
    ``call_dates``: the first :data:`MAX_DATES`) and ``account_stopped``.
    """
    ts = pd.DatetimeIndex(bars["ts"])
    pos = np.abs(bars["position"].to_numpy(float))
    equity = bars["equity"].to_numpy(float)
    margin = bars["margin"].to_numpy(float)
    maint = np.asarray(maintenance, dtype=float)
    if len(maint) != len(bars):
        raise ValueError(f"maintenance has {len(maint)} values for {len(bars)} bars")
    with np.errstate(invalid="ignore"):
        below = (pos > 0) & (equity + MARGIN_TOL < maint * pos)  # NaN maintenance: never below
    call_days = {pd.Timestamp(t) for t in called}
    handled = np.asarray(ts.isin(list(call_days)), dtype=bool)  # vectorised: 3.5M minute bars in ms
    if stopped is not None:
        handled |= ts >= pd.Timestamp(stopped)
    if len(below):
        below[-1] = False
    unhandled = [_day(t) for t in ts[below & ~handled]]
    over = margin > equity + MARGIN_TOL
    shortfall = np.where(over, margin - equity, 0.0)
    over_equity: dict[str, Any] = {"closes": int(over.sum())}
    if over.any():
        worst = int(np.argmax(shortfall))
        hits = ts[over]
        over_equity.update(first=_day(hits[0]), last=_day(hits[-1]), worst=_day(ts[worst]),
                           worst_shortfall_usd=round(float(shortfall[worst]), 2))
    calls = sorted(call_days)
    return {"unhandled": unhandled, "over_equity": over_equity, "margin_calls": len(calls),
            "call_dates": [_day(t) for t in calls[:MAX_DATES]],
            "account_stopped": None if stopped is None else _day(stopped)}


@dataclass(frozen=True)
class MarginCheck:
    """The check's verdict on one market: ``passed`` and plain-JSON ``metadata``."""

    passed: bool
    metadata: dict[str, Any]


def margin_check(root: str, reports: Sequence[tuple[str, dict[str, Any]]]) -> MarginCheck:
    """Fail if any strategy left a close below maintenance without a margin call.

    ``reports``: (strategy, :func:`strategy_margin_report`) pairs of one
    market ``root``. Metadata: ``market``; ``breaches`` (strategy -> UTC
    dates of the unhandled closes, the first :data:`MAX_DATES`, and their
    count); ``strategies`` (strategy -> its report without ``unhandled``);
    ``summary``: one line per strategy with calls or margin above equity,
    e.g. ``ES buy_and_hold: 3 margin calls (2015-08-24 ..); margin above
    equity on 12 closes 2015-08-21 .. 2015-09-01``.
    """
    breaches, strategies, lines = {}, {}, []
    for strategy, rep in reports:
        if rep["unhandled"]:
            breaches[strategy] = {"closes": len(rep["unhandled"]), "dates": rep["unhandled"][:MAX_DATES]}
        strategies[strategy] = {k: v for k, v in rep.items() if k != "unhandled"}
        parts = []
        if rep["unhandled"]:
            parts.append(f"BELOW MAINTENANCE WITHOUT A CALL on {len(rep['unhandled'])} closes "
                         f"{rep['unhandled'][0]} .. {rep['unhandled'][-1]}")
        if rep["margin_calls"]:
            parts.append(f"{rep['margin_calls']} margin calls ({rep['call_dates'][0]} ..)")
        if rep["account_stopped"]:
            parts.append(f"account stopped {rep['account_stopped']}")
        over = rep["over_equity"]
        if over["closes"]:
            parts.append(f"margin above equity on {over['closes']} closes {over['first']} .. {over['last']} "
                         f"(worst {over['worst']}: {over['worst_shortfall_usd']:,.2f} USD short)")
        if parts:
            lines.append(f"{root} {strategy}: " + "; ".join(parts))
    return MarginCheck(passed=not breaches, metadata={
        "market": root, "breaches": breaches, "strategies": strategies,
        "summary": "\n".join(lines) or f"{root}: no margin call, margin within equity on every close"})
