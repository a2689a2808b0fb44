"""The whole roll table, end to end: `roll_schedule` metadata, `fbt report` and the portfolio sheet.

Sample ES data (catalogue rule ``volume``, backstop 5 days) -> Dagster
``materialize`` of market_catalog, raw_bars, roll_schedule, continuous_prices
on a real DuckDB warehouse. Each roll's trigger numbers are checked against
the stored bars with SQL (independent of the roll code), each metadata row
against the stored roll, and the tear sheets against the stored table.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner
from dagster import AssetSelection, DagsterInstance, materialize

from fbt_pipelines.cli import main

ES_ROLL_COST = 2 * (2.10 + 0.25 * 50.0)  # catalogue ES: commission 2.10 USD/side, tick 0.25, 50 USD/point


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def expected_md_row(r) -> str:
    """A stored roll as the metadata table must show it (ES gaps are quarter points: 2 decimals)."""
    return (f"| {pd.Timestamp(r.roll_date):%Y-%m-%d} | {r.from_contract} | {r.to_contract} | {r.rule} | {r.trigger} "
            f"| {r.from_volume:,.0f} | {r.to_volume:,.0f} | {r.gap:,.2f} | {r.gap * 50:,.2f} | {ES_ROLL_COST:,.2f} |")


def expected_html_row(r) -> str:
    return (f"<tr><td>{pd.Timestamp(r.roll_date):%Y-%m-%d}</td><td>{r.from_contract}</td><td>{r.to_contract}</td>"
            f"<td>{r.rule}</td><td>{r.trigger}</td><td>{r.from_volume:,.0f}</td><td>{r.to_volume:,.0f}</td>"
            f"<td>{r.gap:,.2f}</td><td>{r.gap * 50:,.2f}</td><td>{ES_ROLL_COST:,.2f}</td></tr>")


@pytest.fixture(scope="module")
def es_rolls(tmp_path_factory, redis_url):
    from tests.conftest import use_private_home

    mp = pytest.MonkeyPatch()
    home = use_private_home(mp, tmp_path_factory.mktemp("roll_table") / "home", redis_url)
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.marketdata.sample_data import write_sample_data

    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2017, 1, 3), dt.date(2018, 12, 31))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    resources = local_resources()
    assert materialize(ALL_ASSETS, selection=AssetSelection.assets("market_catalog"), resources=resources,
                       instance=instance).success
    result = materialize(ALL_ASSETS, selection=AssetSelection.assets("raw_bars", "roll_schedule", "continuous_prices"),
                         partition_key="ES", resources=resources, instance=instance)
    assert result.success
    (mat,) = result.asset_materializations_for_node("roll_schedule")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        rolls = conn.execute("SELECT * FROM roll_schedule WHERE root = 'ES' ORDER BY roll_date").df()
        # the trigger numbers from the stored bars, by SQL: both contracts' volume on the roll session
        volumes = conn.execute(
            "SELECT r.roll_date, f.volume AS f_vol, t.volume AS t_vol FROM roll_schedule r "
            "JOIN bars f ON f.contract = r.from_contract AND f.ts = r.roll_date "
            "JOIN bars t ON t.contract = r.to_contract AND t.ts = r.roll_date "
            "WHERE r.root = 'ES' ORDER BY r.roll_date").df()
        # not applicable to a volume rule: stored as NULL (not NaN)
        nulls = conn.execute("SELECT count(*) FROM roll_schedule WHERE root = 'ES' AND from_open_interest IS NULL "
                             "AND to_open_interest IS NULL").fetchone()[0]
    assert nulls == len(rolls)
    yield home, mat.metadata, rolls, volumes
    mp.undo()


def test_metadata_holds_every_roll_with_its_trigger_and_cost(es_rolls):
    _, meta, rolls, volumes = es_rolls
    assert len(rolls) >= 7  # two years of quarterly ES
    assert meta["rolls"].value == len(rolls)
    assert meta["roll_cost_usd_per_contract"].value == pytest.approx(ES_ROLL_COST)
    lines = meta["roll_table"].value.splitlines()
    assert lines[0] == ("| date | from | to | rule | trigger | from volume | to volume | gap (points) | gap (USD) "
                        "| roll cost (USD) |")
    assert lines[2:] == [expected_md_row(r) for r in rolls.itertuples(index=False)]  # every roll, in order
    # stored numbers = the bars' own on the roll session (SQL join above), gap USD = gap x 50, cost 29.20
    assert volumes["f_vol"].astype(float).tolist() == rolls["from_volume"].tolist()
    assert volumes["t_vol"].astype(float).tolist() == rolls["to_volume"].tolist()
    assert rolls["from_open_interest"].isna().all() and rolls["to_open_interest"].isna().all()
    assert (rolls["gap_usd"] - rolls["gap"] * 50.0).abs().max() < 1e-9
    assert rolls["cost_usd"].tolist() == pytest.approx([ES_ROLL_COST] * len(rolls))
    assert set(rolls["trigger"]) <= {"volume crossover"} | {t for t in rolls["trigger"] if t.startswith("backstop: ")}
    crossed = rolls[rolls["trigger"] == "volume crossover"]
    assert len(crossed) and (crossed["to_volume"] > crossed["from_volume"]).all()


def test_report_and_portfolio_sheet_show_the_rolls(es_rolls, monkeypatch):
    from fbt_pipelines.config import paths
    from fbt_pipelines.usecases.report import PortfolioSheet, read_rolls, write_portfolio_tear_sheet

    home, _, rolls, _ = es_rolls
    out = json.loads(cli("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "fast=10",
                         "--param", "slow=40", "--start", "2018-01-01", "--json").stdout)
    assert cli("report", out["run_id"]).exit_code == 0
    page = (paths().reports / f"{out['run_id']}.html").read_text(encoding="utf-8")
    assert "<h2>Rolls</h2>" in page
    inside = rolls[pd.to_datetime(rolls["roll_date"], utc=True) >= pd.Timestamp("2018-01-01", tz="UTC")]
    assert 3 <= len(inside) < len(rolls)  # the run's window only
    assert f"<h3>ES ({len(inside)} rolls)</h3>" in page
    shown = set(inside["roll_date"])
    for r in rolls.itertuples(index=False):
        assert (expected_html_row(r) in page) == (r.roll_date in shown), r

    # the portfolio's sheet: every roll of each market of the book in the book's window
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        prices = conn.execute("SELECT ts FROM continuous_prices WHERE root = 'ES' ORDER BY ts").df()
        book = read_rolls(conn, "ES", prices["ts"].iloc[0], prices["ts"].iloc[-1])
    assert len(book) == len(rolls)
    equity = prices.assign(equity=100_000.0 + prices.index.to_numpy(float))
    report = {"cagr": 0.01, "annual_vol": 0.1, "sharpe": 0.1, "sortino": 0.1, "max_drawdown": -0.01, "var_95": -0.01,
              "var_99": -0.02, "cvar_95": -0.02, "cvar_99": -0.03, "data_version": "v"}
    positions = prices.assign(root="ES", pnl=1.0)
    sheet = PortfolioSheet("main", equity, positions, report, pd.DataFrame(), {"ES": book})
    path = write_portfolio_tear_sheet(sheet, Path(home) / "reports" / "p.html", code_version="test", run_id="r")
    text = path.read_text(encoding="utf-8")
    assert f"<h3>ES ({len(rolls)} rolls)</h3>" in text
    assert all(expected_html_row(r) in text for r in rolls.itertuples(index=False))
