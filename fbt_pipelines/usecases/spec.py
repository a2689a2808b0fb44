"""One backtest spec: everything that decides a result besides the market data.

A :class:`BacktestSpec` is frozen and validated when made: the strategy is
resolved once (fbt's library or the trader's file) and its parameters
checked and completed with defaults; the engine, sizing and order settings
share one capital. :meth:`BacktestSpec.spec_hash` (its content hash) and the
data version identify a result: both tag the warehouse rows and the MLflow run.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.engine.futures_engine import EngineConfig
from fbt_pipelines.engine.rules import Distance, FillRule
from fbt_pipelines.engine.strategies import StrategyTemplate, template_signal, validate_params
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.portfolio.sizing import VolTargetConfig
from fbt_pipelines.primitives.versioning import content_hash


class MarginSource(str, enum.Enum):
    """Where the initial margin per contract comes from.

    ``HISTORY``: the market's dated margin history when the trader has one
    (``$FBT_HOME/margins/<ROOT>.csv``), else the catalogue; ``CATALOGUE``:
    always the catalogue's single value."""

    HISTORY = "history"
    CATALOGUE = "catalogue"


ORDER_OPTIONS = ("stop_loss", "take_profit", "trailing_stop", "limit_offset", "contracts")  # sweepable order settings


@dataclass(frozen=True)
class OrderSettings:
    """How targets become orders (rules: docs/guide.md, "Orders and margin").

    Attributes
    ----------
    fill
        When a target decided on bar t's close fills (``next_open``: bar
        t+1's open; ``next_close``: its close).
    stop_loss, take_profit
        Exit distance from the entry fill: ``"40"`` (points of the continuous
        series), ``"2%"`` (of the entry price) or ``"3atr"`` (x ATR(14) of the
        deciding bar); None: no such exit. Numbers are points.
    trailing_stop
        Distance (same units) from the best close since entry; None: none.
    limit_offset
        Entries become limit orders this far below (buy) / above (sell) the
        deciding bar's close; None: market entries.
    contracts
        Fixed size: this many contracts in the strategy's direction (the
        sign of its signal) instead of volatility targeting; None: vol target.
    """

    fill: Literal["next_open", "next_close"] = "next_open"
    stop_loss: str | None = None
    take_profit: str | None = None
    trailing_stop: str | None = None
    limit_offset: str | None = None
    contracts: int | None = None

    def __post_init__(self) -> None:
        FillRule.from_label(self.fill)  # a clear error for any other label
        for name in ORDER_OPTIONS[:4]:
            value = getattr(self, name)
            if value is not None:  # canonical spelling: "40.0" and 40 are the same setting
                object.__setattr__(self, name, Distance.parse(value, name).label)
        if self.contracts is not None:
            n = self.contracts
            whole = isinstance(n, (int, np.integer)) or (isinstance(n, float) and math.isfinite(n) and n == int(n))
            if isinstance(n, bool) or not whole or int(n) < 1:
                raise ValueError(f"contracts must be a whole number >= 1, got {n!r}")
            object.__setattr__(self, "contracts", int(n))

    def settings(self) -> dict[str, Any]:
        """The fill rule and every order setting that is set (JSON types)."""
        return {"fill": self.fill, **{name: getattr(self, name) for name in ORDER_OPTIONS
                                      if getattr(self, name) is not None}}

    def with_options(self, options: Mapping[str, Any]) -> "OrderSettings":
        """These settings with some of :data:`ORDER_OPTIONS` (and ``fill``) replaced, validated."""
        unknown = sorted(set(options) - set(ORDER_OPTIONS) - {"fill"})
        if unknown:
            raise ValueError(f"unknown order setting(s) {unknown}; known: fill, {', '.join(ORDER_OPTIONS)}")
        return replace(self, **dict(options))


def split_order_settings(template: StrategyTemplate | None,
                         values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(strategy parameters, order settings) of a parameter mapping: the keys
    of :data:`ORDER_OPTIONS` that are not parameters of the strategy are order
    settings (so a run config, ``--param stop_loss=40`` or a sweep grid can
    give them beside the strategy's own parameters)."""
    own = set(template.defaults) if template is not None else set()
    orders = {k: v for k, v in values.items() if k in ORDER_OPTIONS and k not in own}
    return {k: v for k, v in values.items() if k not in orders}, orders


@dataclass(frozen=True)
class BacktestSpec:
    """A strategy with resolved parameters, costs, sizing and orders on one capital.

    Attributes
    ----------
    strategy, params
        The strategy's name and its parameters (defaults filled, integers as
        integers), sorted by name.
    capital
        USD: the engine's starting equity and the sizing capital.
    annual_risk_target, idm, vol_span, weight, buffer_fraction
        Volatility targeting: annualised target (0.20 = 20 %), instrument
        diversification multiplier, EWMA span of the volatility (sessions),
        this market's share of the risk, pysystemtrade's position buffer as a
        fraction of the average position (0: trade to the rounded optimum).
    slippage_ticks, commission
        Ticks lost per contract per side (rolls included); USD per contract per
        side, None = the market's catalogue commission.
    orders
        :class:`OrderSettings`: fill rule, stop-loss, take-profit, trailing
        stop, limit offset, fixed contracts.
    margin_source
        :class:`MarginSource`.
    """

    strategy: str
    params: tuple[tuple[str, Any], ...]
    template: StrategyTemplate = field(compare=False, repr=False)
    capital: float = 1_000_000.0
    annual_risk_target: float = 0.20
    idm: float = 1.0
    vol_span: int = 35
    weight: float = 1.0
    buffer_fraction: float = 0.0
    slippage_ticks: float = 1.0
    commission: float | None = None
    orders: OrderSettings = OrderSettings()
    margin_source: MarginSource = MarginSource.HISTORY

    def __post_init__(self) -> None:
        if self.template.name != self.strategy:
            raise StrategyError(f"spec for {self.strategy!r} holds the template of {self.template.name!r}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight must be finite and > 0, got {self.weight}")
        if not 0 <= self.buffer_fraction < 1:
            raise ValueError(f"buffer_fraction must be in [0, 1), got {self.buffer_fraction}")
        self.engine_config()  # the engine and the sizing validate their own fields
        self.sizing_config()

    @classmethod
    def create(cls, strategy: str, params: Mapping[str, Any] | None = None, *,
               library: Mapping[str, StrategyTemplate], **settings: Any) -> "BacktestSpec":
        """Resolve ``strategy`` in ``library`` (e.g. :meth:`Workspace.strategies`)
        and validate ``params`` once; ``settings`` are the other fields."""
        if strategy not in library:
            raise StrategyError(f"unknown strategy {strategy!r}; known: {', '.join(sorted(library))}")
        own, orders = split_order_settings(library[strategy], dict(params or {}))
        if orders:  # order settings given among the parameters (run config, --param stop_loss=40, a sweep set)
            settings["orders"] = settings.get("orders", OrderSettings()).with_options(orders)
        merged = validate_params(strategy, own)
        return cls(strategy=strategy, params=tuple(sorted(merged.items())), template=library[strategy], **settings)

    def with_params(self, params: Mapping[str, Any]) -> "BacktestSpec":
        """The same spec with other parameters (validated against the same
        strategy); order settings among them (``stop_loss``, ...,
        ``contracts``: a sweep's set) replace the spec's."""
        own, orders = split_order_settings(self.template, dict(params))
        merged = validate_params(self.strategy, own)
        return replace(self, params=tuple(sorted(merged.items())), orders=self.orders.with_options(orders))

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def params_json(self) -> str:
        """The parameters as the warehouse stores them (sorted JSON)."""
        return json.dumps(self.param_dict, sort_keys=True)

    def engine_config(self) -> EngineConfig:
        o = self.orders
        return EngineConfig(initial_capital=self.capital, slippage_ticks=self.slippage_ticks,
                            fill=o.fill, commission=self.commission, stop_loss=o.stop_loss,
                            take_profit=o.take_profit, trailing_stop=o.trailing_stop, limit_offset=o.limit_offset)

    def sizing_config(self) -> VolTargetConfig:
        return VolTargetConfig(capital=self.capital, annual_risk_target=self.annual_risk_target, idm=self.idm,
                               vol_span=self.vol_span)

    def signal(self, frame: pd.DataFrame) -> np.ndarray:
        """The strategy's signal on ``frame`` (standard risk positions per bar; no re-validation)."""
        return template_signal(self.template, frame, self.param_dict)

    def settings(self) -> dict[str, Any]:
        """Every field but the strategy template, as JSON types (MLflow params, the
        hash). Order settings appear only when set (a spec without them keeps
        the hash it had before they existed)."""
        return {"strategy": self.strategy, **{f"param.{k}": v for k, v in self.params},
                "capital": self.capital, "annual_risk_target": self.annual_risk_target, "idm": self.idm,
                "vol_span": self.vol_span, "weight": self.weight, "buffer_fraction": self.buffer_fraction,
                "slippage_ticks": self.slippage_ticks,
                "commission": self.commission, **self.orders.settings(), "margin_source": self.margin_source.value}

    def spec_hash(self) -> str:
        """Content hash (16 hex) of the settings and the strategy's code: fbt's
        built-ins by name (the code version tags results too), a trader's file
        by its bytes."""
        source = "fbt" if self.template.source is None else hashlib.sha256(Path(self.template.source).read_bytes()).hexdigest()
        return content_hash({**self.settings(), "strategy_source": source})
