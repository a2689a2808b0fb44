"""Op ``backtest_requests``: one batch of queued backtest requests (thin: the work is in usecases/requests.py)."""

import json
import time

from dagster import Config, OpExecutionContext, op
from pydantic import Field

from assets._support import WRITER_POOL
from assets.partitions import MARKETS
from fbt_pipelines.config import code_version
from fbt_pipelines.usecases.backtest import read_market_data
from fbt_pipelines.usecases.requests import (request_result, run_request_batch, store_request_results)
from resources import BusResource, FilesResource, TrackingResource, WarehouseResource

REQUEST_EXPERIMENT = "fbt-requests"


class RequestBatchConfig(Config):
    """The batch the request sensor read: the request bodies, as queued (JSON objects)."""

    batch: str = Field(description="The batch key (also the run key).")
    requests: list[str] = Field(description="Request bodies (JSON), in queue order.")


@op(pool=WRITER_POOL)
def backtest_requests(context: OpExecutionContext, config: RequestBatchConfig, warehouse: WarehouseResource,
                      tracking: TrackingResource, bus: BusResource, files: FilesResource) -> None:
    """Backtest each request of the batch, store each result under its request id,
    log the batch as one MLflow run (per-request table), publish each request's
    ``backtest_done`` (or ``request_rejected``: a bad request fails alone)."""
    t0 = time.perf_counter()
    bodies = [json.loads(text) for text in config.requests]
    workspace = files.workspace()
    markets = set(context.instance.get_dynamic_partitions(MARKETS))
    b = bus.get()
    with warehouse.connect() as conn:
        result = run_request_batch(bodies, markets, workspace.strategies(),
                                   lambda root: read_market_data(conn, root, workspace, cache=b))
    t_run = time.perf_counter()
    client = tracking.get()
    runs_table = None
    mlflow_run_id = None
    if result.done:
        with warehouse.connect() as conn:
            runs_table = store_request_results(conn, result.done, code_version=code_version(), mlflow_run_id=None,
                                               batch=config.batch)
        sharpes = runs_table["sharpe"].astype(float)
        mlflow_run_id = client.try_log_backtest(
            f"requests {config.batch} ({len(result.done)})",
            {"batch": config.batch, "requests": len(bodies), "markets": ",".join(sorted({r.market for r, _ in result.done}))},
            {"requests_done": len(result.done), "requests_rejected": len(result.rejected),
             "mean_sharpe": float(sharpes.mean()), "backtest_seconds": t_run - t0},
            tags={"source": "backtest request sensor", "batch": config.batch, "code_version": code_version(),
                  "dagster_run_id": context.run_id},
            tables={"requests": runs_table}, experiment=REQUEST_EXPERIMENT)
    t_store = time.perf_counter()
    for rid, reason in result.rejected:
        context.log.error(f"request {rid}: {reason}")
        b.publish("request_rejected", {"request_id": rid, "batch": config.batch, "reason": reason})
    for request, bt in result.done:
        b.publish("backtest_done", {"request_id": request.request_id, "market": request.market,
                                    "run_id": context.run_id, "batch": config.batch,
                                    "results": [request_result(bt, mlflow_run_id)]})
    context.log.info(f"batch {config.batch}: {len(result.done)} done, {len(result.rejected)} rejected; "
                     f"backtests {t_run - t0:.2f} s, store + MLflow {t_store - t_run:.2f} s")
