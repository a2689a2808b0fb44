"""The roll table for a trader: one row per roll, every value formatted.

Shared by the ``roll_schedule`` asset's metadata (Markdown), the tear sheet's
"Rolls" section (HTML) and ``fbt report``. Input: a roll schedule as stored
(:data:`~fbt_pipelines.futures.roll_schedule.ROLL_TABLE_COLUMNS`); rows
stored before the trigger and cost columns existed show "-" there.

Formats: dates ``YYYY-MM-DD`` (UTC session), volume and open interest as
whole contracts with thousands separators, gaps in points with as many
decimals as the column needs (2 to 8), USD with 2 decimals.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["ACTIVITY", "roll_table"]

MISSING = "-"
# (stored column, header) of the volume / open-interest numbers; a column empty on every row is left out
ACTIVITY = [("from_volume", "from volume"), ("to_volume", "to volume"),
            ("from_open_interest", "from OI"), ("to_open_interest", "to OI")]


def _column(schedule: pd.DataFrame, name: str) -> pd.Series:
    if name in schedule.columns:
        return schedule[name]
    return pd.Series([np.nan] * len(schedule), index=schedule.index, dtype=float)


def _number(value: object, decimals: int) -> str:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return MISSING
    if not math.isfinite(v):
        return MISSING
    return f"{v + 0.0:,.{decimals}f}"  # + 0.0: no "-0.00"


def _decimals(values: pd.Series, most: int = 8) -> int:
    """The fewest decimals (2 to ``most``) that show every finite value exactly."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(float)
    v = v[np.isfinite(v)]
    for d in range(2, most + 1):
        if np.all(np.abs(np.round(v, d) - v) <= 1e-9 * np.maximum(1.0, np.abs(v))):
            return d
    return most


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return MISSING
    return str(value)


def roll_table(schedule: pd.DataFrame) -> pd.DataFrame:
    """Display strings of every roll, in roll-date order.

    Columns: date, from, to, rule, trigger, the volumes / open interest that
    decided it (contracts on the roll session; a column empty for the whole
    market is dropped), gap (points), gap (USD) = gap x multiplier, roll cost
    (USD per contract: close + reopen, commission and 1 tick of slippage).
    """
    s = schedule.sort_values("roll_date", kind="mergesort") if len(schedule) else schedule
    dates = pd.to_datetime(s["roll_date"], utc=True) if len(s) else pd.Series([], dtype="datetime64[ns, UTC]")
    out = pd.DataFrame({
        "date": [f"{d:%Y-%m-%d}" for d in dates],
        "from": [str(c) for c in s["from_contract"]],
        "to": [str(c) for c in s["to_contract"]],
        "rule": [_text(r) for r in s["rule"]],
        "trigger": [_text(t) for t in _column(s, "trigger")],
    })
    for name, header in ACTIVITY:
        col = pd.to_numeric(_column(s, name), errors="coerce")
        if col.notna().any():
            out[header] = [_number(v, 0) for v in col]
    gap_decimals = _decimals(s["gap"]) if len(s) else 2
    out["gap (points)"] = [_number(v, gap_decimals) for v in s["gap"]]
    out["gap (USD)"] = [_number(v, 2) for v in _column(s, "gap_usd")]
    out["roll cost (USD)"] = [_number(v, 2) for v in _column(s, "cost_usd")]
    return out.reset_index(drop=True)
