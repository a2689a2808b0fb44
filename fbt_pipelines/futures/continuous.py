"""One call from stored bars to a roll schedule and a continuous series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.futures.back_adjust import AdjustmentMethod, back_adjust
from fbt_pipelines.futures.roll_rules import RollRule, build_roll_schedule


@dataclass(frozen=True)
class ContinuousSeries:
    rule: RollRule
    method: AdjustmentMethod
    schedule: pd.DataFrame
    prices: pd.DataFrame

    @property
    def non_positive(self) -> bool:
        """True when some bar's low is at or below zero: allowed, flagged.

        A Panama series far back can go to or below zero; anything computing
        returns from *adjusted* levels must refuse it.
        """
        return bool((self.prices["low"] <= 0).any())


def build_continuous(root: str, contracts: Sequence[Contract], bars: pd.DataFrame, rule: RollRule,
                     method: AdjustmentMethod | str = AdjustmentMethod.PANAMA) -> ContinuousSeries:
    """Roll schedule under ``rule`` and the series adjusted by ``method``."""
    schedule = build_roll_schedule(root, contracts, bars, rule)
    method = AdjustmentMethod(method)
    return ContinuousSeries(rule, method, schedule, back_adjust(bars, schedule, contracts, method))
