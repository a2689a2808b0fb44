"""Hand-written SVG charts with dated axes for asset metadata (no plotting library).

``equity_drawdown_svg``: one or more equity curves (USD) on a dated x axis
with their drawdowns (% below the running peak) in a panel below, each
series' worst drawdown marked. ``heatmap_svg``: a value (e.g. Sharpe) over two
parameters (e.g. fast x slow) as coloured cells with a colour bar. Both are
about 720 px wide; wrap them with
:func:`fbt_pipelines.reports.sparkline.markdown_image` for Markdown metadata.

Time stamps are shown in UTC. X ticks: a label per calendar year (centred on
the year's part of the range, a grid line on 1 January) for ranges of two
years or more (every 2nd/5th/10th year on 1 January when years are too
narrow), month starts for shorter ranges, days under two months. Each tick
``<text>`` carries ``data-ts`` or ``data-value``, and each plot area is a
``<rect class="plot-area">``, so tests can map pixels back to data.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
#: viridis (matplotlib) at 0, 1/8, ..., 1: lightness rises with the value
VIRIDIS = ["#440154", "#472c7a", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]
NAN_FILL = "#dddddd"
_NS_PER_DAY = 86_400 * 10**9


def _utc(ts: Sequence | pd.Series | pd.DatetimeIndex) -> pd.DatetimeIndex:
    t = pd.DatetimeIndex(pd.to_datetime(ts))
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    return t.as_unit("ns")


def _unsigned(text: str) -> str:
    """``text`` without the minus of a signed zero (``-0.0%`` -> ``0.0%``)."""
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text


def _decimals(step: float) -> int:
    """Fewest decimals (at most 6) that print ``step`` exactly (0.25 -> 2, 5 -> 0)."""
    return next((d for d in range(7) if abs(round(step, d) - step) <= 1e-9 * max(abs(step), 1.0)), 6)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (steps 1, 2, 2.5 or 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def money_label(v: float, step: float) -> str:
    """A compact USD tick label: ``1.25M``, ``950k``, ``-40k``, ``500``."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1.0, "")):
        if max(abs(v), step) >= scale or scale == 1.0:
            decimals = _decimals(step / scale)
            text = f"{v / scale:,.{decimals}f}{suffix}"
            return "0" if v == 0 else _unsigned(text)
    return f"{v:,.0f}"  # pragma: no cover - the loop always returns


def percent_label(v: float, step: float) -> str:
    """A fraction as a percent tick label: -0.15 -> ``-15%`` (decimals per ``step``)."""
    decimals = _decimals(100 * step)
    return _unsigned(f"{100 * v:.{decimals}f}%")


def time_ticks(start: pd.Timestamp, end: pd.Timestamp, width: float) -> tuple[list, list]:
    """Grid lines and labels of a dated axis ``width`` px wide over [start, end] (UTC).

    Returns (grid, labels): ``grid`` the time stamps of the grid lines,
    ``labels`` (time stamp where the label is centred, text, kind) with kind
    ``year`` (centred on the year's part of the range), ``tick`` (on a grid
    line).
    """
    span = max((end - start).value, 1)
    px_per_day = width * _NS_PER_DAY / span
    days = span / _NS_PER_DAY
    if days >= 2 * 365:
        years = list(range(start.year, end.year + 1))
        jan1 = [pd.Timestamp(year=y, month=1, day=1, tz="UTC") for y in years]
        if px_per_day * 365.25 >= 36:
            grid = [t for t in jan1 if start < t <= end]
            labels = []
            for y, t in zip(years, jan1):
                a, b = max(t, start), min(pd.Timestamp(year=y + 1, month=1, day=1, tz="UTC"), end)
                if (b - a).value * width / span >= 28:  # room for "2017"
                    labels.append((a + (b - a) / 2, str(y), "year"))
            return grid, labels
        step = next(k for k in (2, 5, 10, 20, 50) if px_per_day * 365.25 * k >= 36)
        grid = [t for t in jan1 if start <= t <= end and t.year % step == 0]
        return grid, [(t, str(t.year), "tick") for t in grid]
    if days >= 60:
        step = next(k for k in (1, 2, 3, 6) if px_per_day * 30.4 * k >= 56)
        months = pd.date_range(start.normalize().replace(day=1), end, freq="MS")
        grid = [t for t in months if start <= t <= end and (t.month - 1) % step == 0]
        return grid, [(t, f"{t:%b %Y}", "tick") for t in grid]
    step = next(k for k in (1, 2, 7, 14, 28) if px_per_day * k >= 44)
    day_grid = pd.date_range(start.normalize(), end, freq=f"{step}D")
    grid = [t for t in day_grid if start <= t <= end]
    return grid, [(t, f"{t:%d %b}", "tick") for t in grid]


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Fraction below the running peak (0 at a new high, -0.2 = 20 % down; NaN kept)."""
    eq = np.asarray(equity, dtype=float)
    peak = np.fmax.accumulate(np.where(np.isfinite(eq), eq, -np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(np.isfinite(eq) & (peak > 0), eq / peak - 1.0, np.nan)
    return dd


def _sample(values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ~``max_points`` evenly spaced points plus each extreme."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    idx = np.linspace(0, n - 1, max_points).astype(int)
    finite = np.isfinite(values)
    extra = [int(np.nanargmin(values)), int(np.nanargmax(values))] if finite.any() else []
    return np.unique(np.concatenate([idx, extra]).astype(int))


class _Scale:
    """A linear map of data to pixels."""

    def __init__(self, d0: float, d1: float, p0: float, p1: float) -> None:
        self.d0, self.d1, self.p0, self.p1 = d0, d1, p0, p1

    def __call__(self, v):
        span = self.d1 - self.d0
        if span == 0:
            return (self.p0 + self.p1) / 2 + 0 * np.asarray(v, dtype=float)
        return self.p0 + (self.p1 - self.p0) * (np.asarray(v, dtype=float) - self.d0) / span


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text class="title" x="{width / 2:.0f}" y="15" text-anchor="middle" font-size="13" '
            f'font-weight="bold">{escape(title)}</text>']


def _y_axis(parts: list[str], ticks: list[float], scale: _Scale, left: float, right: float,
            label, axis_title: str, panel_mid: float) -> None:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for v in ticks:
        y = float(scale(v))
        parts.append(f'<line class="ygrid" x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e5e5e5"/>')
        parts.append(f'<text class="ytick" data-value="{v!r}" x="{left - 4:.1f}" y="{y + 4:.1f}" '
                     f'text-anchor="end" fill="#444">{escape(label(v, step))}</text>')
    parts.append(f'<text class="axis-title" x="12" y="{panel_mid:.1f}" text-anchor="middle" fill="#444" '
                 f'transform="rotate(-90 12 {panel_mid:.1f})">{escape(axis_title)}</text>')


def equity_drawdown_svg(ts: Sequence | pd.Series | pd.DatetimeIndex,
                        equity: Sequence[float] | Mapping[str, Sequence[float]], *, title: str = "Equity and drawdown",
                        width: int = 720, max_points: int = 700) -> str:
    """Equity (USD) of one or more series over dated ``ts`` (UTC), drawdowns below.

    ``equity``: one array, or name -> array, each as long as ``ts``. The top
    panel draws the equity lines on a USD axis; the bottom panel the drawdown
    (% below the running peak; an area for a single series, lines for several)
    with each series' worst point marked (``<circle class="worst">`` with
    ``data-ts`` and ``data-value``, a fraction) and named in a caption.
    Series are downsampled to ``max_points`` points (extremes kept).
    """
    t = _utc(ts)
    series = {"equity": equity} if not isinstance(equity, Mapping) else dict(equity)
    arrays = {str(k): np.asarray(v, dtype=float) for k, v in series.items()}
    for name, a in arrays.items():
        if len(a) != len(t):
            raise ValueError(f"equity series {name!r} has {len(a)} values for {len(t)} time stamps")
    if len(t) == 0:
        raise ValueError("no time stamps to chart")
    dds = {k: drawdown(a) for k, a in arrays.items()}

    left, right, top = 70, width - 16, 44
    eq_h, gap, dd_h = 200, 16, 100
    eq_top, dd_top = top, top + eq_h + gap
    height = dd_top + dd_h + 56
    x = _Scale(float(t[0].value), float(t[-1].value), left, right)
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
    eq_ticks = nice_ticks(float(finite.min()), float(finite.max())) if finite.size else nice_ticks(0, 1)
    y_eq = _Scale(eq_ticks[0], eq_ticks[-1], eq_top + eq_h, eq_top)
    dd_all = np.concatenate([d[np.isfinite(d)] for d in dds.values()])
    dd_lo = max(float(dd_all.min()), -1.0) if dd_all.size else 0.0
    dd_ticks = [v for v in nice_ticks(min(dd_lo, -0.01), 0.0, 4) if v <= 0]
    y_dd = _Scale(dd_ticks[0], 0.0, dd_top + dd_h, dd_top)

    parts = _svg_open(width, height, title)
    lx = float(left)
    for k, name in enumerate(arrays):  # legend
        color = PALETTE[k % len(PALETTE)]
        parts.append(f'<line x1="{lx}" x2="{lx + 14}" y1="30" y2="30" stroke="{color}" stroke-width="2"/>'
                     f'<text class="legend" x="{lx + 18}" y="34" fill="{color}">{escape(name)}</text>')
        lx += 34 + 6.5 * len(name)
    parts.append('<g class="panel" id="equity">')
    parts.append(f'<rect class="plot-area" x="{left}" y="{eq_top}" width="{right - left}" height="{eq_h}" '
                 f'fill="none" stroke="#bbbbbb"/>')
    _y_axis(parts, eq_ticks, y_eq, left, right, money_label, "equity (USD)", eq_top + eq_h / 2)
    parts.append('</g><g class="panel" id="drawdown">')
    parts.append(f'<rect class="plot-area" x="{left}" y="{dd_top}" width="{right - left}" height="{dd_h}" '
                 f'fill="none" stroke="#bbbbbb"/>')
    _y_axis(parts, dd_ticks, y_dd, left, right, percent_label, "drawdown", dd_top + dd_h / 2)
    parts.append('</g>')

    grid, labels = time_ticks(t[0], t[-1], right - left)
    for g in grid:
        gx = float(x(float(g.value)))
        for y0, y1 in ((eq_top, eq_top + eq_h), (dd_top, dd_top + dd_h)):
            parts.append(f'<line class="xgrid" data-ts="{g:%Y-%m-%d}" x1="{gx:.1f}" x2="{gx:.1f}" '
                         f'y1="{y0}" y2="{y1}" stroke="#e5e5e5"/>')
    for when, text, kind in labels:
        lx = float(x(float(when.value)))
        parts.append(f'<text class="xtick" data-kind="{kind}" data-ts="{when:%Y-%m-%d}" x="{lx:.1f}" '
                     f'y="{dd_top + dd_h + 15}" text-anchor="middle" fill="#444">{escape(text)}</text>')
    parts.append(f'<text class="axis-title" x="{(left + right) / 2:.0f}" y="{dd_top + dd_h + 30}" '
                 f'text-anchor="middle" fill="#444">date (UTC), {t[0]:%Y-%m-%d} .. {t[-1]:%Y-%m-%d}</text>')

    tx = x(t.asi8.astype(float))
    worst_caption = []
    for k, (name, a) in enumerate(arrays.items()):
        color = PALETTE[k % len(PALETTE)]
        idx = _sample(a, max_points)
        pts = " ".join(f"{tx[i]:.1f},{float(y_eq(a[i])):.1f}" for i in idx if np.isfinite(a[i]))
        parts.append(f'<polyline class="equity" data-name={quoteattr(name)} fill="none" stroke="{color}" '
                     f'stroke-width="1.4" points="{pts}"/>')
        d = np.maximum(dds[name], -1.0)
        idx = _sample(d, max_points)
        dpts = [f"{tx[i]:.1f},{float(y_dd(d[i])):.1f}" for i in idx if np.isfinite(d[i])]
        if len(arrays) == 1 and dpts:
            zero = float(y_dd(0.0))
            first, last = dpts[0].split(",")[0], dpts[-1].split(",")[0]
            parts.append(f'<polygon class="drawdown-area" fill="{color}" fill-opacity="0.25" stroke="none" '
                         f'points="{first},{zero:.1f} {" ".join(dpts)} {last},{zero:.1f}"/>')
        parts.append(f'<polyline class="drawdown" data-name={quoteattr(name)} fill="none" stroke="{color}" '
                     f'stroke-width="1" points="{" ".join(dpts)}"/>')
        if np.isfinite(d).any():
            w = int(np.nanargmin(d))
            parts.append(f'<circle class="worst" data-name={quoteattr(name)} data-ts="{t[w]:%Y-%m-%d}" '
                         f'data-value="{float(d[w])!r}" cx="{tx[w]:.1f}" cy="{float(y_dd(d[w])):.1f}" r="3" '
                         f'fill="{color}" stroke="white"/>')
            worst_caption.append((float(d[w]), name, t[w]))
    if worst_caption:
        v, name, when = min(worst_caption, key=lambda c: c[0])
        who = f"{name}: " if len(arrays) > 1 else ""
        parts.append(f'<text class="caption" x="{right}" y="{dd_top + dd_h + 46}" text-anchor="end" '
                     f'fill="#444">worst drawdown {escape(who)}{percent_label(v, 0.001)} on {when:%Y-%m-%d}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(round(c)):02x}" for c in rgb)


def colour_scale(fraction: float) -> str:
    """Viridis colour at ``fraction`` in [0, 1] (clipped), linear between its 9 anchors."""
    f = min(max(float(fraction), 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(f), len(VIRIDIS) - 2)
    a = np.array([int(VIRIDIS[i][j:j + 2], 16) for j in (1, 3, 5)], dtype=float)
    b = np.array([int(VIRIDIS[i + 1][j:j + 2], 16) for j in (1, 3, 5)], dtype=float)
    return _hex(a + (b - a) * (f - i))


def _value_text(v: float) -> str:
    return f"{v:g}" if float(v).is_integer() else f"{v:.4g}"


def heatmap_svg(frame: pd.DataFrame, x: str, y: str, value: str, *, title: str | None = None,
                width: int = 720, value_format: str = ".2f", max_labelled: int = 150) -> str:
    """``value`` over ``x`` (columns) x ``y`` (rows, rising upwards) as coloured cells.

    Colours follow viridis from the lowest value (dark purple) to the highest
    (yellow), with a colour bar; a missing or NaN cell is grey. Several rows
    of ``frame`` with the same (x, y) keep the highest value (the caption says
    so). Cells are labelled with their value when there are at most
    ``max_labelled`` and they are wide enough. Each cell is a ``<rect
    class="cell">`` with ``data-x``, ``data-y`` and ``data-value``.
    """
    missing = [c for c in (x, y, value) if c not in frame.columns]
    if missing:
        raise ValueError(f"heat map: no column {', '.join(missing)} (columns: {list(frame.columns)})")
    if frame.empty:
        raise ValueError("heat map: no rows")
    data = frame[[x, y, value]].astype(float)
    repeated = bool(data.duplicated([x, y]).any())
    grid = data.groupby([y, x])[value].max().unstack(x)  # NaN-only groups stay NaN
    xs, ys = list(grid.columns), list(grid.index)
    vals = grid.to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)

    left, top, legend_w = 70, 40, 96
    plot_w = width - left - legend_w
    cell_w = plot_w / len(xs)
    cell_h = min(max(cell_w * 0.6, 18.0), 40.0)
    plot_h = cell_h * len(ys)
    height = int(top + plot_h + 56 + (16 if repeated else 0))
    text = title or f"{value} by {x} x {y}"
    parts = _svg_open(width, height, text)
    labelled = len(xs) * len(ys) <= max_labelled and cell_w >= 30 and cell_h >= 14
    for r, yv in enumerate(ys):
        cy = top + plot_h - (r + 1) * cell_h  # the lowest y at the bottom
        parts.append(f'<text class="ytick" data-value="{yv!r}" x="{left - 6}" y="{cy + cell_h / 2 + 4:.1f}" '
                     f'text-anchor="end" fill="#444">{_value_text(yv)}</text>')
        for c, xv in enumerate(xs):
            v = float(vals[r, c])
            cx = left + c * cell_w
            frac = (v - lo) / (hi - lo) if hi > lo else 0.5
            fill = colour_scale(frac) if math.isfinite(v) else NAN_FILL
            parts.append(f'<rect class="cell" data-x="{xv!r}" data-y="{yv!r}" data-value="{v!r}" x="{cx:.1f}" '
                         f'y="{cy:.1f}" width="{cell_w:.1f}" height="{cell_h:.1f}" fill="{fill}" stroke="white"/>')
            if labelled:
                ink = "#000000" if (not math.isfinite(v) or frac > 0.55) else "#ffffff"
                label = _unsigned(format(v, value_format)) if math.isfinite(v) else "n/a"
                parts.append(f'<text class="cell-label" x="{cx + cell_w / 2:.1f}" y="{cy + cell_h / 2 + 4:.1f}" '
                             f'text-anchor="middle" fill="{ink}">{label}</text>')
    for c, xv in enumerate(xs):
        parts.append(f'<text class="xtick" data-value="{xv!r}" x="{left + (c + 0.5) * cell_w:.1f}" '
                     f'y="{top + plot_h + 15:.1f}" text-anchor="middle" fill="#444">{_value_text(xv)}</text>')
    parts.append(f'<text class="axis-title" x="{left + plot_w / 2:.0f}" y="{top + plot_h + 32:.0f}" '
                 f'text-anchor="middle" fill="#444">{escape(x)}</text>')
    mid = top + plot_h / 2
    parts.append(f'<text class="axis-title" x="14" y="{mid:.1f}" text-anchor="middle" fill="#444" '
                 f'transform="rotate(-90 14 {mid:.1f})">{escape(y)}</text>')
    if repeated:
        parts.append(f'<text class="caption" x="{left}" y="{top + plot_h + 48:.0f}" fill="#444">'
                     f'each cell: the highest {escape(value)} of its sets</text>')
    # colour bar: top = highest value
    bx, bw = width - legend_w + 22, 14
    stops = "".join(f'<stop offset="{k / (len(VIRIDIS) - 1):.3f}" stop-color="{c}"/>'
                    for k, c in enumerate(reversed(VIRIDIS)))
    parts.append(f'<defs><linearGradient id="scale" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>')
    parts.append(f'<rect class="colour-bar" x="{bx}" y="{top}" width="{bw}" height="{plot_h:.1f}" fill="url(#scale)"/>')
    for v, yy in ((hi, top + 8), ((lo + hi) / 2, top + plot_h / 2 + 4), (lo, top + plot_h)):
        parts.append(f'<text class="legend" data-value="{v!r}" x="{bx + bw + 4}" y="{yy:.1f}" fill="#444">'
                     f'{_unsigned(format(v, value_format))}</text>')
    parts.append(f'<text class="legend-title" x="{bx}" y="{top - 8}" fill="#444">{escape(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)
