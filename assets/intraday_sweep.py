"""Intraday group: a parameter sweep on one market's 1m / 1h series, walk-forward by sessions.

Reads the series the run config names (``interval``, optional window of
trading days: the key ``ES|1m``) from ``intraday_continuous_prices``, sweeps
every set of the grid at a fixed size and stores it as the daily
``parameter_sweep`` stores its sweep (``intraday_sweep_results``,
``intraday_walk_forward_equity``, an MLflow parent run, a tear sheet). Not in
the ``intraday_market`` job (its series may be days long): materialize it on
its own. Domain rules: :mod:`fbt_pipelines.usecases.intraday_sweep`.
"""


import time
from typing import Optional

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets._support import WRITER_POOL, md_table, number
from assets.intraday import GROUP, IntradayConfig, intraday_continuous_prices
from assets.partitions import market_partitions
from assets.sweeps import _count, _heatmap
from fbt_pipelines.config import code_version
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.errors import FbtError
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases import intraday_sweep as isw
from fbt_pipelines.usecases.sweep import parameter_sets
from resources import FilesResource, TrackingResource, WarehouseResource


class IntradaySweepConfig(IntradayConfig):
    """Series (interval, window), strategy, grid, fixed size, costs and walk-forward sessions."""

    strategy: str = Field(default="sma_crossover", description=f"Strategy to sweep. {strategies_help()}")
    grid: dict[str, list[float]] = Field(
        default={"fast": [30, 60, 120], "slow": [240, 390, 780]},
        description="Parameter -> values (windows in bars of the interval); every combination is tried. Order "
                    "settings in points may be swept too (stop_loss, take_profit, trailing_stop; contracts).")
    orders_grid: dict[str, list[str]] = Field(
        default={}, description="Order settings to sweep with any unit ('40', '2%', '3atr'; contracts '1', '2').")
    mode: str = Field(default="grid", description="grid or random (n_random seeded draws from the grid).")
    n_random: int = 20
    seed: int = 0
    contracts: int = Field(default=1, description="Contracts held in the signal's direction (a fixed size: "
                                                 "volatility targeting is not offered intraday).")
    initial_capital: float = Field(default=1_000_000.0, description="USD per set.")
    slippage_ticks: float = Field(default=1.0, description="Ticks lost per contract per side, rolls included.")
    commission: Optional[float] = Field(default=None, description="USD per contract per side; empty: the "
                                                                  "catalogue's.")
    fill: str = Field(default="next_open", description="next_open or next_close.")
    train_sessions: int = Field(default=isw.DEFAULT_TRAIN_SESSIONS,
                                description="Walk-forward in-sample window (trading sessions).")
    test_sessions: int = Field(default=isw.DEFAULT_TEST_SESSIONS,
                               description="Walk-forward out-of-sample window (trading sessions).")
    workers: int = Field(default=2, description="Threads (the Numba kernel releases the GIL).")

    def sets(self) -> list[dict]:
        grid = {**self.grid, **{k: [_count(v) if k == "contracts" else v for v in values]
                                for k, values in self.orders_grid.items()}}
        return parameter_sets(self.strategy, grid, self.mode, self.n_random, self.seed)


@asset(partitions_def=market_partitions, group_name=GROUP, kinds={"duckdb", "mlflow", "numba"},
       deps=[intraday_continuous_prices], pool=WRITER_POOL)
def intraday_parameter_sweep(context: AssetExecutionContext, config: IntradaySweepConfig, warehouse: WarehouseResource,
                             tracking: TrackingResource, files: FilesResource) -> MaterializeResult:
    """Every parameter set of a strategy on the intraday series (fixed size, Sharpe per bar), a walk-forward by sessions, an MLflow parent run and a tear sheet."""
    root = context.partition_key
    key, interval, _, _ = config.series(root)
    workspace = files.workspace()
    try:
        base = isw.intraday_sweep_spec(config.strategy, workspace.strategies(), capital=config.initial_capital,
                                       contracts=config.contracts, slippage_ticks=config.slippage_ticks,
                                       commission=config.commission, fill=config.fill)
        sets = config.sets()
        with warehouse.connect() as conn:
            data = uc.intraday_market_data(root, workspace, uc.read_intraday_prices(conn, key))
        context.log.info(f"{key}: {len(sets)} parameter sets of {config.strategy} on {len(data.frame):,} bars")
        t0 = time.perf_counter()
        sweep = isw.run_intraday_sweep(base, data, sets, interval, workers=config.workers)
        compute_s = time.perf_counter() - t0
        settings = isw.IntradaySweepSettings(config.strategy, dict(config.grid), interval, config.mode,
                                             config.train_sessions, config.test_sessions, config.initial_capital,
                                             config.contracts)
        with warehouse.connect() as conn:
            stored = isw.store_intraday_sweep(conn, tracking.get(), key, sweep, settings,
                                              data_version=data.data_version, code_version=code_version(),
                                              reports_dir=files.reports(), extra_tags={"dagster_run": context.run_id})
    except (FbtError, ValueError) as exc:
        raise Failure(f"{key}: {exc}") from None
    wf, overfit, best = stored.walk_forward, stored.overfitting, stored.best
    sheet = ({"tear_sheet": MetadataValue.path(str(stored.tear_sheet)),
              "tear_sheet_url": MetadataValue.url(stored.tear_sheet.resolve().as_uri())}
             if stored.tear_sheet is not None else {})
    top = sweep.table.sort_values("sharpe", ascending=False).head(10)
    return MaterializeResult(metadata={
        **sheet,
        "series": key, "interval": interval, "bars": len(data.frame), "sessions": len(sweep.pnl),
        "sets": len(sets), "compute_seconds": round(compute_s, 3),
        "sets_per_second": round(len(sets) / max(compute_s, 1e-9), 1),
        "best_params": best["params"], "best_sharpe": number(best["sharpe"], "ratio"),
        "best_net_pnl": number(best["net_pnl"], "money"),
        "sharpe_heatmap": _heatmap(key, config.strategy, dict(config.grid), sets, sweep.table),
        "probability_of_backtest_overfitting": number(overfit["pbo"], "percent"),
        "deflated_sharpe_of_best": number(overfit.get("deflated_sharpe", float("nan")), "percent"),
        "walk_forward_oos_sharpe": number(stored.walk_forward_sharpe, "ratio"),
        "walk_forward_windows": int(wf["window"].nunique()),
        "walk_forward_sessions": MetadataValue.json({"train": config.train_sessions, "test": config.test_sessions}),
        "mlflow_parent_run": MetadataValue.text(stored.mlflow_parent_run),
        "data_version": MetadataValue.text(data.data_version),
        "best_sets": md_table(top[["params", "net_pnl", "sharpe", "max_drawdown", "trades", "rolls"]], ",.2f",
                              kinds={"net_pnl": "money", "sharpe": "ratio", "max_drawdown": "percent",
                                     "trades": "count", "rolls": "count"}),
    })
