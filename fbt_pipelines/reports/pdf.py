"""PDF tear sheet with static charts (matplotlib, ``PdfPages``).

The same content as the HTML page, one topic per A4-landscape page:

1. title, the risk table and the provenance table;
2. equity (USD) and drawdown (% from peak);
3. monthly returns heat map (% of start-of-month equity, with the year);
4. rolling Sharpe and annualised volatility;
5. trade statistics and the round-trip P&L / holding-time histograms
   (only when trades are given).

Pages 3 and 4 are left out when the equity is not strictly positive (returns
undefined). Fonts are embedded as TrueType (``pdf.fonttype`` 42) so the text
can be searched and copied. Figures are built on ``matplotlib.figure.Figure``
(no pyplot global state, no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from fbt_pipelines.reports.analytics import monthly_returns, rolling_sharpe, rolling_vol
from fbt_pipelines.reports.tear_sheet import MONTHS, trade_analysis, trade_rows

__all__ = ["write_pdf"]

_A4_LANDSCAPE = (11.69, 8.27)  # inches


def _figure():
    from matplotlib.figure import Figure

    return Figure(figsize=_A4_LANDSCAPE)


def _table(ax, rows: Mapping[str, object], title: str) -> None:
    ax.axis("off")
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    cells = [[str(k), str(v)] for k, v in rows.items()]
    if not cells:
        return
    table = ax.table(cellText=cells, loc="upper left", cellLoc="left", colLoc="left", colWidths=[0.45, 0.55])
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    table.scale(1.0, 1.35)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("#dddddd")
        if col == 0:
            cell.get_text().set_fontweight("bold")


def _summary_page(title: str, metrics: Mapping[str, object], provenance: Mapping[str, object]):
    fig = _figure()
    fig.suptitle(title, fontsize=14, x=0.04, ha="left")
    _table(fig.add_axes((0.04, 0.05, 0.42, 0.82)), metrics, "Risk")
    _table(fig.add_axes((0.52, 0.05, 0.45, 0.82)), provenance, "Provenance")
    return fig


def _equity_page(equity: pd.Series, title: str):
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [7, 3]})
    top.plot(equity.index, equity.to_numpy(float), lw=1.2, color="#1f77b4")
    top.set_title("Equity (USD)", loc="left")
    top.yaxis.set_major_formatter(_thousands())
    top.grid(alpha=0.3)
    dd = equity / equity.cummax() - 1.0
    bottom.fill_between(dd.index, dd.to_numpy(float), 0.0, color="#c0392b", alpha=0.6, lw=0)
    bottom.set_title("Drawdown", loc="left")
    bottom.yaxis.set_major_formatter(_percent())
    bottom.grid(alpha=0.3)
    fig.suptitle(title, fontsize=12, x=0.04, ha="left")
    return fig


def _heatmap_page(equity: pd.Series):
    table = monthly_returns(equity)
    year = (1.0 + table.fillna(0.0)).prod(axis=1) - 1.0
    year[table.isna().all(axis=1)] = np.nan
    z = np.column_stack([table.to_numpy(float), year.to_numpy(float)]) * 100.0
    months = table.to_numpy(float) * 100.0
    lim = float(np.nanmax(np.abs(months))) if np.isfinite(months).any() else 1.0
    fig = _figure()
    ax = fig.add_axes((0.08, 0.06, 0.84, 0.84))
    image = ax.imshow(np.ma.masked_invalid(z), cmap="RdYlGn", vmin=-(lim or 1.0), vmax=lim or 1.0, aspect="auto")
    ax.set_xticks(range(13), [*MONTHS, "Year"])
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    size = 8 if len(table) <= 20 else 6
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if np.isfinite(z[i, j]):
                ax.text(j, i, f"{z[i, j]:+.1f}", ha="center", va="center", fontsize=size)
    fig.colorbar(image, ax=ax, label="%", fraction=0.03)
    ax.set_title("Monthly returns (% of start-of-month equity)", loc="left")
    return fig


def _rolling_page(equity: pd.Series, window: int):
    sharpe, vol = rolling_sharpe(equity, window), rolling_vol(equity, window)
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(sharpe.index, sharpe.to_numpy(float), lw=1.0)
    top.axhline(0.0, color="#888888", lw=0.8)
    top.set_title(f"Rolling {window}-day Sharpe", loc="left")
    top.grid(alpha=0.3)
    bottom.plot(vol.index, vol.to_numpy(float), lw=1.0, color="#d95f0e")
    bottom.set_title(f"Rolling {window}-day annualised volatility", loc="left")
    bottom.yaxis.set_major_formatter(_percent())
    bottom.grid(alpha=0.3)
    if sharpe.notna().sum() == 0:
        top.text(0.5, 0.5, f"fewer than {window} daily returns", transform=top.transAxes, ha="center")
    return fig


def _trades_page(trades: pd.DataFrame, equity: pd.DataFrame, multiplier):
    trips, stats, unit = trade_analysis(trades, equity, multiplier)
    fig = _figure()
    _table(fig.add_axes((0.04, 0.50, 0.55, 0.42)), trade_rows(stats, unit), "Trades")
    pnl_ax = fig.add_axes((0.07, 0.07, 0.40, 0.33))
    held_ax = fig.add_axes((0.56, 0.07, 0.40, 0.33))
    net = trips["net_pnl"].to_numpy(float)
    if len(net):
        pnl_ax.hist(net, bins=min(max(len(net), 1), 40), color="#2c7fb8")
        held_ax.hist(trips["holding_days"].to_numpy(float), bins=30, color="#756bb1")
    pnl_ax.set_title(f"Round-trip net P&L ({unit})", loc="left", fontsize=10)
    held_ax.set_title("Holding time of round trips (calendar days)", loc="left", fontsize=10)
    for ax in (pnl_ax, held_ax):
        ax.grid(alpha=0.3)
    return fig


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}")


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def write_pdf(
    path: Path,
    title: str,
    equity: pd.DataFrame,
    metrics: Mapping[str, object],
    provenance: Mapping[str, object],
    *,
    trades: pd.DataFrame | None = None,
    multiplier: float | Mapping[str, float] | None = None,
    rolling_window: int = 126,
) -> tuple[Path, int]:
    """Write the PDF tear sheet to ``path``; returns (path, number of pages).

    Arguments as :func:`fbt_pipelines.reports.tear_sheet.write_tear_sheet`:
    ``equity`` has columns ts, equity (USD) (and ``close``, adjusted points,
    to mark an open position); ``metrics`` and ``provenance`` are display
    rows. Written to a temporary name and renamed.
    """
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curve = equity.set_index("ts")["equity"].astype(float)
    positive = bool(len(curve)) and bool(np.isfinite(curve.to_numpy()).all()) and bool((curve > 0).all())
    figures = [_summary_page(title, metrics, provenance), _equity_page(curve, title)]
    if positive:
        figures += [_heatmap_page(curve), _rolling_page(curve, rolling_window)]
    if trades is not None:
        figures.append(_trades_page(trades, equity, multiplier))
    tmp = path.with_name(f".{path.name}.tmp")
    with matplotlib.rc_context({"pdf.fonttype": 42, "font.size": 9}):
        with PdfPages(tmp, metadata={"Title": title, "Creator": "fbt"}) as pdf:
            for fig in figures:
                pdf.savefig(fig)
    tmp.replace(path)
    return path, len(figures)
