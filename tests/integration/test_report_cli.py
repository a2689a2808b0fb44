"""`fbt report RUN_ID` on a real `fbt backtest` run: sample ES data -> ingest ->
continuous -> backtest -> report (Click runner, real DuckDB under a private FBT_HOME)."""

from __future__ import annotations

import datetime as dt
import json
import re

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from fbt_pipelines.cli import main


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_report_writes_the_tear_sheet_and_csvs_of_a_backtest(fbt_home, monkeypatch):
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths
    from fbt_pipelines.marketdata.sample_data import write_sample_data

    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2018, 1, 2), dt.date(2019, 12, 31))
    assert run("ingest", str(paths().landing / "ES"), "--json").exit_code == 0
    assert run("continuous", "ES", "--json").exit_code == 0
    bt = run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "fast=10", "--param", "slow=40",
             "--json")
    assert bt.exit_code == 0, bt.output
    out = json.loads(bt.stdout)
    run_id = out["run_id"]

    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    result = run("report", run_id, "--csv", "--open")
    assert result.exit_code == 0, result.output
    page_path = fbt_home / "reports" / f"{run_id}.html"
    assert opened == [page_path.resolve().as_uri()]

    page = page_path.read_text(encoding="utf-8")
    titles = set(re.findall(r'"text":"([^"]*)"', page))
    for title in ["Equity (USD)", "Drawdown", "Monthly returns (% of start-of-month equity)",
                  "Rolling 126-day Sharpe and annualised volatility", "Net P&L by market (USD, after costs)",
                  "Round-trip net P&L (USD)", "Holding time of round trips (days)",
                  "Costs (USD): rolls vs other fills"]:
        assert title in titles, title
    assert '<script src="plotly.min.js"></script>' in page and (fbt_home / "reports" / "plotly.min.js").exists()
    assert f"<td>{run_id}</td>" in page and "<h2>Trades</h2>" in page
    # the heat map has a row per year of the sample
    assert '"y":["2018","2019"]' in page.replace(" ", "")

    folder = fbt_home / "reports" / run_id
    equity, trades = pd.read_csv(folder / "equity.csv"), pd.read_csv(folder / "trades.csv")
    metrics = pd.read_csv(folder / "metrics.csv").set_index("metric")["value"]
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        n_eq = conn.execute("SELECT count(*) FROM adhoc_backtest_equity WHERE run_id = ?", [run_id]).fetchone()[0]
        n_tr = conn.execute("SELECT count(*) FROM adhoc_backtest_trades WHERE run_id = ?", [run_id]).fetchone()[0]
        net = conn.execute("SELECT net_pnl FROM adhoc_backtest_runs WHERE run_id = ?", [run_id]).fetchone()[0]
    assert len(equity) == n_eq > 400 and len(trades) == n_tr > 0
    assert set(equity["run_id"]) == {run_id} and equity["ts"].is_monotonic_increasing
    assert float(metrics["net_pnl"]) == pytest.approx(net)
    assert float(metrics["sharpe"]) == pytest.approx(out["sharpe"], rel=1e-9)
    assert int(float(metrics["trades_rolls"])) == out["rolls"] > 0
    assert float(metrics["trades_roll_costs"]) == pytest.approx(out["roll_costs"], abs=0.01)
    # round trips (the last one marked at the final close) add up to the run's net P&L
    from fbt_pipelines.reports.analytics import round_trips

    trades["ts"] = pd.to_datetime(trades["ts"], utc=True)
    trips = round_trips(trades, market_spec("ES").multiplier, last_close=float(equity["close"].iloc[-1]))
    assert trips["net_pnl"].sum() == pytest.approx(net, abs=1e-4)

    unknown = run("report", "0" * 32)
    assert unknown.exit_code == 1 and "unknown run id" in unknown.output and run_id in unknown.output
    assert run("report", "../etc").exit_code == 2
