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
from fbt_pipelines.errors import DataError
from fbt_pipelines.primitives.versioning import frame_version
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.backtest import MarketData, read_market_data
from fbt_pipelines.usecases.fanout import COMPUTE_TO_OVERHEAD, STEP_OVERHEAD_S, chunk_size_for, seconds_per_backtest
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
                    "figure (in_process 0.05, celery 3, multiprocess 30).")
    track_mlflow: bool = Field(default=True, description="MLflow parent run + one child per set, per market.")
    keep_chunks: bool = Field(default=False, description="Keep the run's Parquet chunk files after the write.")


@op(out={"inputs": Out(pd.DataFrame, io_manager_key=IO_KEY), "settings": Out(pd.DataFrame, io_manager_key=IO_KEY),
         "chunks": DynamicOut(pd.DataFrame, io_manager_key=IO_KEY)})
def plan_sweep_chunks(context: OpExecutionContext, config: SweepFanoutConfig, warehouse: WarehouseResource,
                      files: FilesResource):
    """Reads each market's strategy inputs (prices, prob_up, roll yield, margin per bar) once and cuts the parameter sets into chunks."""
    workspace = files.workspace()
    workspace.strategies()
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
        raise ValueError("sweep_fanout: no market has continuous prices in the warehouse")
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


def _auto_chunk_size(context: OpExecutionContext, config: "SweepFanoutConfig", data: MarketData,
                     sets: list[dict], workspace) -> int:
    """Sets per step from the executor's per-step overhead and one market's measured backtest time."""
    execution = (context.run.run_config or {}).get("execution", {}).get("config") or {}
    mode = next(iter(execution), None) or executor_mode()
    overhead = config.step_overhead_s if config.step_overhead_s is not None else STEP_OVERHEAD_S.get(mode, 3.0)
    base = config.base_spec(workspace.strategies())
    per_backtest = seconds_per_backtest(lambda some: run_sweep(base, data, some, workers=1), sets)
    size = chunk_size_for(per_backtest, overhead, len(sets))
    context.log.info(f"chunk size {size}: {per_backtest * 1e3:.2f} ms per backtest on {data.root}, "
                     f"{overhead:g} s overhead per {mode} step, compute >= {COMPUTE_TO_OVERHEAD:g}x overhead")
    return size


def chunk_inputs(data: MarketData) -> pd.DataFrame:
    """One market's strategy inputs as a flat frame for the chunk steps' Parquet
    (margin per bar in USD, NaN = catalogue; its source and the data version repeated)."""
    margin = data.margins if data.margins is not None else np.full(len(data.frame), np.nan)
    return data.frame.assign(root=data.root, margin=margin, margin_source=data.margin_source,
                             data_version=data.data_version)


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
    trades, rolls) and ``pnl`` (daily P&L in USD, one column per set id, ``ts`` UTC)."""
    cfg = _settings(settings)
    root = str(chunk["root"].iat[0])
    workspace = files.workspace()
    data = market_data_from_inputs(inputs, root, workspace)
    sets = [json.loads(p) for p in chunk["params"]]
    t0 = time.perf_counter()
    result = run_sweep(cfg.base_spec(workspace.strategies()), data, sets, workers=cfg.workers)
    seconds = time.perf_counter() - t0
    ids = chunk["set"].to_numpy()
    table = result.table.assign(set=ids, root=root, data_version=data.data_version)
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
        with warehouse.connect() as conn:
            stored = store_sweep(conn, tracking.get() if cfg.track_mlflow else None, root, sweep,
                                 cfg.settings(chunk_size=max(len(t) for t in t_list)), data_version=data_version,
                                 code_version=code_version(), extra_tags={"dagster_run": context.run_id})
        wf = stored.walk_forward
        best = table.sort_values("sharpe", ascending=False).iloc[0]
        metadata = {"sets": len(table), "chunks": len(t_list), "best_params": best["params"],
                    "best_sharpe": float(best["sharpe"]), "sweep_version": frame_version(table),
                    "walk_forward_windows": int(wf["window"].nunique()), "written_by_run": context.run_id}
        if cfg.track_mlflow:
            metadata["probability_of_backtest_overfitting"] = stored.overfitting["pbo"]
        context.log.info(f"{root}: {len(table)} sets from {len(t_list)} chunks written")
        if root in known:  # the same rows the parameter_sweep asset owns: record it there too
            context.log_event(AssetMaterialization(AssetKey("parameter_sweep"), partition=root,
                                                   description="written by job sweep_fanout", metadata=metadata))
    if not cfg.keep_chunks:
        shutil.rmtree(sweep_io.run_dir(context.run_id), ignore_errors=True)
