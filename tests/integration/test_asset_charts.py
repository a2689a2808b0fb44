"""The backtests asset carries a dated equity chart in its metadata (issue 20, item 2).

Real DuckDB warehouse, real Redis (private prefix), real MLflow store under a
private FBT_HOME; the assets run through Dagster's ``materialize`` on sample
data for ES, 2017-2019.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
import xml.etree.ElementTree as ET

import duckdb
import numpy as np
from dagster import AssetKey, AssetSelection, DagsterInstance, materialize

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.config import paths
from fbt_pipelines.marketdata.sample_data import write_sample_data
from fbt_pipelines.services import warehouse as wh
from resources import BusResource
from tests.conftest import delete_prefix

NS = "{http://www.w3.org/2000/svg}"


def test_backtests_metadata_holds_a_dated_equity_chart_per_market(fbt_home, redis_url):
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources

    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    resources = {**local_resources(), "bus": BusResource(url=redis_url, prefix=prefix)}
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2017, 1, 3), dt.date(2019, 12, 31))
    strategies = [{"name": "buy_and_hold", "params": {}}, {"name": "sma_crossover", "params": {"fast": 10, "slow": 50}}]
    try:
        for keys, partition in [(["market_catalog"], None),
                                (["raw_bars", "roll_schedule", "continuous_prices", "features"], "ES")]:
            assert materialize(ALL_ASSETS, selection=AssetSelection.assets(*keys), partition_key=partition,
                               resources=resources, instance=instance).success
        result = materialize(ALL_ASSETS, selection=AssetSelection.assets("backtests"), partition_key="ES",
                             resources=resources, instance=instance,
                             run_config={"ops": {"backtests": {"config": {"strategies": strategies}}}})
        assert result.success
        (event,) = result.asset_materializations_for_node("backtests")
        assert event.asset_key == AssetKey("backtests")
        md = event.metadata["equity_chart"].value
        match = re.fullmatch(r"!\[ES equity and drawdown by strategy\]\(data:image/svg\+xml;base64,(.+)\)", md)
        assert match, md[:120]
        root = ET.fromstring(base64.b64decode(match.group(1)).decode())

        with duckdb.connect(str(paths().warehouse), read_only=True) as conn:
            equity = wh.read_partition(conn, "backtest_equity", "ES", order_by=["strategy", "ts"])
            runs = {r["strategy"]: r for r in wh.read_partition(conn, "backtest_runs", "ES").to_dict("records")}
        years = sorted({str(y) for y in equity["ts"].dt.year})
        assert years == ["2017", "2018", "2019"]
        assert [t.text for t in root.iter(f"{NS}text") if t.get("class") == "xtick"] == years
        assert [p.get("data-name") for p in root.iter(f"{NS}polyline") if p.get("class") == "equity"] == \
            ["buy_and_hold", "sma_crossover"]
        marks = {c.get("data-name"): c for c in root.iter(f"{NS}circle") if c.get("class") == "worst"}
        for name, g in equity.groupby("strategy"):  # the stored equity's worst drawdown, by numpy
            eq = g["equity"].to_numpy(float)
            dd = eq / np.maximum.accumulate(eq) - 1
            assert float(marks[name].get("data-value")) == np.float64(dd.min())
            assert marks[name].get("data-ts") == f"{g['ts'].iloc[int(np.argmin(dd))]:%Y-%m-%d}"

        # numbers by kind: trades print as counts, P&L as whole USD, drawdown in percent
        rows = {line.split(" | ")[0].strip("| "): line for line in event.metadata["summary"].value.splitlines()[2:]}
        for name, r in runs.items():
            cells = [c.strip() for c in rows[name].strip("|").split("|")]
            assert abs(r["net_pnl"]) >= 1 and cells[1] == f"{r['net_pnl']:,.0f}"
            assert cells[3] == f"{100 * r['max_drawdown']:.1f}%"
            assert cells[4] == f"{int(r['trades']):,d}" and "." not in cells[4]
        assert event.metadata["sharpe_sma_crossover"].value == round(float(runs["sma_crossover"]["sharpe"]), 3)
    finally:
        delete_prefix(redis_url, prefix)
