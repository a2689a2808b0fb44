"""Parameter sweeps on intraday (1m, 1h) series; walk-forward windows in sessions.

``fbt sweep --interval 1m|1h``, the ``intraday_parameter_sweep`` asset and the
``sweep_fanout`` job's intraday mode come through here. A sweep runs every
parameter set of one strategy on one stored intraday series
(:func:`~fbt_pipelines.usecases.intraday.series_key`: ``ES|1m``) and gives,
per set, the numbers :func:`~fbt_pipelines.usecases.intraday.backtest_intraday`
gives for it (tested equal): a fixed size in contracts (volatility targeting
sizes on daily volatility and is not offered intraday), the same costs and
margins, Sharpe of the per-bar returns annualised by bars per session x 252.

What is kept per set is the summary and the P&L per *trading session* (USD),
not per bar (1,000 sets on a year of minute bars would be 2.8 GB): the
walk-forward, the overfitting diagnostics (PBO, deflated Sharpe) and the tear
sheet read session P&L, as the daily sweep reads daily P&L.

Walk-forward by sessions: a minute series typically spans months, not the
years the daily walk-forward counts. Window k selects the set with the best
Sharpe of session P&L over the ``train_sessions`` sessions before its start
(a rolling window) and takes that set's P&L over the next ``test_sessions``
sessions; the stitched out-of-sample P&L is the walk-forward result. As in
the daily sweep, switching sets between windows costs nothing extra.

Results go to ``intraday_sweep_results`` and ``intraday_walk_forward_equity``
under the series key (the daily ``sweep_results`` are untouched), an MLflow
parent run (experiment fbt-sweeps) and a tear sheet. Times UTC, money USD,
prices points. No Dagster here.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.engine.intraday_sweep_kernel import signal_sessions_nb, sma_sessions_nb
from fbt_pipelines.engine.strategies import sma_crossover
from fbt_pipelines.engine.sweep_kernel import STATS, window_means
from fbt_pipelines.errors import DataError, StrategyError
from fbt_pipelines.primitives.performance import annualisation, sharpe_ratio, sharpe_ratios
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.services.tracking import Tracking
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases.backtest import MarketData
from fbt_pipelines.usecases.spec import BacktestSpec, OrderSettings
from fbt_pipelines.usecases.sweep import (StoredSweep, SweepResult, _CompiledSweep, _sma_set_plan, overfitting_report,
                                          split_set)
from fbt_pipelines.usecases.workspace import Workspace

DEFAULT_TRAIN_SESSIONS = 63  # a quarter of sessions in sample
DEFAULT_TEST_SESSIONS = 21  # a month out of sample
RESULTS_TABLE = "intraday_sweep_results"
WALK_FORWARD_TABLE = "intraday_walk_forward_equity"
MEANS_BUDGET = 32_000_000  # float64 values of moving averages held at once (256 MB)
SIGNALS_BUDGET = 8_000_000  # float64 values of precomputed signals held at once (64 MB)
PBO_SPLITS = 10  # blocks of the CSCV split, as the daily sweep's overfitting report


def intraday_sweep_spec(strategy: str, library: Mapping[str, Any], *, capital: float = 1_000_000.0,
                        contracts: int = 1, slippage_ticks: float = 1.0, commission: float | None = None,
                        fill: str = "next_open", stop_loss: str | None = None, take_profit: str | None = None,
                        trailing_stop: str | None = None) -> BacktestSpec:
    """The spec every set of an intraday sweep shares: fixed contracts, costs, orders.

    As the ``intraday_backtests`` asset builds its specs: ``contracts`` >= 1
    (held in the signal's direction), ``slippage_ticks`` per contract per side,
    ``commission`` USD per contract per side (None: the catalogue's);
    StrategyError on a size below 1.
    """
    if contracts < 1:
        raise StrategyError(f"contracts {contracts}: intraday sweeps hold a fixed size >= 1")
    orders = OrderSettings(fill=fill, stop_loss=stop_loss, take_profit=take_profit,  # type: ignore[arg-type]
                           trailing_stop=trailing_stop, contracts=contracts)
    return BacktestSpec.create(strategy, {}, library=library, capital=capital, slippage_ticks=slippage_ticks,
                               commission=commission, orders=orders)


def session_ends(frame: pd.DataFrame) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """(last bar of each trading session, the sessions) of an intraday input frame.

    ``frame["session"]``: the trading day of each bar (00:00 UTC), in time
    order. Returns int64 row numbers and the sessions as a UTC index.
    """
    if "session" not in frame:
        raise DataError("an intraday sweep needs the series' session column (intraday_continuous_prices)")
    day = pd.DatetimeIndex(frame["session"]).as_unit("ns").asi8  # a stored series reads back in us
    if len(day) == 0:
        raise DataError("an intraday sweep needs at least one bar")
    ends = np.flatnonzero(np.r_[day[1:] != day[:-1], True]).astype(np.int64)
    return ends, pd.DatetimeIndex(day[ends]).tz_localize("UTC")


class _SessionSweep(_CompiledSweep):
    """One series' inputs to the compiled intraday sweep and its outputs.

    :class:`~fbt_pipelines.usecases.sweep._CompiledSweep`'s inputs with every
    set at a fixed size, its :meth:`run` (sets grouped by order distances,
    slices on threads) and :meth:`result`; outputs (session P&L, stats, bad
    row) per set.
    """

    def __init__(self, base: BacktestSpec, data: MarketData, set_orders: Sequence[OrderSettings],
                 interval: str) -> None:
        self.base, self.data, self.set_orders = base, data, list(set_orders)
        fixed = [o.contracts or base.orders.contracts or 0 for o in self.set_orders]
        if min(fixed, default=1) < 1:
            raise StrategyError("an intraday sweep holds a fixed size: give contracts >= 1 "
                                "(volatility targeting sizes on daily volatility)")
        self.fixed = np.array(fixed, dtype=np.int64)
        self.sizing = (self.fixed, np.zeros(1), 0.0, np.zeros(1), False)
        self._set_prices()
        self.ends, self.days = session_ends(data.frame)
        self.annual = annualisation(uc.periods_per_year(data.spec, interval))
        m = len(self.set_orders)
        self.outputs = (np.empty((m, len(self.ends))), np.empty((m, len(STATS))), np.full(m, -1, dtype=np.int64))

    def _pnl_index(self) -> pd.DatetimeIndex:
        """The index of the result's P&L rows: the trading days, named ts."""
        return self.days.rename("ts")


def run_intraday_sweep(base: BacktestSpec, data: MarketData, sets: Sequence[Mapping[str, Any]], interval: str,
                       workers: int = 2) -> SweepResult:
    """Backtest every parameter set on an intraday series: a summary and session P&L each.

    ``data``: :func:`~fbt_pipelines.usecases.intraday.intraday_market_data`
    of a stored series of ``interval``; ``base``: :func:`intraday_sweep_spec`
    (a fixed size; a set's ``contracts`` replaces it); ``sets`` from
    :func:`~fbt_pipelines.usecases.sweep.parameter_sets`. Each set's table row
    equals :func:`~fbt_pipelines.usecases.intraday.backtest_intraday` of it
    (net P&L, trades, rolls, Sharpe annualised by bars per session x 252,
    max drawdown); ``pnl`` is (sessions x sets), USD, indexed by the trading
    day (00:00 UTC). ``sma_crossover``: each distinct moving average computed
    once; other strategies: each distinct signal once; sets the compiled path
    cannot take (unhashable values, a NaN signal) run one by one through
    ``backtest_intraday``.
    """
    uc.check_interval(interval)
    if not sets:
        raise StrategyError("no parameter sets to sweep")
    if len(data.frame) < 3:
        raise DataError(f"{data.root}: an intraday sweep needs at least 3 bars, got {len(data.frame)}")
    out = _sma_sessions(base, data, sets, interval, workers)
    if out is None:
        out = _signal_sessions(base, data, sets, interval, workers)
    if out is None:
        out = _per_set(base, data, sets, interval, workers)
    return out


def _set_specs(base: BacktestSpec, sets: Sequence[Mapping[str, Any]]) -> list[BacktestSpec]:
    specs = []
    for p in sets:  # as the daily sweep: bad order settings raise here
        own, orders = split_set(base.strategy, p)
        specs.append(replace(base, params=tuple(sorted(own.items())), orders=base.orders.with_options(orders)))
    return specs


def _label(spec: BacktestSpec) -> str:
    return json.dumps({**spec.param_dict, **{k: v for k, v in spec.orders.settings().items() if k != "fill"}},
                      sort_keys=True)


def window_groups(pairs: Sequence[tuple[int, int]], most: int) -> list[list[int]]:
    """Sets in groups whose moving averages number at most ``most`` each.

    ``pairs``: each set's (fast, slow) windows; groups hold indices into it.

    One group when every distinct window fits. Else blocks: the fast windows
    cut into runs of ``a``, the slow ones into runs of ``b`` (``a + b <=
    most``), a group per (fast run, slow run) with sets; ``b`` chosen to
    compute the fewest moving averages in all (each group computes its own).
    Every set is in exactly one group, groups in first-set order.
    """
    if len({w for pair in pairs for w in pair}) <= most:
        return [list(range(len(pairs)))]
    fasts = sorted({f for f, _ in pairs})
    slows = sorted({s for _, s in pairs})

    def cost(b: int) -> int:
        a = most - b
        return -(-len(fasts) // a) * -(-len(slows) // b) * most

    b = min(range(1, most), key=cost)
    a = most - b
    f_block = {f: i // a for i, f in enumerate(fasts)}
    s_block = {w: i // b for i, w in enumerate(slows)}
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (f, w) in enumerate(pairs):
        groups.setdefault((f_block[f], s_block[w]), []).append(i)
    return list(groups.values())


def _sma_sessions(base: BacktestSpec, data: MarketData, sets: Sequence[Mapping[str, Any]], interval: str,
                  workers: int) -> SweepResult | None:
    """fbt's ``sma_crossover`` through the compiled session sweep; None for anything else.

    Moving averages are held for at most :data:`MEANS_BUDGET` values at a
    time: sets are run in groups whose distinct windows fit
    (:func:`window_groups`; each window computed once per group).
    """
    template = base.template
    if template.fn is not sma_crossover or template.source is not None or "close" not in data.frame:
        return None
    defaults = tuple(sorted(template.defaults.items()))
    plans = []
    for values in sets:
        try:
            plan = _sma_set_plan(tuple(sorted(values.items())), base.orders, defaults)
        except TypeError:
            return None
        if plan is None:
            return None
        plans.append(plan)
    sweep = _SessionSweep(base, data, [o for _, _, o, _ in plans], interval)
    close = data.frame["close"].to_numpy(float)
    for group in window_groups([(f, s) for f, s, _, _ in plans], max(2, MEANS_BUDGET // max(len(close), 1))):
        distinct = sorted({w for i in group for w in plans[i][:2]})
        row_of = {w: j for j, w in enumerate(distinct)}
        means = window_means(close, distinct)
        fast_row = np.zeros(len(plans), dtype=np.int64)
        slow_row = np.zeros(len(plans), dtype=np.int64)
        for i in group:
            fast_row[i], slow_row[i] = row_of[plans[i][0]], row_of[plans[i][1]]
        sweep.run(np.array(group, dtype=np.int64), workers,
                  lambda idx, lo, hi, prices, orders: sma_sessions_nb(
                      idx, lo, hi, means, fast_row, slow_row, *sweep.sizing, *prices, orders, sweep.ends,
                      sweep.annual, *sweep.outputs))
    return sweep.result([label for _, _, _, label in plans])


def _signal_sessions(base: BacktestSpec, data: MarketData, sets: Sequence[Mapping[str, Any]], interval: str,
                     workers: int) -> SweepResult | None:
    """Any strategy: each distinct signal once in Python, the rest compiled.

    None (the per-set path decides) when a parameter is unhashable or a
    signal has NaN (whose sign the single backtest leaves to NumPy).
    """
    specs = _set_specs(base, sets)
    try:
        rows: dict[tuple, int] = {}
        for spec in specs:
            rows.setdefault(spec.params, len(rows))
    except TypeError:
        return None
    frame = data.frame
    n = len(frame)
    sweep = _SessionSweep(base, data, [spec.orders for spec in specs], interval)
    first: dict[tuple, int] = {}
    for i, spec in enumerate(specs):
        first.setdefault(spec.params, i)
    distinct = list(rows)
    sig_of = np.array([rows[spec.params] for spec in specs], dtype=np.int64)
    per_chunk = max(1, SIGNALS_BUDGET // max(n, 1))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for c0 in range(0, len(distinct), per_chunk):
            chunk = distinct[c0:c0 + per_chunk]
            signals = np.empty((len(chunk), n))
            for j, signal in enumerate(pool.map(lambda key: specs[first[key]].signal(frame), chunk)):
                signals[j] = np.asarray(signal, dtype=float)
            if np.isnan(signals).any():
                return None
            members = np.flatnonzero((sig_of >= c0) & (sig_of < c0 + len(chunk))).astype(np.int64)
            sig_row = sig_of - c0  # only the members' rows are read
            sweep.run(members, workers,
                      lambda idx, lo, hi, prices, orders: signal_sessions_nb(
                          idx, lo, hi, signals, sig_row, *sweep.sizing, *prices, orders, sweep.ends, sweep.annual,
                          *sweep.outputs))
    return sweep.result([_label(spec) for spec in specs])


def _per_set(base: BacktestSpec, data: MarketData, sets: Sequence[Mapping[str, Any]], interval: str,
             workers: int) -> SweepResult:
    """Each set through ``backtest_intraday`` (threads): the path any set can take."""
    specs = _set_specs(base, sets)
    ends, days = session_ends(data.frame)

    def one(spec: BacktestSpec) -> tuple[dict[str, float], np.ndarray]:
        bt = uc.backtest_intraday(spec, data, interval)
        equity = bt.result.equity
        return {k: float(bt.summary[k]) for k in STATS}, np.diff(equity[ends], prepend=spec.capital)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, specs))
    table = pd.DataFrame([{"set": i, "params": _label(spec), **summary}
                          for i, (spec, (summary, _)) in enumerate(zip(specs, results))])
    pnl = pd.DataFrame(np.column_stack([p for _, p in results]), index=days.rename("ts"),
                       columns=pd.Index(np.arange(len(specs), dtype=np.int64)))
    return SweepResult(table, pnl)


# --- walk-forward, storage ---------------------------------------------------------------------------


def walk_forward_sessions(sweep: SweepResult, capital: float, train_sessions: int = DEFAULT_TRAIN_SESSIONS,
                          test_sessions: int = DEFAULT_TEST_SESSIONS) -> pd.DataFrame:
    """Stitched out-of-sample P&L, windows counted in sessions (module docstring).

    ``sweep.pnl``: P&L per session (USD), sessions x sets. Window k tests
    sessions ``[t + k x test, t + (k+1) x test)`` with ``t = train_sessions``
    on the set with the best Sharpe of ``pnl / capital`` (252 sessions a
    year; a set without volatility never wins over one with) over the
    ``train_sessions`` before. Returns ts, set, pnl (USD), window,
    in_sample_sharpe, equity (USD). StrategyError when there is no session
    to test.
    """
    if train_sessions < 2 or test_sessions < 1:
        raise StrategyError(f"walk-forward sessions: train >= 2 and test >= 1, got {train_sessions} and "
                            f"{test_sessions}")
    pnl = sweep.pnl
    n = len(pnl)
    if n <= train_sessions:
        raise StrategyError(f"the walk-forward needs more than {train_sessions} sessions ({n} in the series)")
    values = pnl.to_numpy(float)
    parts = []
    for k, start in enumerate(range(train_sessions, n, test_sessions)):
        scores = sharpe_ratios(values[start - train_sessions:start] / capital)
        best = int(np.argmax(np.nan_to_num(scores, nan=-np.inf)))
        stop = min(start + test_sessions, n)
        parts.append(pd.DataFrame({"ts": pnl.index[start:stop], "set": best, "pnl": values[start:stop, best],
                                   "window": k, "in_sample_sharpe": float(scores[best])}))
    out = pd.concat(parts, ignore_index=True)
    out["equity"] = capital + out["pnl"].cumsum()
    return out


@dataclass(frozen=True)
class IntradaySweepSettings:
    """What a stored intraday sweep says about itself (MLflow params, tear sheet, rows)."""

    strategy: str
    grid: Mapping[str, Sequence[Any]]
    interval: str
    mode: str = "grid"
    train_sessions: int = DEFAULT_TRAIN_SESSIONS
    test_sessions: int = DEFAULT_TEST_SESSIONS
    capital: float = 1_000_000.0
    contracts: int = 1
    chunk_size: int | None = None


def _overfitting(sweep: SweepResult, capital: float) -> dict[str, float]:
    """The daily sweep's overfitting report, NaN when the sweep is too small for it.

    :func:`~fbt_pipelines.usecases.sweep.overfitting_report`: PBO splits the
    sessions into 10 blocks of at least 2 and needs 2 sets.
    """
    if len(sweep.pnl) < 2 * PBO_SPLITS or sweep.pnl.shape[1] < 2:
        return {"pbo": float("nan"), "deflated_sharpe": float("nan")}
    return overfitting_report(sweep, capital)


def sweep_tear_sheet_name(key: str, strategy: str) -> str:
    """File name of an intraday sweep's tear sheet: ``sweep_ES_1m_sma_crossover.html``."""
    return "sweep_" + uc.tear_sheet_name(key, strategy)


def store_intraday_sweep(conn, tracker: Tracking | None, key: str, sweep: SweepResult,
                         settings: IntradaySweepSettings, *, data_version: str, code_version: str,
                         reports_dir: Path | None = None, extra_tags: Mapping[str, str] | None = None) -> StoredSweep:
    """The one record of a sweep on series ``key``, as the daily ``store_sweep`` does.

    The session walk-forward (:func:`walk_forward_sessions`), an MLflow parent
    run with a child per set (when ``tracker`` is given), ``key``'s rows of
    ``intraday_sweep_results`` and ``intraday_walk_forward_equity`` replaced,
    and a tear sheet of the walk-forward equity under ``reports_dir`` (when
    given). PBO and the deflated Sharpe are NaN below 20 sessions or 2 sets.
    """
    wf = walk_forward_sessions(sweep, settings.capital, settings.train_sessions, settings.test_sessions)
    root = key.split("|")[0]
    parent = ""
    if tracker is not None:
        params = {"strategy": settings.strategy, "market": root, "series": key, "interval": settings.interval,
                  "grid": dict(settings.grid), "mode": settings.mode, "train_sessions": settings.train_sessions,
                  "test_sessions": settings.test_sessions, "contracts": settings.contracts}
        if settings.chunk_size is not None:
            params["chunk_size"] = settings.chunk_size
        parent = tracker.log_sweep(f"sweep-{settings.strategy}-{key}", params, sweep.table,
                                   tags={"strategy": settings.strategy, "market": root, "series": key,
                                         "interval": settings.interval, "data_version": data_version,
                                         "code_version": code_version, **(extra_tags or {})}) or ""
    tags = {"series": key, "root": root, "interval": settings.interval, "strategy": settings.strategy}
    wh.replace_partition(conn, RESULTS_TABLE, key, sweep.table.assign(**tags, mlflow_parent_run=parent))
    wh.replace_partition(conn, WALK_FORWARD_TABLE, key, wf.assign(**tags))
    best = sweep.table.sort_values("sharpe", ascending=False).iloc[0]
    overfit = _overfitting(sweep, settings.capital)
    wf_sharpe = sharpe_ratio(wf["pnl"].to_numpy() / settings.capital) if len(wf) > 2 else float("nan")
    sheet = None
    if reports_dir is not None:
        from fbt_pipelines.reports.tear_sheet import write_tear_sheet

        sheet = write_tear_sheet(
            reports_dir / sweep_tear_sheet_name(key, settings.strategy),
            f"fbt sweep: {settings.strategy} on {key}, walk-forward out-of-sample equity (per session)",
            wf[["ts", "equity"]],
            {"parameter sets": len(sweep.table), "best set": best["params"],
             f"its Sharpe (per {settings.interval} bar)": f"{best['sharpe']:.2f}",
             "walk-forward OOS Sharpe (sessions)": f"{wf_sharpe:.2f}",
             "walk-forward OOS P&L (USD)": f"{wf['pnl'].sum():,.2f}",
             "probability of backtest overfitting": f"{overfit['pbo']:.2f}",
             "deflated Sharpe of the best": f"{overfit.get('deflated_sharpe', float('nan')):.2f}"},
            pd.Series({key: float(wf["pnl"].sum())}),
            {"strategy": settings.strategy, "series": key, "interval": settings.interval,
             "grid": json.dumps(dict(settings.grid)), "mode": settings.mode,
             "train / test sessions": f"{settings.train_sessions} / {settings.test_sessions}",
             "contracts": settings.contracts, "data version": data_version, "code version": code_version,
             "MLflow parent run": parent},
            strategy_pnl=sweep.table.set_index("params")[["net_pnl"]].T.rename(index={"net_pnl": key}),
            strategy_pnl_title="Net P&L of every parameter set over the whole series (USD, after costs)")
    return StoredSweep(wf, overfit, wf_sharpe, best, parent, sheet)


# --- reading a series ----------------------------------------------------------------------------------


class NoIntradayData(DataError):
    """A market has neither a stored intraday series nor bars of the interval."""


@dataclass(frozen=True)
class IntradaySeries:
    """A series ready to sweep: its key, its inputs, and where they came from."""

    key: str
    data: MarketData
    source: str  # "stored" or "built from the stored bars"


def load_intraday_series(conn, root: str, interval: str, workspace: Workspace, *, build: bool = True
                         ) -> IntradaySeries:
    """Series ``ROOT|interval``: the stored one, else (``build``) one made from the bars.

    As ``fbt backtest --interval``: the intraday roll schedule and Panama
    series of :mod:`fbt_pipelines.usecases.intraday` on the bars in the
    warehouse. :class:`NoIntradayData` when neither exists.
    """
    from fbt_pipelines.usecases.continuous import market_contracts, roll_rule_for

    key = uc.series_key(root, interval)
    prices = uc.read_intraday_prices(conn, key)
    source = "stored"
    if prices.empty:
        if not build:
            raise NoIntradayData(f"no intraday continuous prices for {key}: materialize intraday_continuous_prices")
        market = workspace.market(root)
        try:
            bars = uc.read_intraday_bars(conn, root, interval)
        except DataError:
            raise NoIntradayData(f"no {interval} continuous prices for {root}: no series {key} and no {interval} "
                                 f"bars (ingest them with `fbt ingest PATH --interval {interval}`, or run "
                                 "`fbt demo-intraday`)") from None
        sb = uc.sessioned_bars(bars, market)
        contracts = market_contracts(conn, market, bars)
        rolls = uc.intraday_roll_schedule(sb, contracts, roll_rule_for(market), key, interval)
        prices = uc.intraday_continuous(sb, rolls.schedule, rolls.start_contract, contracts, key,
                                        interval).prices.drop(columns="series")
        source = "built from the stored bars"
    return IntradaySeries(key, uc.intraday_market_data(root, workspace, prices), source)


def intraday_roots(conn, interval: str) -> list[str]:
    """Markets with a stored series ``ROOT|interval`` (no window), sorted."""
    if not wh.table_exists(conn, "intraday_continuous_prices"):
        return []
    rows = conn.execute("SELECT DISTINCT series FROM intraday_continuous_prices WHERE series LIKE ?",
                        [f"%|{uc.check_interval(interval)}"]).fetchall()
    return sorted(str(r[0]).split("|")[0] for r in rows if str(r[0]).count("|") == 1)


__all__ = ["DEFAULT_TEST_SESSIONS", "DEFAULT_TRAIN_SESSIONS", "IntradaySeries", "IntradaySweepSettings", "NoIntradayData",
           "RESULTS_TABLE", "WALK_FORWARD_TABLE", "intraday_roots", "intraday_sweep_spec", "load_intraday_series",
           "run_intraday_sweep", "session_ends", "store_intraday_sweep", "sweep_tear_sheet_name",
           "walk_forward_sessions", "window_groups"]
