"""Run the whole lineage graph in process through a Dagster instance.

Each stage is a job of the code location, executed in this process (no
per-step subprocess, see PITFALLS.md); partitioned jobs run once per market.
The runs and materializations land in the instance, so the Dagster UI shows
them afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from dagster import DagsterInstance

from fbt_pipelines.automation import PIPELINE


@dataclass(frozen=True)
class StepRun:
    job: str
    partition: str | None
    run_id: str
    seconds: float


class PipelineFailed(RuntimeError):
    pass


def pipeline_steps(markets: Sequence[str]) -> list[tuple[str, str | None]]:
    """(job name, partition) in execution order."""
    steps: list[tuple[str, str | None]] = []
    for job, partitioned in PIPELINE:
        steps.extend((job, m) for m in markets) if partitioned else steps.append((job, None))
    return steps


def run_pipeline(instance: DagsterInstance, markets: Sequence[str],
                 on_step: Callable[[str, str | None], None] | None = None,
                 on_done: Callable[[StepRun], None] | None = None, console_level: str = "WARNING") -> list[StepRun]:
    """Execute every stage for ``markets``; raise :class:`PipelineFailed` on the first failure.

    ``console_level`` only filters what is echoed to the terminal; the
    instance's event log (what the UI shows) keeps every event.
    """
    from assets.partitions import MARKETS
    from fbt_pipelines.definitions import defs

    known = set(instance.get_dynamic_partitions(MARKETS))
    new = [m for m in markets if m not in known]
    if new:
        instance.add_dynamic_partitions(MARKETS, new)
    done: list[StepRun] = []
    for job_name, partition in pipeline_steps(markets):
        if on_step:
            on_step(job_name, partition)
        job = defs.resolve_job_def(job_name)
        t0 = time.perf_counter()
        result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False,
                                        run_config={"loggers": {"console": {"config": {"log_level": console_level}}}})
        if not result.success:
            failures = [
                f"{e.step_key}: {e.event_specific_data.error.message.strip()}"  # type: ignore[union-attr]
                for e in result.all_events if e.is_step_failure
            ]
            raise PipelineFailed(f"job {job_name}" + (f" [{partition}]" if partition else "") +
                                 f" failed (run {result.run_id}): " + "; ".join(failures))
        step = StepRun(job_name, partition, result.run_id, time.perf_counter() - t0)
        done.append(step)
        if on_done:
            on_done(step)
    return done
