"""`fbt demo` as the README runs it (install aside): the default 13-year sample
for two markets, through the Dagster instance under FBT_HOME, to the summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_fbt_demo_runs_the_whole_graph_and_prints_the_summary(fbt_home):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    proc = subprocess.run([str(Path(sys.executable).parent / "fbt"), "demo", "--markets", "ES,6E"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "materialized 15 runs" not in out  # 2 markets: 1 + 2 + 1 + 2 + 1 = 7 runs
    assert "materialized 7 runs" in out and "Portfolio (2 markets" in out and "tear sheet" in out
    assert (fbt_home / "reports" / "tear_sheet.html").exists()
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        runs = conn.execute("SELECT root, strategy, ruined FROM backtest_runs").fetchall()
    assert len(runs) == 10  # 2 markets x 5 strategies, ruined accounts included (not a crash)
    assert (fbt_home / "dagster" / "dagster.yaml").exists()
