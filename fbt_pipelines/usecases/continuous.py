"""Build a market's roll schedule and continuous series from its stored bars.

The ``roll_schedule`` and ``continuous_prices`` assets and ``fbt continuous``
all come through here, with the same contract source (:func:`market_contracts`).
The market's default series (catalogue rule, Panama) is what the assets own:
``fbt continuous ROOT`` materializes those assets through Dagster; any other
rule, method, depth or window is a *variant*, stored by :func:`store_variant`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import pandas as pd

from fbt_pipelines.catalog.contracts import Contract, contracts_from_frame, listed_contracts
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.futures.back_adjust import AdjustmentMethod, back_adjust, roll_continuity_errors
from fbt_pipelines.futures.continuous import ContinuousSeries, build_continuous
from fbt_pipelines.futures.roll_rules import RollRule, build_roll_schedule
from fbt_pipelines.futures.roll_schedule import with_roll_costs
from fbt_pipelines.services import warehouse as wh

MAX_ROLL_GAP = 0.10  # a roll gap above 10% of price is a data error, not a term structure


def market_contracts(conn, spec: ContractSpec, bars: pd.DataFrame) -> list[Contract]:
    """The market's contracts: from the warehouse when it holds them, else the catalogue.

    The warehouse's ``contracts`` rows (the ``market_catalog`` asset writes them
    from the catalogue) when it holds the market, else the catalogue's listing
    around the bars' years.
    """
    stored = wh.read_contracts(conn, spec.root) if wh.table_exists(conn, "contracts") else pd.DataFrame()
    if len(stored):
        return contracts_from_frame(stored)
    years = pd.to_datetime(bars["ts"], utc=True).dt.year
    return listed_contracts(spec, int(years.min()) - 1, int(years.max()) + 3)


def roll_rule_for(spec: ContractSpec, text: str = "", depth: int | None = None) -> RollRule:
    """``text`` parsed (empty: the market's catalogue rule), with ``depth`` if given."""
    rule = RollRule.parse(text or spec.roll_rule, spec)
    return rule if depth is None else replace(rule, depth=depth)



def worst_roll_gap(schedule: pd.DataFrame) -> float:
    """The worst |to/from - 1| of a roll schedule (0 with no roll).

    What the ``roll_gaps_plausible`` check compares with its bound.
    """
    return float((schedule["ratio"] - 1).abs().max()) if len(schedule) else 0.0


class RollGapCheck:
    """The ``roll_gaps_plausible`` check of a ``schedule``: ``worst_gap``, ``plausible``."""

    schedule: pd.DataFrame

    @property
    def worst_gap(self) -> float:
        return worst_roll_gap(self.schedule)

    @property
    def plausible(self) -> bool:
        return self.worst_gap < MAX_ROLL_GAP


@dataclass(frozen=True)
class RollSchedule(RollGapCheck):
    """A market's roll schedule and its worst roll gap.

    The schedule (root, rule, roll_date, from/to contract, closes, gap points,
    ratio, then why each roll happened and its cost:
    :data:`~fbt_pipelines.futures.roll_schedule.ROLL_TABLE_COLUMNS`) and its
    worst |to/from - 1| (the ``roll_gaps_plausible`` check).
    """

    rule: RollRule
    schedule: pd.DataFrame


def roll_schedule_for_market(spec: ContractSpec, bars: pd.DataFrame, contracts: Sequence[Contract],
                             rule: RollRule) -> RollSchedule:
    """Roll dates of ``spec``'s market under ``rule`` (UTC), with triggers and costs.

    Costs (gap USD, one contract's roll USD) from the catalogue's multiplier,
    commission and tick size with the engine's default 1 tick of slippage.
    """
    return RollSchedule(rule, with_roll_costs(build_roll_schedule(spec.root, contracts, bars, rule), spec))


@dataclass(frozen=True)
class ContinuousCheck:
    """The continuous series and the numbers its checks read.

    Bars whose point change differs from the held contract's
    (``no_gaps_at_rolls``) and the largest |adjusted - raw| on the last segment
    in points (``last_segment_is_raw``).
    """

    prices: pd.DataFrame
    bad_bars: int
    last_segment_diff: float

    @property
    def non_positive(self) -> bool:
        return bool((self.prices["low"] <= 0).any())


def continuous_for_market(bars: pd.DataFrame, schedule: pd.DataFrame, contracts: Sequence[Contract],
                          method: AdjustmentMethod = AdjustmentMethod.PANAMA) -> ContinuousCheck:
    """The back-adjusted series (points) with its continuity checks."""
    prices = back_adjust(bars, schedule, contracts, method)
    last = prices[prices["contract"] == prices["contract"].iloc[-1]]
    return ContinuousCheck(prices, roll_continuity_errors(prices, bars),
                           float((last["close"] - last["raw_close"]).abs().max()))


def is_default_series(spec: ContractSpec, rule_text: str, method: str, depth: int | None,
                      windowed: bool, interval: str = "1d") -> bool:
    """True when the request is the series the assets own.

    That series: catalogue rule, Panama, front contract, all daily bars.
    """
    return ((not rule_text or rule_text == spec.roll_rule) and method == AdjustmentMethod.PANAMA.value
            and depth in (None, 1) and not windowed and interval == "1d")


def continuous_variant(spec: ContractSpec, bars: pd.DataFrame, contracts: Sequence[Contract], rule: RollRule,
                       method: str) -> ContinuousSeries:
    """Any other series of the market (rule, method, depth, window): schedule + prices.

    The schedule carries triggers and costs as :func:`roll_schedule_for_market`'s.
    """
    if bars.empty:
        raise DataError(f"no bars for {spec.root}: run `fbt ingest` first")
    series = build_continuous(spec.root, contracts, bars, rule, method)
    return replace(series, schedule=with_roll_costs(series.schedule, spec))


def variant_key(spec: ContractSpec, rule: RollRule, method: str) -> str:
    return f"{spec.root}|{rule.label}|{method}"


def store_variant(conn, key: str, series: ContinuousSeries) -> None:
    """Store a variant's schedule and series under ``key`` (``ROOT|rule|method``).

    Replaces the ``roll_schedule_variants`` / ``continuous_variants`` rows of ``key``.
    """
    wh.replace_partition(conn, "roll_schedule_variants", key, series.schedule.assign(series=key))
    wh.replace_partition(conn, "continuous_variants", key, series.prices.assign(series=key))
