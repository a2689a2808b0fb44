"""Dated SVG charts for asset metadata (issue 20, item 2), checked against numpy.

Pixels are mapped back to data through the chart's own tick marks (each
``<text class="ytick">`` carries its value) and plot areas, so every check
compares a drawn position with an independent computation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.reports.charts import (colour_scale, equity_drawdown_svg, heatmap_svg, money_label, nice_ticks,
                                          percent_label)

NS = "{http://www.w3.org/2000/svg}"


def _panel(root, name):
    return next(g for g in root.iter(f"{NS}g") if g.get("id") == name)


def _y_of_value(panel):
    """value -> pixel y, fitted through the panel's tick labels (text y is the line's y + 4)."""
    ticks = [(float(t.get("data-value")), float(t.get("y")) - 4) for t in panel.iter(f"{NS}text")
             if t.get("class") == "ytick"]
    (v0, y0), (v1, y1) = ticks[0], ticks[-1]
    return lambda v: y0 + (y1 - y0) * (v - v0) / (v1 - v0)


def _x_of_time(root, t0, t1):
    area = next(r for r in root.iter(f"{NS}rect") if r.get("class") == "plot-area")
    x, w = float(area.get("x")), float(area.get("width"))
    return lambda t: x + w * (t - t0).value / (t1 - t0).value


def _curve():
    ts = pd.bdate_range("2017-01-03", "2019-12-31", tz="UTC")
    rng = np.random.default_rng(7)
    equity = 1_000_000 * np.exp(np.cumsum(rng.normal(0.0002, 0.012, len(ts))))
    return ts, equity


def test_year_labels_are_the_years_of_the_data_centred_on_each_year():
    ts, equity = _curve()
    root = ET.fromstring(equity_drawdown_svg(ts, equity, title="ES"))
    labels = [t for t in root.iter(f"{NS}text") if t.get("class") == "xtick"]
    assert [t.text for t in labels] == sorted({str(y) for y in ts.year}) == ["2017", "2018", "2019"]
    x_of = _x_of_time(root, ts[0], ts[-1])
    # 2018 is wholly inside: its label sits at the middle of 2018-01-01 .. 2019-01-01
    mid_2018 = pd.Timestamp("2018-01-01", tz="UTC") + (pd.Timestamp("2019-01-01", tz="UTC")
                                                      - pd.Timestamp("2018-01-01", tz="UTC")) / 2
    assert float(labels[1].get("x")) == pytest.approx(x_of(mid_2018), abs=0.06)
    grid = {g.get("data-ts"): float(g.get("x1")) for g in root.iter(f"{NS}line") if g.get("class") == "xgrid"}
    assert sorted(grid) == ["2018-01-01", "2019-01-01"]
    assert grid["2019-01-01"] == pytest.approx(x_of(pd.Timestamp("2019-01-01", tz="UTC")), abs=0.06)


def test_worst_drawdown_is_marked_at_its_date_and_depth():
    ts, equity = _curve()
    peak = np.maximum.accumulate(equity)
    dd = equity / peak - 1
    worst = int(np.argmin(dd))
    root = ET.fromstring(equity_drawdown_svg(ts, equity))
    (mark,) = [c for c in root.iter(f"{NS}circle") if c.get("class") == "worst"]
    assert mark.get("data-ts") == f"{ts[worst]:%Y-%m-%d}"
    assert float(mark.get("data-value")) == pytest.approx(dd[worst], rel=1e-12)
    y_of = _y_of_value(_panel(root, "drawdown"))
    assert float(mark.get("cy")) == pytest.approx(y_of(dd[worst]), abs=0.06)
    assert float(mark.get("cx")) == pytest.approx(_x_of_time(root, ts[0], ts[-1])(ts[worst]), abs=0.06)
    caption = next(t.text for t in root.iter(f"{NS}text") if t.get("class") == "caption")
    assert caption == f"worst drawdown {100 * dd[worst]:.1f}% on {ts[worst]:%Y-%m-%d}"
    area = next(p for p in root.iter(f"{NS}polygon") if p.get("class") == "drawdown-area")
    assert area is not None


def test_equity_line_points_map_back_to_the_equity():
    ts, equity = _curve()
    root = ET.fromstring(equity_drawdown_svg(ts, equity, max_points=10_000))
    line = next(p for p in root.iter(f"{NS}polyline") if p.get("class") == "equity")
    pts = np.array([[float(v) for v in p.split(",")] for p in line.get("points").split()])
    assert len(pts) == len(ts)  # no downsampling asked
    y_of = _y_of_value(_panel(root, "equity"))
    assert np.abs(pts[:, 1] - y_of(equity)).max() <= 0.06  # rounding to 0.1 px
    x_of = _x_of_time(root, ts[0], ts[-1])
    assert np.abs(pts[:, 0] - np.array([x_of(t) for t in ts])).max() <= 0.06
    ticks = [float(t.get("data-value")) for t in _panel(root, "equity").iter(f"{NS}text") if t.get("class") == "ytick"]
    assert ticks[0] <= equity.min() and ticks[-1] >= equity.max()


def test_downsampling_keeps_the_extremes():
    ts = pd.date_range("2000-01-01", periods=5000, freq="D", tz="UTC")
    equity = 100.0 + np.sin(np.arange(5000) / 7.0)
    equity[1234] = 50.0  # a one-day crash between evenly spaced samples
    root = ET.fromstring(equity_drawdown_svg(ts, equity, max_points=100))
    line = next(p for p in root.iter(f"{NS}polyline") if p.get("class") == "equity")
    ys = [float(p.split(",")[1]) for p in line.get("points").split()]
    y_of = _y_of_value(_panel(root, "equity"))
    assert max(ys) == pytest.approx(y_of(50.0), abs=0.06)  # the lowest point is drawn (largest y)
    labels = [t.text for t in root.iter(f"{NS}text") if t.get("class") == "xtick"]
    assert labels == [str(y) for y in range(2000, 2014)]  # 13.7 years, 46 px each: every year
    long = pd.date_range("1980-01-01", periods=40 * 365, freq="D", tz="UTC")  # 16 px a year: every 5th
    root = ET.fromstring(equity_drawdown_svg(long, np.linspace(1.0, 2.0, len(long))))
    labels = [t.text for t in root.iter(f"{NS}text") if t.get("class") == "xtick"]
    assert labels == ["1980", "1985", "1990", "1995", "2000", "2005", "2010", "2015"]


def test_several_strategies_each_get_a_line_and_a_worst_mark():
    ts, equity = _curve()
    curves = {"buy_and_hold": equity, "carry": equity[::-1].copy()}
    root = ET.fromstring(equity_drawdown_svg(ts, curves))
    names = [p.get("data-name") for p in root.iter(f"{NS}polyline") if p.get("class") == "equity"]
    assert names == ["buy_and_hold", "carry"]
    marks = {c.get("data-name"): float(c.get("data-value")) for c in root.iter(f"{NS}circle")}
    for name, eq in curves.items():
        assert marks[name] == pytest.approx((eq / np.maximum.accumulate(eq) - 1).min(), rel=1e-12)
    assert [t.text for t in root.iter(f"{NS}text") if t.get("class") == "legend"] == ["buy_and_hold", "carry"]


def test_short_ranges_get_month_ticks():
    ts = pd.bdate_range("2024-01-02", "2024-06-28", tz="UTC")
    root = ET.fromstring(equity_drawdown_svg(ts, np.linspace(100, 120, len(ts))))
    labels = [t.text for t in root.iter(f"{NS}text") if t.get("class") == "xtick"]
    assert labels == ["Feb 2024", "Mar 2024", "Apr 2024", "May 2024", "Jun 2024"]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="'a' has 2 values for 3 time stamps"):
        equity_drawdown_svg(pd.date_range("2024-01-01", periods=3), {"a": [1.0, 2.0]})


def test_tick_helpers():
    # (1.62M - 0.93M) / 5 = 138k -> a step of 200k from floor(0.93M / 200k) = 4 to ceil(1.62M / 200k) = 9
    assert nice_ticks(0.93e6, 1.62e6) == [800_000, 1_000_000, 1_200_000, 1_400_000, 1_600_000, 1_800_000]
    # 0.23 / 4 = 0.0575 -> above 0.05, so the step is 0.1
    assert nice_ticks(-0.23, 0.0, 4) == [-0.3, -0.2, -0.1, 0.0]
    assert [money_label(v, 250_000) for v in (0, 750_000, 1_250_000)] == ["0", "750k", "1.25M"]
    assert [percent_label(v, 0.05) for v in (-0.15, -0.0)] == ["-15%", "0%"]


def _luminance(hex_colour: str) -> float:
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    return float(lin @ [0.2126, 0.7152, 0.0722])


def test_heat_map_colours_follow_the_order_of_the_values():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame([{"fast": f, "slow": s, "sharpe": rng.normal()} for f in (10, 20, 40) for s in (50, 100, 200)])
    root = ET.fromstring(heatmap_svg(frame, "fast", "slow", "sharpe"))
    cells = [r for r in root.iter(f"{NS}rect") if r.get("class") == "cell"]
    assert len(cells) == 9
    by_value = sorted(cells, key=lambda r: float(r.get("data-value")))
    lum = [_luminance(r.get("fill")) for r in by_value]
    assert all(a < b for a, b in zip(lum, lum[1:]))  # strictly brighter with the value
    assert by_value[0].get("fill") == "#440154" and by_value[-1].get("fill") == "#fde725"
    # each cell holds its own (fast, slow) value and is labelled with it
    for r in cells:
        want = frame[(frame["fast"] == float(r.get("data-x"))) & (frame["slow"] == float(r.get("data-y")))]["sharpe"]
        assert float(r.get("data-value")) == want.item()
    labels = sorted(t.text for t in root.iter(f"{NS}text") if t.get("class") == "cell-label")
    assert labels == sorted(f"{v:.2f}".replace("-0.00", "0.00") for v in frame["sharpe"])
    # slow rises upwards: the 200 row is above the 50 row; fast runs left to right
    y = {float(r.get("data-y")): float(r.get("y")) for r in cells}
    x = {float(r.get("data-x")): float(r.get("x")) for r in cells}
    assert y[200.0] < y[100.0] < y[50.0] and x[10.0] < x[20.0] < x[40.0]
    assert [t.text for t in root.iter(f"{NS}text") if t.get("class") == "xtick"] == ["10", "20", "40"]


def test_heat_map_missing_cells_repeats_and_many_cells():
    frame = pd.DataFrame({"fast": [10, 10, 20, 10], "slow": [50, 100, 50, 50], "sharpe": [0.5, np.nan, 1.0, 0.9]})
    root = ET.fromstring(heatmap_svg(frame, "fast", "slow", "sharpe"))
    cells = {(float(r.get("data-x")), float(r.get("data-y"))): r for r in root.iter(f"{NS}rect")
             if r.get("class") == "cell"}
    assert float(cells[(10.0, 50.0)].get("data-value")) == 0.9  # the best of the two sets
    assert cells[(10.0, 100.0)].get("fill") == "#dddddd" and cells[(20.0, 100.0)].get("fill") == "#dddddd"
    assert any(t.get("class") == "caption" for t in root.iter(f"{NS}text"))
    big = pd.DataFrame([{"a": i, "b": j, "v": i * j} for i in range(20) for j in range(20)])
    root = ET.fromstring(heatmap_svg(big, "a", "b", "v"))
    assert not [t for t in root.iter(f"{NS}text") if t.get("class") == "cell-label"]  # too many to label
    with pytest.raises(ValueError, match="no column sharpe"):
        heatmap_svg(big, "a", "b", "sharpe")


def test_colour_scale_ends():
    assert colour_scale(0.0) == "#440154" and colour_scale(1.0) == "#fde725" and colour_scale(2.0) == "#fde725"
