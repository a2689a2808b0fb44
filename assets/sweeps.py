"""Stage 4b: parameter sweep and walk-forward per market."""

import json

import pandas as pd
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets._support import WRITER_POOL, md_table, number
from assets.partitions import market_partitions
from assets.rolls import continuous_prices
from fbt_pipelines.config import code_version
from fbt_pipelines.engine.strategies import strategies_help
from fbt_pipelines.reports.charts import heatmap_svg
from fbt_pipelines.reports.sparkline import markdown_image
from fbt_pipelines.usecases.backtest import read_market_data
from fbt_pipelines.usecases.spec import BacktestSpec, MarginSource
from fbt_pipelines.usecases.sweep import SweepSettings, parameter_sets, run_sweep, store_sweep
from resources import FilesResource, TrackingResource, WarehouseResource


def _count(value: str):
    """A contracts value of the orders grid as a number (the spec then checks it is whole and >= 1)."""
    try:
        return float(value)
    except ValueError:
        return value  # refused by the spec, naming the value


def _heatmap(root: str, strategy: str, grid: dict[str, list[float]], sets: list[dict],
             table: pd.DataFrame) -> MetadataValue:
    """Sharpe over the first two swept parameters (fast x slow for sma_crossover), or a note why not."""
    axes = [k for k in (["fast", "slow"] if strategy == "sma_crossover" else []) + list(grid)
            if len(set(grid.get(k, []))) > 1]
    axes = list(dict.fromkeys(axes))[:2]
    if len(axes) < 2:
        return MetadataValue.md(f"No heat map: the grid of {strategy} sweeps fewer than two parameters "
                                f"({', '.join(k for k in grid) or 'none'}).")
    x, y = axes
    frame = pd.DataFrame([{x: p.get(x), y: p.get(y)} for p in sets]).assign(
        sharpe=table.set_index("set")["sharpe"].reindex(range(len(sets))).to_numpy())
    title = f"{root} {strategy}: Sharpe by {x} x {y}"
    return MetadataValue.md(markdown_image(heatmap_svg(frame, x, y, "sharpe", title=title), title))


class SweepConfig(Config):
    strategy: str = Field(default="sma_crossover", description=f"Strategy to sweep. {strategies_help()}")
    grid: dict[str, list[float]] = Field(default={"fast": [10, 20, 40], "slow": [50, 100, 200]},
                                         description="Parameter -> values; every combination is tried. Order "
                                                     "settings in points may be swept here too (stop_loss, "
                                                     "take_profit, trailing_stop, limit_offset; contracts).")
    orders_grid: dict[str, list[str]] = Field(
        default={}, description="Order settings to sweep with any unit: stop_loss / take_profit / trailing_stop / "
                                "limit_offset -> distances ('40', '2%', '3atr'), contracts -> counts ('1', '2'); "
                                "combined with every set of the grid. Rules: docs/guide.md, 'Orders and margin'.")
    mode: str = Field(default="grid", description="grid or random (n seeded draws from the grid).")
    n_random: int = 20
    seed: int = 0
    train_years: int = Field(default=3, description="Walk-forward in-sample window (years).")
    test_years: int = Field(default=1, description="Walk-forward out-of-sample window (years).")
    capital: float = 1_000_000.0
    workers: int = Field(default=2, description="Threads (the Numba kernel releases the GIL).")

    def base_spec(self, library) -> BacktestSpec:
        """The spec every set shares (the strategy's defaults as its parameters)."""
        return BacktestSpec.create(self.strategy, {}, library=library, capital=self.capital,
                                   margin_source=MarginSource.HISTORY)

    def settings(self, chunk_size: int | None = None) -> SweepSettings:
        return SweepSettings(self.strategy, self.grid, self.mode, self.train_years, self.test_years, self.capital,
                             chunk_size)

    def sets(self) -> list[dict]:
        grid = {**self.grid, **{k: [_count(v) if k == "contracts" else v for v in values]
                                for k, values in self.orders_grid.items()}}
        return parameter_sets(self.strategy, grid, self.mode, self.n_random, self.seed)


@asset(partitions_def=market_partitions, group_name="backtest", kinds={"duckdb", "mlflow", "numba"},
       deps=[continuous_prices], pool=WRITER_POOL)
def parameter_sweep(context: AssetExecutionContext, config: SweepConfig, warehouse: WarehouseResource,
                    tracking: TrackingResource, files: FilesResource) -> MaterializeResult:
    """Every parameter set of a strategy on this market, plus a walk-forward that picks the best in-sample set per window and stitches the out-of-sample P&L; MLflow parent run with one child per set; a tear sheet of the walk-forward equity."""
    root = context.partition_key
    workspace = files.workspace()
    base = config.base_spec(workspace.strategies())
    with warehouse.connect() as conn:
        data = read_market_data(conn, root, workspace)
    sets = config.sets()
    context.log.info(f"{root}: {len(sets)} parameter sets of {config.strategy}")
    sweep = run_sweep(base, data, sets, workers=config.workers)
    with warehouse.connect() as conn:
        stored = store_sweep(conn, tracking.get(), root, sweep, config.settings(), data_version=data.data_version,
                             code_version=code_version(), reports_dir=files.reports())
    wf, overfit, best = stored.walk_forward, stored.overfitting, stored.best
    sheet = ({"tear_sheet": MetadataValue.path(str(stored.tear_sheet)),
              "tear_sheet_url": MetadataValue.url(stored.tear_sheet.resolve().as_uri())}
             if stored.tear_sheet is not None else {})
    return MaterializeResult(metadata={
        **sheet,
        "sets": len(sets), "best_params": best["params"], "best_sharpe": number(best["sharpe"], "ratio"),
        "sharpe_heatmap": _heatmap(root, config.strategy, dict(config.grid), sets, sweep.table),
        "probability_of_backtest_overfitting": number(overfit["pbo"], "percent"),
        "deflated_sharpe_of_best": number(overfit.get("deflated_sharpe", float("nan")), "percent"),
        "walk_forward_oos_sharpe": number(stored.walk_forward_sharpe, "ratio"),
        "walk_forward_windows": int(wf["window"].nunique()),
        "walk_forward_choices": json.dumps(wf.groupby("window")["set"].first().tolist()),
        "mlflow_parent_run": MetadataValue.text(stored.mlflow_parent_run),
        "table": md_table(sweep.table.sort_values("sharpe", ascending=False).head(10)
                          [["params", "net_pnl", "sharpe", "max_drawdown", "trades"]], ",.2f",
                          kinds={"net_pnl": "money", "sharpe": "ratio", "max_drawdown": "percent", "trades": "count"}),
    })
