"""Parameter sweeps (grid or random) and walk-forward selection for one market.

Parallelism: threads, not processes. The Numba kernel releases the GIL
(``nogil=True``); no prices or results are pickled across a process boundary
(fbt's rule). The per-set work is the signal (pandas/NumPy) and one kernel
call: inputs, volatility sizing and costs are prepared once per market. The
sweep engine (:mod:`fbt_pipelines.engine.sweep_kernel`) runs sizing, kernel
and summary compiled per set: for fbt's ``sma_crossover`` each distinct moving
average is computed once per market and the signal is compiled too; any other
strategy computes each distinct signal once in Python.

Walk-forward: every parameter set is backtested once over the whole period
(sizing uses fixed capital, so a set's daily P&L does not depend on earlier
windows); each window picks the set with the best in-sample Sharpe and takes
that set's P&L over the next out-of-sample window; the stitched
out-of-sample P&L is the walk-forward result. Switching sets between windows
is assumed to cost nothing extra (each set's own trades and rolls are
costed); this is stated in the output.
"""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.engine.allocator import keep_freed_memory
from fbt_pipelines.engine.futures_engine import ORDER_FIELDS, order_arguments, price_columns
from fbt_pipelines.engine.kernel import simulate_futures_nb
from fbt_pipelines.engine.rules import TradeKind, TradeReason
from fbt_pipelines.engine.strategies import STRATEGIES, sma_crossover, validate_params
from fbt_pipelines.engine.sweep_kernel import STATS, signal_sweep_nb, sma_sweep_nb, window_means
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.portfolio.sizing import buffer_width
from fbt_pipelines.primitives.performance import equity_headline, sharpe_ratio, sharpe_ratios
from fbt_pipelines.reports.tear_sheet import write_tear_sheet
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.tracking import Tracking
from fbt_pipelines.usecases.backtest import MarketData, Sizer
from fbt_pipelines.usecases.spec import ORDER_OPTIONS, BacktestSpec, OrderSettings, split_order_settings


def split_set(strategy: str, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(strategy parameters, order settings) of one parameter set: keys of
    :data:`~fbt_pipelines.usecases.spec.ORDER_OPTIONS` (``stop_loss``,
    ``take_profit``, ``trailing_stop``, ``limit_offset``, ``contracts``) that
    are not parameters of the strategy are order settings."""
    return split_order_settings(STRATEGIES.get(strategy), values)


def parameter_sets(strategy: str, grid: Mapping[str, Sequence[Any]], mode: str = "grid", n: int = 20,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Every combination (``grid``) or ``n`` distinct seeded draws (``random``),
    each validated; invalid combinations (e.g. fast >= slow) are dropped.

    Order settings are sweepable like parameters: a grid key ``stop_loss``,
    ``take_profit``, ``trailing_stop`` or ``limit_offset`` takes distances
    (``40``, ``"2%"``, ``"3atr"``), ``contracts`` whole numbers; a bad value
    raises (``ValueError`` naming the setting and the value)."""
    if mode not in ("grid", "random"):
        raise StrategyError(f"sweep mode must be 'grid' or 'random', got {mode!r}")
    names = sorted(grid)
    combos = [dict(zip(names, values)) for values in itertools.product(*(grid[k] for k in names))]
    if mode == "random":
        rng = np.random.default_rng(seed)
        combos = [combos[i] for i in sorted(rng.choice(len(combos), size=min(n, len(combos)), replace=False))]
    out = []
    template = STRATEGIES.get(strategy)
    probe = [np.ones(8)] * len(template.inputs) if template else []
    for combo in combos:
        own, orders = split_set(strategy, combo)
        orders = OrderSettings().with_options(orders).settings()  # ValueError naming a bad order setting
        orders.pop("fill")
        try:
            params = validate_params(strategy, own)
            template.fn(*probe, **params)  # the function's own checks (e.g. fast < slow)
            out.append({**params, **orders})
        except StrategyError as exc:
            if "unknown" in str(exc):
                raise
    if not out:
        raise StrategyError(f"{strategy}: no valid parameter set in {dict(grid)}")
    return out


@dataclass(frozen=True)
class SweepResult:
    """``table``: one row per parameter set (params JSON, net P&L USD, Sharpe,
    max drawdown, trades, rolls); ``pnl``: daily P&L (USD) per set, columns in
    the table's order, indexed by ts."""

    table: pd.DataFrame
    pnl: pd.DataFrame


def run_sweep(base: BacktestSpec, data: MarketData, sets: Sequence[Mapping[str, Any]], workers: int = 2) -> SweepResult:
    """Backtest every parameter set of ``base``'s strategy on ``data`` (threads).

    Threads: see the module docstring. ``sets`` come from :func:`parameter_sets`
    (validated once there).

    The same backtest as :func:`fbt_pipelines.usecases.backtest.backtest_market`
    for each set (tested equal to it), without its per-set frames: the inputs,
    the volatility sizing (:class:`~fbt_pipelines.usecases.backtest.Sizer`), the
    margins and the cost parameters are prepared once, and the sweep engine
    (:mod:`fbt_pipelines.engine.sweep_kernel`) runs sizing, engine and summary
    compiled per set: fbt's ``sma_crossover`` computes each distinct moving
    average once and its signal compiled; any other strategy computes each
    distinct signal once (sets differing only in order settings share it). Sets
    the engine cannot key (unhashable values) take the per-set path: each set
    computes its signal and calls the kernel, and the summary comes from the
    kernel's arrays.
    """
    fast = None
    if len(data.frame) > 0:
        fast = _sma_sweep(base, data, sets, workers)
        if fast is None:
            fast = _signal_sweep(base, data, sets, workers)
    if fast is not None:
        return fast
    frame = data.frame
    sizer = Sizer(data, base)
    engine = base.engine_config()
    spec = data.spec
    open_, close = frame["open"].to_numpy(float), frame["close"].to_numpy(float)
    roll = frame["roll"].to_numpy(bool)
    margins = data.margin_schedule_for(base)  # initial and maintenance margins, the engine's segments
    commission = float(spec.commission if engine.commission is None else engine.commission)
    slippage = float(engine.slippage_ticks * spec.tick_size)
    fill = int(engine.fill_rule)
    capital = float(engine.initial_capital)
    specs = []
    for p in sets:  # validated by parameter_sets
        own, orders = split_set(base.strategy, p)
        specs.append(replace(base, params=tuple(sorted(own.items())), orders=base.orders.with_options(orders)))
    prepared: dict[tuple, tuple] = {}  # order settings -> (high, low, kernel order arguments), made once

    def order_args(set_spec: BacktestSpec) -> tuple:
        config = set_spec.engine_config()
        key = tuple(getattr(config, name) for name in ORDER_FIELDS)
        if key not in prepared:
            prepared[key] = (*price_columns(frame, config), order_arguments(config, frame))
        return prepared[key]

    for set_spec in specs:  # in this thread: the threads only read the prepared arguments
        order_args(set_spec)

    def one(set_spec: BacktestSpec):
        target = sizer.contracts(set_spec.signal(frame), set_spec.orders.contracts)
        high, low, orders = order_args(set_spec)
        sim = simulate_futures_nb(target, open_, high, low, close, roll, float(spec.multiplier), commission, slippage,
                                  margins.starts, margins.initial, margins.maintenance, capital, fill, *orders)
        rolls = sim.t_kind == TradeKind.ROLL
        calls = sim.t_reason == TradeReason.MARGIN_CALL
        headline = equity_headline(sim.equity)
        values = {**set_spec.param_dict, **{k: v for k, v in set_spec.orders.settings().items() if k != "fill"}}
        return values, sim.equity, {
            "net_pnl": float(sim.equity[-1] - capital), "sharpe": headline["sharpe"],
            "max_drawdown": headline["max_drawdown"],
            "trades": float(np.count_nonzero((sim.t_kind == TradeKind.TRADE) & (sim.t_qty != 0))),
            "rolls": float(rolls.sum()), "roll_costs": float(sim.t_comm[rolls].sum() + sim.t_slip[rolls].sum()),
            "margin_calls": float(calls.sum()), "account_stopped": float(sim.stopped_bar >= 0),
        }

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, specs))
    rows = [{"set": i, "params": json.dumps(p, sort_keys=True), **summary}
            for i, (p, _, summary) in enumerate(results)]
    pnl = {i: np.diff(equity, prepend=capital) for i, (_, equity, _) in enumerate(results)}
    return SweepResult(pd.DataFrame(rows), pd.DataFrame(pnl, index=pd.DatetimeIndex(frame["ts"])))


def _own(a: np.ndarray) -> np.ndarray:
    """``a`` as a writable C-contiguous array (a copy when it is not one).

    One array type for every argument of the compiled sweep: pandas hands out
    read-only views, and each mix of read-only and writable arrays would
    compile (and cache) another specialisation.
    """
    return a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C")


@lru_cache(maxsize=1 << 16)
def _sma_set_plan(items: tuple, base_orders: OrderSettings,
                  defaults: tuple) -> tuple[int, int, OrderSettings, str] | None:
    """(fast, slow, order settings, params JSON) of one ``sma_crossover`` set.

    ``items``: the set's sorted items. None when the set is not plainly valid.
    Cached: a sweep of many markets prepares each set once (order settings
    raise ValueError as in :func:`run_sweep`'s per-set path).
    """
    own_names = {k for k, _ in defaults}
    values = dict(items)
    orders = {k: v for k, v in values.items() if k in ORDER_OPTIONS and k not in own_names}
    own = {k: v for k, v in values.items() if k not in orders}
    merged = {**dict(defaults), **own}
    f, s = merged.get("fast"), merged.get("slow")
    if set(own) - own_names or not (type(f) is int and type(s) is int and 1 <= f < s):
        return None
    settings = base_orders.with_options(orders)
    shown = {k: v for k, v in settings.settings().items() if k != "fill"}
    return f, s, settings, json.dumps({**own, **shown}, sort_keys=True)


def _sma_sweep(base: BacktestSpec, data: MarketData, sets: Sequence[Mapping[str, Any]],
               workers: int) -> SweepResult | None:
    """:func:`run_sweep` of fbt's ``sma_crossover`` through the sweep engine.

    None when the strategy is another one or some set is not plainly valid
    (then :func:`_signal_sweep` runs it, and raises what the strategy raises).
    """
    template = base.template
    if template.fn is not sma_crossover or template.source is not None or "close" not in data.frame or not sets:
        return None
    defaults = tuple(sorted(template.defaults.items()))  # resolved once per sweep
    plans = []
    for values in sets:
        try:
            plan = _sma_set_plan(tuple(sorted(values.items())), base.orders, defaults)
        except TypeError:  # an unhashable value: the per-set path decides
            return None
        if plan is None:
            return None  # the per-set path raises the strategy's own error
        plans.append(plan)
    windows = [(f, s) for f, s, _, _ in plans]
    distinct = sorted({w for pair in windows for w in pair})
    row_of = {w: j for j, w in enumerate(distinct)}
    means = window_means(data.frame["close"].to_numpy(float), distinct)
    fast_row = np.array([row_of[f] for f, _ in windows], dtype=np.int64)
    slow_row = np.array([row_of[s] for _, s in windows], dtype=np.int64)
    sweep = _CompiledSweep(base, data, [o for _, _, o, _ in plans])
    sweep.run(np.arange(len(sets), dtype=np.int64), workers,
              lambda idx, lo, hi, prices, orders: sma_sweep_nb(idx, lo, hi, means, fast_row, slow_row, *sweep.sizing,
                                                               *prices, orders, *sweep.outputs))
    return sweep.result([label for _, _, _, label in plans])


def _signal_sweep(base: BacktestSpec, data: MarketData, sets: Sequence[Mapping[str, Any]],
                  workers: int) -> SweepResult | None:
    """:func:`run_sweep` of any strategy: its signals in Python, the rest compiled.

    Each distinct set of strategy parameters computes its signal once (sets that
    differ only in order settings or fixed size share it); sizing, engine and
    summary run in :func:`~fbt_pipelines.engine.sweep_kernel.signal_sweep_nb`.
    Signals are held for at most ~8 M bars at a time. None (the per-set path
    decides) when a parameter is unhashable, or a fixed-size set's signal is NaN
    (whose sign the per-set path leaves to NumPy).
    """
    if not sets:
        return None
    specs = []
    for p in sets:  # as the per-set path: bad order settings raise here
        own, orders = split_set(base.strategy, p)
        specs.append(replace(base, params=tuple(sorted(own.items())), orders=base.orders.with_options(orders)))
    try:
        keys = [spec.params for spec in specs]
        rows: dict[tuple, int] = {}
        for key in keys:
            rows.setdefault(key, len(rows))
    except TypeError:
        return None
    frame = data.frame
    n = len(frame)
    sweep = _CompiledSweep(base, data, [spec.orders for spec in specs])
    first = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    distinct = list(rows)
    sig_of = np.array([rows[key] for key in keys], dtype=np.int64)
    per_chunk = max(1, 8_000_000 // max(n, 1))
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for c0 in range(0, len(distinct), per_chunk):
            chunk = distinct[c0:c0 + per_chunk]
            signals = np.empty((len(chunk), n))
            computed = pool.map(lambda key: specs[first[key]].signal(frame), chunk)
            for j, signal in enumerate(computed):
                signals[j] = np.asarray(signal, dtype=float)
            members = np.flatnonzero((sig_of >= c0) & (sig_of < c0 + len(chunk))).astype(np.int64)
            fixed_size = members[sweep.fixed[members] > 0]
            if np.isnan(signals[sig_of[fixed_size] - c0]).any():
                return None
            sig_row = sig_of - c0  # only the members' rows are read
            sweep.run(members, workers,
                      lambda idx, lo, hi, prices, orders: signal_sweep_nb(
                          idx, lo, hi, signals, sig_row, *sweep.sizing, *prices, orders, *sweep.outputs))
    finally:
        pool.shutdown()
    labels = [json.dumps({**spec.param_dict, **{k: v for k, v in spec.orders.settings().items() if k != "fill"}},
                         sort_keys=True) for spec in specs]
    return sweep.result(labels)


class _CompiledSweep:
    """One market's inputs to the compiled sweep and its output arrays.

    ``sizing``: (fixed contracts per set, cash vol, budget, buffer width,
    buffered) as :func:`~fbt_pipelines.engine.sweep_kernel.targets_nb` takes them;
    ``outputs``: (pnl, stats, bad) written by the compiled functions.
    """

    def __init__(self, base: BacktestSpec, data: MarketData, set_orders: Sequence[OrderSettings]) -> None:
        self.base, self.data, self.set_orders = base, data, list(set_orders)
        frame = data.frame
        sizer = Sizer(data, base)
        self.fixed = np.array([o.contracts or sizer.fixed or 0 for o in self.set_orders], dtype=np.int64)
        cash_vol, budget, width, buffered = np.zeros(1), 0.0, np.zeros(1), False
        if (self.fixed == 0).any():
            cash_vol = _own(np.asarray(sizer.cash_vol, dtype=np.float64))
            budget = float(sizer.budget)
            if sizer.buffer_fraction > 0:
                buffered = True
                width = np.nan_to_num(buffer_width(cash_vol, budget, sizer.buffer_fraction), nan=0.0, posinf=0.0)
        self.sizing = (self.fixed, cash_vol, budget, width, buffered)
        self._set_prices()
        m, n = len(self.set_orders), len(frame)
        self.outputs = (np.empty((m, n)), np.empty((m, len(STATS))), np.full(m, -1, dtype=np.int64))

    def _set_prices(self) -> None:
        """``open_``, ``close``, ``roll``, ``costs`` and ``account`` of ``data`` under ``base``.

        As the compiled functions take them: writable C-contiguous columns,
        (multiplier, commission USD, slippage points) and (margin starts,
        initial, maintenance, capital USD, fill rule).
        """
        frame, spec = self.data.frame, self.data.spec
        engine = self.base.engine_config()
        self.open_ = _own(frame["open"].to_numpy(float))
        self.close = _own(frame["close"].to_numpy(float))
        self.roll = _own(frame["roll"].to_numpy(bool))
        margins = self.data.margin_schedule_for(self.base)
        commission = spec.commission if engine.commission is None else engine.commission
        self.costs = (float(spec.multiplier), float(commission), float(engine.slippage_ticks * spec.tick_size))
        self.account = (_own(margins.starts), _own(margins.initial), _own(margins.maintenance),
                        float(engine.initial_capital), int(engine.fill_rule))

    def run(self, members: np.ndarray, workers: int, call) -> None:
        """Run sets ``members`` (indices) on threads, ``call`` once per slice.

        ``call(idx, lo, hi, prices, orders)`` runs sets ``idx[lo:hi]``.

        Sets with the same order distances share high, low and ATR; ``prices``
        is (open, high, low, close, roll, multiplier, commission, slippage,
        margin starts, initial, maintenance, capital, fill rule).
        """
        keep_freed_memory()  # else each set's per-bar arrays are faulted in afresh (engine/allocator.py)
        frame = self.data.frame
        groups: dict[tuple, list[int]] = {}
        for i in members:
            o = self.set_orders[i]
            groups.setdefault(tuple(getattr(o, name) for name in ORDER_FIELDS), []).append(int(i))
        jobs = []
        for group in groups.values():
            config = replace(self.base, orders=self.set_orders[group[0]]).engine_config()
            high, low = (_own(x) for x in price_columns(frame, config))
            orders = tuple(_own(x) if isinstance(x, np.ndarray) else x for x in order_arguments(config, frame))
            prices = (self.open_, high, low, self.close, self.roll, *self.costs, *self.account)
            idx = np.array(group, dtype=np.int64)
            parts = max(1, min(len(idx), 4 * max(1, workers)))  # a few slices per thread: balanced when sets differ
            bounds = np.linspace(0, len(idx), parts + 1).astype(np.int64)
            jobs += [(idx, int(lo), int(hi), prices, orders) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                call(*job)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda job: call(*job), jobs))

    def result(self, labels: list[str]) -> SweepResult:
        """The :class:`SweepResult` (ValueError naming the first row with a non-finite price)."""
        pnl, stats, bad = self.outputs
        frame = self.data.frame
        if (bad >= 0).any():
            row = int(bad[bad >= 0].min())
            raise ValueError(f"{self.data.root}: non-finite price at row {row} ({frame['ts'].iloc[row]})")
        m = len(labels)
        table = pd.DataFrame({"set": np.arange(m, dtype=np.int64), "params": labels,
                              **{name: stats[:, j] for j, name in enumerate(STATS)}})
        return SweepResult(table, pd.DataFrame(pnl.T, index=self._pnl_index(),
                                               columns=pd.Index(np.arange(m, dtype=np.int64)), copy=False))

    def _pnl_index(self) -> pd.DatetimeIndex:
        """The index of the result's P&L rows: the bars' ts."""
        return pd.DatetimeIndex(self.data.frame["ts"])


def walk_forward(sweep: SweepResult, capital: float, train_years: int = 3, test_years: int = 1) -> pd.DataFrame:
    """Stitched out-of-sample P&L: per window, the set with the best Sharpe on
    the previous ``train_years`` (anchored rolling window), applied to the next
    ``test_years``. Returns ts, set, pnl (USD), equity (USD), window."""
    pnl = sweep.pnl
    years = pnl.index.year
    first, last = int(years.min()), int(years.max())
    parts = []
    for k, test_start in enumerate(range(first + train_years, last + 1, test_years)):
        train = (years >= test_start - train_years) & (years < test_start)
        test = (years >= test_start) & (years < test_start + test_years)
        if not test.any():
            break
        scores = [sharpe_ratio(pnl.loc[train, c].to_numpy() / capital) for c in pnl.columns]
        best = int(np.nanargmax(np.nan_to_num(scores, nan=-np.inf)))
        parts.append(pd.DataFrame({"ts": pnl.index[test], "set": best, "pnl": pnl.loc[test, best].to_numpy(),
                                   "window": k, "in_sample_sharpe": scores[best]}))
    if not parts:
        raise StrategyError(f"walk-forward needs more than {train_years} years of data ({first}-{last})")
    out = pd.concat(parts, ignore_index=True)
    out["equity"] = capital + out["pnl"].cumsum()
    return out


def overfitting_report(sweep: SweepResult, capital: float) -> dict[str, float]:
    """Deflated Sharpe of the best set and the probability of backtest
    overfitting (CSCV) for a sweep: is the best parameter set luck?"""
    from scipy.stats import kurtosis, skew

    from fbt_pipelines.risk.overfitting import deflated_sharpe_ratio, probability_of_backtest_overfitting

    returns = sweep.pnl / capital
    # per-period Sharpe of each set; a set without volatility ranks as 0 (not NaN) here
    daily_sharpe = pd.Series(np.nan_to_num(sharpe_ratios(returns.to_numpy(), periods_per_year=1), nan=0.0))
    best = int(daily_sharpe.to_numpy().argmax())
    r = returns.iloc[:, best].to_numpy()
    out = {"pbo": float(probability_of_backtest_overfitting(sweep.pnl, n_splits=10))}
    if len(daily_sharpe) > 1 and np.std(r) > 0:
        out["deflated_sharpe"] = float(deflated_sharpe_ratio(
            float(daily_sharpe.iloc[best]), len(daily_sharpe), float(daily_sharpe.var(ddof=1)), len(r),
            float(skew(r)), float(kurtosis(r, fisher=False))))
    return out


@dataclass(frozen=True)
class SweepSettings:
    """What a stored sweep says about itself (MLflow params, the tear sheet's provenance)."""

    strategy: str
    grid: Mapping[str, Sequence[Any]]
    mode: str = "grid"
    train_years: int = 3
    test_years: int = 1
    capital: float = 1_000_000.0
    chunk_size: int | None = None


@dataclass(frozen=True)
class StoredSweep:
    """A sweep as stored: its walk-forward (ts, set, pnl USD, equity USD, window),
    the overfitting diagnostics, the best in-sample set, the MLflow parent run
    ("" when not tracked) and the tear sheet (None when not written)."""

    walk_forward: pd.DataFrame
    overfitting: dict[str, float]
    walk_forward_sharpe: float
    best: pd.Series
    mlflow_parent_run: str
    tear_sheet: Path | None


def store_sweep(conn, tracker: Tracking | None, root: str, sweep: SweepResult, settings: SweepSettings, *,
                data_version: str, code_version: str, reports_dir: Path | None = None,
                extra_tags: Mapping[str, str] | None = None) -> StoredSweep:
    """The one record of a sweep on one market: walk-forward selection, an MLflow
    parent run with a child per set (when ``tracker`` is given), ``root``'s rows
    of ``sweep_results`` and ``walk_forward_equity`` replaced, and a tear sheet
    of the walk-forward equity under ``reports_dir`` (when given)."""
    wf = walk_forward(sweep, settings.capital, settings.train_years, settings.test_years)
    parent = ""
    if tracker is not None:
        params = {"strategy": settings.strategy, "market": root, "grid": dict(settings.grid), "mode": settings.mode,
                  "train_years": settings.train_years}
        if settings.chunk_size is not None:
            params["chunk_size"] = settings.chunk_size
        parent = tracker.log_sweep(f"sweep-{settings.strategy}-{root}", params, sweep.table,
                                   tags={"strategy": settings.strategy, "market": root, "data_version": data_version,
                                         "code_version": code_version, **(extra_tags or {})})
    wh.replace_partition(conn, "sweep_results", root,
                         sweep.table.assign(root=root, strategy=settings.strategy, mlflow_parent_run=parent))
    wh.replace_partition(conn, "walk_forward_equity", root, wf.assign(root=root, strategy=settings.strategy))
    best = sweep.table.sort_values("sharpe", ascending=False).iloc[0]
    overfit = overfitting_report(sweep, settings.capital)
    wf_sharpe = sharpe_ratio(wf["pnl"].to_numpy() / settings.capital) if len(wf) > 2 else float("nan")
    sheet = None
    if reports_dir is not None:
        sheet = write_tear_sheet(
            reports_dir / f"sweep_{root}_{settings.strategy}.html",
            f"fbt sweep: {settings.strategy} on {root}, walk-forward out-of-sample equity", wf[["ts", "equity"]],
            {"parameter sets": len(sweep.table), "best in-sample set": best["params"],
             "its Sharpe": f"{best['sharpe']:.2f}", "walk-forward OOS Sharpe": f"{wf_sharpe:.2f}",
             "walk-forward OOS P&L (USD)": f"{wf['pnl'].sum():,.2f}",
             "probability of backtest overfitting": f"{overfit['pbo']:.2f}",
             "deflated Sharpe of the best": f"{overfit.get('deflated_sharpe', float('nan')):.2f}"},
            pd.Series({root: float(wf["pnl"].sum())}),
            {"strategy": settings.strategy, "market": root, "grid": json.dumps(dict(settings.grid)),
             "mode": settings.mode, "train / test years": f"{settings.train_years} / {settings.test_years}",
             "data version": data_version, "code version": code_version, "MLflow parent run": parent},
            strategy_pnl=sweep.table.set_index("params")[["net_pnl"]].T.rename(index={"net_pnl": root}),
            strategy_pnl_title="Net P&L of every parameter set over the whole period (USD, after costs)")
    return StoredSweep(wf, overfit, wf_sharpe, best, parent, sheet)
