"""Parameter sets and walk-forward selection on hand-built inputs."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.usecases.sweep import SweepResult, parameter_sets, walk_forward
from fbt_pipelines.errors import StrategyError


def _spec(strategy: str, **settings):
    from fbt_pipelines.engine.strategies import STRATEGIES
    from fbt_pipelines.usecases.spec import BacktestSpec

    return BacktestSpec.create(strategy, {}, library=STRATEGIES, capital=1e6, **settings)


def _data(prices, root: str = "ES"):
    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.usecases.backtest import MarketData

    return MarketData(root, market_spec(root), prices)


def test_grid_drops_invalid_combinations_and_random_is_seeded():
    sets = parameter_sets("sma_crossover", {"fast": [10, 200], "slow": [50, 100]})
    assert sets == [{"fast": 10, "slow": 50}, {"fast": 10, "slow": 100}]  # 200 >= slow is invalid
    grid = {"fast": [5, 10, 20, 40], "slow": [50, 100, 200]}
    a = parameter_sets("sma_crossover", grid, "random", n=5, seed=3)
    assert a == parameter_sets("sma_crossover", grid, "random", n=5, seed=3) and len(a) == 5
    assert a != parameter_sets("sma_crossover", grid, "random", n=5, seed=4)
    with pytest.raises(StrategyError, match=r"unknown parameter\(s\) \['speed'\]"):
        parameter_sets("sma_crossover", {"speed": [1]})
    with pytest.raises(StrategyError, match="no valid parameter set"):
        parameter_sets("sma_crossover", {"fast": [100], "slow": [50]})


def test_walk_forward_picks_the_best_in_sample_set_per_window():
    ts = pd.bdate_range("2010-01-01", "2015-12-31", tz="UTC")
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 100, (len(ts), 2))
    # set 0 earns 50/day until the end of 2012, then loses; set 1 the opposite
    early = (ts.year <= 2012)[:, None]
    drift = np.where(early, [50.0, -50.0], [-50.0, 50.0])
    pnl = pd.DataFrame(noise + drift, index=ts, columns=[0, 1])
    table = pd.DataFrame({"set": [0, 1], "params": ["{}", "{}"], "sharpe": [0.0, 0.0]})
    wf = walk_forward(SweepResult(table, pnl), capital=1e6, train_years=3, test_years=1)
    choices = wf.groupby(wf["ts"].dt.year)["set"].first().to_dict()
    # 2013: trained on 2010-12 -> set 0 (then it loses out of sample); 2014: 2011-13 -> still set 0
    # (2 good years of 3); 2015: 2012-14 -> set 1
    assert choices == {2013: 0, 2014: 0, 2015: 1}
    assert wf["pnl"].tolist() == [pnl.loc[t, s] for t, s in zip(wf["ts"], wf["set"])]
    assert wf["equity"].iloc[-1] == pytest.approx(1e6 + wf["pnl"].sum())
    with pytest.raises(StrategyError, match="more than 6 years"):
        walk_forward(SweepResult(table, pnl), capital=1e6, train_years=6)


def test_overfitting_report_flags_luck_and_spares_a_real_edge():
    from fbt_pipelines.usecases.sweep import overfitting_report

    ts = pd.bdate_range("2010-01-01", periods=2000, tz="UTC")
    rng = np.random.default_rng(1)
    noise = pd.DataFrame(rng.normal(0, 1000, (len(ts), 30)), index=ts)
    table = pd.DataFrame({"set": range(30), "params": ["{}"] * 30, "sharpe": 0.0})
    luck = overfitting_report(SweepResult(table, noise), 1e6)
    edge = noise.copy()
    edge[0] += 150.0  # a persistent daily edge in set 0 (Sharpe ~2.4)
    real = overfitting_report(SweepResult(table, edge), 1e6)
    assert luck["pbo"] > 0.1 and real["pbo"] < 0.01  # noise: the in-sample best is often below median out of sample
    assert luck["deflated_sharpe"] < 0.9 < real["deflated_sharpe"]


def test_sweep_equals_backtest_market_set_by_set():
    from fbt_pipelines.usecases.backtest import backtest_market
    from fbt_pipelines.usecases.sweep import run_sweep
    from tests.unit._futures_data import random_market

    from fbt_pipelines.futures.back_adjust import back_adjust
    from fbt_pipelines.futures.roll_schedule import calendar_roll_schedule

    contracts, closes, bars = random_market(seed=5)
    prices = back_adjust(bars, calendar_roll_schedule("ES", contracts, closes, 3), contracts, "panama")
    base, data = _spec("sma_crossover"), _data(prices)
    sets = parameter_sets("sma_crossover", {"fast": [5, 10], "slow": [20, 40]})
    sweep = run_sweep(base, data, sets, workers=2)
    assert (sweep.table["trades"] > 5).all() and (sweep.table["rolls"] > 0).all()
    for row in sweep.table.itertuples():
        bt = backtest_market(base.with_params(sets[row.set]), data)
        for key in ("net_pnl", "sharpe", "max_drawdown", "trades", "rolls", "roll_costs"):
            assert getattr(row, key) == pytest.approx(bt.summary[key], rel=1e-12, abs=1e-9), key
        np.testing.assert_allclose(sweep.pnl[row.set].to_numpy(), bt.result.bars["pnl"].to_numpy(), atol=1e-9)


def test_order_settings_are_sweepable_and_equal_backtest_market_set_by_set():
    """Stops, targets, trailing stops, limit offsets and fixed sizes in the grid
    (any unit): each set of the sweep is the backtest of the same spec, to the
    cent, margin calls included (a small account so that some occur)."""
    from fbt_pipelines.futures.back_adjust import back_adjust
    from fbt_pipelines.futures.roll_schedule import calendar_roll_schedule
    from fbt_pipelines.usecases.backtest import backtest_market
    from fbt_pipelines.usecases.sweep import run_sweep
    from tests.unit._futures_data import random_market

    contracts, closes, bars = random_market(seed=5)
    prices = back_adjust(bars, calendar_roll_schedule("ES", contracts, closes, 3), contracts, "panama")
    base, data = _spec("sma_crossover"), _data(prices)
    base = type(base).create("sma_crossover", {}, library={base.strategy: base.template}, capital=40_000.0)
    n = len(prices)  # a margin history whose maintenance is close to the initial margin: calls happen
    data = replace(data, margins=np.full(n, 13_200.0), maintenance=np.full(n, 13_150.0), margin_source="test")
    grid = {"fast": [5], "slow": [20], "contracts": [1, 3], "stop_loss": ["1%", 30, "2atr"],
            "take_profit": ["3%"], "trailing_stop": ["1.5atr"], "limit_offset": [2]}
    sets = parameter_sets("sma_crossover", grid)
    assert len(sets) == 2 * 3 and sets[0]["stop_loss"] == "1%" and sets[1]["stop_loss"] == "30"
    sets += parameter_sets("sma_crossover", {"fast": [5], "slow": [20], "contracts": [3], "take_profit": ["50%"]})
    sweep = run_sweep(base, data, sets, workers=2)
    assert sweep.table["params"].str.contains('"contracts"').all()
    for row in sweep.table.itertuples():
        bt = backtest_market(base.with_params(sets[row.set]), data)
        assert bt.spec.orders.contracts == sets[row.set]["contracts"]
        for key in ("net_pnl", "sharpe", "max_drawdown", "trades", "rolls", "roll_costs", "margin_calls",
                    "account_stopped"):
            assert getattr(row, key) == pytest.approx(bt.summary[key], rel=1e-12, abs=1e-9, nan_ok=True), key
        np.testing.assert_allclose(sweep.pnl[row.set].to_numpy(), bt.result.bars["pnl"].to_numpy(), atol=1e-9)
    reasons = set()
    for p in sets:
        reasons |= set(backtest_market(base.with_params(p), data).result.trades["reason"])
    assert {"stop", "target", "trailing_stop", "limit", "signal"} <= reasons
    assert (sweep.table["margin_calls"] > 0).any()


def test_bad_order_settings_in_a_grid_name_the_setting():
    with pytest.raises(ValueError, match="stop_loss must be a positive distance, got '-5'"):
        parameter_sets("sma_crossover", {"fast": [5], "slow": [20], "stop_loss": ["-5"]})
    with pytest.raises(ValueError, match="contracts must be a whole number >= 1, got 0"):
        parameter_sets("sma_crossover", {"fast": [5], "slow": [20], "contracts": [0]})


def test_chunks_of_a_sweep_reassemble_into_the_whole_sweep():
    """What job sweep_fanout relies on: sweeping chunks of the sets (params via
    JSON, as the chunk steps receive them) and putting the tables and daily
    P&L back together gives the unchunked sweep exactly, and so the same
    walk-forward."""
    import json

    from fbt_pipelines.usecases.sweep import run_sweep
    from fbt_pipelines.futures.back_adjust import back_adjust
    from fbt_pipelines.futures.roll_schedule import calendar_roll_schedule
    from tests.unit._futures_data import random_market

    contracts, closes, bars = random_market(seed=7)
    prices = back_adjust(bars, calendar_roll_schedule("ES", contracts, closes, 3), contracts, "panama")
    base, data = _spec("sma_crossover"), _data(prices)
    sets = parameter_sets("sma_crossover", {"fast": [3, 5, 8, 10, 13], "slow": [20, 30, 40]})
    whole = run_sweep(base, data, sets, workers=2)
    tables, pnls = [], []
    for start in range(0, len(sets), 4):
        ids = list(range(start, min(start + 4, len(sets))))
        part = run_sweep(base, data, [json.loads(json.dumps(sets[i], sort_keys=True)) for i in ids], workers=1)
        tables.append(part.table.assign(set=ids))
        pnls.append(part.pnl.set_axis(ids, axis=1))
    table = pd.concat(tables, ignore_index=True)
    pnl = pd.concat(pnls, axis=1)
    pd.testing.assert_frame_equal(table, whole.table)
    pd.testing.assert_frame_equal(pnl, whole.pnl)
    assert whole.table["net_pnl"].nunique() > 5  # the sets differ, so a mix-up would show
    years = pnl.index.year
    if years.max() - years.min() >= 2:
        pd.testing.assert_frame_equal(walk_forward(SweepResult(table, pnl), 1e6, 1, 1),
                                      walk_forward(whole, 1e6, 1, 1))
