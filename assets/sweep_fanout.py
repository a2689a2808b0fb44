"""Job ``sweep_fanout``: a parameter sweep over many markets, one step per chunk of parameter sets.

The same sweep as the ``parameter_sweep`` asset (same accounting, same rows in
``sweep_results`` and ``walk_forward_equity``), cut into steps that Dagster's
executor can spread over processes or Celery workers (fbt_pipelines/executors.py)::

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
"""


import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (AssetKey, AssetMaterialization, ConfigurableIOManager, DynamicOut, DynamicOutput, In,
                     InputContext, MetadataValue, Nothing, OpExecutionContext, Out, Output, OutputContext, ResourceParam, job,
                     op)
from pydantic import Field

from assets._support import WRITER_POOL
from assets.partitions import MARKETS
from assets.sweeps import SweepConfig
from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.backtest import with_predictions
from fbt_pipelines.engine.futures_engine import EngineConfig
from fbt_pipelines.engine.sweep import SweepResult, overfitting_report, parameter_sets, run_sweep, walk_forward
from fbt_pipelines.executors import fbt_executor
from fbt_pipelines.portfolio.sizing import VolTargetConfig
from fbt_pipelines.stores import warehouse as wh
from fbt_pipelines.versioning import code_version, frame_version
from resources import TrackingResource, WarehouseResource

IO_KEY = "sweep_io"
DEFAULT_CHUNK_SIZE = 250


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
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1,
                            description="Parameter sets per step (one step = one process / one Celery task).")
    track_mlflow: bool = Field(default=True, description="MLflow parent run + one child per set, per market.")
    keep_chunks: bool = Field(default=False, description="Keep the run's Parquet chunk files after the write.")


@op(out={"inputs": Out(pd.DataFrame, io_manager_key=IO_KEY), "settings": Out(pd.DataFrame, io_manager_key=IO_KEY),
         "chunks": DynamicOut(pd.DataFrame, io_manager_key=IO_KEY)})
def plan_sweep_chunks(context: OpExecutionContext, config: SweepFanoutConfig, warehouse: WarehouseResource):
    """Reads each market's continuous prices (+ roll yield) once and cuts the parameter sets into chunks."""
    with warehouse.connect() as conn:
        roots = list(config.markets) or sorted(
            r[0] for r in conn.execute("SELECT DISTINCT root FROM continuous_prices").fetchall()) \
            if config.markets or wh.table_exists(conn, "continuous_prices") else []
        frames = []
        for root in roots:
            prices = wh.read_partition(conn, "continuous_prices", root, order_by=["ts"])
            if prices.empty:
                raise ValueError(f"sweep_fanout: no continuous prices for market {root!r}; run ingest_market first")
            feats = wh.read_partition(conn, "features", root, order_by=["ts"])
            frames.append(with_predictions(prices, None, feats).assign(root=root))
    if not frames:
        raise ValueError("sweep_fanout: no market has continuous prices in the warehouse")
    sets = parameter_sets(config.strategy, config.grid, config.mode, config.n_random, config.seed)
    params = [json.dumps(p, sort_keys=True) for p in sets]
    yield Output(pd.concat(frames, ignore_index=True), "inputs")
    yield Output(pd.DataFrame([{"config": config.model_dump_json()}]), "settings")
    n_chunks = 0
    for root in roots:
        for k, start in enumerate(range(0, len(sets), config.chunk_size)):
            ids = list(range(start, min(start + config.chunk_size, len(sets))))
            yield DynamicOutput(pd.DataFrame({"root": root, "set": ids, "params": [params[i] for i in ids]}),
                                output_name="chunks", mapping_key=f"{root}_{k:04d}")
            n_chunks += 1
    context.log.info(f"{len(roots)} markets x {len(sets)} sets of {config.strategy} in {n_chunks} chunks "
                     f"of <= {config.chunk_size}")


def _settings(frame: pd.DataFrame) -> SweepFanoutConfig:
    return SweepFanoutConfig.model_validate_json(frame["config"].iat[0])


@op(out={"table": Out(pd.DataFrame, io_manager_key=IO_KEY), "pnl": Out(pd.DataFrame, io_manager_key=IO_KEY)})
def run_sweep_chunk(context: OpExecutionContext, inputs: pd.DataFrame, settings: pd.DataFrame, chunk: pd.DataFrame):
    """Backtests one chunk of parameter sets on one market (threads inside; no warehouse access).

    Outputs: ``table`` (one row per set: net P&L USD, Sharpe, drawdown,
    trades, rolls) and ``pnl`` (daily P&L in USD, one column per set id, ``ts`` UTC)."""
    cfg = _settings(settings)
    root = str(chunk["root"].iat[0])
    frame = inputs[inputs["root"] == root].drop(columns="root").reset_index(drop=True)
    sets = [json.loads(p) for p in chunk["params"]]
    t0 = time.perf_counter()
    result = run_sweep(frame, market_spec(root), cfg.strategy, sets, VolTargetConfig(capital=cfg.capital, idm=1.0),
                       EngineConfig(initial_capital=cfg.capital), workers=cfg.workers)
    seconds = time.perf_counter() - t0
    ids = chunk["set"].to_numpy()
    table = result.table.assign(set=ids, root=root)
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
        pnl = pd.concat(p_list, axis=1)
        pnl.columns = pnl.columns.astype(int)
        pnl = pnl[sorted(pnl.columns)]
        if list(table["set"]) != list(range(len(table))) or list(pnl.columns) != list(table["set"]):
            raise ValueError(f"sweep_fanout {root}: chunks incomplete or duplicated "
                             f"({len(table)} rows, sets {table['set'].min()}..{table['set'].max()})")
        sweep = SweepResult(table, pnl)
        wf = walk_forward(sweep, cfg.capital, cfg.train_years, cfg.test_years)
        parent = ""
        if cfg.track_mlflow:
            parent = tracking.get().log_sweep(
                f"sweep-{cfg.strategy}-{root}", {"strategy": cfg.strategy, "market": root, "grid": cfg.grid,
                                                 "mode": cfg.mode, "train_years": cfg.train_years,
                                                 "chunk_size": cfg.chunk_size},
                table, tags={"strategy": cfg.strategy, "market": root, "code_version": code_version(),
                             "dagster_run": context.run_id})
        with warehouse.connect() as conn:
            wh.replace_partition(conn, "sweep_results", root,
                                 table.assign(root=root, strategy=cfg.strategy, mlflow_parent_run=parent))
            wh.replace_partition(conn, "walk_forward_equity", root, wf.assign(root=root, strategy=cfg.strategy))
        best = table.sort_values("sharpe", ascending=False).iloc[0]
        metadata = {"sets": len(table), "chunks": len(t_list), "best_params": best["params"],
                    "best_sharpe": float(best["sharpe"]), "sweep_version": frame_version(table),
                    "walk_forward_windows": int(wf["window"].nunique()), "written_by_run": context.run_id}
        if cfg.track_mlflow:
            metadata["probability_of_backtest_overfitting"] = overfitting_report(sweep, cfg.capital)["pbo"]
        context.log.info(f"{root}: {len(table)} sets from {len(t_list)} chunks written")
        if root in known:  # the same rows the parameter_sweep asset owns: record it there too
            context.log_event(AssetMaterialization(AssetKey("parameter_sweep"), partition=root,
                                                   description="written by job sweep_fanout", metadata=metadata))
    if not cfg.keep_chunks:
        shutil.rmtree(sweep_io.run_dir(context.run_id), ignore_errors=True)


@job(executor_def=fbt_executor, description="Parameter sweep over markets, one step per chunk of sets; "
     "one writer step. Executor: in_process | multiprocess | celery (run config or FBT_EXECUTOR).")
def sweep_fanout():
    inputs, settings, chunks = plan_sweep_chunks()
    tables, pnls = chunks.map(lambda chunk: run_sweep_chunk(inputs, settings, chunk))
    write_sweep_results(tables.collect(), pnls.collect(), settings)
