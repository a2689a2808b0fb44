"""Job ``sweep_fanout``: the ops of :mod:`assets.sweep_fanout` on the chosen executor."""

from dagster import job

from assets.sweep_fanout import plan_sweep_chunks, run_sweep_chunk, write_sweep_results
from fbt_pipelines.location.executors import fbt_executor


@job(executor_def=fbt_executor, description="Parameter sweep over markets, one step per chunk of sets; "
     "one writer step. Executor: in_process | multiprocess | celery (run config or FBT_EXECUTOR).")
def sweep_fanout():
    inputs, settings, chunks = plan_sweep_chunks()
    tables, pnls = chunks.map(lambda chunk: run_sweep_chunk(inputs, settings, chunk))
    write_sweep_results(tables.collect(), pnls.collect(), settings)
