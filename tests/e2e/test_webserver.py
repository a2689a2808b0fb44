"""`dagster-webserver` on workspace.yaml serves the whole lineage graph."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXPECTED = {"market_catalog", "raw_bars", "roll_schedule", "continuous_prices", "features", "model",
            "predictions", "backtests", "parameter_sweep", "strategy_comparison", "portfolio", "risk_report", "tear_sheet",
            "intraday_raw_bars", "intraday_roll_schedule", "intraday_continuous_prices", "intraday_backtests",
            "intraday_tear_sheet", "intraday_features", "intraday_portfolio", "intraday_parameter_sweep"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_webserver_lists_every_asset_with_its_lineage(fbt_home):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(fbt_home / "dagster")}
    (fbt_home / "dagster").mkdir()
    (fbt_home / "dagster" / "dagster.yaml").write_bytes((REPO / "dagster.yaml").read_bytes())
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                             "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        data = None
        while time.time() < deadline:
            try:
                data = graphql(port, "{ assetNodes { assetKey { path } dependencyKeys { path } } }")
                if data.get("data", {}).get("assetNodes"):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert data and data.get("data"), f"webserver did not answer: {proc.stderr.read(2000) if proc.poll() else ''}"
        nodes = {n["assetKey"]["path"][-1]: {d["path"][-1] for d in n["dependencyKeys"]} for n in data["data"]["assetNodes"]}
        assert set(nodes) == EXPECTED
        assert nodes["continuous_prices"] == {"roll_schedule"} and nodes["predictions"] == {"model", "features"}
        assert nodes["backtests"] == {"continuous_prices", "predictions", "features"}
        assert nodes["intraday_raw_bars"] == {"market_catalog"}  # minute files from landing/<ROOT>/<interval>/
        assert nodes["intraday_roll_schedule"] == {"intraday_raw_bars"}
        assert nodes["intraday_backtests"] == {"intraday_continuous_prices"}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
