"""Tear sheet additions: Monte Carlo bands, correlation heat map, per-strategy attribution, PDF pages.

Oracles: a constant-return curve (every resampled path is the curve itself),
the binomial distribution of an iid two-valued bootstrap (scipy), NumPy's
corrcoef, and the input table itself for the attribution bars.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from fbt_pipelines.reports.analytics import monte_carlo_bands
from fbt_pipelines.reports.tear_sheet import (attribution_figure, correlation_figure, monte_carlo_figure,
                                              write_tear_sheet)
from fbt_pipelines.risk.correlation import correlation_matrix

SESSIONS = pd.bdate_range("2020-01-01", periods=201, tz="UTC")


def test_constant_returns_give_bands_equal_to_the_curve():
    equity = pd.Series(100.0 * 1.01 ** np.arange(len(SESSIONS)), index=SESSIONS)
    bands = monte_carlo_bands(equity, n_paths=50, seed=3)
    assert list(bands.columns) == ["q05", "q25", "q50", "q75", "q95"]
    assert bands.index.equals(equity.index)
    for col in bands.columns:
        np.testing.assert_allclose(bands[col].to_numpy(), equity.to_numpy(), rtol=1e-12)


def test_iid_bootstrap_of_two_returns_matches_the_binomial_distribution():
    # returns alternate +1% / -1% (100 each); with mean_block=1 every draw is iid, so after n
    # sessions equity = 100 * 1.01^k * 0.99^(n-k) with k ~ Binomial(n, 1/2)
    returns = np.tile([0.01, -0.01], 100)
    equity = pd.Series(100.0 * np.concatenate([[1.0], np.cumprod(1 + returns)]), index=SESSIONS)
    bands = monte_carlo_bands(equity, n_paths=4000, seed=0, mean_block=1)
    assert (bands.iloc[0] == 100.0).all()
    assert bands.iloc[1]["q05"] == pytest.approx(99.0) and bands.iloc[1]["q95"] == pytest.approx(101.0)
    n = len(returns)
    for col, q in [("q05", 0.05), ("q50", 0.5), ("q95", 0.95)]:
        # invert equity -> number of up days k
        k = (np.log(bands[col].iloc[-1] / 100.0) - n * np.log(0.99)) / (np.log(1.01) - np.log(0.99))
        assert abs(k - binom.ppf(q, n, 0.5)) <= 1.0, (col, k, binom.ppf(q, n, 0.5))
    # bands are ordered at every session and reproducible with the seed
    values = bands.to_numpy()
    assert (np.diff(values, axis=1) >= -1e-9).all()
    pd.testing.assert_frame_equal(bands, monte_carlo_bands(equity, n_paths=4000, seed=0, mean_block=1))


def test_correlation_heat_map_shows_the_matrix_and_attribution_the_table():
    rng = np.random.default_rng(1)
    a = rng.normal(size=300)
    pnl = pd.DataFrame({"ES": a, "NQ": 0.8 * a + 0.6 * rng.normal(size=300), "ZN": rng.normal(size=300)})
    corr = correlation_matrix(pnl)
    fig = correlation_figure(corr)
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), np.corrcoef(pnl.to_numpy().T), atol=1e-12)
    assert fig.data[0].text[0][1] == f"{np.corrcoef(a, pnl['NQ'])[0, 1]:.2f}"

    table = pd.DataFrame({"sma_crossover": [100.0, -50.0], "ewmac": [20.0, 30.0]}, index=["ES", "CL"])
    bars = attribution_figure(table, "by strategy")
    assert [t.name for t in bars.data] == ["sma_crossover", "ewmac"]
    assert list(bars.data[1].y) == [20.0, 30.0] and list(bars.data[0].x) == ["ES", "CL"]


def _page_titles(page: str) -> set[str]:
    return set(re.findall(r'"text":"([^"]*)"', page))


def test_portfolio_tear_sheet_has_bands_correlation_and_attribution(tmp_path):
    rng = np.random.default_rng(0)
    equity = pd.DataFrame({"ts": SESSIONS, "equity": 1e6 * np.cumprod(1 + rng.normal(3e-4, 0.01, len(SESSIONS)))})
    corr = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["ES", "CL"], columns=["ES", "CL"])
    by_strategy = pd.DataFrame({"sma_crossover": [1.0, 2.0], "buy_and_hold": [3.0, 4.0]}, index=["CL", "ES"])
    path = write_tear_sheet(tmp_path / "t.html", "portfolio", equity, {"Sharpe": "1.00"}, pd.Series({"ES": 1.0}),
                            {"run": "x"}, correlation=corr, strategy_pnl=by_strategy, strategy_pnl_title="attrib",
                            monte_carlo_paths=200)
    page = path.read_text(encoding="utf-8")
    titles = _page_titles(page)
    assert "Monte Carlo: 200 stationary-bootstrap paths of the daily returns (USD)" in titles
    assert "Correlation of daily P&L" in titles and "attrib" in titles
    # the actual curve is drawn over the bands (last trace), the bands start at the first equity
    curve = equity.set_index("ts")["equity"]
    fig = monte_carlo_figure(curve, monte_carlo_bands(curve, n_paths=200), 200)
    assert fig.data[-1].name == "actual" and np.array_equal(np.asarray(fig.data[-1].y), curve.to_numpy())
    assert [t.name for t in fig.data[1:4:2]] == ["5-95%", "25-75%"] and fig.data[0].y[0] == curve.iloc[0]

    # one strategy, one market, no correlation: no attribution, no heat map
    single = write_tear_sheet(tmp_path / "s.html", "one", equity, {}, pd.Series({"ES": 1.0}), {},
                              strategy_pnl=by_strategy[["sma_crossover"]], correlation=corr.iloc[:1, :1])
    titles = _page_titles(single.read_text(encoding="utf-8"))
    assert "Correlation of daily P&L" not in titles and "attrib" not in titles
    assert any(t.startswith("Monte Carlo") for t in titles)


def test_non_positive_equity_omits_the_bands(tmp_path):
    equity = pd.DataFrame({"ts": SESSIONS[:5], "equity": [100.0, 50.0, -10.0, -20.0, 5.0]})
    page = write_tear_sheet(tmp_path / "r.html", "ruined", equity, {}, pd.Series({"ES": -95.0}), {}).read_text()
    assert not any(t.startswith("Monte Carlo") for t in _page_titles(page))
    assert "Monte Carlo bands, monthly and rolling returns are omitted" in page


def test_pdf_pages_follow_the_data(tmp_path):
    import pypdf  # dev dependency (independent PDF reader)
    from fbt_pipelines.reports.pdf import write_pdf

    equity = pd.DataFrame({"ts": SESSIONS, "equity": np.linspace(1e6, 1.1e6, len(SESSIONS))})
    path, pages = write_pdf(tmp_path / "a.pdf", "no trades", equity, {"Sharpe": "9.99"}, {"run": "abc"})
    assert pages == 4 and len(pypdf.PdfReader(path).pages) == 4
    first = " ".join(pypdf.PdfReader(path).pages[0].extract_text().split())
    assert "Sharpe 9.99" in first and "run abc" in first
    ruined = pd.DataFrame({"ts": SESSIONS[:5], "equity": [100.0, 50.0, -10.0, -20.0, 5.0]})
    trades = pd.DataFrame({"ts": SESSIONS[:2], "kind": ["trade", "trade"], "contracts": [1, -1],
                           "price": [10.0, 12.0], "commission": [1.0, 1.0], "slippage": [0.5, 0.5]})
    path, pages = write_pdf(tmp_path / "b.pdf", "ruined", ruined, {}, {}, trades=trades, multiplier=50.0)
    reader = pypdf.PdfReader(path)
    assert pages == 3 == len(reader.pages)  # summary, equity, trades (no monthly / rolling pages)
    trade_text = " ".join(reader.pages[2].extract_text().split())
    # one long round trip: (12 - 10) x 50 - 2 x 1 commission = 98 USD
    assert "Best / worst round trip (USD) 98.00 / 98.00" in trade_text
    assert json.dumps(reader.metadata.title) == '"ruined"'
