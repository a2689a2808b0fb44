"""Tear sheets from stored results: of one ``fbt backtest`` run and of the portfolio.

:func:`read_backtest_run` -> :func:`backtest_run_report` ->
:func:`write_run_report` is ``fbt report RUN_ID``: HTML tear sheet, and on
request a PDF and CSVs (equity, trades, metrics). :func:`read_portfolio_sheet`
-> :func:`write_portfolio_tear_sheet` is the ``tear_sheet`` asset. Money is
USD, timestamps UTC; nothing here reads the environment (folders, the code
version and the clock come in as arguments).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from fbt_pipelines.errors import DataError, FbtError
from fbt_pipelines.reports.analytics import round_trips, trade_stats
from fbt_pipelines.reports.export import export_csv
from fbt_pipelines.reports.tear_sheet import write_tear_sheet
from fbt_pipelines.risk.correlation import correlation_matrix
from fbt_pipelines.risk.metrics import RiskMetrics, risk_metrics
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.portfolio import PORTFOLIO
from fbt_pipelines.usecases.workspace import Workspace

__all__ = ["PortfolioSheet", "RunReport", "RunReportFiles", "StoredRun", "UnknownRun", "backtest_run_report",
           "read_backtest_run", "read_portfolio_sheet", "read_rolls", "write_portfolio_tear_sheet",
           "write_run_report"]


class UnknownRun(DataError):
    """No stored ``fbt backtest`` run has this id."""


# Identity of a result beyond run id / data version (see usecases.backtest.backtest_row): shown in the
# tear sheet's provenance, kept out of metrics.csv (whose values besides the run's names are numbers).
_IDENTITY = {"spec_hash": "spec hash", "config_hash": "engine config hash", "code_version": "code version",
             "margin_source": "margin", "mlflow_run_id": None}


# --- one `fbt backtest` run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRun:
    """One stored backtest run: its run row, per-bar path and trades.

    Its ``adhoc_backtest_runs`` row (``fbt backtest``) or ``backtest_runs``
    row (the pipeline's ``backtests`` asset, found by its MLflow run id), its
    per-bar path (ts UTC, close, position, equity USD, ...) and its trades
    (fills before rolls within a bar); ``source`` says which. ``rolls``: the
    market's stored roll schedule inside the run's window (:func:`read_rolls`).
    """

    run_id: str
    row: Mapping[str, Any]
    equity: pd.DataFrame
    trades: pd.DataFrame
    source: str = "fbt backtest"
    rolls: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def root(self) -> str:
        return str(self.row["root"])

    @property
    def strategy(self) -> str:
        return str(self.row["strategy"])


def _has_run_ids(conn) -> bool:
    """Whether ``backtest_runs`` exists with its ``mlflow_run_id`` column."""
    return wh.table_exists(conn, "backtest_runs") and bool(conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'backtest_runs' "
        "AND column_name = 'mlflow_run_id'").fetchall()[0][0])


_RUN_ROWS = {  # one strategy's rows of a market's per-bar and trade tables (fixed SQL, values as parameters)
    "backtest_equity": "SELECT * FROM backtest_equity WHERE root = ? AND strategy = ? ORDER BY ts",
    "backtest_trades": "SELECT * FROM backtest_trades WHERE root = ? AND strategy = ? ORDER BY ts",
}


def _pipeline_run(conn, run_id: str) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame] | None:
    """The ``backtests`` row whose MLflow run id is ``run_id``, its equity and trades."""
    if not _has_run_ids(conn):
        return None
    rows = conn.execute("SELECT * FROM backtest_runs WHERE mlflow_run_id = ?", [run_id]).df()
    if rows.empty:
        return None
    row = rows.iloc[0].to_dict()
    key = [row["root"], row["strategy"]]

    def part(table: str) -> pd.DataFrame:
        if not wh.table_exists(conn, table):
            return pd.DataFrame()
        frame = conn.execute(_RUN_ROWS[table], key).df()
        return frame.drop(columns=["root", "strategy"])

    return row, part("backtest_equity"), part("backtest_trades")


def read_rolls(conn, root: str, first: Any, last: Any) -> pd.DataFrame:
    """``root``'s stored ``roll_schedule`` rows with roll dates in [first, last] (UTC).

    Every column the table holds (date, contracts, trigger and its numbers,
    gap points / USD, cost USD); empty when the market has no stored schedule.
    """
    rolls = wh.read_partition(conn, "roll_schedule", root, order_by=["roll_date"])
    if rolls.empty:
        return rolls
    dates = pd.to_datetime(rolls["roll_date"], utc=True)
    lo, hi = (pd.to_datetime(pd.Series([first, last]), utc=True)).tolist()
    return rolls[(dates >= lo) & (dates <= hi)].reset_index(drop=True)


def read_backtest_run(conn, run_id: str) -> StoredRun:
    """The stored rows of run ``run_id``: an ``fbt backtest`` run or a pipeline one.

    First ``adhoc_backtest_runs`` (keyed by run id), then ``backtest_runs``
    by ``mlflow_run_id`` (the latest ``backtests`` materialization of each
    market; an older one's rows were replaced). :class:`UnknownRun` (naming a
    few stored ids) if neither holds it, :class:`DataError` if it has no
    equity rows.
    """
    runs = wh.read_partition(conn, "adhoc_backtest_runs", run_id)
    if runs.empty:
        found = _pipeline_run(conn, run_id)
        if found is None:
            known = wh.read_table(conn, "adhoc_backtest_runs")
            ids = list(known["run_id"].astype(str).head(3)) if len(known) else []
            if _has_run_ids(conn):
                ids += [r[0] for r in conn.execute("SELECT mlflow_run_id FROM backtest_runs WHERE mlflow_run_id "
                                                   "IS NOT NULL ORDER BY root, strategy LIMIT 3").fetchall()]
            hint = f"; stored runs include {', '.join(ids)}" if ids else "; no backtest run is stored yet"
            raise UnknownRun(f"unknown run id {run_id!r} (neither an `fbt backtest` run nor the MLflow run of "
                             f"the latest backtests materialization){hint}")
        row, equity, trades = found
        source = "backtests asset"
    else:
        row = runs.iloc[0].to_dict()
        equity = wh.read_partition(conn, "adhoc_backtest_equity", run_id, order_by=["ts"])
        trades = wh.read_partition(conn, "adhoc_backtest_trades", run_id, order_by=["ts"])
        source = "fbt backtest"
    if equity.empty:
        raise DataError(f"run {run_id} has no equity rows ({source})")
    if len(trades):
        # a bar's fill (at the open) precedes its roll (at the close); SQL ORDER BY ts does not keep that
        rank = (trades["kind"] == "roll").astype(int)
        trades = trades.assign(_rank=rank).sort_values(["ts", "_rank"], kind="mergesort").drop(columns="_rank")
        trades = trades.reset_index(drop=True)
    rolls = read_rolls(conn, str(row["root"]), equity["ts"].iloc[0], equity["ts"].iloc[-1])
    return StoredRun(run_id, row, equity, trades, source, rolls)


@dataclass(frozen=True)
class RunReport:
    """What the tear sheet of one run shows.

    ``title``; ``shown``: display-ready metrics (net P&L and final equity USD,
    returns and drawdown %, Sharpe ...); ``provenance``: run id, strategy,
    parameters, market, engine, bars, initial capital (USD), data version,
    spec hash, code version, margin source (when stored), when written
    (UTC); ``metrics``: :class:`RiskMetrics` (None when the curve has none,
    e.g. equity at or below zero: ``warning`` says why); ``multiplier``:
    USD per point of the market (None: the market is no longer known, trade
    P&L in points); ``capital``: initial equity, USD.
    """

    run: StoredRun
    title: str
    shown: Mapping[str, str]
    provenance: Mapping[str, str]
    metrics: RiskMetrics | None
    multiplier: float | None
    capital: float
    warning: str | None = None

    def raw_metrics(self) -> dict[str, Any]:
        """The rows of metrics.csv: the run's row, run facts, risk and trade statistics.

        The run's row (its hashes aside), capital, dates, bars, multiplier,
        risk metrics and ``trades_*`` statistics of the round trips.
        """
        equity, trades = self.run.equity, self.run.trades
        first, last = pd.Timestamp(equity["ts"].iloc[0]), pd.Timestamp(equity["ts"].iloc[-1])
        trips = round_trips(trades, self.multiplier, last_close=float(equity["close"].iloc[-1]), last_ts=last)
        row = {k: v for k, v in self.run.row.items() if k not in _IDENTITY}
        raw = {**row, "initial_capital": self.capital, "first": first.date(), "last": last.date(),
               "bars": len(equity), "multiplier": self.multiplier}
        if self.metrics is not None:
            raw.update(self.metrics.as_dict())
        raw.update({f"trades_{k}": v for k, v in trade_stats(trades, trips).items()})
        return raw


def backtest_run_report(run: StoredRun, workspace: Workspace, *, now: dt.datetime | None = None) -> RunReport:
    """Metrics and provenance of ``run``; ``now`` (UTC) stamps "report written".

    The market is resolved in the trader's workspace, user markets included.
    """
    try:
        multiplier: float | None = float(workspace.market(run.root).multiplier)
    except FbtError:
        multiplier = None  # market no longer in the catalogue: trade P&L in points
    equity, row = run.equity, run.row
    curve = equity.set_index("ts")["equity"].astype(float)
    warning = None
    try:
        m: RiskMetrics | None = risk_metrics(curve)
    except ValueError as exc:  # e.g. equity at or below zero
        m, warning = None, f"no risk metrics: {exc}"
    net_pnl = float(row["net_pnl"])
    capital = float(row["final_equity"]) - net_pnl

    def pct(name: str) -> str:
        return "n/a" if m is None else f"{getattr(m, name):.2%}"

    def num(name: str) -> str:
        return "n/a" if m is None else f"{getattr(m, name):.2f}"

    shown = {
        "Net P&L (after costs)": f"{net_pnl:,.2f} USD", "Final equity": f"{float(row['final_equity']):,.0f} USD",
        "Total return": pct("total_return"), "CAGR": pct("cagr"), "Annual vol": pct("annual_vol"),
        "Sharpe": num("sharpe"), "Sortino": num("sortino"), "Calmar": num("calmar"),
        "Max drawdown": pct("max_drawdown"),
        "Max drawdown duration": "n/a" if m is None else f"{m.max_drawdown_duration} sessions",
        "VaR 95 / 99 (1d)": f"{pct('var_95')} / {pct('var_99')}",
        "CVaR 95 / 99 (1d)": f"{pct('cvar_95')} / {pct('cvar_99')}",
    }
    params = row["params"]
    try:
        params = ", ".join(f"{k}={v:g}" for k, v in json.loads(params).items()) or "-"
    except (TypeError, ValueError, AttributeError):
        pass
    first, last = pd.Timestamp(equity["ts"].iloc[0]), pd.Timestamp(equity["ts"].iloc[-1])
    written = now if now is not None else dt.datetime.now(dt.UTC)
    provenance = {
        "run id (MLflow)": run.run_id, "strategy": run.strategy, "parameters": params, "market": run.root,
        "engine": row.get("engine", "-"), "bars": f"{first.date()} .. {last.date()} ({len(equity):,})",
        "initial capital": f"{capital:,.0f} USD", "data version": row.get("data_version", "-"),
        **{label: str(row[key]) for key, label in _IDENTITY.items() if label and pd.notna(row.get(key))},
        "report written": written.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    title = f"{run.strategy} on {run.root} ({run.source} {run.run_id})"
    return RunReport(run, title, shown, provenance, m, multiplier, capital, warning)


@dataclass(frozen=True)
class RunReportFiles:
    """Files written for one run: HTML tear sheet, PDF and page count, CSVs.

    The PDF and its page count when asked; the CSVs by name, when asked.
    """

    html: Path
    pdf: Path | None = None
    pdf_pages: int = 0
    csv: Mapping[str, Path] = field(default_factory=dict)


def write_run_report(report: RunReport, folder: Path, *, pdf: bool = False, csv: bool = False) -> RunReportFiles:
    """Write ``folder/RUN_ID.html`` and, when asked, the PDF and CSVs.

    The HTML has its plotly bundle beside it; with ``pdf``
    ``folder/RUN_ID.pdf`` (static charts, one topic per page); with ``csv``
    ``folder/RUN_ID/{equity,trades,metrics}.csv``.
    """
    run = report.run
    html = write_tear_sheet(folder / f"{run.run_id}.html", report.title, run.equity, report.shown,
                            pd.Series({run.root: float(run.row["net_pnl"])}), report.provenance, trades=run.trades,
                            multiplier=report.multiplier, rolls={run.root: run.rolls})
    pdf_path, pages = None, 0
    if pdf:
        from fbt_pipelines.reports.pdf import write_pdf

        pdf_path, pages = write_pdf(folder / f"{run.run_id}.pdf", report.title, run.equity, report.shown,
                                    report.provenance, trades=run.trades, multiplier=report.multiplier)
    files = export_csv(folder / run.run_id, run.equity, run.trades, report.raw_metrics()) if csv else {}
    return RunReportFiles(html, pdf_path, pages, files)


# --- the portfolio's tear sheet ----------------------------------------------------------------------


@dataclass(frozen=True)
class PortfolioSheet:
    """What the portfolio's tear sheet reads: book, risk report and backtest runs.

    The stored portfolio book (equity, positions; USD), its ``risk_report``
    row and the single-market backtest runs (for the per-strategy attribution);
    ``rolls``: each book market's stored roll schedule inside the book's window.
    """

    portfolio: str
    equity: pd.DataFrame
    positions: pd.DataFrame
    report: Mapping[str, Any]
    runs: pd.DataFrame
    rolls: Mapping[str, pd.DataFrame] = field(default_factory=dict)


def read_portfolio_sheet(conn, portfolio: str = PORTFOLIO) -> PortfolioSheet:
    """The portfolio's book, risk report row and the backtest runs from the warehouse."""
    equity = wh.read_partition(conn, "portfolio_equity", portfolio, order_by=["ts"])
    positions = wh.read_partition(conn, "portfolio_positions", portfolio)
    report = wh.read_partition(conn, "risk_report", portfolio)
    if equity.empty or report.empty:
        raise DataError(f"portfolio {portfolio!r} has no book or no risk report: materialize portfolio and risk_report")
    runs = wh.read_table(conn, "backtest_runs")
    first, last = equity["ts"].iloc[0], equity["ts"].iloc[-1]
    rolls = {str(root): read_rolls(conn, str(root), first, last)
             for root in (positions["root"].unique() if len(positions) else [])}
    return PortfolioSheet(portfolio, equity, positions, report.iloc[0].to_dict(), runs, rolls)


def write_portfolio_tear_sheet(sheet: PortfolioSheet, path: Path, *, code_version: str, run_id: str) -> Path:
    """Write the portfolio's HTML tear sheet at ``path``.

    Equity, drawdown, Monte Carlo bands, the risk table, P&L by market (USD),
    the correlation of the markets' daily P&L, net P&L by strategy and market
    from the single-market backtests, provenance (``run_id``: the run writing
    it), and every roll of each market with its trigger, gap and cost.
    """
    equity, positions, report, runs = sheet.equity, sheet.positions, sheet.report, sheet.runs
    pnl = positions.groupby("root")["pnl"].sum()
    corr = correlation_matrix(positions.pivot_table(index="ts", columns="root", values="pnl", aggfunc="sum"))
    by_strategy = (runs.pivot_table(index="root", columns="strategy", values="net_pnl", aggfunc="sum")
                   if len(runs) else None)
    metrics = {
        "CAGR": f"{report['cagr']:.2%}", "Annual vol": f"{report['annual_vol']:.2%}",
        "Sharpe": f"{report['sharpe']:.2f}", "Sortino": f"{report['sortino']:.2f}",
        "Max drawdown": f"{report['max_drawdown']:.2%}",
        "VaR 95 / 99 (1d)": f"{report['var_95']:.2%} / {report['var_99']:.2%}",
        "CVaR 95 / 99 (1d)": f"{report['cvar_95']:.2%} / {report['cvar_99']:.2%}",
        "Final equity": f"{equity['equity'].iloc[-1]:,.0f} USD",
    }
    provenance = {"portfolio": sheet.portfolio, "data version": report["data_version"], "code version": code_version,
                  "run id": run_id}
    return write_tear_sheet(path, "fbt portfolio tear sheet", equity, metrics, pnl, provenance, correlation=corr,
                            strategy_pnl=by_strategy, rolls=sheet.rolls,
                            strategy_pnl_title="Single-market backtests: net P&L by strategy and market "
                                               "(USD, after costs)")
