"""`fbt demo-intraday` as the README runs it, on a short window: minute files in
landing/ES/1m/ -> the intraday_market job (intraday_raw_bars first) -> table and tear sheets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _demo(env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(Path(sys.executable).parent / "fbt"), "demo-intraday", "--start", "2024-02-26",
                           "--end", "2024-03-22"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_demo_intraday_ingests_through_the_graph_and_reruns_without_reingesting(fbt_home, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    out = _demo(env).stdout
    landing = fbt_home / "landing" / "ES" / "1m"
    sample = sorted(p.name for p in landing.glob("ES*.csv"))
    lean = sorted(p.name for p in landing.glob("*_trade.zip"))
    assert sample == ["ESH2024.csv", "ESM2024.csv"] and len(lean) == 4  # generated contracts + LEAN's trade days
    keys = ["ES|1m|2024-02-26..2024-03-22", "ES|1m|2013-10-29..2013-10-31", "ES|1m|2013-12-18..2013-12-19"]
    assert all(k in out for k in keys) and "materialized 3 intraday runs" in out
    assert len(list((fbt_home / "reports" / "intraday").glob("*.html"))) >= 9  # 3 series x 3 strategies
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        stored = dict(conn.execute("SELECT interval, count(*) FROM bars GROUP BY 1").fetchall())
        files, units = conn.execute("SELECT count(DISTINCT split_part(path, '!', 1)), count(*) FROM ingests "
                                    "WHERE interval = '1m'").fetchone()  # a LEAN zip: one ingest per contract in it
        series = {r[0] for r in conn.execute("SELECT DISTINCT series FROM intraday_backtest_runs").fetchall()}
    assert set(stored) == {"1m"} and files == len(sample) + len(lean)  # nothing stored as daily
    assert series == set(keys)

    _demo(env)  # again: the same files are recognised, nothing ingested twice
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone()[0] == stored["1m"]
        assert conn.execute("SELECT count(*) FROM ingests").fetchone()[0] == units
    monkeypatch.setenv("DAGSTER_HOME", str(fbt_home / "dagster"))
    with DagsterInstance.get() as instance:
        runs = instance.get_runs()
        event = instance.get_latest_materialization_event(AssetKey("intraday_raw_bars"))
    assert len(runs) == 6 and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    meta = event.asset_materialization.metadata
    assert (meta["files"].value, meta["files_new"].value, meta["files_unchanged"].value) == (files, 0, units)
