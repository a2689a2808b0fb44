"""A minimal code location for tests/integration/test_postgres_instance.py.

One asset in fbt's DuckDB writer pool that opens the warehouse file with a
plain ``duckdb.connect`` (no retry, unlike the resource), holds it for
``HOLD_SECONDS`` and inserts one row: two of these running at once in two
processes fail with DuckDB's "Could not set lock" IO error, so the test
shows that the instance's pool limit, not luck, serialises the writers.

A sensor that starts RUNNING requests ``FBT_PGTEST_RUNS`` runs (default 20)
on its first tick, so the daemon itself submits them all at once through the
queued run coordinator. It stays this small (dagster + duckdb only) because
every run is a fresh process that imports it: the full code location costs
~5 s of imports per run.
"""


import os
import time

import duckdb
from dagster import (AssetExecutionContext, DefaultSensorStatus, Definitions, RunRequest, SkipReason, asset,
                     define_asset_job, sensor)

POOL = "duckdb_writer"  # == assets._support.WRITER_POOL (the test asserts it)
HOLD_SECONDS = 0.3
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


@asset(pool=POOL)
def warehouse_probe(context: AssetExecutionContext) -> None:
    """Write one row (run id, UTC epoch seconds of start and end, pid) while holding the write lock."""
    conn = duckdb.connect(os.environ["FBT_WAREHOUSE"])
    try:
        started = time.time()
        conn.execute("CREATE TABLE IF NOT EXISTS pg_probe "
                     "(run_id VARCHAR, started DOUBLE, finished DOUBLE, pid INTEGER)")
        time.sleep(HOLD_SECONDS)
        conn.execute("INSERT INTO pg_probe VALUES (?, ?, ?, ?)", [context.run_id, started, time.time(), os.getpid()])
    finally:
        conn.close()


probe_job = define_asset_job("warehouse_probe_job", [warehouse_probe])


@sensor(job=probe_job, minimum_interval_seconds=1, default_status=DefaultSensorStatus.RUNNING)
def burst_sensor(context):
    """First tick: request all runs at once; later ticks: nothing."""
    if context.cursor:
        return SkipReason("burst already requested")
    context.update_cursor("requested")
    n = int(os.environ.get("FBT_PGTEST_RUNS", "20"))
    return [RunRequest(run_key=f"probe-{i}", run_config=IN_PROCESS) for i in range(n)]


defs = Definitions(assets=[warehouse_probe], jobs=[probe_job], sensors=[burst_sensor])
