"""Run the whole lineage graph in process through a Dagster instance.

Each stage is a job of the code location, executed in this process (no
per-step subprocess, see PITFALLS.md); partitioned jobs run once per market.
The runs and materializations land in the instance, so the Dagster UI shows
them afterwards.

Each run is created with the origin of the code location the webserver loads
from ``workspace.yaml`` (location ``fbt``, repository ``__repository__``), as
a run launched from the UI would be, then executed here. Dagster files such a
run under its location: the Overview timeline groups runs by that origin and
a job's pages filter on the ``.dagster/repository`` tag derived from it, so
runs without it (plain ``execute_in_process``) appear only in the Runs list.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from dagster import DagsterInstance, JobDefinition, JobExecutionResult
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import CodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.workspace.load import location_origin_from_module_name, location_origins_from_yaml_paths

from fbt_pipelines.config import REPO_ROOT
from fbt_pipelines.location.automation import PIPELINE

WORKSPACE_FILE = REPO_ROOT / "workspace.yaml"
LOCATION_NAME = "fbt"
DEFINITIONS_MODULE = "fbt_pipelines.location.definitions"
DEFINITIONS_ATTRIBUTE = "defs"


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


@functools.cache
def code_location_origin() -> CodeLocationOrigin:
    """Origin of location ``fbt`` exactly as the webserver builds it from workspace.yaml.

    Falls back to the same python_module origin when the file (a source
    checkout's) is absent or names no ``fbt`` location.
    """
    if WORKSPACE_FILE.is_file():
        for origin in location_origins_from_yaml_paths([str(WORKSPACE_FILE)]):
            if origin.location_name == LOCATION_NAME:
                return origin
    return location_origin_from_module_name(DEFINITIONS_MODULE, None, None, LOCATION_NAME)


def remote_job_origin(job_name: str) -> RemoteJobOrigin:
    """The job's origin in the code location: what the UI files its runs under."""
    repo = RemoteRepositoryOrigin(code_location_origin=code_location_origin(),
                                  repository_name=SINGLETON_REPOSITORY_NAME)
    return repo.get_job_origin(job_name)


def job_code_origin(job_name: str) -> JobPythonOrigin:
    """Where a run worker would import the job from.

    This interpreter, module ``fbt_pipelines.location.definitions``, ``defs``.
    """
    repo = ReconstructableRepository.for_module(DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE)
    return JobPythonOrigin(job_name, repo.get_python_origin())


def execute_with_origin(instance: DagsterInstance, job: JobDefinition, partition: str | None,
                        run_config: dict) -> JobExecutionResult:
    """``job.execute_in_process(...)``, but the run carries the location's origin.

    Same ephemeral job (in-process executor, in-memory default IO manager),
    same run tags (partition), same plan; executed in this thread, no process
    started. Returns Dagster's JobExecutionResult.
    """
    ephemeral = job.as_ephemeral_job(resource_defs={}, input_values={})
    in_memory = InMemoryJob(ephemeral)
    tags = merge_run_tags(job_def=job, partition_key=partition, tags=None, asset_selection=None,
                          instance=instance, run_config=run_config)
    plan = create_execution_plan(in_memory, run_config=run_config, tags=tags,
                                 instance_ref=instance.get_ref() if instance.is_persistent else None)
    run = instance.create_run_for_job(job_def=ephemeral, execution_plan=plan, run_config=run_config,
                                      tags={**ephemeral.run_tags, **tags},
                                      remote_job_origin=remote_job_origin(job.name),
                                      job_code_origin=job_code_origin(job.name))
    return execute_run(in_memory, run, instance, raise_on_error=False)


def run_job(instance: DagsterInstance, job_name: str, partition: str | None = None,
            run_config: dict | None = None, console_level: str = "WARNING") -> StepRun:
    """Execute one job of the code location in this process.

    Adds ``partition`` to the markets if it is new; raises
    :class:`PipelineFailed` naming the failed steps. The run is filed under
    location ``fbt`` (see the module docstring); ``seconds`` is wall time.
    """
    from assets.partitions import MARKETS
    from fbt_pipelines.location.definitions import current_defs

    defs = current_defs()
    if partition is not None and partition not in set(instance.get_dynamic_partitions(MARKETS)):
        instance.add_dynamic_partitions(MARKETS, [partition])
    job = defs.resolve_job_def(job_name)
    t0 = time.perf_counter()
    config = {"loggers": {"console": {"config": {"log_level": console_level}}}, **(run_config or {})}
    result = execute_with_origin(instance, job, partition, config)
    if not result.success:
        failures = [
            f"{e.step_key}: {e.event_specific_data.error.message.strip()}"  # type: ignore[union-attr]
            for e in result.all_events if e.is_step_failure
        ]
        raise PipelineFailed(f"job {job_name}" + (f" [{partition}]" if partition else "") +
                             f" failed (run {result.run_id}): " + "; ".join(failures))
    return StepRun(job_name, partition, result.run_id, time.perf_counter() - t0)


def run_pipeline(instance: DagsterInstance, markets: Sequence[str],
                 on_step: Callable[[str, str | None], None] | None = None,
                 on_done: Callable[[StepRun], None] | None = None, console_level: str = "WARNING") -> list[StepRun]:
    """Run every stage for ``markets``; :class:`PipelineFailed` on the first failure.

    ``console_level`` only filters what is echoed to the terminal; the
    instance's event log (what the UI shows) keeps every event.
    """
    done: list[StepRun] = []
    for job_name, partition in pipeline_steps(markets):
        if on_step:
            on_step(job_name, partition)
        step = run_job(instance, job_name, partition, console_level=console_level)
        done.append(step)
        if on_done:
            on_done(step)
    return done
