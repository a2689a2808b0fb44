"""The training table of one market: features plus the forward-return label."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fbt_pipelines.ml.features import build_features, forward_return_label


@dataclass(frozen=True)
class LabelConfig:
    """What a features table's label is (see :func:`forward_return_label`).

    The attribute docstrings are also the descriptions of the ``features``
    asset's run config (its fields and defaults come from here).
    """

    horizon: int = 5
    """Label horizon: sign of the held-contract return over the next N sessions."""
    dead_zone: float = 0.0
    """Forward returns with |return| below this fraction get no label (excluded from training and scoring)."""

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if not self.dead_zone >= 0:
            raise ValueError(f"dead_zone must be >= 0, got {self.dead_zone}")


def feature_table(prices: pd.DataFrame, horizon: int = LabelConfig.horizon, carry: pd.Series | None = None,
                  roll_dates: pd.Series | None = None, dead_zone: float = LabelConfig.dead_zone) -> pd.DataFrame:
    """Features of ``prices`` (continuous, Panama) with ``label``, ``horizon``
    and ``dead_zone`` (see :func:`forward_return_label`)."""
    table = build_features(prices, carry, roll_dates)
    table["label"] = forward_return_label(prices, horizon, dead_zone).to_numpy()
    table["horizon"] = horizon
    table["dead_zone"] = float(dead_zone)
    return table
