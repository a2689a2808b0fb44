"""`fbt portfolio --date` and `fbt risk --json` read the book and the risk tables from a real DuckDB warehouse."""

import json

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from fbt_pipelines.cli import main
from fbt_pipelines.portfolio.book import portfolio_book
from fbt_pipelines.services import warehouse as wh
from tests.unit.test_portfolio_book import FX, books


@pytest.fixture
def warehouse_with_book(fbt_home):
    positions, equity, trades = portfolio_book(books(), 1_000_000.0, FX)
    with duckdb.connect(str(fbt_home / "warehouse.duckdb")) as conn:
        wh.replace_partition(conn, "portfolio_equity", "main", equity.assign(portfolio="main"))
        wh.replace_partition(conn, "portfolio_positions", "main", positions.assign(portfolio="main"))
        wh.replace_partition(conn, "risk_report", "main", pd.DataFrame([{"portfolio": "main", "sharpe": 1.5,
                                                                           "cf_var_99": float("nan")}]))
        wh.replace_partition(conn, "risk_scenarios", "main", pd.DataFrame({
            "scenario": ["shock", "shock"], "kind": ["shock", "shock"], "window": ["", ""], "root": ["ES", "total"],
            "pnl_usd": [-100.0, -100.0], "portfolio": ["main", "main"]}))
        wh.replace_partition(conn, "risk_correlation", "main", pd.DataFrame({
            "kind": ["market"], "a": ["ES"], "b": ["FESX"], "correlation": [0.5], "portfolio": ["main"]}))
    return fbt_home


def test_portfolio_snapshot_json(warehouse_with_book):
    out = CliRunner().invoke(main, ["portfolio", "--date", "2024-03-05", "--json"])
    assert out.exit_code == 0, out.output
    snap = json.loads(out.stdout)
    assert snap["as_of"] == "2024-03-05"
    assert snap["gross_exposure"] == pytest.approx(320_240.0) and snap["net_exposure"] == pytest.approx(-79_760.0)
    assert {m["root"] for m in snap["markets"]} == {"ES", "FESX"}
    table = CliRunner().invoke(main, ["portfolio"])
    assert table.exit_code == 0 and "2024-03-06" in table.output and "FESX" in table.output


def test_portfolio_before_the_start_and_bad_date(warehouse_with_book):
    out = CliRunner().invoke(main, ["portfolio", "--date", "2020-01-01"])
    assert out.exit_code == 1 and "starts on 2024-03-04" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(main, ["portfolio", "--date", "yesterday-ish"])
    assert out.exit_code == 2 and "is not a date" in out.output


def test_risk_json_carries_scenarios_and_correlation(warehouse_with_book):
    out = CliRunner().invoke(main, ["risk", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["sharpe"] == 1.5 and report["cf_var_99"] is None  # NaN is JSON null
    assert report["scenarios"][0]["pnl_usd"] == {"ES": -100.0, "total": -100.0}
    assert report["correlation"]["market"] == [{"a": "ES", "b": "FESX", "correlation": 0.5}]
    assert report["book"]["as_of"] == "2024-03-06" and len(report["book"]["markets"]) == 2
    assert CliRunner().invoke(main, ["risk"]).exit_code == 0


def test_no_warehouse_is_a_clear_message(fbt_home):
    out = CliRunner().invoke(main, ["portfolio"])
    assert out.exit_code == 1 and "fbt demo" in out.output
