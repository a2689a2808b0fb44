"""The sweep engine (fbt_pipelines.engine.sweep_kernel) equals the single backtest.

Every set of a ``run_sweep`` of ``sma_crossover`` goes through the compiled
sweep engine; each must equal ``backtest_market`` of the same spec (the one
backtest path, itself checked against peers elsewhere): summary to 1e-9
relative, trade counts exactly, the per-bar P&L to the cent. Markets: the demo
sample generator (ES, ZN: two years, catalogue roll rule, Panama) and the
unit tests' random market. Also: its pieces against independent computations,
causality, and the strategies and sets it leaves to the per-set path.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.strategies import STRATEGIES
from fbt_pipelines.engine.sweep_kernel import STATS, equity_stats_nb, targets_nb, window_means
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.primitives.performance import equity_headline
from fbt_pipelines.usecases.backtest import MarketData, Sizer, backtest_market
from fbt_pipelines.usecases.spec import BacktestSpec
from fbt_pipelines.usecases.sweep import _sma_sweep, parameter_sets, run_sweep

KEYS = ("net_pnl", "sharpe", "max_drawdown", "rolls", "roll_costs", "margin_calls", "account_stopped")
GRID = {"fast": [3, 5, 8, 13, 21, 34], "slow": [20, 40, 60, 90, 120]}  # 30 sets, 2 with fast >= slow dropped


@lru_cache(maxsize=None)
def _sample_prices(root: str) -> pd.DataFrame:
    """Two years of a demo market (``fbt sample-data``'s generator), Panama series."""
    from fbt_pipelines.catalog.contracts import listed_contracts
    from fbt_pipelines.futures.continuous import build_continuous
    from fbt_pipelines.futures.roll_rules import RollRule
    from fbt_pipelines.marketdata.sample_data import simulate_market
    from fbt_pipelines.marketdata.sessions import trading_sessions

    spec = market_spec(root)
    sessions = trading_sessions(dt.date(2019, 1, 2), dt.date(2020, 12, 31))
    bars = simulate_market(spec, sessions, seed=0)
    long = pd.concat(bars.values(), ignore_index=True)
    long["ts"] = pd.to_datetime(long["ts"], utc=True)
    long["root"] = root
    contracts = [c for c in listed_contracts(spec, 2019, 2022) if c.contract_id in bars]
    return build_continuous(root, contracts, long, RollRule.parse(spec.roll_rule, spec)).prices


def _random_prices() -> pd.DataFrame:
    from fbt_pipelines.futures.back_adjust import back_adjust
    from fbt_pipelines.futures.roll_schedule import calendar_roll_schedule
    from tests.unit._futures_data import random_market

    contracts, closes, bars = random_market(seed=11)
    return back_adjust(bars, calendar_roll_schedule("ES", contracts, closes, 3), contracts, "panama")


def _spec(**settings) -> BacktestSpec:
    return BacktestSpec.create("sma_crossover", {}, library=STRATEGIES, **settings)


def _assert_equals_single(base: BacktestSpec, data: MarketData, sets: list[dict], engine: bool = True) -> pd.DataFrame:
    """Every set equals backtest_market (``engine``: and the sma sweep engine ran)."""
    if engine:
        assert _sma_sweep(base, data, sets, 2) is not None
    sweep = run_sweep(base, data, sets, workers=2)
    assert len(sweep.table) == len(sets) and list(sweep.pnl.columns) == list(range(len(sets)))
    assert list(sweep.table.columns) == ["set", "params", *STATS]
    for row in sweep.table.itertuples():
        bt = backtest_market(base.with_params(sets[row.set]), data)
        assert row.trades == bt.summary["trades"], row.set  # exactly
        for key in KEYS:
            assert getattr(row, key) == pytest.approx(bt.summary[key], rel=1e-9, abs=1e-9, nan_ok=True), (row.set, key)
        np.testing.assert_allclose(sweep.pnl[row.set].to_numpy(), bt.result.bars["pnl"].to_numpy(), rtol=0, atol=1e-6)
        orders = {k: v for k, v in bt.spec.orders.settings().items() if k != "fill"}
        assert row.params == json.dumps({**bt.spec.param_dict, **orders}, sort_keys=True)
    return sweep.table


@pytest.mark.parametrize("root", ["ES", "ZN"])
def test_every_set_equals_backtest_market_on_demo_markets(root):
    """Volatility target, catalogue commission and 1 tick slippage (costs != 0), rolls."""
    data = MarketData(root, market_spec(root), _sample_prices(root))
    sets = parameter_sets("sma_crossover", GRID)
    assert len(sets) == 28
    table = _assert_equals_single(_spec(capital=1e6), data, sets)
    assert (table["rolls"] > 0).all() and (table["roll_costs"] > 0).all() and (table["trades"] > 10).all()
    assert table["net_pnl"].nunique() == len(sets)  # the sets differ: a mix-up would show


def test_buffered_and_fixed_sizes_equal_backtest_market():
    """pysystemtrade's buffer (buffer_fraction > 0) and fixed contracts swept in the grid."""
    data = MarketData("ES", market_spec("ES"), _sample_prices("ES"))
    sets = parameter_sets("sma_crossover", {"fast": [3, 5, 8], "slow": [20, 40]})
    buffered = _spec(capital=2e7, buffer_fraction=0.25)
    table = _assert_equals_single(buffered, data, sets)
    plain = run_sweep(_spec(capital=2e7), data, sets).table
    assert (table["trades"] > 0).all() and (table["trades"] < plain["trades"]).all()  # the buffer acts
    fixed = parameter_sets("sma_crossover", {"fast": [3, 8], "slow": [20, 40], "contracts": [1, 4]})
    table = _assert_equals_single(_spec(capital=1e6), data, fixed)
    assert sorted(table["params"].str.contains('"contracts": 4')) == [False] * 4 + [True] * 4


def test_margin_calls_refusals_and_orders_equal_backtest_market():
    """Margin calls, refused contracts, stops and limits: equal to backtest_market.

    A small account with a margin history close to its maintenance level:
    refused contracts and margin calls happen; stops and limits in the grid."""
    prices = _sample_prices("ES")
    n = len(prices)
    data = replace(MarketData("ES", market_spec("ES"), prices), margins=np.full(n, 13_200.0),
                   maintenance=np.full(n, 13_150.0), margin_source="test")
    base = _spec(capital=60_000.0)
    sets = parameter_sets("sma_crossover", {"fast": [5, 13], "slow": [40, 90], "contracts": [2, 4]})
    sets += parameter_sets("sma_crossover", {"fast": [5], "slow": [40], "contracts": [3],
                                             "stop_loss": ["1%", 30], "limit_offset": [2]})
    table = _assert_equals_single(base, data, sets)
    assert (table["margin_calls"] > 0).any()
    refused = [backtest_market(base.with_params(p), data).summary["refused_contracts"] for p in sets]
    assert max(refused) > 0
    # a vol-targeted account that the margin limits
    base = _spec(capital=250_000.0, annual_risk_target=0.6)
    table = _assert_equals_single(base, data, parameter_sets("sma_crossover", {"fast": [5, 13], "slow": [40, 90]}))
    assert max(backtest_market(base.with_params({"fast": 5, "slow": 40}), data).summary["refused_contracts"],
               (table["margin_calls"] > 0).sum()) > 0


def test_changing_later_bars_changes_no_earlier_equity():
    """Causality: bars after t altered, every set's equity through bar t unchanged.

    The later equity does change."""
    prices = _sample_prices("ZN")
    data = MarketData("ZN", market_spec("ZN"), prices)
    sets = parameter_sets("sma_crossover", GRID)
    base = _spec(capital=1e6)
    before = run_sweep(base, data, sets).pnl.cumsum()
    t = len(prices) // 2
    rng = np.random.default_rng(3)
    later = prices.copy()
    shock = np.exp(np.cumsum(rng.normal(0.0, 0.02, len(prices) - t - 1)))
    for col in ("open", "high", "low", "close", "raw_close"):
        later.loc[t + 1:, col] = later.loc[t + 1:, col].to_numpy() * shock
    after = run_sweep(base, MarketData("ZN", market_spec("ZN"), later), sets).pnl.cumsum()
    pd.testing.assert_frame_equal(after.iloc[:t + 1], before.iloc[:t + 1], check_exact=True)
    assert (after.iloc[-1] != before.iloc[-1]).all()


def test_window_means_are_the_strategy_means_and_causal():
    """Window means: a running-sum mean to 1e-9 points, sma_crossover's signal exactly.

    NaN before w bars."""
    close = _random_prices()["close"].to_numpy(float)
    means = window_means(close, [5, 30])
    for row, w in zip(means, (5, 30)):
        csum = np.r_[0.0, np.cumsum(close)]
        ref = np.full(len(close), np.nan)
        ref[w - 1:] = (csum[w:] - csum[:-w]) / w
        np.testing.assert_allclose(row, ref, rtol=0, atol=1e-9)
        assert np.isnan(row[:w - 1]).all()
    diff = means[0] - means[1]
    expected = STRATEGIES["sma_crossover"].fn(close, fast=5, slow=30)
    np.testing.assert_array_equal(np.where(np.isnan(diff), 0, np.sign(diff)).astype(np.int64), expected)


@pytest.mark.parametrize("buffer_fraction", [0.0, 0.3])
def test_targets_equal_the_sizer(buffer_fraction):
    """targets_nb equals Sizer.contracts (vol target, buffer, fixed sizes).

    For a forecast-like signal (fractions, zeros, both signs)."""
    data = MarketData("ES", market_spec("ES"), _random_prices())
    spec = _spec(capital=3e6, buffer_fraction=buffer_fraction)
    sizer = Sizer(data, spec)
    rng = np.random.default_rng(0)
    signal = np.round(rng.normal(0.0, 1.0, len(data.frame)), 1)
    from fbt_pipelines.portfolio.sizing import buffer_width

    width = np.nan_to_num(buffer_width(sizer.cash_vol, sizer.budget, buffer_fraction), nan=0.0, posinf=0.0) \
        if buffer_fraction > 0 else np.zeros(1)
    out = np.empty(len(signal), dtype=np.int64)
    targets_nb(signal, 0, sizer.cash_vol, float(sizer.budget), width, buffer_fraction > 0, out)
    expected = sizer.contracts(signal)
    np.testing.assert_array_equal(out, expected)
    assert len(np.unique(expected)) > 5
    targets_nb(signal, 3, sizer.cash_vol, float(sizer.budget), width, False, out)
    np.testing.assert_array_equal(out, sizer.contracts(signal, 3))


def test_equity_stats_equal_equity_headline():
    """Net P&L, Sharpe and drawdown of random paths, a flat one and a ruined one."""
    rng = np.random.default_rng(5)
    paths = [1e6 + np.cumsum(rng.normal(100.0, 5_000.0, 500)), np.full(50, 1e6),
             np.r_[1e6, 5e5, -1e3, 2e3], np.r_[1e6, 1.1e6]]
    for equity in paths:
        out = np.empty(8)
        equity_stats_nb(equity, 1e6, out)
        ref = equity_headline(equity)
        assert out[0] == pytest.approx(equity[-1] - 1e6, rel=1e-12)
        assert out[1] == pytest.approx(ref["sharpe"], rel=1e-9, nan_ok=True)
        assert out[2] == pytest.approx(ref["max_drawdown"], rel=1e-12)


@pytest.mark.parametrize("strategy, grid", [
    ("donchian_breakout", {"window": [10, 20, 55], "contracts": [1, 3], "stop_loss": ["2atr"]}),
    ("ewmac", {"fast": [4, 16, 64]}),
    ("bollinger_reversion", {"window": [10, 20], "k": [1.0, 2.0]}),
    ("rsi_reversion", {"window": [7, 14], "limit_offset": ["0.5%"]}),
    ("buy_and_hold", {}),
])
def test_other_strategies_equal_backtest_market(strategy, grid):
    """Any strategy: signals in Python, sizing, engine and summary compiled.

    Each distinct signal is computed once (donchian: nine sets, three signals,
    with and without a stop and a fixed size); forecast signals (ewmac:
    fractions in [-2, 2]) sized by the volatility target. Equal to backtest_market.
    """
    from fbt_pipelines.usecases.sweep import _signal_sweep

    data = MarketData("ES", market_spec("ES"), _sample_prices("ES"))
    base = BacktestSpec.create(strategy, {}, library=STRATEGIES, capital=1e6)
    sets = parameter_sets(strategy, grid)
    if strategy == "donchian_breakout":
        sets += [{"window": w} for w in grid["window"]]
    assert _sma_sweep(base, data, sets, 2) is None and _signal_sweep(base, data, sets, 2) is not None
    table = _assert_equals_single(base, data, sets, engine=False)
    assert (table["trades"] > 0).all()


def test_sets_the_strategy_refuses_raise_its_error():
    data = MarketData("ES", market_spec("ES"), _random_prices())
    sma = _spec(capital=1e6)
    with pytest.raises(StrategyError, match="need integers 1 <= fast < slow"):
        run_sweep(sma, data, [{"fast": 30, "slow": 20}])
    assert _sma_sweep(sma, data, [{"fast": 30, "slow": 20}], 2) is None
    with pytest.raises(ValueError, match="stop_loss must be a positive distance"):
        run_sweep(sma, data, [{"fast": 3, "slow": 20, "stop_loss": "-5"}])


def test_cache_depends_on_recompiles_when_a_dependency_changes(tmp_path):
    """cache_depends_on: an edit to a called function's file compiles afresh.

    A cached function calling another file's njit function: plain ``cache=True``
    keeps the stale machine code after that file changes (Numba's rule), with
    ``cache_depends_on`` it compiles afresh. Fresh processes, one cache folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    dep = tmp_path / "fbt_dep_mod.py"
    source = "from numba import njit\nK = {}\n\n@njit(cache=True)\ndef f(x):\n    return x + K\n"
    dep.write_text(source.format("1.0"))
    (tmp_path / "fbt_user_mod.py").write_text(
        "import fbt_dep_mod\nfrom numba import njit\n"
        "from fbt_pipelines.engine.sweep_kernel import cache_depends_on\n\n"
        "@cache_depends_on(fbt_dep_mod)\n@njit(cache=True)\ndef g(x):\n    return fbt_dep_mod.f(x) * 2\n\n"
        "@njit(cache=True)\ndef plain(x):\n    return fbt_dep_mod.f(x) * 2\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{repo}", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", "import fbt_user_mod as u; print(u.g(1.0), u.plain(1.0))"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert run() == ["4.0", "4.0"]
    dep.write_text(source.format("2.0"))
    assert run() == ["6.0", "4.0"]  # plain: the stale cached code
