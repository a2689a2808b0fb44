"""Cost of filing in-process runs under the code location (a script, not a test).

    .venv/bin/python bench/run_origin.py [--rounds 6]

In one process, against a fresh SQLite instance under a private FBT_HOME,
alternates the ``catalog`` job executed two ways:

- plain    = ``job.execute_in_process(instance=...)`` (the runner before runs
  carried the location's origin: they show only in the UI's Runs list);
- origin   = ``run_job(instance, "catalog")`` (run created with location
  ``fbt``'s origin, executed in this process).

Prints the median wall time (seconds) of each after one warm-up of both, the
ratio origin/plain, and the number of child processes alive after the last
round (must be 0: no process is spawned per run). Plain asserts check both
ways succeeded and that only the origin runs carry the ``.dagster/repository``
tag.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    os.environ["FBT_HOME"] = tempfile.mkdtemp(prefix="fbt_bench_origin_")
    for var in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "FBT_WAREHOUSE"):
        os.environ.pop(var, None)
    from fbt_pipelines.config import pin_process_settings
    pin_process_settings()
    from fbt_pipelines.location.instance import ensure_dagster_home
    ensure_dagster_home()

    from dagster import DagsterInstance, RunsFilter
    from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

    from fbt_pipelines.location.definitions import current_defs
    from fbt_pipelines.location.pipeline_runner import run_job

    config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with DagsterInstance.get() as instance:
        job = current_defs().resolve_job_def("catalog")

        def plain() -> str:
            result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=config)
            assert result.success
            return result.run_id

        def origin() -> str:
            return run_job(instance, "catalog").run_id

        times: dict[str, list[float]] = {"plain": [], "origin": []}
        last: dict[str, str] = {}
        for round_ in range(args.rounds + 1):
            for name, fn in (("plain", plain), ("origin", origin)) if round_ % 2 else (("origin", origin),
                                                                                         ("plain", plain)):
                t0 = time.perf_counter()
                last[name] = fn()
                if round_:  # round 0 warms both
                    times[name].append(time.perf_counter() - t0)
        filed = {r.dagster_run.run_id for r in instance.get_run_records(
            RunsFilter(job_name="catalog", tags={REPOSITORY_LABEL_TAG: "__repository__@fbt"}))}
        assert last["origin"] in filed and last["plain"] not in filed
        children = len(multiprocessing.active_children())

    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"catalog job, median of {args.rounds}: plain execute_in_process {med['plain']:.3f} s, "
          f"run_job with origin {med['origin']:.3f} s, ratio origin/plain {med['origin'] / med['plain']:.2f}; "
          f"child processes: {children}")


if __name__ == "__main__":
    main()
