"""The launchpad's scaffolded run config keeps every default (issue 20, item 1).

Dagster's launchpad starts a session from ``RunConfigSchema.rootDefaultYaml``
(GraphQL), which dagster 1.13 builds with ``default_values_yaml_from_type_snap``;
that drops the empty-dict values of a mapping, which is how ewmac_multi, carry
and buy_and_hold (no parameters) vanished when ``strategies`` was a mapping.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, instance_for_test
from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

REPO = Path(__file__).resolve().parents[2]
FIVE = ["buy_and_hold", "carry", "ewmac_multi", "ml_signal", "sma_crossover"]


class _Yaml12(yaml.SafeLoader):
    """YAML as the launchpad's editor reads it (YAML 1.2 core: ``2018-12-31`` stays a string)."""


_Yaml12.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _load(text: str) -> dict:
    return yaml.load(text, Loader=_Yaml12)  # noqa: S506 - a SafeLoader subclass


def _scaffold(job_def) -> dict:
    """The launchpad's default run config of ``job_def``, as the GraphQL resolver builds it."""
    snap = job_def.get_job_snapshot()
    schema = snap.config_schema_snapshot
    (mode,) = snap.mode_def_snaps
    return _load(default_values_yaml_from_type_snap(schema, schema.get_config_snap(mode.root_config_key)))


def _field_defaults(schema, type_snap, path=()) -> dict[tuple, object]:
    """Every leaf field's declared default (scalar, list, mapping), by path from the root."""
    import json

    out = {}
    for name in type_snap.field_names or []:
        field = type_snap.get_field(name)
        if schema.has_config_snap(field.type_key) and schema.get_config_snap(field.type_key).fields:
            out.update(_field_defaults(schema, schema.get_config_snap(field.type_key), (*path, name)))
        elif field.default_value_as_json_str:  # a leaf: scalar, list or mapping
            out[(*path, name)] = json.loads(field.default_value_as_json_str)
    return out


def test_the_backtest_market_scaffold_lists_all_five_strategies(fbt_home):
    from fbt_pipelines.location.definitions import defs

    config = _scaffold(defs.resolve_job_def("backtest_market"))["ops"]["backtests"]["config"]
    assert [s["name"] for s in config["strategies"]] == FIVE
    params = {s["name"]: s["params"] for s in config["strategies"]}
    assert params == {"buy_and_hold": {}, "carry": {}, "ewmac_multi": {},
                      "ml_signal": {"threshold": 0.55}, "sma_crossover": {"fast": 20, "slow": 100}}


def test_the_scaffold_runs_all_five_strategies(fbt_home):
    """Launched as scaffolded, the asset's config yields one backtest spec per strategy."""
    from assets.backtests import BacktestsConfig
    from fbt_pipelines.location.definitions import defs
    from fbt_pipelines.usecases.workspace import Workspace

    config = _scaffold(defs.resolve_job_def("backtest_market"))["ops"]["backtests"]["config"]
    specs = BacktestsConfig(**config).specs(Workspace(fbt_home).strategies())
    assert [s.strategy for s in specs] == FIVE
    assert specs[-1].param_dict == {"fast": 20, "slow": 100}
    # no run config at all (a schedule, `fbt demo`): the defaults, the same five
    assert [s.strategy for s in BacktestsConfig().specs(Workspace(fbt_home).strategies())] == FIVE


def test_a_strategy_listed_twice_is_refused(fbt_home):
    from assets.backtests import BacktestsConfig
    from fbt_pipelines.errors import StrategyError
    from fbt_pipelines.usecases.workspace import Workspace

    twice = BacktestsConfig(strategies=[{"name": "carry"}, {"name": "carry", "params": {}}])
    with pytest.raises(StrategyError, match="carry listed more than once"):
        twice.specs(Workspace(fbt_home).strategies())


def test_every_job_scaffold_keeps_every_config_default(fbt_home):
    """No job's launchpad loses a declared default (dict and list fields included)."""
    from fbt_pipelines.location.definitions import defs

    checked = []
    for job in defs.resolve_all_job_defs():
        snap = job.get_job_snapshot()
        schema = snap.config_schema_snapshot
        (mode,) = snap.mode_def_snaps
        scaffold = _scaffold(job)
        for path, default in _field_defaults(schema, schema.get_config_snap(mode.root_config_key)).items():
            if path[0] != "ops" or default in ({}, [], None):
                continue  # an empty default may be left out of the scaffold (it is the default)
            shown = scaffold
            for key in path:
                shown = shown.get(key) if isinstance(shown, dict) else None
            assert shown == default, (job.name, path, shown, default)
            checked.append((job.name, path))
    assert ("backtest_market", ("ops", "backtests", "config", "strategies")) in checked
    assert ("backtest_market", ("ops", "parameter_sweep", "config", "grid")) in checked
    assert ("portfolio_report", ("ops", "portfolio", "config", "params")) in checked


def test_the_graphql_launchpad_default_yaml_lists_all_five(fbt_home, tmp_path):
    """Through Dagster's GraphQL API, as the launchpad page asks it (code location in a subprocess)."""
    from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

    query = """
    query ($selector: PipelineSelector!) {
      runConfigSchemaOrError(selector: $selector) {
        __typename
        ... on RunConfigSchema { rootDefaultYaml }
        ... on PythonError { message }
      }
    }"""
    selector = {"repositoryLocationName": "fbt", "repositoryName": "__repository__", "pipelineName": "backtest_market"}
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        assert isinstance(instance, DagsterInstance)
        with define_out_of_process_context(str(REPO / "workspace.yaml"), None, instance) as context:
            result = execute_dagster_graphql(context, query, variables={"selector": selector})
    answer = result.data["runConfigSchemaOrError"]
    assert answer["__typename"] == "RunConfigSchema", answer
    config = _load(answer["rootDefaultYaml"])["ops"]["backtests"]["config"]
    assert [s["name"] for s in config["strategies"]] == FIVE
