"""Tiny inline SVG line charts for Dagster metadata (no plotting dependency).

``svg_lines`` draws a few series on one shared y axis; ``markdown_image`` wraps
the SVG as a data URI so a Markdown metadata value shows it in the UI.
"""

from __future__ import annotations

import base64
from typing import Mapping, Sequence

import numpy as np

PALETTE = ["#2c7fb8", "#d95f0e", "#31a354", "#756bb1"]


def svg_lines(series: Mapping[str, Sequence[float]], width: int = 480, height: int = 140, max_points: int = 400) -> str:
    """SVG with one polyline per series, a legend and the y range.

    Each series is downsampled to ``max_points``.
    """
    arrays = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()]) if arrays else np.array([])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo or 1.0
    pad = 18
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for k, (name, a) in enumerate(arrays.items()):
        n = len(a)
        idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).astype(int)) if n else np.array([], dtype=int)
        pts = [f"{pad + (width - 2 * pad) * i / max(n - 1, 1):.1f},"
               f"{height - pad - (height - 2 * pad) * (a[i] - lo) / span:.1f}" for i in idx if np.isfinite(a[i])]
        color = PALETTE[k % len(PALETTE)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{" ".join(pts)}"/>')
        parts.append(f'<text x="{pad + 90 * k}" y="12" fill="{color}">{name}</text>')
    parts.append(f'<text x="{width - pad}" y="12" text-anchor="end" fill="#555">{hi:,.2f}</text>')
    parts.append(f'<text x="{width - pad}" y="{height - 4}" text-anchor="end" fill="#555">{lo:,.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def markdown_image(svg: str, alt: str) -> str:
    return f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"


def svg_bars(values: Mapping[str, float], width: int = 480, bar_height: int = 18) -> str:
    """Horizontal bar chart (one labelled bar per key), zero line, negatives red."""
    items = [(k, float(v)) for k, v in values.items()]
    lo = min([0.0] + [v for _, v in items])
    hi = max([0.0] + [v for _, v in items])
    span = (hi - lo) or 1.0
    label_w, pad = 130, 10
    plot_w = width - label_w - 2 * pad
    height = pad * 2 + bar_height * len(items)
    x0 = label_w + pad + plot_w * (0 - lo) / span
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="10"><rect width="{width}" height="{height}" fill="white"/>']
    for i, (name, v) in enumerate(items):
        y = pad + i * bar_height
        x = label_w + pad + plot_w * (min(v, 0) - lo) / span
        w = plot_w * abs(v) / span
        color = "#c0392b" if v < 0 else "#27ae60"
        parts.append(f'<text x="{label_w}" y="{y + 12}" text-anchor="end">{name}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{bar_height - 4}" fill="{color}"/>')
        parts.append(f'<text x="{x + w + 3 if v >= 0 else x - 3:.1f}" y="{y + 12}" '
                     f'text-anchor="{"start" if v >= 0 else "end"}">{v:.2f}</text>')
    parts.append(f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{pad}" y2="{height - pad}" stroke="#555"/></svg>')
    return "".join(parts)
