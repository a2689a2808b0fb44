"""Strategy templates: pure functions from prices (and predictions) to a signal.

A signal is a position in units of a standard risk position per bar (+1 long
at the volatility target, -1 short, 0 flat; forecast strategies use [-2, 2]),
decided with data up to that bar's close; sizing turns it into whole contracts
and the engine trades it on the next bar. Register a new strategy with
:func:`register_strategy` (see :mod:`fbt_pipelines.engine.strategy_library`).
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.errors import StrategyError


@dataclass(frozen=True)
class StrategyTemplate:
    name: str
    fn: Callable[..., np.ndarray]
    description: str
    inputs: tuple[str, ...]  # frame columns the function takes, by name

    @property
    def defaults(self) -> dict[str, Any]:
        sig = inspect.signature(self.fn)
        return {k: p.default for k, p in sig.parameters.items() if k not in self.inputs}


STRATEGIES: dict[str, StrategyTemplate] = {}


def register_strategy(name: str, description: str, inputs: tuple[str, ...] = ("close",)):
    """Decorator: add a signal function to the template library."""

    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        STRATEGIES[name] = StrategyTemplate(name, fn, description, inputs)
        return fn

    return wrap


@register_strategy("sma_crossover", "Long when the fast simple moving average of the close is above the slow one, short below.")
def sma_crossover(close: np.ndarray, fast: int = 20, slow: int = 100) -> np.ndarray:
    """+1 when SMA(fast) > SMA(slow), -1 when below, 0 until ``slow`` bars exist.

    Uses back-adjusted closes (points); a moving-average difference is the
    same on Panama prices as on the held contract's.
    """
    if not (isinstance(fast, int) and isinstance(slow, int)) or fast < 1 or slow <= fast:
        raise StrategyError(f"sma_crossover: need integers 1 <= fast < slow, got fast={fast!r}, slow={slow!r}")
    s = pd.Series(np.asarray(close, dtype=float))
    diff = (s.rolling(fast).mean() - s.rolling(slow).mean()).to_numpy()
    return np.where(np.isnan(diff), 0, np.sign(diff)).astype(np.int64)


@register_strategy("ml_signal", "Long when the model's probability of an up move exceeds the threshold, short below 1 - threshold.",
                   inputs=("prob_up",))
def ml_signal(prob_up: np.ndarray, threshold: float = 0.55) -> np.ndarray:
    """+1 if ``prob_up > threshold``, -1 if ``prob_up < 1 - threshold``, else 0
    (also 0 where there is no out-of-sample prediction)."""
    if not isinstance(threshold, (int, float)) or not 0.5 <= threshold < 1.0:
        raise StrategyError(f"ml_signal: threshold must be in [0.5, 1), got {threshold!r}")
    p = np.asarray(prob_up, dtype=float)
    out = np.zeros(len(p), dtype=np.int64)
    out[p > threshold] = 1
    out[p < 1.0 - threshold] = -1
    return out


def validate_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults merged with ``params``; clear error for an unknown strategy or parameter."""
    if name not in STRATEGIES:
        raise StrategyError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    defaults = STRATEGIES[name].defaults
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise StrategyError(f"{name}: unknown parameter(s) {unknown}; known: {sorted(defaults)}")
    merged = {**defaults, **params}
    for key, value in merged.items():
        # numbers.Real/Integral also admit NumPy scalars (np.int64 from np.arange grids)
        is_number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        if type(defaults[key]) is int:
            # config systems may hand integers over as floats (20.0): accept whole values only
            if not (is_number and (isinstance(value, numbers.Integral) or float(value).is_integer())):
                raise StrategyError(f"{name}: parameter {key} must be an integer, got {value!r}")
            merged[key] = int(value)
        elif type(defaults[key]) is float:
            if not is_number:
                raise StrategyError(f"{name}: parameter {key} must be a number, got {value!r}")
            merged[key] = float(value)
    return merged


def strategy_signal(name: str, frame: pd.DataFrame, params: Mapping[str, Any]) -> np.ndarray:
    """Run a registered strategy on a frame holding its input columns."""
    merged = validate_params(name, params)
    template = STRATEGIES[name]
    missing = [c for c in template.inputs if c not in frame.columns]
    if missing:
        raise StrategyError(f"{name}: input frame lacks column(s) {missing}")
    args = [frame[c].to_numpy(float) for c in template.inputs]
    return template.fn(*args, **merged)


# the rest of the template library registers itself on import
from fbt_pipelines.engine import strategy_library as _library  # noqa: E402,F401
