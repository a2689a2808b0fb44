"""Strategy templates: pure functions from prices (and predictions) to a signal.

A signal is a position in units of a standard risk position per bar (+1 long
at the volatility target, -1 short, 0 flat; forecast strategies use [-2, 2]),
decided with data up to that bar's close; sizing turns it into whole contracts
and the engine trades it on the next bar. Register a new strategy with
:func:`register_strategy` (see :mod:`fbt_pipelines.engine.strategy_library`);
traders add their own in ``$FBT_HOME/strategies/*.py`` with the same decorator
(see :mod:`fbt_pipelines.engine.user_strategies`). The registry holds fbt's
library plus the user folder last synced with :func:`available_strategies`
(the use cases' workspace does that; nothing reads ``FBT_HOME`` here).
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass, replace
from pathlib import Path
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
    source: str | None = None  # path of the user file that defines it; None for fbt's library

    def with_source(self, source: str) -> "StrategyTemplate":
        return replace(self, source=source)

    @property
    def defaults(self) -> dict[str, Any]:
        sig = inspect.signature(self.fn)
        return {k: p.default for k, p in sig.parameters.items() if k not in self.inputs}


STRATEGIES: dict[str, StrategyTemplate] = {}
# while a user file is being loaded, registrations are collected here (and checked) instead
_collector: list[StrategyTemplate] | None = None


def register_strategy(name: str, description: str, inputs: tuple[str, ...] = ("close",)):
    """Decorator: add a signal function to the template library.

    ``inputs`` are the frame columns passed positionally (first parameters,
    in order); the remaining keyword parameters, each with a numeric
    default, are the strategy's parameters.
    """

    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        template = StrategyTemplate(name, fn, description, tuple(inputs))
        if _collector is not None:
            _collector.append(template)
        else:
            STRATEGIES[name] = template
        return fn

    return wrap


def available_strategies(folder: Path | None = None) -> dict[str, StrategyTemplate]:
    """Every strategy: fbt's library plus the user files in ``folder`` (a
    trader's ``$FBT_HOME/strategies``; re-read when changed). None: the
    folder of the last sync (none at first)."""
    from fbt_pipelines.engine.user_strategies import sync_user_strategies

    sync_user_strategies(folder)
    return dict(STRATEGIES)


def strategies_help(folder: Path | None = None) -> str:
    """One line for config descriptions: every strategy with its defaults, user strategies marked."""
    parts = []
    for t in sorted(available_strategies(folder).values(), key=lambda t: t.name):
        params = ", ".join(f"{k}={v}" for k, v in t.defaults.items())
        parts.append(f"{t.name}({params})" + (" [yours]" if t.source else ""))
    return "Available: " + "; ".join(parts) + ". See `fbt strategies`."


def _problems_hint() -> str:
    from fbt_pipelines.engine.user_strategies import sync_user_strategies

    problems = sync_user_strategies()
    return "".join(f"; not loaded: {p}" for p in problems)


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
    available = STRATEGIES  # as last synced: no folder listing per call (sweeps validate thousands of sets)
    if name not in available:
        raise StrategyError(f"unknown strategy {name!r}; known: {', '.join(sorted(available))}{_problems_hint()}")
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
    """Run a registered strategy on a frame holding its input columns (parameters validated first)."""
    merged = validate_params(name, params)
    return template_signal(STRATEGIES[name], frame, merged)


def template_signal(template: StrategyTemplate, frame: pd.DataFrame, params: Mapping[str, Any]) -> np.ndarray:
    """The signal of ``template`` with already validated ``params`` (see
    :func:`validate_params`): one value per row of ``frame``. A user's
    function is checked (shape, finite values) and its failures name its file."""
    name = template.name
    missing = [c for c in template.inputs if c not in frame.columns]
    if missing:
        raise StrategyError(f"{name}: input frame lacks column(s) {missing}")
    args = [frame[c].to_numpy(float) for c in template.inputs]
    if template.source is None:
        return template.fn(*args, **params)
    try:  # a user's function: any failure is reported with its file, not as a traceback
        signal = np.asarray(template.fn(*args, **params), dtype=float)
    except StrategyError:
        raise
    except Exception as exc:
        raise StrategyError(f"{name} ({template.source}): {type(exc).__name__}: {exc}") from exc
    if signal.shape != (len(frame),):
        raise StrategyError(f"{name} ({template.source}): returned shape {signal.shape}, "
                            f"expected one signal per bar ({len(frame)},)")
    if not np.isfinite(signal).all():
        bad = int(np.flatnonzero(~np.isfinite(signal))[0])
        raise StrategyError(f"{name} ({template.source}): signal is NaN/inf at bar {bad} "
                            f"({frame['ts'].iloc[bad] if 'ts' in frame.columns else bad}); return 0 for flat")
    return signal


# the rest of fbt's template library registers itself (a user's files: available_strategies(folder))
from fbt_pipelines.engine import strategy_library as _library  # noqa: E402,F401
