"""`fbt ingest`, `fbt contracts`, `fbt catalog` through the real CLI (Click runner,
real DuckDB file under a private FBT_HOME)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from click.testing import CliRunner

from fbt_pipelines.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_ingest_lean_zips_as_json(fbt_home):
    result = run("ingest", str(FIXTURES / "lean" / "es_trade.zip"), "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.strip().splitlines()]
    assert {x["status"] for x in lines} == {"ok"} and sum(x["quarantined"] for x in lines) == 0
    accepted = sum(x["accepted"] for x in lines)
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone()[0] == accepted > 0
    again = [json.loads(x) for x in run("ingest", str(FIXTURES / "lean" / "es_trade.zip"), "--json").output.splitlines()]
    assert {x["status"] for x in again} == {"skipped"}


def test_bad_files_fail_with_a_message_and_exit_code(fbt_home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("contract,ts,open,high,low,close,volume\nESZ2013,2013-12-02,1,0.5,0.4,0.45,10\n")
    strict = run("ingest", str(bad), "--strict")
    assert strict.exit_code == 1 and "bad.csv: line 2: open outside [low, high]" in strict.output
    header = tmp_path / "header.csv"
    header.write_text("when,price\n2013-12-02,1\n")
    result = run("ingest", str(header), str(bad))
    assert result.exit_code == 1
    assert "header.csv: line 1: header" in result.output and "quarantine" in result.output
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone()[0] == 0
        assert conn.execute("SELECT line, reason FROM quarantine").fetchall() == [(2, "open outside [low, high]")]


def test_contracts_json_lists_last_trade_and_first_notice():
    result = run("contracts", "CL", "--from", "2014", "--to", "2014", "--json")
    rows = json.loads(result.output)
    assert len(rows) == 12 and set(rows[0]) == {"contract", "last_trade", "first_notice"}
    # CLF2014: 25 Dec 2013 is a holiday -> 4 business days before: 2013-12-19 (NYMEX published)
    assert rows[0] == {"contract": "CLF2014", "last_trade": "2013-12-19", "first_notice": "2013-12-20"}
    assert run("contracts", "XX", "--from", "2014", "--to", "2014").exit_code == 1


def test_catalog_import_pysystemtrade_extends_the_catalogue(fbt_home, tmp_path):
    def without_comment(name: str) -> Path:
        lines = (FIXTURES / name).read_text().splitlines()
        out = tmp_path / name
        out.write_text("\n".join(line for line in lines if not line.startswith("#")) + "\n")
        return out

    result = run("catalog", "import-pysystemtrade", str(without_comment("pysystemtrade_instrumentconfig_subset.csv")),
                 str(without_comment("pysystemtrade_rollconfig_subset.csv")), "--symbol", "GOLD=XGC")
    assert result.exit_code == 0, result.output
    listed = {m["root"]: m for m in json.loads(run("catalog", "list", "--json").output)}
    assert listed["XGC"]["multiplier"] == 100.0 and listed["XGC"]["cycle"] == "GJMQVZ"
    assert listed["XGC"]["expiry_rule"] == "day_of_month:26"  # pysystemtrade GOLD expiry_offset 26
    assert "ES" in listed and len(listed) == 25


def test_backtest_command_logs_a_run_and_refuses_bad_parameters(fbt_home):
    import datetime as dt

    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths
    from fbt_pipelines.marketdata.sample_data import write_sample_data

    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2016, 1, 4), dt.date(2018, 12, 31))
    assert run("ingest", str(paths().landing / "ES"), "--json").exit_code == 0
    assert run("continuous", "ES", "--json").exit_code == 0
    out = json.loads(run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "fast=10",
                         "--param", "slow=40", "--json").stdout)
    assert set(out) >= {"total_pnl", "sharpe", "max_drawdown", "n_trades", "run_id"} and out["rolls"] > 0
    free = json.loads(run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "fast=10",
                          "--param", "slow=40", "--no-costs", "--json").stdout)
    assert free["roll_costs"] == 0 and free["total_pnl"] > out["total_pnl"]  # costs only ever cost
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        stored = conn.execute("SELECT net_pnl FROM adhoc_backtest_runs WHERE run_id = ?", [out["run_id"]]).fetchall()
    assert round(stored[0][0], 2) == out["total_pnl"]
    bad = run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "speed=3")
    assert bad.exit_code == 1 and "unknown parameter(s) ['speed']" in bad.output
    assert "bollinger_reversion" in run("strategies").output


def test_status_reports_health_assets_and_failed_checks(fbt_home, monkeypatch):
    from dagster import AssetSelection, DagsterInstance, materialize

    from fbt_pipelines.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.instance import ensure_dagster_home

    missing = json.loads(run("status", "--json").stdout)
    assert missing["warehouse"]["ok"] is False and run("status").exit_code == 1
    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        assert materialize(ALL_ASSETS, selection=AssetSelection.assets("market_catalog"),
                           resources=local_resources(), instance=instance).success
    info = json.loads(run("status", "--json").stdout)
    assets = {a["asset"]: a["last_materialized_utc"] for a in info["assets"]}
    assert assets["market_catalog"] is not None and assets["backtests"] is None
    assert info["warehouse"]["ok"] and info["redis"]["ok"] and info["queue"] == {"length": 0, "pending": 0}
