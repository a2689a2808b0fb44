"""Self-contained HTML tear sheet (plotly; the JS bundle sits beside the file).

The page works offline: ``plotly.min.js`` is written next to the HTML once and
referenced relatively, so several reports share one bundle.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

BUNDLE = "plotly.min.js"


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


def _table(rows: Mapping[str, object]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def write_tear_sheet(
    path: Path,
    title: str,
    equity: pd.DataFrame,
    metrics: Mapping[str, object],
    pnl_by_market: pd.Series,
    provenance: Mapping[str, object],
) -> Path:
    """Write the tear sheet HTML (and the shared plotly bundle) to ``path``.

    ``equity`` has columns ts, equity (USD); ``metrics`` are display-ready
    values; ``provenance`` lists parameters and the data version.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle = path.parent / BUNDLE
    if not bundle.exists():
        tmp = bundle.with_suffix(".tmp")
        tmp.write_text(get_plotlyjs(), encoding="utf-8")
        tmp.replace(bundle)
    figs = [equity_drawdown_figure(equity, title), market_pnl_figure(pnl_by_market)]
    body = "\n".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figs)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<script src="{BUNDLE}"></script>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0 24px}}
th,td{{padding:3px 12px;border-bottom:1px solid #ddd;text-align:left}} th{{font-weight:600}} .cols{{display:flex;gap:48px}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<div class="cols"><div><h2>Risk</h2>{_table(metrics)}</div><div><h2>Provenance</h2>{_table(provenance)}</div></div>
{body}
</body></html>"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
