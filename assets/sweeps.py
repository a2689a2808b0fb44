"""Stage 4b: parameter sweep and walk-forward per market."""

import json

import pandas as pd
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets._support import WRITER_POOL, md_table
from assets.partitions import market_partitions
from assets.rolls import continuous_prices
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.engine.sweep import overfitting_report, parameter_sets, run_sweep, walk_forward
from fbt_pipelines.portfolio.sizing import VolTargetConfig
from fbt_pipelines.reports.tear_sheet import write_tear_sheet
from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.versioning import code_version, frame_version
from resources import FilesResource, TrackingResource, WarehouseResource


class SweepConfig(Config):
    strategy: str = Field(default="sma_crossover", description=f"Strategy to sweep. {strategies_help()}")
    grid: dict[str, list[float]] = Field(default={"fast": [10, 20, 40], "slow": [50, 100, 200]},
                                         description="Parameter -> values; every combination is tried.")
    mode: str = Field(default="grid", description="grid or random (n seeded draws from the grid).")
    n_random: int = 20
    seed: int = 0
    train_years: int = Field(default=3, description="Walk-forward in-sample window (years).")
    test_years: int = Field(default=1, description="Walk-forward out-of-sample window (years).")
    capital: float = 1_000_000.0
    workers: int = Field(default=2, description="Threads (the Numba kernel releases the GIL).")


@asset(partitions_def=market_partitions, group_name="backtest", kinds={"duckdb", "mlflow", "numba"},
       deps=[continuous_prices], pool=WRITER_POOL)
def parameter_sweep(context: AssetExecutionContext, config: SweepConfig, warehouse: WarehouseResource,
                    tracking: TrackingResource, files: FilesResource) -> MaterializeResult:
    """Every parameter set of a strategy on this market, plus a walk-forward that picks the best in-sample set per window and stitches the out-of-sample P&L; MLflow parent run with one child per set; a tear sheet of the walk-forward equity."""
    root = context.partition_key
    spec = market_spec(root)
    with warehouse.connect() as conn:
        prices = wh.read_partition(conn, "continuous_prices", root, order_by=["ts"])
        feats = wh.read_partition(conn, "features", root, order_by=["ts"])
    sets = parameter_sets(config.strategy, config.grid, config.mode, config.n_random, config.seed)
    context.log.info(f"{root}: {len(sets)} parameter sets of {config.strategy}")
    sweep = run_sweep(prices, spec, config.strategy, sets, VolTargetConfig(capital=config.capital, idm=1.0),
                      EngineConfig(initial_capital=config.capital), features=feats, workers=config.workers)
    wf = walk_forward(sweep, config.capital, config.train_years, config.test_years)
    data_version = frame_version(prices)
    parent = tracking.get().log_sweep(
        f"sweep-{config.strategy}-{root}", {"strategy": config.strategy, "market": root, "grid": config.grid,
                                             "mode": config.mode, "train_years": config.train_years},
        sweep.table, tags={"strategy": config.strategy, "market": root, "data_version": data_version,
                           "code_version": code_version()})
    with warehouse.connect() as conn:
        wh.replace_partition(conn, "sweep_results", root, sweep.table.assign(root=root, strategy=config.strategy,
                                                                              mlflow_parent_run=parent))
        wh.replace_partition(conn, "walk_forward_equity", root, wf.assign(root=root, strategy=config.strategy))
    best = sweep.table.sort_values("sharpe", ascending=False).iloc[0]
    overfit = overfitting_report(sweep, config.capital)
    wf_sharpe = float(wf["pnl"].mean() / wf["pnl"].std(ddof=1) * 252 ** 0.5) if len(wf) > 2 else float("nan")
    sheet = write_tear_sheet(
        files.reports() / f"sweep_{root}_{config.strategy}.html",
        f"fbt sweep: {config.strategy} on {root}, walk-forward out-of-sample equity", wf[["ts", "equity"]],
        {"parameter sets": len(sets), "best in-sample set": best["params"], "its Sharpe": f"{best['sharpe']:.2f}",
         "walk-forward OOS Sharpe": f"{wf_sharpe:.2f}", "walk-forward OOS P&L (USD)": f"{wf['pnl'].sum():,.2f}",
         "probability of backtest overfitting": f"{overfit['pbo']:.2f}",
         "deflated Sharpe of the best": f"{overfit.get('deflated_sharpe', float('nan')):.2f}"},
        pd.Series({root: float(wf["pnl"].sum())}),
        {"strategy": config.strategy, "market": root, "grid": json.dumps(config.grid), "mode": config.mode,
         "train / test years": f"{config.train_years} / {config.test_years}", "data version": data_version,
         "code version": code_version(), "MLflow parent run": parent},
        strategy_pnl=sweep.table.set_index("params")[["net_pnl"]].T.rename(index={"net_pnl": root}),
        strategy_pnl_title="Net P&L of every parameter set over the whole period (USD, after costs)")
    return MaterializeResult(metadata={
        "tear_sheet": MetadataValue.path(str(sheet)),
        "sets": len(sets), "best_params": best["params"], "best_sharpe": float(best["sharpe"]),
        "probability_of_backtest_overfitting": overfit["pbo"],
        "deflated_sharpe_of_best": overfit.get("deflated_sharpe", float("nan")),
        "walk_forward_oos_sharpe": wf_sharpe, "walk_forward_windows": int(wf["window"].nunique()),
        "walk_forward_choices": json.dumps(wf.groupby("window")["set"].first().tolist()),
        "mlflow_parent_run": MetadataValue.text(parent),
        "table": md_table(sweep.table.sort_values("sharpe", ascending=False).head(10)
                          [["params", "net_pnl", "sharpe", "max_drawdown", "trades"]], ",.2f"),
    })
