"""Job ``sweep_fanout``: a parameter sweep over many markets, one step per chunk of parameter sets.

The same sweep as the ``parameter_sweep`` asset (same accounting, same rows in
``sweep_results`` and ``walk_forward_equity``), cut into steps that Dagster's
executor can spread over processes or Celery workers (fbt_pipelines/location/executors.py)::

    plan_sweep_chunks ──inputs────────────┐
          │ (one read of the warehouse)    v
          └─chunks[ES_0000, ES_0001, ...] ─> run_sweep_chunk[...] ──(table, pnl)──> write_sweep_results
                                             (no warehouse access)                 (the one writer)

One writer: DuckDB admits one writer process, and a worker on another machine
may not even see the warehouse file. So chunk steps never touch DuckDB: they
read their inputs from, and write their results to, Parquet files (the
``sweep_io`` IO manager below) under ``$FBT_HOME/scratch`` (shared storage
when workers run on other machines), and ONE step, in the ``duckdb_writer``
pool, reads every chunk's Parquet and replaces each market's partition of
``sweep_results`` / ``walk_forward_equity`` in one transaction per table.
Dagster's default IO manager would pickle every output; this one writes
Arrow/Parquet, so nothing is pickled across processes.

Run config ``interval`` (``1d`` default; ``1m`` / ``1h``): on intraday bars
each market's stored series ``ROOT|interval`` is swept
(:mod:`fbt_pipelines.usecases.intraday_sweep`: a fixed size of ``contracts``,
Sharpe per bar, P&L per session, the walk-forward in ``train_sessions`` /
``test_sessions``) and stored in ``intraday_sweep_results`` /
``intraday_walk_forward_equity``, as the ``intraday_parameter_sweep`` asset
stores it. A minute series is large (~350,000 bars a year), so the plan
writes one Parquet file per market beside the run's chunks (``inputs`` then
lists them) and a chunk step reads its own market's only.
"""


import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (AssetKey, AssetMaterialization, ConfigurableIOManager, DynamicOut, DynamicOutput, In,
                     InputContext, MetadataValue, Nothing, OpExecutionContext, Out, Output, OutputContext, ResourceParam,
                     op)
from pydantic import Field

from assets._support import WRITER_POOL
from assets.partitions import MARKETS
from assets.sweeps import SweepConfig
from fbt_pipelines.config import code_version, executor_mode
from fbt_pipelines.errors import DataError, FbtError
from fbt_pipelines.primitives.versioning import frame_version
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases import intraday_sweep as isw
from fbt_pipelines.usecases.backtest import MarketData, read_market_data
from fbt_pipelines.usecases.fanout import executor_chunk_size, step_costs
from fbt_pipelines.usecases.spec import BacktestSpec
from fbt_pipelines.usecases.sweep import SweepResult, run_sweep, store_sweep
from resources import FilesResource, TrackingResource, WarehouseResource

IO_KEY = "sweep_io"


class ChunkParquetIOManager(ConfigurableIOManager):
    """Step outputs (pandas frames) as Parquet files under ``base_dir/<run id>/<step>/<output>.parquet``.

    Written to a temporary name and renamed, so a step that runs twice (a
    Celery task redelivered after its worker died) leaves one complete file.
    """

    base_dir: str

    def _path(self, identifier: list[str]) -> Path:
        parts = [re.sub(r"[^A-Za-z0-9_.\-]", "_", p) for p in identifier]
        return Path(self.base_dir, *parts[:-1], parts[-1] + ".parquet")

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.step_key}.{context.name}: sweep_io stores pandas frames, got {type(obj).__name__}")
        path = self._path(context.get_identifier())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(pa.Table.from_pandas(obj, preserve_index=False), tmp)
        os.replace(tmp, path)
        context.add_output_metadata({"path": MetadataValue.path(str(path)), "rows": len(obj),
                                     "bytes": path.stat().st_size})

    def load_input(self, context: InputContext) -> pd.DataFrame:
        return pq.read_table(self._path(context.upstream_output.get_identifier())).to_pandas()

    def run_dir(self, run_id: str) -> Path:
        return Path(self.base_dir, run_id)


class SweepFanoutConfig(SweepConfig):
    markets: list[str] = Field(default=[], description="Market roots; empty = every market with continuous prices.")
    chunk_size: int | None = Field(
        default=None, ge=1,
        description="Parameter sets per step (one step = one process / one Celery task). Unset: sized so a "
                    "step computes >= 10x the executor's per-step overhead (fbt_pipelines/usecases/fanout.py).")
    step_overhead_s: float | None = Field(
        default=None, ge=0,
        description="Per-step overhead (s) for the automatic chunk size; unset: the executor's measured "
                    "figure (celery 3, multiprocess 30; in_process: one step per market).")
    track_mlflow: bool = Field(default=True, description="MLflow parent run + one child per set, per market.")
    keep_chunks: bool = Field(default=False, description="Keep the run's Parquet chunk files after the write.")
    interval: str = Field(default="1d", description="1d: the daily continuous series; 1m / 1h: each market's "
                          "intraday series ROOT|interval (intraday_continuous_prices).")
    contracts: int = Field(default=1, description="Intraday: contracts held in the signal's direction (a fixed "
                                                  "size); the grid may sweep contracts.")
    train_sessions: int = Field(default=isw.DEFAULT_TRAIN_SESSIONS,
                                description="Intraday walk-forward in-sample window (sessions).")
    test_sessions: int = Field(default=isw.DEFAULT_TEST_SESSIONS,
                               description="Intraday walk-forward out-of-sample window (sessions).")

    @property
    def intraday(self) -> bool:
        """True for 1m / 1h (ValueError naming any interval other than 1d, 1m, 1h)."""
        if self.interval == "1d":
            return False
        try:
            uc.check_interval(self.interval)
        except FbtError as exc:
            raise ValueError(f"sweep_fanout interval {self.interval!r}: 1d, 1m or 1h ({exc})") from None
        return True

    def base_spec(self, library) -> BacktestSpec:
        """The spec every set shares: the daily one, or intraday's fixed size (``contracts``)."""
        if self.intraday:
            return isw.intraday_sweep_spec(self.strategy, library, capital=self.capital, contracts=self.contracts)
        return super().base_spec(library)

    def sweep(self, base, data: MarketData, sets: list[dict], workers: int) -> SweepResult:
        """``run_sweep``, or the intraday sweep of this interval."""
        if self.intraday:
            return isw.run_intraday_sweep(base, data, sets, self.interval, workers=workers)
        return run_sweep(base, data, sets, workers=workers)

    def intraday_settings(self, chunk_size: int | None = None) -> isw.IntradaySweepSettings:
        return isw.IntradaySweepSettings(self.strategy, self.grid, self.interval, self.mode, self.train_sessions,
                                         self.test_sessions, self.capital, self.contracts, chunk_size)


@op(out={"inputs": Out(pd.DataFrame, io_manager_key=IO_KEY), "settings": Out(pd.DataFrame, io_manager_key=IO_KEY),
         "chunks": DynamicOut(pd.DataFrame, io_manager_key=IO_KEY)})
def plan_sweep_chunks(context: OpExecutionContext, config: SweepFanoutConfig, warehouse: WarehouseResource,
                      files: FilesResource, sweep_io: ResourceParam[ChunkParquetIOManager]):
    """Reads each market's strategy inputs (prices, prob_up, roll yield, margin per bar) once and cuts the parameter sets into chunks."""
    workspace = files.workspace()
    workspace.strategies()
    if config.intraday:
        roots, frames, read_first = _plan_intraday(context, config, warehouse, workspace, sweep_io)
    else:
        with warehouse.connect() as conn:
            roots = list(config.markets) or sorted(
                r[0] for r in conn.execute("SELECT DISTINCT root FROM continuous_prices").fetchall()) \
                if config.markets or wh.table_exists(conn, "continuous_prices") else []
            frames, read_first = [], None
            for root in roots:
                try:
                    data = read_market_data(conn, root, workspace)
                    read_first = read_first or data
                except DataError:
                    raise ValueError(f"sweep_fanout: no continuous prices for market {root!r}; run ingest_market first") from None
                frames.append(chunk_inputs(data))
    if not frames:
        raise ValueError(f"sweep_fanout: no market has a {config.interval} intraday series in the warehouse"
                         if config.intraday else "sweep_fanout: no market has continuous prices in the warehouse")
    sets = config.sets()
    params = [json.dumps(p, sort_keys=True) for p in sets]
    chunk_size = config.chunk_size or _auto_chunk_size(context, config, read_first, sets, workspace)
    yield Output(pd.concat(frames, ignore_index=True), "inputs")
    yield Output(pd.DataFrame([{"config": config.model_dump_json()}]), "settings")
    n_chunks = 0
    for root in roots:
        for k, start in enumerate(range(0, len(sets), chunk_size)):
            ids = list(range(start, min(start + chunk_size, len(sets))))
            yield DynamicOutput(pd.DataFrame({"root": root, "set": ids, "params": [params[i] for i in ids]}),
                                output_name="chunks", mapping_key=f"{root}_{k:04d}")
            n_chunks += 1
    context.log.info(f"{len(roots)} markets x {len(sets)} sets of {config.strategy} in {n_chunks} chunks "
                     f"of <= {chunk_size}")


def _plan_intraday(context: OpExecutionContext, config: SweepFanoutConfig, warehouse: WarehouseResource, workspace,
                   sweep_io: ChunkParquetIOManager) -> tuple[list[str], list[pd.DataFrame], MarketData | None]:
    """(roots, ``inputs`` rows, the first market's data): each market's intraday series to its own Parquet file.

    The file (:func:`chunk_inputs` of the series) goes under the run's chunk
    folder, ``inputs/<ROOT>.parquet``, written under a temporary name and
    renamed; ``inputs`` lists root, path, data version and bars.
    """
    folder = sweep_io.run_dir(context.run_id) / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    rows, first = [], None
    with warehouse.connect() as conn:
        roots = list(config.markets) or isw.intraday_roots(conn, config.interval)
        for root in roots:
            key = uc.series_key(root, config.interval)
            prices = uc.read_intraday_prices(conn, key)
            if prices.empty:
                raise ValueError(f"sweep_fanout: no intraday series {key}; materialize intraday_continuous_prices "
                                 f"(job intraday_market, interval {config.interval}) first")
            data = uc.intraday_market_data(root, workspace, prices)
            first = first or data
            path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', root)}.parquet"
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            pq.write_table(pa.Table.from_pandas(chunk_inputs(data), preserve_index=False), tmp)
            os.replace(tmp, path)
            rows.append(pd.DataFrame({"root": [root], "path": [str(path)], "data_version": [data.data_version],
                                      "bars": [len(data.frame)]}))
            context.log.info(f"{key}: {len(data.frame):,} bars, {int(prices['session'].nunique())} sessions")
    return roots, rows, first


def _auto_chunk_size(context: OpExecutionContext, config: "SweepFanoutConfig", data: MarketData,
                     sets: list[dict], workspace) -> int:
    """Sets per step from the executor's per-step overhead and one market's measured costs."""
    execution = (context.run.run_config or {}).get("execution", {}).get("config") or {}
    mode = next(iter(execution), None) or executor_mode()
    base = config.base_spec(workspace.strategies())
    size, why = executor_chunk_size(
        mode, len(sets), lambda: step_costs(lambda some: config.sweep(base, data, some, workers=1), sets),
        config.step_overhead_s)
    context.log.info(f"chunk size {size} ({data.root}): {why}")
    return size


def chunk_inputs(data: MarketData) -> pd.DataFrame:
    """One market's strategy inputs as a flat frame for the chunk steps' Parquet.

    Margin per bar in USD (NaN = catalogue); the root, margin source and data
    version repeated on every row as categoricals (one dictionary entry each:
    a minute series' 700,000 rows of strings cost 0.4 s to build, write and read back).
    """
    n = len(data.frame)
    margin = data.margins if data.margins is not None else np.full(n, np.nan)

    def repeated(value: str) -> pd.Categorical:
        return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[value])

    return data.frame.assign(root=repeated(data.root), margin=margin, margin_source=repeated(data.margin_source),
                             data_version=repeated(data.data_version))


def market_data_from_inputs(inputs: pd.DataFrame, root: str, workspace) -> MarketData:
    """The :class:`MarketData` that :func:`chunk_inputs` flattened (the same backtest inputs)."""
    frame = inputs[inputs["root"] == root].reset_index(drop=True)
    margin = frame["margin"].to_numpy(float)
    prices = frame.drop(columns=["root", "margin", "margin_source", "data_version", "prob_up", "roll_yield"])
    return MarketData(root, workspace.market(root), prices, frame[["ts", "prob_up"]], frame[["ts", "roll_yield"]],
                      None if np.isnan(margin).all() else margin, str(frame["margin_source"].iat[0]))


def _settings(frame: pd.DataFrame) -> SweepFanoutConfig:
    return SweepFanoutConfig.model_validate_json(frame["config"].iat[0])


@op(out={"table": Out(pd.DataFrame, io_manager_key=IO_KEY), "pnl": Out(pd.DataFrame, io_manager_key=IO_KEY)})
def run_sweep_chunk(context: OpExecutionContext, inputs: pd.DataFrame, settings: pd.DataFrame, chunk: pd.DataFrame,
                    files: FilesResource):
    """Backtests one chunk of parameter sets on one market (threads inside; no warehouse access).

    Outputs: ``table`` (one row per set: net P&L USD, Sharpe, drawdown,
    trades, rolls) and ``pnl`` (daily P&L in USD, one column per set id, ``ts`` UTC;
    intraday: P&L per trading session, ``ts`` the session's day)."""
    cfg = _settings(settings)
    root = str(chunk["root"].iat[0])
    workspace = files.workspace()
    if cfg.intraday:  # the market's own file (plan_sweep_chunks: _plan_intraday)
        entry = inputs[inputs["root"] == root].iloc[0]
        data = market_data_from_inputs(pq.read_table(str(entry["path"])).to_pandas(), root, workspace)
        data_version = str(entry["data_version"])
    else:
        data = market_data_from_inputs(inputs, root, workspace)
        data_version = data.data_version
    sets = [json.loads(p) for p in chunk["params"]]
    t0 = time.perf_counter()
    result = cfg.sweep(cfg.base_spec(workspace.strategies()), data, sets, workers=cfg.workers)
    seconds = time.perf_counter() - t0
    ids = chunk["set"].to_numpy()
    table = result.table.assign(set=ids, root=root, data_version=data_version)
    pnl = result.pnl.set_axis([str(i) for i in ids], axis=1).rename_axis("ts").reset_index()
    yield Output(table, "table", metadata={
        "pid": os.getpid(), "host": socket.gethostname(), "root": root, "sets": len(sets),
        "first_set": int(ids[0]), "compute_seconds": round(seconds, 4)})
    yield Output(pnl, "pnl")


@op(ins={"tables": In(list[pd.DataFrame]), "pnls": In(list[pd.DataFrame]), "settings": In(pd.DataFrame)},
    out=Out(Nothing), pool=WRITER_POOL)
def write_sweep_results(context: OpExecutionContext, tables: list[pd.DataFrame], pnls: list[pd.DataFrame],
                        settings: pd.DataFrame, warehouse: WarehouseResource, tracking: TrackingResource,
                        sweep_io: ResourceParam[ChunkParquetIOManager]):
    """The one writer: per market, the sweep table and the walk-forward equity replace that market's rows."""
    cfg = _settings(settings)
    by_root: dict[str, tuple[list[pd.DataFrame], list[pd.DataFrame]]] = {}
    for table, pnl in zip(tables, pnls):
        root = str(table["root"].iat[0])
        by_root.setdefault(root, ([], []))[0].append(table)
        by_root[root][1].append(pnl.set_index("ts"))
    known = set(context.instance.get_dynamic_partitions(MARKETS))
    for root in sorted(by_root):
        t_list, p_list = by_root[root]
        table = pd.concat(t_list, ignore_index=True).sort_values("set").drop(columns="root").reset_index(drop=True)
        data_version = str(table.pop("data_version").iat[0])
        pnl = pd.concat(p_list, axis=1)
        pnl.columns = pnl.columns.astype(int)
        pnl = pnl[sorted(pnl.columns)]
        if list(table["set"]) != list(range(len(table))) or list(pnl.columns) != list(table["set"]):
            raise ValueError(f"sweep_fanout {root}: chunks incomplete or duplicated "
                             f"({len(table)} rows, sets {table['set'].min()}..{table['set'].max()})")
        sweep = SweepResult(table, pnl)
        chunk_size = max(len(t) for t in t_list)
        tracker = tracking.get() if cfg.track_mlflow else None
        with warehouse.connect() as conn:
            if cfg.intraday:
                key = uc.series_key(root, cfg.interval)
                stored = isw.store_intraday_sweep(conn, tracker, key, sweep, cfg.intraday_settings(chunk_size),
                                                  data_version=data_version, code_version=code_version(),
                                                  extra_tags={"dagster_run": context.run_id})
            else:
                stored = store_sweep(conn, tracker, root, sweep, cfg.settings(chunk_size=chunk_size),
                                     data_version=data_version, code_version=code_version(),
                                     extra_tags={"dagster_run": context.run_id})
        wf = stored.walk_forward
        best = table.sort_values("sharpe", ascending=False).iloc[0]
        metadata = {"sets": len(table), "chunks": len(t_list), "best_params": best["params"],
                    "best_sharpe": float(best["sharpe"]), "sweep_version": frame_version(table),
                    "walk_forward_windows": int(wf["window"].nunique()), "written_by_run": context.run_id}
        if cfg.track_mlflow:
            metadata["probability_of_backtest_overfitting"] = stored.overfitting["pbo"]
        owner = "parameter_sweep"
        if cfg.intraday:
            metadata.update(series=key, interval=cfg.interval)
            owner = "intraday_parameter_sweep"
        context.log.info(f"{root}: {len(table)} sets from {len(t_list)} chunks written")
        if root in known:  # the same rows the (intraday_)parameter_sweep asset owns: record it there too
            context.log_event(AssetMaterialization(AssetKey(owner), partition=root,
                                                   description="written by job sweep_fanout", metadata=metadata))
    if not cfg.keep_chunks:
        shutil.rmtree(sweep_io.run_dir(context.run_id), ignore_errors=True)
