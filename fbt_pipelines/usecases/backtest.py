"""Backtest one strategy on one market: the one place a backtest runs.

``signal -> whole contracts (volatility target) -> engine -> summary``, for
the ``backtests`` asset, ``fbt backtest``, the request queue and (per set,
sharing the per-market work) the sweeps. :func:`track_backtest` and
:func:`backtest_row` are the one record of a result: the MLflow run and the
warehouse row carry the spec hash and the data version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.futures_engine import BacktestResult, run_backtest
from fbt_pipelines.engine.inputs import strategy_inputs
from fbt_pipelines.engine.summary import summarise
from fbt_pipelines.errors import DataError
from fbt_pipelines.futures.margin import MarginSchedule
from fbt_pipelines.portfolio.sizing import cash_vol_per_contract
from fbt_pipelines.portfolio.targets import targets_from_signal
from fbt_pipelines.primitives.versioning import frame_version
from fbt_pipelines.reports.sparkline import svg_lines
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.tracking import Tracking
from fbt_pipelines.usecases.spec import BacktestSpec, MarginSource
from fbt_pipelines.usecases.workspace import Workspace

VECTOR_ENGINE = "fbt-vectorised"


@dataclass(frozen=True)
class MarketData:
    """One market's inputs to a backtest.

    ``prices``: the continuous (Panama) series (ts UTC, contract, OHLC adjusted
    points, raw_close, roll); ``predictions`` (ts, prob_up) and ``features``
    (ts, roll_yield) may be absent; ``margins``: initial margin per contract at
    each bar (USD) from the market's dated history, ``margin_source`` its file
    (None and "catalogue": the catalogue value); ``maintenance``: the
    maintenance margin per contract at each bar (USD) from the same history
    (None: the catalogue's maintenance / initial ratio applied to
    ``margins``); ``schedule``: both as the engine's
    segments, built from the history without per-bar arrays (None: made from
    the arrays when first needed, :meth:`margin_schedule_for`).
    """

    root: str
    spec: ContractSpec
    prices: pd.DataFrame
    predictions: pd.DataFrame | None = None
    features: pd.DataFrame | None = None
    margins: np.ndarray | None = field(default=None, repr=False)
    margin_source: str = "catalogue"
    maintenance: np.ndarray | None = field(default=None, repr=False)
    schedule: MarginSchedule | None = field(default=None, repr=False)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The strategy's input frame: prices + prob_up + roll_yield."""
        return strategy_inputs(self.prices, self.predictions, self.features)

    @cached_property
    def data_version(self) -> str:
        """Content hash of the prices and predictions (and a margin history when used)."""
        frames = [self.prices] + ([self.predictions] if self.predictions is not None else [])
        if self.margins is not None:
            frames.append(pd.DataFrame({"margin": self.margins}))
        if self.maintenance is not None:
            frames.append(pd.DataFrame({"maintenance": self.maintenance}))
        return frame_version(*frames)

    def margins_for(self, spec: BacktestSpec) -> np.ndarray | None:
        """The margin per bar the spec asks for (None: the engine takes the catalogue value)."""
        return None if spec.margin_source is MarginSource.CATALOGUE else self.margins

    def margin_schedule_for(self, spec: BacktestSpec) -> MarginSchedule:
        """Initial and maintenance margins as the engine's segments (what
        :func:`backtest_market` and the sweeps pass to the engine): the
        catalogue's values, or the history's (``schedule``, else made once from
        ``margins`` and ``maintenance``)."""
        n = len(self.prices)
        if spec.margin_source is MarginSource.CATALOGUE or self.margins is None:
            return MarginSchedule.constant(n, float(self.spec.initial_margin), float(self.spec.maintenance_margin))
        if self.schedule is not None:
            return self.schedule
        return self._history_schedule

    @cached_property
    def _history_schedule(self) -> MarginSchedule:
        initial = np.ascontiguousarray(self.margins, dtype=np.float64)
        if self.maintenance is not None:
            maintenance = np.ascontiguousarray(self.maintenance, dtype=np.float64)
        else:  # a history of initial margins only: the catalogue's maintenance / initial ratio
            catalogue = float(self.spec.initial_margin)
            maintenance = initial * (float(self.spec.maintenance_margin) / catalogue if catalogue > 0 else 0.0)
        return MarginSchedule.from_per_bar(initial, maintenance)

    def window(self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> "MarketData":
        """Bars with ``start <= ts`` and ``ts`` before the day after ``end`` (UTC dates),
        predictions, features and margins cut alike; the strategy sees only these bars."""
        keep = np.ones(len(self.prices), dtype=bool)
        ts = self.prices["ts"]
        if start is not None:
            keep &= (ts >= start).to_numpy()
        if end is not None:
            keep &= (ts < end + pd.Timedelta(days=1)).to_numpy()
        if int(keep.sum()) < 2:
            raise DataError(f"{self.root}: fewer than 2 bars between {start} and {end}")
        margins = None if self.margins is None else self.margins[keep]
        maintenance = None if self.maintenance is None else self.maintenance[keep]
        schedule = None if self.schedule is None else self.schedule.window(keep)
        return replace(self, prices=self.prices[keep].reset_index(drop=True), margins=margins, maintenance=maintenance,
                       schedule=schedule)


@dataclass(frozen=True)
class MarketBacktest:
    """A spec's result on one market: the engine's path, its summary (USD,
    fractions, counts) and the identity of the result (spec hash + data version)."""

    root: str
    spec: BacktestSpec
    result: BacktestResult
    summary: dict[str, float]
    data_version: str
    margin_source: str
    engine: str = VECTOR_ENGINE

    @property
    def strategy(self) -> str:
        return self.spec.strategy

    @property
    def params(self) -> dict[str, Any]:
        return self.spec.param_dict


class Sizer:
    """Whole contracts for any signal on one market under one sizing: the
    per-market work (the volatility of one contract in USD) done once, so a
    sweep's sets, a single backtest and a portfolio's market size alike.

    With ``spec.orders.contracts`` = N (fixed size) the target is N contracts
    in the direction of the signal (its sign; 0 when the signal is 0) and no
    volatility is computed."""

    def __init__(self, data: MarketData, spec: BacktestSpec) -> None:
        self.fixed = spec.orders.contracts
        self.buffer_fraction = spec.buffer_fraction
        if self.fixed is None:
            sizing = spec.sizing_config()
            self.cash_vol = cash_vol_per_contract(data.frame, data.spec, sizing)
            self.budget = sizing.budget(spec.weight)

    def contracts(self, signal: np.ndarray, fixed: int | None = None) -> np.ndarray:
        """Signed whole contracts wanted after each bar's close (buffered when
        the spec has a buffer); ``fixed`` overrides the spec's fixed size (a
        sweep over ``contracts``)."""
        n = self.fixed if fixed is None else fixed
        if n is not None:
            return np.sign(np.asarray(signal, dtype=float)).astype(np.int64) * int(n)
        return targets_from_signal(signal, self.cash_vol, self.budget, self.buffer_fraction)


def backtest_market(spec: BacktestSpec, data: MarketData,
                    engine: Literal["vector", "pybroker"] = "vector") -> MarketBacktest:
    """Run ``spec`` on ``data``: the strategy's signal, sized to whole contracts
    (volatility targeting, or the spec's fixed number), through fbt's futures
    engine (multiplier, commission, slippage, roll costs, initial-margin cap,
    maintenance-margin calls and the account stop, the spec's stop, target,
    trailing-stop and limit orders).

    ``engine="pybroker"`` also replays the same targets in PyBroker and reports
    its P&L and fill count (fbt adds the roll costs; see
    :mod:`fbt_pipelines.engine.pybroker_engine`).
    """
    frame = data.frame
    target = Sizer(data, spec).contracts(spec.signal(frame))
    result = run_backtest(frame, target, data.spec, spec.engine_config(), data.margin_schedule_for(spec))
    summary = summarise(result)
    label = VECTOR_ENGINE
    if engine == "pybroker":
        from fbt_pipelines.engine.pybroker_engine import run_pybroker_backtest

        pb = run_pybroker_backtest(frame, target, data.spec, spec.engine_config())
        summary = {**summary, "net_pnl": pb.net_pnl, "final_equity": spec.capital + pb.net_pnl,
                   "trades": float(len(pb.fills))}
        label = "pybroker"
    source = data.margin_source if spec.margin_source is MarginSource.HISTORY else "catalogue"
    return MarketBacktest(data.root, spec, result, summary, data.data_version, source, label)


def run_name(bt: MarketBacktest) -> str:
    """``ES sma_crossover fast=20 slow=100`` (`` pybroker`` when PyBroker replayed it)."""
    from fbt_pipelines.services.tracking import params_label

    label = " ".join(x for x in (bt.root, bt.strategy, params_label(bt.params)) if x)
    return label + (" pybroker" if bt.engine == "pybroker" else "")


def track_backtest(tracker: Tracking, bt: MarketBacktest, *, code_version: str, source: str,
                   extra_tags: dict[str, str] | None = None, name: str | None = None) -> str | None:
    """One MLflow run (experiment fbt-backtests): the spec's settings as params,
    the summary as metrics, equity and trades as CSV, the equity curve as SVG;
    tagged with strategy, market, spec hash, data version and code version.
    ``name``: the run's name (default :func:`run_name`). None when MLflow
    fails (``tracker.failure`` says why)."""
    params = {"market": bt.root, "engine": bt.engine, "margin": bt.margin_source, **bt.spec.settings(),
              **bt.params, "initial_capital": bt.spec.capital}
    tags = {"strategy": bt.strategy, "market": bt.root, "engine": bt.engine, "data_version": bt.data_version,
            "spec_hash": bt.spec.spec_hash(), "config_hash": bt.spec.engine_config().config_hash(),
            "code_version": code_version, "source": source, **_event_tags(bt.result), **(extra_tags or {})}
    return tracker.try_log_backtest(
        name or run_name(bt), params, bt.summary, tags=tags, tables={"equity": bt.result.bars, "trades": bt.result.trades},
        figures={"equity": svg_lines({"equity (USD)": bt.result.bars["equity"]}, width=640, height=240)})


def _event_tags(result: BacktestResult) -> dict[str, str]:
    """:func:`margin_events` as MLflow tags (a tag holds at most 5,000 characters: a long list is cut)."""
    events = margin_events(result)
    dates = events["margin_call_dates"]
    if len(dates) > 4_000:
        dates = dates[:3_990] + " ...]"
    return {"margin_call_dates": dates, "account_stopped_on": events["account_stopped_on"] or "no"}


def backtest_row(bt: MarketBacktest, *, code_version: str, mlflow_run_id: str | None) -> dict[str, Any]:
    """The warehouse row of a result (``backtest_runs`` / ``adhoc_backtest_runs``)."""
    return {"root": bt.root, "strategy": bt.strategy, "params": json.dumps(bt.params, sort_keys=True),
            "engine": bt.engine, "spec_hash": bt.spec.spec_hash(), "config_hash": bt.spec.engine_config().config_hash(),
            "data_version": bt.data_version, "code_version": code_version, "margin_source": bt.margin_source,
            "mlflow_run_id": mlflow_run_id, **bt.summary, **margin_events(bt.result)}


def margin_events(result: BacktestResult) -> dict[str, str]:
    """When the account was called and stopped, as text for a row or a tag:
    ``margin_call_dates`` (JSON list of the UTC dates of the closes that
    issued a call) and ``account_stopped_on`` (the UTC date of the close
    whose equity was at or below zero, "" if never)."""
    calls = result.margin_calls
    stopped = result.account_stopped
    return {"margin_call_dates": json.dumps([f"{pd.Timestamp(t):%Y-%m-%d}" for t in calls["called"]]),
            "account_stopped_on": "" if stopped is None else f"{pd.Timestamp(stopped):%Y-%m-%d}"}


def store_market_backtests(conn, root: str, rows: list[dict[str, Any]], results: list[MarketBacktest]) -> pd.DataFrame:
    """Replace ``root``'s rows of backtest_runs / _equity / _trades (one row per
    strategy; per-bar equity and trades tagged with root and strategy)."""
    return store_backtests(conn, "backtest", "root", root, rows, results)


def store_backtests(conn, prefix: str, key_col: str, key: str, rows: list[dict[str, Any]],
                    results: list[MarketBacktest]) -> pd.DataFrame:
    """Replace partition ``key`` of ``<prefix>_runs`` / ``_equity`` / ``_trades``.

    One row per strategy; every bar's equity and every trade, tagged with
    ``key_col`` = ``key`` and the strategy. Returns the runs table.
    """
    runs = pd.DataFrame(rows)
    wh.replace_partition(conn, f"{prefix}_runs", key, runs)
    wh.replace_partition(conn, f"{prefix}_equity", key, pd.concat(
        [bt.result.bars.assign(**{key_col: key}, strategy=bt.strategy) for bt in results], ignore_index=True))
    wh.replace_partition(conn, f"{prefix}_trades", key, pd.concat(
        [bt.result.trades.assign(**{key_col: key}, strategy=bt.strategy) for bt in results], ignore_index=True))
    return runs


def store_adhoc_backtest(conn, run_id: str, row: dict[str, Any], bt: MarketBacktest) -> None:
    """Rows of one ad-hoc run (``fbt backtest``) in adhoc_backtest_runs / _equity / _trades, keyed by run id."""
    wh.replace_partition(conn, "adhoc_backtest_runs", run_id, pd.DataFrame([{"run_id": run_id, **row}]))
    wh.replace_partition(conn, "adhoc_backtest_equity", run_id, bt.result.bars.assign(run_id=run_id))
    wh.replace_partition(conn, "adhoc_backtest_trades", run_id, bt.result.trades.assign(run_id=run_id))


def read_market_data(conn, root: str, workspace: Workspace, cache=None) -> MarketData:
    """A market's continuous prices, predictions and features from the warehouse
    (through the Redis cache when ``cache`` is a bus) with its margin per bar
    from the trader's workspace (dated history, else the catalogue)."""
    if cache is not None:
        from fbt_pipelines.services.cached_reads import read_partition_cached

        prices, _ = read_partition_cached(conn, cache, "continuous_prices", root, order_by=["ts"])
        features, _ = read_partition_cached(conn, cache, "features", root, order_by=["ts"])
    else:
        prices = wh.read_partition(conn, "continuous_prices", root, order_by=["ts"])
        features = wh.read_partition(conn, "features", root, order_by=["ts"])
    if prices.empty:
        raise DataError(f"no continuous prices for {root}: run `fbt demo` or `fbt continuous {root}`")
    predictions = wh.read_partition(conn, "predictions", root, order_by=["ts"])
    return market_data(root, workspace, prices, predictions, features)


def market_data(root: str, workspace: Workspace, prices: pd.DataFrame, predictions: pd.DataFrame | None,
                features: pd.DataFrame | None) -> MarketData:
    """A market's inputs with its initial and maintenance margins from the workspace."""
    spec = workspace.market(root)
    schedule, source = workspace.margin_schedule(root, prices["ts"], spec)
    if source == "catalogue":
        return MarketData(root, spec, prices, predictions, features)
    return MarketData(root, spec, prices, predictions, features, schedule.per_bar("initial"), source,
                      schedule.per_bar("maintenance"), schedule)
