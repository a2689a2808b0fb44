"""A user strategy as a trader writes it: one file in $FBT_HOME/strategies/ (shared by the tests)."""
import numpy as np
from fbt_pipelines.engine.strategies import register_strategy


@register_strategy("momentum", "Long when the close is above its value `lookback` bars ago, short below.")
def momentum(close: np.ndarray, lookback: int = 60) -> np.ndarray:
    past = np.roll(close, lookback)
    past[:lookback] = np.nan
    return np.nan_to_num(np.sign(close - past))
