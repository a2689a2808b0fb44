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

After those columns (:data:`ROLL_COLUMNS`) each roll says why it happened
(:data:`ROLL_TRIGGER_COLUMNS`: the ``trigger`` text and, for the volume /
open-interest rules, both contracts' volume or open interest on the deciding
session, NULL otherwise) and what it costs (:data:`ROLL_COST_COLUMNS`, see
:func:`with_roll_costs`).
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import RollError

ROLL_COLUMNS = ["root", "rule", "roll_date", "from_contract", "to_contract", "from_close", "to_close", "gap", "ratio"]
# why the roll happened: the rule's reason, and the contracts' volume / open interest on the roll session
ROLL_TRIGGER_COLUMNS = ["trigger", "from_volume", "to_volume", "from_open_interest", "to_open_interest"]
# what it costs: the gap in USD (gap x multiplier) and one contract's roll (close + reopen), USD
ROLL_COST_COLUMNS = ["gap_usd", "cost_usd"]
ROLL_TABLE_COLUMNS = [*ROLL_COLUMNS, *ROLL_TRIGGER_COLUMNS, *ROLL_COST_COLUMNS]
DEFAULT_SLIPPAGE_TICKS = 1.0  # the engine's default (EngineConfig.slippage_ticks)


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


def roll_cost_per_contract(spec: ContractSpec, slippage_ticks: float = DEFAULT_SLIPPAGE_TICKS) -> float:
    """USD (contract currency) to roll one contract, as the engine charges it.

    Close the old contract and open the new: 2 sides x (commission +
    ``slippage_ticks`` x tick size x multiplier), the catalogue's commission.
    ES: 2 x (2.10 + 1 x 0.25 x 50) = 29.20 USD.
    """
    return 2.0 * (float(spec.commission) + float(slippage_ticks) * float(spec.tick_size) * float(spec.multiplier))


def with_roll_costs(schedule: pd.DataFrame, spec: ContractSpec,
                    slippage_ticks: float = DEFAULT_SLIPPAGE_TICKS) -> pd.DataFrame:
    """``schedule`` with :data:`ROLL_COST_COLUMNS` set from ``spec``.

    ``gap_usd`` = gap (points) x multiplier; ``cost_usd`` =
    :func:`roll_cost_per_contract` (USD per contract rolled, contract
    currency: USD for every built-in market). Other columns and ``attrs``
    are kept.
    """
    out = schedule.assign(gap_usd=schedule["gap"].astype(float) * float(spec.multiplier),
                          cost_usd=roll_cost_per_contract(spec, slippage_ticks) if len(schedule) else [])
    out["cost_usd"] = out["cost_usd"].astype(float)
    out.attrs = dict(schedule.attrs)
    return out


def calendar_roll_schedule(
    root: str,
    contracts: Sequence[Contract],
    closes: pd.DataFrame,
    days_before: int,
) -> pd.DataFrame:
    """Roll ``days_before`` business days before each contract's roll reference.

    The roll reference: first notice if physically delivered, else last trade.

    ``closes``: wide frame of daily closes (points), index = session (UTC),
    one column per contract id, NaN where it did not trade. A shortcut for
    :func:`fbt_pipelines.futures.roll_rules.build_roll_schedule` with rule
    ``calendar:days_before``.
    """
    from fbt_pipelines.futures.roll_rules import RollRule, build_roll_schedule

    if days_before < 0:
        raise RollError(f"days_before must be >= 0, got {days_before}")
    bars = closes.stack().rename("close").reset_index()
    bars.columns = ["ts", "contract", "close"]
    return build_roll_schedule(root, contracts, bars, RollRule("calendar", days_before=days_before))


def first_contract(schedule: pd.DataFrame, closes: pd.DataFrame, contracts: Sequence[Contract]) -> str:
    """The contract the continuous series starts in.

    A schedule without rows from :func:`~fbt_pipelines.futures.roll_rules.build_roll_schedule`
    names it in ``schedule.attrs["start_contract"]`` (its rule's depth and hold cycle, rolls
    before the data skipped); otherwise the first contract not expired at the first session.
    """
    if len(schedule):
        return str(schedule["from_contract"].iloc[0])
    if schedule.attrs.get("start_contract"):
        return str(schedule.attrs["start_contract"])
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
