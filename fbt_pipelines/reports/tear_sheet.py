"""Self-contained HTML tear sheet (plotly; the JS bundle sits beside the file).

The page works offline: ``plotly.min.js`` is written next to the HTML once and
referenced relatively, so several reports share one bundle.

Sections: risk and provenance tables; equity and drawdown; Monte Carlo bands
(the curve's own daily returns resampled by stationary bootstrap); monthly
returns heat map; rolling Sharpe and volatility; net P&L by market; when
given, the correlation heat map of the markets' daily P&L and the per-strategy
attribution (net P&L by strategy and market); and, when a trades frame is
given, trade analysis (round-trip P&L distribution, holding times, win rate,
best / worst, roll costs vs other costs); when roll schedules are given, the
"Rolls" section: every roll of each market, why it happened, its gap and cost.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from fbt_pipelines.reports.analytics import (
    margin_call_dates,
    monte_carlo_bands,
    monthly_returns,
    rolling_sharpe,
    rolling_vol,
    round_trips,
    trade_stats,
)
from fbt_pipelines.reports.roll_table import roll_table

__all__ = [
    "BUNDLE", "attribution_figure", "correlation_figure", "equity_drawdown_figure", "market_pnl_figure",
    "monte_carlo_figure", "monthly_returns", "monthly_returns_figure", "rolling_figure", "rolling_sharpe",
    "rolls_section", "trade_figures", "write_tear_sheet",
]

BUNDLE = "plotly.min.js"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_MARGIN = {"l": 60, "r": 20, "t": 50, "b": 40}


def equity_drawdown_figure(equity: pd.DataFrame, title: str) -> go.Figure:
    """Equity (USD) above, drawdown (% from peak) below, shared time axis."""
    eq = equity.set_index("ts")["equity"]
    dd = eq / eq.cummax() - 1.0
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.04,
                        subplot_titles=("Equity (USD)", "Drawdown"))
    fig.add_trace(go.Scatter(x=eq.index, y=eq.values, name="equity", line={"width": 1.5}), row=1, col=1)
    fig.add_trace(go.Scatter(x=dd.index, y=dd.values, name="drawdown", fill="tozeroy",
                             line={"width": 1, "color": "#c0392b"}), row=2, col=1)
    fig.update_yaxes(tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_layout(title=title, height=560, showlegend=False, margin={"l": 60, "r": 20, "t": 60, "b": 40})
    return fig


def market_pnl_figure(pnl_by_market: pd.Series) -> go.Figure:
    s = pnl_by_market.sort_values()
    fig = go.Figure(go.Bar(x=s.values, y=s.index, orientation="h",
                           marker_color=["#c0392b" if v < 0 else "#27ae60" for v in s.values]))
    fig.update_layout(title="Net P&L by market (USD, after costs)", height=320,
                      xaxis_tickformat=",.0f", margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def monte_carlo_figure(equity: pd.Series, bands: pd.DataFrame, n_paths: int) -> go.Figure:
    """The equity curve (USD) inside the 5-95% and 25-75% bands of resampled paths, median dashed."""
    fig = go.Figure()
    band_style = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False}
    for lo, hi, color, name in [("q05", "q95", "rgba(44,127,184,0.15)", "5-95%"),
                                ("q25", "q75", "rgba(44,127,184,0.30)", "25-75%")]:
        fig.add_trace(go.Scatter(x=bands.index, y=bands[lo], **band_style))
        fig.add_trace(go.Scatter(x=bands.index, y=bands[hi], fill="tonexty", fillcolor=color, name=name,
                                 mode="lines", line={"width": 0}))
    fig.add_trace(go.Scatter(x=bands.index, y=bands["q50"], name="median path",
                             line={"width": 1, "dash": "dash", "color": "#2c7fb8"}))
    fig.add_trace(go.Scatter(x=equity.index, y=equity.values, name="actual", line={"width": 1.5, "color": "#222"}))
    fig.update_layout(title=f"Monte Carlo: {n_paths:,} stationary-bootstrap paths of the daily returns (USD)",
                      height=420, yaxis_tickformat=",.0f", margin=_MARGIN, legend={"orientation": "h", "y": -0.12})
    return fig


def correlation_figure(corr: pd.DataFrame, title: str = "Correlation of daily P&L") -> go.Figure:
    """Heat map of a correlation matrix (-1..1), each cell labelled."""
    z = corr.to_numpy(float)
    text = [["" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=list(corr.columns), y=list(corr.index), text=text, texttemplate="%{text}",
                               colorscale="RdBu", reversescale=True, zmin=-1.0, zmax=1.0, xgap=2, ygap=2,
                               hovertemplate="%{y} / %{x}: %{z:.2f}<extra></extra>"))
    side = 140 + 40 * len(corr)
    fig.update_layout(title=title, height=max(side, 320), width=max(side + 120, 420), margin=_MARGIN,
                      yaxis={"autorange": "reversed"})
    return fig


def attribution_figure(pnl: pd.DataFrame, title: str) -> go.Figure:
    """Grouped bars: net P&L (USD) of each strategy (bar colour) in each market (x)."""
    fig = go.Figure([go.Bar(name=str(strategy), x=[str(m) for m in pnl.index], y=pnl[strategy].to_numpy(float))
                     for strategy in pnl.columns])
    fig.update_layout(title=title, barmode="group", height=380, yaxis_tickformat=",.0f", margin=_MARGIN,
                      legend={"orientation": "h", "y": -0.15})
    return fig


def monthly_returns_figure(equity: pd.Series) -> go.Figure:
    """Year x month heat map of monthly returns (% of start-of-month equity), plus the year's return."""
    table = monthly_returns(equity)
    year = (1.0 + table.fillna(0.0)).prod(axis=1) - 1.0
    year[table.isna().all(axis=1)] = np.nan
    z = np.column_stack([table.to_numpy(float), year.to_numpy(float)]) * 100.0
    text = [["" if not np.isfinite(v) else f"{v:+.1f}" for v in row] for row in z]
    months = table.to_numpy(float)
    lim = float(np.nanmax(np.abs(months))) * 100.0 if np.isfinite(months).any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=[*MONTHS, "Year"], y=[str(y) for y in table.index], text=text, texttemplate="%{text}",
        colorscale="RdYlGn", zmid=0.0, zmin=-(lim or 1.0), zmax=lim or 1.0, xgap=2, ygap=2,
        hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>", colorbar={"title": "%"}))
    fig.update_layout(title="Monthly returns (% of start-of-month equity)", height=120 + 28 * max(len(table), 2),
                      yaxis={"autorange": "reversed", "type": "category"}, margin=_MARGIN)
    return fig


def rolling_figure(equity: pd.Series, window: int = 126) -> go.Figure:
    """Rolling ``window``-day Sharpe (above) and annualised volatility (below)."""
    sharpe, vol = rolling_sharpe(equity, window), rolling_vol(equity, window)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"Rolling {window}-day Sharpe", f"Rolling {window}-day annualised volatility"))
    fig.add_trace(go.Scatter(x=sharpe.index, y=sharpe.values, name="Sharpe", line={"width": 1.2}), row=1, col=1)
    fig.add_trace(go.Scatter(x=vol.index, y=vol.values, name="volatility", line={"width": 1.2, "color": "#d95f0e"}),
                  row=2, col=1)
    fig.add_hline(y=0.0, line={"width": 0.8, "color": "#888"}, row=1, col=1)
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_layout(title=f"Rolling {window}-day Sharpe and annualised volatility", height=460, showlegend=False,
                      margin={**_MARGIN, "t": 70})
    if sharpe.notna().sum() == 0:
        fig.add_annotation(text=f"fewer than {window} daily returns", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5)
    return fig


def trade_figures(trips: pd.DataFrame, stats: Mapping[str, float], unit: str) -> list[go.Figure]:
    """P&L distribution and holding times of round trips, and roll vs other costs."""
    net = trips["net_pnl"].to_numpy(float)
    colors = np.where(net < 0, "#c0392b", "#27ae60")
    pnl = go.Figure(go.Histogram(x=net, nbinsx=min(max(len(net), 1), 40), marker_color="#2c7fb8")
                    if len(net) > 10 else go.Bar(x=list(range(1, len(net) + 1)), y=net, marker_color=colors))
    pnl.update_layout(title=f"Round-trip net P&L ({unit})", height=320, margin=_MARGIN, bargap=0.05,
                      xaxis_title=unit if len(net) > 10 else "round trip", yaxis_title="count" if len(net) > 10 else unit)
    held = go.Figure(go.Histogram(x=trips["holding_days"].to_numpy(float), nbinsx=30, marker_color="#756bb1"))
    held.update_layout(title="Holding time of round trips (days)", height=320, margin=_MARGIN, bargap=0.05,
                       xaxis_title="calendar days", yaxis_title="count")
    costs = go.Figure(go.Bar(x=["rolls", "other fills"], y=[stats["roll_costs"], stats["other_costs"]],
                             marker_color=["#d95f0e", "#2c7fb8"], text=[f"{stats['roll_costs']:,.0f}",
                                                                         f"{stats['other_costs']:,.0f}"]))
    costs.update_layout(title="Costs (USD): rolls vs other fills", height=320, margin=_MARGIN,
                        yaxis_tickformat=",.0f")
    return [pnl, held, costs]


def _fmt(value: float, kind: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    return {"count": f"{value:,.0f}", "pct": f"{value:.1%}", "money": f"{value:,.2f}", "days": f"{value:,.1f}"}[kind]


def trade_rows(stats: Mapping[str, float], unit: str) -> dict[str, str]:
    """Display rows of :func:`~fbt_pipelines.reports.analytics.trade_stats` (HTML and PDF share them)."""
    return {
        "Fills / rolls": f"{_fmt(stats['fills'], 'count')} / {_fmt(stats['rolls'], 'count')}",
        "Round trips (closed / open)": f"{_fmt(stats['round_trips'], 'count')} / "
                                       f"{_fmt(stats['open_round_trips'], 'count')}",
        "Win rate": _fmt(stats["win_rate"], "pct"),
        f"Best / worst round trip ({unit})": f"{_fmt(stats['best'], 'money')} / {_fmt(stats['worst'], 'money')}",
        f"Average round trip ({unit})": _fmt(stats["average"], "money"),
        "Median holding time (days)": _fmt(stats["median_holding_days"], "days"),
        "Commission / slippage (USD)": f"{_fmt(stats['commission'], 'money')} / {_fmt(stats['slippage'], 'money')}",
        "Roll costs / other costs (USD)": f"{_fmt(stats['roll_costs'], 'money')} / "
                                          f"{_fmt(stats['other_costs'], 'money')}",
        "Exits: stop / target / trailing stop": f"{_fmt(stats.get('stops', 0.0), 'count')} / "
                                                f"{_fmt(stats.get('targets', 0.0), 'count')} / "
                                                f"{_fmt(stats.get('trailing_stops', 0.0), 'count')}",
        "Limit entries filled": _fmt(stats.get("limits", 0.0), "count"),
        "Margin calls": _fmt(stats.get("margin_calls", 0.0), "count"),
    }


def margin_call_row(trades: pd.DataFrame, limit: int = 12) -> str:
    """The dates (UTC) of the margin calls' liquidations, for display ("none" when there were none)."""
    dates = margin_call_dates(trades)
    if not dates:
        return "none"
    shown = ", ".join(f"{d:%Y-%m-%d}" for d in dates[:limit])
    return shown + (f" and {len(dates) - limit} more" if len(dates) > limit else "")


def trade_analysis(trades: pd.DataFrame, equity: pd.DataFrame, multiplier: float | Mapping[str, float] | None
                   ) -> tuple[pd.DataFrame, dict[str, float], str]:
    """(round trips, trade stats, P&L unit) of a run; an open position is marked at the last close."""
    last_close = None
    if "close" in equity.columns and "root" not in trades.columns and len(equity):
        last_close = float(equity["close"].iloc[-1])
    last_ts = pd.Timestamp(equity["ts"].iloc[-1]) if len(equity) else None
    trips = round_trips(trades, multiplier, last_close=last_close, last_ts=last_ts)
    unit = "USD" if multiplier is not None else "points x contracts, before costs"
    return trips, trade_stats(trades, trips), unit


def _trade_section(trades: pd.DataFrame, equity: pd.DataFrame, multiplier: float | Mapping[str, float] | None
                   ) -> tuple[str, list[go.Figure]]:
    trips, stats, unit = trade_analysis(trades, equity, multiplier)
    rows = trade_rows(stats, unit)
    note = ("<p class=\"note\">A round trip runs from flat to flat (a sign flip closes one and opens the next); "
            "an open position is marked at the last close. P&amp;L uses fill prices, slippage included; "
            "net of commission and roll costs.</p>") if multiplier is not None else (
            "<p class=\"note\">No contract multiplier given: round-trip P&amp;L in points x contracts, before costs."
            "</p>")
    rows["Margin calls liquidated on"] = margin_call_row(trades)
    return f"<h2>Trades</h2>{_table(rows)}{note}", trade_figures(trips, stats, unit)


def _table(rows: Mapping[str, object]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _frame_table(frame: pd.DataFrame) -> str:
    """A frame of display strings as an HTML table with a header row."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table class=\"rolls\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def rolls_section(rolls: Mapping[str, pd.DataFrame]) -> str:
    """The "Rolls" section: per market (sorted), every roll as :func:`roll_table` shows it."""
    parts = ["<h2>Rolls</h2>",
             "<p class=\"note\">roll date = the last session (UTC) held in the old contract; the switch is at "
             "its close. Trigger: why the roll happened (volume / open interest in contracts on that session "
             "for the crossover rules). Gap = new close - old close on the roll date, in points and in USD per "
             "contract; roll cost = one contract closed and reopened (2 sides x (commission + 1 tick of "
             "slippage)), USD.</p>"]
    for market in sorted(rolls):
        schedule = rolls[market]
        parts.append(f"<h3>{html.escape(str(market))} ({len(schedule):,} roll{'s' if len(schedule) != 1 else ''})"
                     "</h3>")
        parts.append(_frame_table(roll_table(schedule)) if len(schedule)
                     else "<p class=\"note\">no roll in this window</p>")
    return "".join(parts)


def _mark_margin_calls(fig: go.Figure, equity: pd.DataFrame, dates: list[pd.Timestamp]) -> None:
    """Red markers on the equity curve at each margin call's liquidation (the equity of that session)."""
    curve = equity.set_index("ts")["equity"].astype(float)
    naive = lambda ix: ix.tz_convert("UTC").tz_localize(None) if ix.tz is not None else ix  # noqa: E731
    idx = naive(pd.DatetimeIndex(curve.index)).get_indexer(naive(pd.DatetimeIndex(dates)), method="pad")
    keep = idx >= 0
    fig.add_trace(go.Scatter(x=curve.index[idx[keep]], y=curve.to_numpy()[idx[keep]], mode="markers",
                             name="margin call", marker={"color": "#d62728", "size": 9, "symbol": "x"}))


def write_tear_sheet(
    path: Path,
    title: str,
    equity: pd.DataFrame,
    metrics: Mapping[str, object],
    pnl_by_market: pd.Series,
    provenance: Mapping[str, object],
    *,
    trades: pd.DataFrame | None = None,
    multiplier: float | Mapping[str, float] | None = None,
    rolling_window: int = 126,
    monte_carlo_paths: int = 1000,
    correlation: pd.DataFrame | None = None,
    strategy_pnl: pd.DataFrame | None = None,
    strategy_pnl_title: str = "Net P&L by strategy and market (USD, after costs)",
    rolls: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """Write the tear sheet HTML (and the shared plotly bundle) to ``path``.

    ``equity`` has columns ts, equity (USD) (a ``close`` column, adjusted
    points, marks an open position in the trade analysis); ``metrics`` are
    display-ready values; ``provenance`` lists parameters and the data
    version. ``trades`` (the engine's trade columns) adds the trade analysis;
    ``multiplier`` (USD per point, or per ``root`` when trades carry one)
    puts round-trip P&L in USD. ``rolling_window`` is in sessions.
    ``monte_carlo_paths`` > 0 adds the bootstrap bands (seed 0, mean block 20
    sessions). ``correlation`` (a square matrix, e.g. of the markets' daily
    P&L) adds a heat map when it has at least two rows; ``strategy_pnl``
    (markets x strategies, USD) adds the per-strategy attribution when it has
    at least two strategy columns. ``rolls`` (market -> its stored roll
    schedule) adds the "Rolls" section (:func:`rolls_section`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle = path.parent / BUNDLE
    if not bundle.exists():
        tmp = bundle.with_suffix(".tmp")
        tmp.write_text(get_plotlyjs(), encoding="utf-8")
        tmp.replace(bundle)
    figs = [equity_drawdown_figure(equity, title)]
    if trades is not None and margin_call_dates(trades):
        _mark_margin_calls(figs[0], equity, margin_call_dates(trades))
    notes = []
    curve = equity.set_index("ts")["equity"].astype(float)
    if len(curve) and np.isfinite(curve.to_numpy()).all() and (curve > 0).all():
        if monte_carlo_paths > 0 and len(curve) > 2:
            figs.append(monte_carlo_figure(curve, monte_carlo_bands(curve, monte_carlo_paths), monte_carlo_paths))
        figs += [monthly_returns_figure(curve), rolling_figure(curve, rolling_window)]
    else:
        notes.append("<p class=\"note\">Equity is not strictly positive: Monte Carlo bands, monthly and rolling "
                     "returns are omitted.</p>")
    figs.append(market_pnl_figure(pnl_by_market))
    if correlation is not None and len(correlation) >= 2:
        figs.append(correlation_figure(correlation))
    if strategy_pnl is not None and strategy_pnl.shape[1] >= 2:
        figs.append(attribution_figure(strategy_pnl, strategy_pnl_title))
    body = "\n".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figs)
    trade_html = ""
    if trades is not None:
        section, trade_figs = _trade_section(trades, equity, multiplier)
        charts = "".join(f"<div class=\"cell\">{f.to_html(full_html=False, include_plotlyjs=False)}</div>"
                         for f in trade_figs)
        trade_html = f"{section}<div class=\"grid\">{charts}</div>"
    roll_html = rolls_section(rolls) if rolls else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<script src="{BUNDLE}"></script>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0 24px}}
th,td{{padding:3px 12px;border-bottom:1px solid #ddd;text-align:left}} th{{font-weight:600}} .cols{{display:flex;gap:48px}}
.grid{{display:flex;flex-wrap:wrap;gap:8px}} .cell{{flex:1 1 420px;min-width:0}} .note{{color:#666;font-size:90%}}
table.rolls td{{white-space:nowrap;font-variant-numeric:tabular-nums}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<div class="cols"><div><h2>Risk</h2>{_table(metrics)}</div><div><h2>Provenance</h2>{_table(provenance)}</div></div>
{"".join(notes)}
{body}
{trade_html}
{roll_html}
</body></html>"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
