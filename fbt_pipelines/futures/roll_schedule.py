"""Roll schedules: when a continuous series leaves one contract for the next.

A roll schedule is data (an explicit transition table), validated on
construction: roll dates strictly increase, contracts chain (each roll's
``to_contract`` is the next roll's ``from_contract``), prices are finite.

Convention, used by :mod:`fbt_pipelines.futures.back_adjust` and the engine:
``roll_date`` is the last session held in ``from_contract``; at its close the
position is switched (sell ``from_contract`` at ``from_close``, buy
``to_contract`` at ``to_close``). The continuous series shows
``from_contract`` through ``roll_date`` and ``to_contract`` from the next
session, so every bar of the series is the contract actually held during that
bar. The gap is measured on the roll date's closes: ``gap = to_close -
from_close`` (points), ``ratio = to_close / from_close``.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.expiry import business_day_offset
from fbt_pipelines.errors import RollError

ROLL_COLUMNS = ["root", "rule", "roll_date", "from_contract", "to_contract", "from_close", "to_close", "gap", "ratio"]


def validate_roll_schedule(schedule: pd.DataFrame) -> pd.DataFrame:
    """Check a roll table's invariants; return it unchanged or raise RollError."""
    missing = [c for c in ROLL_COLUMNS if c not in schedule.columns]
    if missing:
        raise RollError(f"roll schedule lacks columns {missing}")
    if len(schedule) == 0:
        return schedule
    dates = pd.to_datetime(schedule["roll_date"])
    if not dates.is_monotonic_increasing or dates.duplicated().any():
        raise RollError("roll dates must strictly increase")
    chained = schedule["to_contract"].iloc[:-1].to_numpy() == schedule["from_contract"].iloc[1:].to_numpy()
    if not chained.all():
        i = int(np.flatnonzero(~chained)[0])
        raise RollError(
            f"roll {i + 1} goes into {schedule['to_contract'].iloc[i]} but roll {i + 2} "
            f"leaves {schedule['from_contract'].iloc[i + 1]}"
        )
    prices = schedule[["from_close", "to_close"]].to_numpy(float)
    if not np.isfinite(prices).all():
        raise RollError("roll prices must be finite")
    return schedule


def calendar_roll_schedule(
    root: str,
    contracts: Sequence[Contract],
    closes: pd.DataFrame,
    days_before: int,
) -> pd.DataFrame:
    """Roll ``days_before`` business days before each contract's roll reference
    (first notice if physically delivered, else last trade).

    Parameters
    ----------
    contracts
        The market's contracts (any order); only those with prices are used.
    closes
        Wide frame of daily closes (points): index = session (UTC timestamps),
        one column per contract id, NaN where the contract did not trade.
    days_before
        Business days before the roll reference.

    Returns
    -------
    DataFrame with :data:`ROLL_COLUMNS`, one row per roll inside the data. If
    both contracts do not have a close on the target date, the roll moves to the
    latest earlier session where both do (never after the target).
    """
    if days_before < 0:
        raise RollError(f"days_before must be >= 0, got {days_before}")
    traded = sorted(c for c in contracts if c.contract_id in closes.columns)
    sessions = closes.index
    session_days = sessions.tz_localize(None).normalize() if sessions.tz is not None else sessions.normalize()
    rows: list[tuple] = []
    prev_idx = -1
    for front, nxt in zip(traded, traded[1:]):
        target = business_day_offset(front.roll_reference, -days_before) if days_before else front.roll_reference
        if pd.Timestamp(target) > session_days[-1]:
            break  # this roll lies beyond the data: ``front`` is the current contract
        i = int(np.searchsorted(session_days, pd.Timestamp(target), side="right")) - 1
        f_close = closes[front.contract_id].to_numpy()
        n_close = closes[nxt.contract_id].to_numpy()
        while i > prev_idx and not (np.isfinite(f_close[i]) and np.isfinite(n_close[i])):
            i -= 1
        if i <= prev_idx:
            if i < 0 or prev_idx < 0:
                continue  # the data starts after this roll: the series starts in a later contract
            raise RollError(f"{root}: no session where both {front.contract_id} and {nxt.contract_id} trade "
                            f"between the previous roll and {target}")
        fc, nc = float(f_close[i]), float(n_close[i])
        rows.append((root, f"calendar_{days_before}bd", sessions[i], front.contract_id, nxt.contract_id,
                     fc, nc, nc - fc, nc / fc if fc != 0 else np.nan))
        prev_idx = i
    schedule = pd.DataFrame(rows, columns=ROLL_COLUMNS)
    return validate_roll_schedule(schedule)


def first_contract(schedule: pd.DataFrame, closes: pd.DataFrame, contracts: Sequence[Contract]) -> str:
    """The contract the continuous series starts in."""
    if len(schedule):
        return str(schedule["from_contract"].iloc[0])
    traded = sorted(c for c in contracts if c.contract_id in closes.columns)
    if not traded:
        raise RollError("no contract has prices")
    first_session = closes.index[0]
    for c in traded:
        if pd.Timestamp(c.last_trade) >= first_session.tz_localize(None):
            return c.contract_id
    return traded[-1].contract_id


def roll_dates_utc(schedule: pd.DataFrame) -> list[dt.datetime]:
    return [pd.Timestamp(d).to_pydatetime() for d in schedule["roll_date"]]
