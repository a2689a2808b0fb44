"""Runs of the in-process runner (``fbt demo``) are filed under code location ``fbt``.

The Dagster UI lists a job's runs (Jobs list, the job's Runs tab) by the
``.dagster/repository`` tag and draws the Overview timeline from each run's
repository origin; a run without an origin shows only in the Runs list. The
test runs the ``catalog`` job through :func:`run_job` into a real SQLite
instance, loads the code location named in ``workspace.yaml`` (in process,
no code server) and asks Dagster's own GraphQL schema the questions those
three pages ask, with the queries copied from the UI's source
(dagster-webserver 1.13 bundle: SingleJobQuery, RunsFeedRootQuery,
CompletedRunTimelineQuery). A run of the same job made the old way
(``execute_in_process``) is the control: the pages must not list it.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget, WorkspaceFileTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from fbt_pipelines.catalog import load_catalog
from fbt_pipelines.location.instance import ensure_dagster_home
from fbt_pipelines.location.pipeline_runner import PipelineFailed, run_job

REPO = Path(__file__).resolve().parents[2]

WORKSPACE_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
    __typename ... on RepositoryLocation { name repositories { name pipelines { name } } }
    ... on PythonError { message } } } } } }
"""

# Jobs list (Overview > Jobs and the location's job table): SINGLE_JOB_QUERY
JOBS_LIST_QUERY = """
query SingleJobQuery($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { name runs(limit: 5) { id status } }
    ... on PythonError { message }
  }
}
"""

# The job's Runs tab: PipelineRunsFeedRoot adds the repository tag token to the job filter
JOB_RUNS_QUERY = """
query RunsFeedRootQuery($limit: Int!, $cursor: String, $filter: RunsFilter, $view: RunsFeedView!) {
  runsFeedOrError(limit: $limit, cursor: $cursor, filter: $filter, view: $view) {
    __typename
    ... on RunsFeedConnection { results { id } }
    ... on PythonError { message }
  }
}
"""

# Overview timeline: rows are keyed by run.repositoryOrigin; a run without one is dropped
TIMELINE_QUERY = """
query CompletedRunTimelineQuery($completedFilter: RunsFilter!, $limit: Int!, $cursor: String) {
  completed: runsOrError(filter: $completedFilter, limit: $limit, cursor: $cursor) {
    __typename
    ... on Runs { results { id pipelineName startTime endTime
                            repositoryOrigin { repositoryName repositoryLocationName } } }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture
def instance(fbt_home, monkeypatch):
    """The fbt instance (repo dagster.yaml, SQLite) under the test's FBT_HOME."""
    monkeypatch.setenv("DAGSTER_HOME", str(fbt_home / "dagster"))
    ensure_dagster_home()
    with DagsterInstance.get() as inst:
        yield inst


def _gql(ctx, query: str, variables: dict | None = None) -> dict:
    result = execute_dagster_graphql(ctx, query, variables)
    assert not result.errors, result.errors
    return result.data


def test_demo_runs_are_listed_on_the_job_pages_and_the_overview(instance):
    t0 = time.time()
    step = run_job(instance, "catalog")
    assert multiprocessing.active_children() == []  # executed in this process, nothing spawned

    # fbt demo behaviour kept: the run succeeded and wrote the catalogue (count from the catalogue files)
    run = instance.get_run_by_id(step.run_id)
    assert run.status == DagsterRunStatus.SUCCESS and run.job_name == "catalog"
    event = instance.get_latest_materialization_event(AssetKey("market_catalog"))
    assert event is not None and event.run_id == step.run_id
    assert event.asset_materialization.metadata["markets"].value == len(load_catalog())

    # control: the same job run the old way, without an origin
    from fbt_pipelines.location.definitions import current_defs
    old = current_defs().resolve_job_def("catalog").execute_in_process(instance=instance)
    assert old.success

    # the webserver's origin for workspace.yaml, built by Dagster's own loader
    (served,) = WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")]).create_origins()
    assert run.remote_job_origin.repository_origin.code_location_origin == served
    assert old.dagster_run.remote_job_origin is None

    # the same code location loaded in this process (what the webserver gets from its code server)
    target = InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(served.loadable_target_origin,
                                                                      location_name=served.location_name))
    with WorkspaceProcessContext(instance, target) as process_ctx:
        ctx = process_ctx.create_request_context()
        entries = _gql(ctx, WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
        homes = [(loc["locationOrLoadError"]["name"], repo["name"]) for loc in entries
                 for repo in loc["locationOrLoadError"]["repositories"]
                 if "catalog" in {p["name"] for p in repo["pipelines"]}]
        assert homes == [("fbt", "__repository__")]
        location, repository = homes[0]

        # Jobs list: the job's latest runs (server side filter on the repository label)
        job = _gql(ctx, JOBS_LIST_QUERY, {"selector": {"repositoryLocationName": location,
                                                        "repositoryName": repository,
                                                        "pipelineName": "catalog"}})["pipelineOrError"]
        assert job["__typename"] == "Pipeline", job
        listed = [r["id"] for r in job["runs"]]
        assert listed == [step.run_id], listed  # the origin run, not the control

        # the job's Runs tab (UI's filter: job name + ".dagster/repository" = name@location)
        feed = _gql(ctx, JOB_RUNS_QUERY, {
            "limit": 25, "cursor": None, "view": "RUNS",
            "filter": {"pipelineName": "catalog",
                       "tags": [{"key": ".dagster/repository", "value": f"{repository}@{location}"}]},
        })["runsFeedOrError"]
        assert feed["__typename"] == "RunsFeedConnection", feed
        assert [r["id"] for r in feed["results"]] == [step.run_id]

        # Overview timeline: completed runs updated in the window, grouped by repositoryOrigin
        timeline = _gql(ctx, TIMELINE_QUERY, {
            "limit": 500, "cursor": None,
            "completedFilter": {"statuses": ["FAILURE", "SUCCESS", "CANCELED"],
                                "updatedAfter": t0 - 1, "updatedBefore": time.time() + 60},
        })["completed"]
        origins = {r["id"]: r["repositoryOrigin"] for r in timeline["results"]}
        assert origins[step.run_id] == {"repositoryName": repository, "repositoryLocationName": location}
        assert origins[old.run_id] is None  # the UI drops such a run from the timeline
        drawn = next(r for r in timeline["results"] if r["id"] == step.run_id)
        assert drawn["startTime"] is not None and drawn["endTime"] >= drawn["startTime"]


def test_a_failed_step_is_named_and_the_partition_recorded(instance):
    with pytest.raises(PipelineFailed) as failed:
        run_job(instance, "ingest_market", "ZZ")  # a market with no bar files: raw_bars fails
    message = str(failed.value)
    assert message.startswith("job ingest_market [ZZ] failed (run ")
    assert "raw_bars: " in message and "no bar files for ZZ" in message
    assert "ZZ" in instance.get_dynamic_partitions("markets")
    (record,) = instance.get_run_records()
    run = record.dagster_run
    assert run.run_id in message and run.status == DagsterRunStatus.FAILURE
    assert run.tags["dagster/partition"] == "ZZ" and run.tags["dagster/code_location"] == "fbt"
    assert run.remote_job_origin.job_name == "ingest_market"
