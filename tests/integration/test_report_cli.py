"""`fbt report RUN_ID` on a real `fbt backtest` run: sample ES data -> ingest ->
continuous -> backtest -> report (Click runner, real DuckDB under a private FBT_HOME)."""

from __future__ import annotations

import datetime as dt
import json
import re

import duckdb
import numpy as np
import pandas as pd
from pathlib import Path

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

    # the pipeline's runs (backtest_runs rows, found by their MLflow run id) report too
    _pipeline_run_report_matches_the_adhoc_one(fbt_home, run_id, metrics)

    # a user strategy (one file in $FBT_HOME/strategies) runs through `fbt backtest`, then `fbt report --pdf`
    _user_strategy_backtest_and_pdf(fbt_home)


def _pipeline_run_report_matches_the_adhoc_one(fbt_home, adhoc_id: str, adhoc: pd.Series) -> None:
    """The same spec stored as the backtests asset stores it (other path, same numbers)."""
    from fbt_pipelines.cli.app import workspace_here
    from fbt_pipelines.usecases.backtest import backtest_market, backtest_row, read_market_data, store_market_backtests
    from fbt_pipelines.usecases.spec import BacktestSpec

    workspace = workspace_here()
    spec = BacktestSpec.create("sma_crossover", {"fast": 10, "slow": 40}, library=workspace.strategies(),
                               capital=1_000_000.0, annual_risk_target=0.20, slippage_ticks=1.0)
    pipeline_id = "feedc0ffee" * 3 + "ab"
    with duckdb.connect(str(fbt_home / "warehouse.duckdb")) as conn:
        bt = backtest_market(spec, read_market_data(conn, "ES", workspace))
        store_market_backtests(conn, "ES", [backtest_row(bt, code_version="test", mlflow_run_id=pipeline_id)], [bt])
    result = run("report", pipeline_id, "--csv")
    assert result.exit_code == 0, result.output
    page = (fbt_home / "reports" / f"{pipeline_id}.html").read_text(encoding="utf-8")
    assert f"sma_crossover on ES (backtests asset {pipeline_id})" in page
    mine = pd.read_csv(fbt_home / "reports" / pipeline_id / "metrics.csv").set_index("metric")["value"]
    for key in ["net_pnl", "final_equity", "sharpe", "max_drawdown", "cagr", "trades_rolls", "trades_roll_costs",
                "bars", "var_95"]:
        assert float(mine[key]) == pytest.approx(float(adhoc[key]), rel=1e-9, abs=1e-6), key
    assert float(mine["net_pnl"]) == pytest.approx(bt.summary["net_pnl"], abs=1e-6)
    unknown = run("report", "0" * 32)
    assert unknown.exit_code == 1 and pipeline_id in unknown.output and adhoc_id in unknown.output


MOMENTUM = (Path(__file__).parents[1] / "user_strategies" / "momentum.py").read_text(encoding="utf-8")


def _user_strategy_backtest_and_pdf(fbt_home):
    import pypdf

    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
    from fbt_pipelines.engine.strategies import available_strategies
    from fbt_pipelines.portfolio.sizing import VolTargetConfig, contracts_for_risk

    (fbt_home / "strategies").mkdir()
    (fbt_home / "strategies" / "momentum.py").write_text(MOMENTUM, encoding="utf-8")
    try:
        assert "momentum" in run("strategies").output
        bt = run("backtest", "--strategy", "momentum", "--market", "ES", "--param", "lookback=40", "--json")
        assert bt.exit_code == 0, bt.output
        out = json.loads(bt.stdout)
        assert out["strategy"] == "momentum" and out["params"] == {"lookback": 40}
        # the same backtest by hand: the signal computed independently (pandas shift), sized and run on the engine
        with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
            prices = conn.execute("SELECT * FROM continuous_prices WHERE root = 'ES' ORDER BY ts").df()
        close = prices["close"]
        signal = np.sign(close - close.shift(40)).fillna(0.0).to_numpy()
        spec = market_spec("ES")
        target = contracts_for_risk(prices, signal, spec, 1.0, VolTargetConfig(capital=1e6, annual_risk_target=0.2,
                                                                                idm=1.0))
        by_hand = run_backtest(prices, target, spec, EngineConfig(initial_capital=1e6, slippage_ticks=1.0))
        assert out["total_pnl"] == pytest.approx(by_hand.net_pnl, abs=0.01) and out["n_trades"] > 10

        rid = out["run_id"]
        result = run("report", rid, "--pdf", "--csv")
        assert result.exit_code == 0, result.output
        pdf_path = fbt_home / "reports" / f"{rid}.pdf"
        assert pdf_path.read_bytes()[:5] == b"%PDF-" and "(5 pages)" in result.output
        reader = pypdf.PdfReader(pdf_path)
        assert len(reader.pages) == 5  # summary, equity/drawdown, monthly heat map, rolling, trades
        text = [" ".join(page.extract_text().split()) for page in reader.pages]
        m = pd.read_csv(fbt_home / "reports" / rid / "metrics.csv").set_index("metric")["value"]
        f = {k: float(m[k]) for k in m.index if k not in ("run_id", "root", "strategy", "engine", "params",
                                                            "data_version", "first", "last", "start", "end",
                                                            "margin_call_dates", "account_stopped")}
        for expected in [f"Net P&L (after costs) {f['net_pnl']:,.2f} USD", f"Sharpe {f['sharpe']:.2f}",
                         f"CAGR {f['cagr']:.2%}", f"Max drawdown {f['max_drawdown']:.2%}",
                         f"VaR 95 / 99 (1d) {f['var_95']:.2%} / {f['var_99']:.2%}", f"run id (MLflow) {rid}",
                         "strategy momentum", "parameters lookback=40", f"data version {m['data_version']}"]:
            assert expected in text[0], (expected, text[0])
        assert "Equity (USD)" in text[1] and "Drawdown" in text[1]
        assert "Monthly returns" in text[2] and "Rolling 126-day Sharpe" in text[3]
        for expected in [f"Fills / rolls {f['trades_fills']:,.0f} / {f['trades_rolls']:,.0f}",
                         f"Win rate {f['trades_win_rate']:.1%}",
                         f"Roll costs / other costs (USD) {f['trades_roll_costs']:,.2f} / {f['trades_other_costs']:,.2f}"]:
            assert expected in text[4], (expected, text[4])
        assert int(f["trades_fills"]) == out["n_trades"]
    finally:
        (fbt_home / "strategies" / "momentum.py").unlink()
        available_strategies()
