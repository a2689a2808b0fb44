"""Intraday sweeps (fbt_pipelines.usecases.intraday_sweep) equal the single intraday backtest.

Every set of a ``run_intraday_sweep`` must give the numbers
``backtest_intraday`` gives for it (the one intraday backtest path, itself
checked by hand in tests/integration/test_intraday.py): net P&L, trades,
rolls, Sharpe (per bar, annualised by bars per session x 252) and max
drawdown, bit for bit. Series: generated ES minute bars over the March 2024
roll (``simulate_minutes``, the intraday use case's roll schedule and Panama
series), and the same at one-hour bars. Also: the kernel's sums and drawdown
against NumPy, the P&L per session against the backtest's equity at session
closes, the walk-forward by sessions worked by hand, and the refusals.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.engine.sweep_kernel import STATS
from fbt_pipelines.errors import DataError, StrategyError
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases import intraday_sweep as isw
from fbt_pipelines.usecases.sweep import SweepResult, parameter_sets
from fbt_pipelines.usecases.workspace import Workspace

ES = market_spec("ES")
START, END = dt.date(2024, 2, 20), dt.date(2024, 3, 22)  # 24 sessions, the ESH4 -> ESM4 roll inside
GRID = {"fast": [15, 30, 60], "slow": [120, 240], "contracts": [1, 3]}


@lru_cache(maxsize=None)
def _prices(interval: str) -> pd.DataFrame:
    """The Panama series of generated ES bars at ``interval`` (as the intraday assets build it)."""
    from fbt_pipelines.catalog.contracts import listed_contracts
    from fbt_pipelines.marketdata.sample_minutes import simulate_minutes
    from fbt_pipelines.usecases.continuous import roll_rule_for

    bars = simulate_minutes(ES, START, END, seed=5, interval=interval).frame()
    contracts = listed_contracts(ES, 2023, 2025)
    sb = uc.sessioned_bars(bars, ES)
    key = uc.series_key("ES", interval)
    rolls = uc.intraday_roll_schedule(sb, contracts, roll_rule_for(ES), key, interval)
    return uc.intraday_continuous(sb, rolls.schedule, rolls.start_contract, contracts, key,
                                  interval).prices.drop(columns="series")


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path)  # no margin history: the catalogue's margins


def _data(workspace: Workspace, interval: str = "1m"):
    return uc.intraday_market_data("ES", workspace, _prices(interval))


def _session_pnl(bt, frame: pd.DataFrame, capital: float) -> np.ndarray:
    """P&L per session from the backtest's own equity: last equity of each session minus the previous one's."""
    closes = pd.Series(bt.result.equity).groupby(frame["session"].to_numpy()).last()
    return np.diff(closes.to_numpy(), prepend=capital)


def _assert_equals_single(base, data, sets, interval: str, workers: int = 2) -> SweepResult:
    sweep = isw.run_intraday_sweep(base, data, sets, interval, workers=workers)
    assert list(sweep.table.columns) == ["set", "params", *STATS]
    sessions = data.frame["session"].nunique()
    assert sweep.pnl.shape == (sessions, len(sets))  # per session, not per bar
    for row in sweep.table.itertuples():
        spec = base.with_params(sets[row.set])
        bt = uc.backtest_intraday(spec, data, interval)
        s = bt.summary
        assert row.trades == s["trades"] and row.rolls == s["rolls"], row.set
        assert row.net_pnl == s["net_pnl"], row.set  # the same engine pass: not even a rounding apart
        assert row.sharpe == s["sharpe"] or (np.isnan(row.sharpe) and np.isnan(s["sharpe"])), row.set
        assert row.max_drawdown == s["max_drawdown"], row.set
        for key in ("roll_costs", "margin_calls", "account_stopped"):
            assert getattr(row, key) == pytest.approx(s[key], abs=1e-9), (row.set, key)
        assert json.loads(row.params) == {**spec.param_dict, **{k: v for k, v in spec.orders.settings().items()
                                                                if k != "fill"}}
        np.testing.assert_allclose(sweep.pnl[row.set].to_numpy(), _session_pnl(bt, data.frame, spec.capital),
                                   rtol=0, atol=1e-6)
    return sweep


def test_sma_sets_equal_backtest_intraday_on_minute_bars(workspace):
    data = _data(workspace)
    assert data.frame["roll"].sum() == 1 and len(data.frame) > 20 * 1380  # a roll inside, ~24 sessions
    base = isw.intraday_sweep_spec("sma_crossover", workspace.strategies())
    sets = parameter_sets("sma_crossover", GRID)
    assert isw._sma_sessions(base, data, sets, "1m", 2) is not None  # the compiled SMA path ran
    sweep = _assert_equals_single(base, data, sets, "1m")
    assert (sweep.table["trades"] > 10).all() and (sweep.table["rolls"] == 1).all()
    # the size is the set's contracts: 3 contracts make 3x the gross P&L of 1 (costs aside)
    one = sweep.table[sweep.table["params"].str.contains('"contracts": 1')]["net_pnl"].to_numpy()
    three = sweep.table[sweep.table["params"].str.contains('"contracts": 3')]["net_pnl"].to_numpy()
    assert not np.allclose(one, three)
    again = isw.run_intraday_sweep(base, data, sets, "1m", workers=1)
    pd.testing.assert_frame_equal(again.table, sweep.table)
    pd.testing.assert_frame_equal(again.pnl, sweep.pnl)


def test_sharpe_is_annualised_by_bars_per_session(workspace):
    """ES 1m: 1,380 bars per session x 252 (CME Globex 17:00-16:00 CT = 23 h), by hand from the equity."""
    data = _data(workspace)
    base = isw.intraday_sweep_spec("sma_crossover", workspace.strategies())
    sweep = isw.run_intraday_sweep(base, data, [{"fast": 30, "slow": 240}], "1m")
    equity = uc.backtest_intraday(base.with_params({"fast": 30, "slow": 240}), data, "1m").result.equity
    r = equity[1:] / equity[:-1] - 1.0
    assert sweep.table["sharpe"].iat[0] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(23 * 60 * 252),
                                                         rel=1e-12)
    assert sweep.table["max_drawdown"].iat[0] == pytest.approx(
        max(1 - e / p for e, p in zip(equity, np.maximum.accumulate(equity))), rel=1e-12)


def test_hourly_bars_and_other_strategies(workspace):
    data = _data(workspace, "1h")
    assert len(data.frame) == data.frame["session"].nunique() * 23  # 23 hourly bars per session
    for strategy, grid in (("sma_crossover", {"fast": [3, 5], "slow": [12, 23]}),
                           ("donchian_breakout", {"window": [5, 10, 23]})):
        base = isw.intraday_sweep_spec(strategy, workspace.strategies(), contracts=2, slippage_ticks=0.5)
        _assert_equals_single(base, data, parameter_sets(strategy, grid), "1h")


def test_other_strategies_and_order_settings_on_minute_bars(workspace):
    data = _data(workspace)
    lib = workspace.strategies()
    sets = parameter_sets("donchian_breakout", {"window": [60, 390], "stop_loss": [4, "0.2%"]})
    base = isw.intraday_sweep_spec("donchian_breakout", lib)
    assert isw._signal_sessions(base, data, sets, "1m", 2) is not None  # the compiled signal path ran
    _assert_equals_single(base, data, sets, "1m")
    _assert_equals_single(isw.intraday_sweep_spec("sma_crossover", lib, stop_loss="3atr"), data,
                          parameter_sets("sma_crossover", {"fast": [30], "slow": [240], "take_profit": [10, 20]}),
                          "1m")


def test_the_per_set_path_and_the_held_back_budgets_give_the_same_sweep(workspace, monkeypatch):
    """Groups of moving averages and of signals (memory budgets) and the per-set path change nothing."""
    data = _data(workspace)
    lib = workspace.strategies()
    base = isw.intraday_sweep_spec("sma_crossover", lib)
    sets = parameter_sets("sma_crossover", GRID)
    whole = isw.run_intraday_sweep(base, data, sets, "1m")
    monkeypatch.setattr(isw, "MEANS_BUDGET", 3 * len(data.frame))  # 3 windows at a time: several groups
    pd.testing.assert_frame_equal(isw.run_intraday_sweep(base, data, sets, "1m").table, whole.table)
    one_by_one = isw._per_set(base, data, sets, "1m", 2)
    pd.testing.assert_frame_equal(one_by_one.table, whole.table)
    pd.testing.assert_frame_equal(one_by_one.pnl, whole.pnl)
    base = isw.intraday_sweep_spec("donchian_breakout", lib)
    sets = parameter_sets("donchian_breakout", {"window": [30, 60, 120, 390]})
    whole = isw.run_intraday_sweep(base, data, sets, "1m")
    monkeypatch.setattr(isw, "SIGNALS_BUDGET", len(data.frame))  # one signal at a time
    pd.testing.assert_frame_equal(isw.run_intraday_sweep(base, data, sets, "1m").table, whole.table)


def test_kernel_sums_and_drawdown_equal_numpy_bit_for_bit():
    from fbt_pipelines.engine.intraday_sweep_kernel import equity_stats_nb, max_drawdown_nb, pairwise_sum_nb
    from fbt_pipelines.primitives.performance import equity_headline, sharpe_ratio

    rng = np.random.default_rng(7)
    for n in [*range(0, 300), 1000, 8193, 65_537, 352_980]:
        a = rng.normal(1e-5, 1e-3, n + 3)
        assert pairwise_sum_nb(a, 3, n) == np.sum(a[3:]), n  # NumPy's pairwise sum, from an offset too
    for k in range(400):
        n = int(rng.integers(3, 500))
        equity = 1e6 + np.cumsum(rng.normal(0, 1e4, n))
        if k % 3 == 1:
            equity = np.round(equity, -4)  # ties at the peak
        out = np.empty(8)
        equity_stats_nb(equity, 1e6, np.sqrt(347_760.0), np.empty(n), out)
        r = equity[1:] / equity[:-1] - 1.0
        assert out[0] == equity[-1] - 1e6
        assert out[1] == sharpe_ratio(r, 347_760.0)
        assert out[2] == equity_headline(equity)["max_drawdown"]
    ruined = np.array([100.0, 120.0, -30.0, 50.0, 130.0, 90.0])
    assert max_drawdown_nb(ruined) == 1 - (-30.0 / 120.0)  # more than the peak lost: above 1
    out = np.empty(8)
    equity_stats_nb(ruined, 100.0, 1.0, np.empty(6), out)
    assert np.isnan(out[1])  # no Sharpe once the account is ruined


def test_walk_forward_by_sessions_by_hand():
    """3 sets x 10 sessions; train 4, test 3: windows test sessions 4-6 and 7-9."""
    days = pd.date_range("2024-03-04", periods=10, freq="B", tz="UTC")
    pnl = pd.DataFrame({0: [1, 2, 1, 2, 5, -4, 5, -1, -1, -1],  # steady early, then erratic
                        1: [3, -3, 3, -3, 0, 0, 0, 9, 8, 9],  # no edge early
                        2: [0, 0, 0, 0, 1, 1, 1, 4, 5, 4]}, index=days, dtype=float)  # flat, then steady
    sweep = SweepResult(pd.DataFrame({"set": [0, 1, 2]}), pnl)
    wf = isw.walk_forward_sessions(sweep, 100.0, train_sessions=4, test_sessions=3)

    def sharpe(x):  # per session, x sqrt(252)
        x = np.asarray(x, dtype=float) / 100.0
        return x.mean() / x.std(ddof=1) * np.sqrt(252) if x.std(ddof=1) > 0 else -np.inf

    # window 0 trains on sessions 0-3: set 0 (1, 2, 1, 2: mean 1.5 / sd 0.577) beats set 1 (mean 0) and
    # set 2 (no volatility: never chosen over a set with some)
    # window 1 trains on sessions 3-6: set 2 (0, 1, 1, 1: 0.75 / 0.5) beats set 0 (2, 5, -4, 5: 2 / 4.24)
    first = max(range(3), key=lambda c: sharpe(pnl[c].iloc[0:4]))
    second = max(range(3), key=lambda c: sharpe(pnl[c].iloc[3:7]))
    assert (first, second) == (0, 2)
    assert wf["window"].tolist() == [0, 0, 0, 1, 1, 1]
    assert wf["set"].tolist() == [0, 0, 0, 2, 2, 2]
    assert wf["pnl"].tolist() == [5, -4, 5, 4, 5, 4]
    assert list(wf["ts"]) == list(days[4:10])
    assert wf["equity"].tolist() == [105, 101, 106, 110, 115, 119]
    assert wf["in_sample_sharpe"].iat[0] == pytest.approx(sharpe(pnl[0].iloc[0:4]))
    last = isw.walk_forward_sessions(sweep, 100.0, train_sessions=4, test_sessions=4)  # a short last window
    assert last["window"].tolist() == [0] * 4 + [1] * 2
    with pytest.raises(StrategyError, match="more than 10 sessions"):
        isw.walk_forward_sessions(sweep, 100.0, train_sessions=10)


def test_refusals(workspace):
    from fbt_pipelines.usecases.spec import BacktestSpec

    lib = workspace.strategies()
    data = _data(workspace)
    with pytest.raises(StrategyError, match="fixed size >= 1"):
        isw.intraday_sweep_spec("sma_crossover", lib, contracts=0)
    vol_target = BacktestSpec.create("sma_crossover", {}, library=lib)  # no contracts: volatility targeting
    with pytest.raises(StrategyError, match="fixed size"):
        isw.run_intraday_sweep(vol_target, data, [{"fast": 30, "slow": 240}], "1m")
    base = isw.intraday_sweep_spec("sma_crossover", lib)
    with pytest.raises(DataError, match="1m or 1h"):
        isw.run_intraday_sweep(base, data, [{"fast": 30, "slow": 240}], "1d")
    no_sessions = uc.intraday_market_data("ES", workspace, _prices("1m").drop(columns="session"))
    with pytest.raises(DataError, match="session"):
        isw.run_intraday_sweep(base, no_sessions, [{"fast": 30, "slow": 240}], "1m")


def test_session_ends():
    frame = pd.DataFrame({"session": pd.to_datetime(["2024-03-04"] * 3 + ["2024-03-05"] * 2 + ["2024-03-06"],
                                                    utc=True)})
    ends, days = isw.session_ends(frame)
    assert ends.tolist() == [2, 4, 5]
    assert [d.date() for d in days] == [dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 6)]
    micro = frame.assign(session=frame["session"].astype("datetime64[us, UTC]"))  # as DuckDB hands it back
    assert list(isw.session_ends(micro)[1]) == list(days) and str(days.tz) == "UTC"


def test_window_groups_hold_at_most_the_budget_and_cover_every_set_once():
    pairs = [(f, s) for f in range(2, 42) for s in range(50, 300, 10)]  # 40 fast x 25 slow windows
    assert isw.window_groups(pairs, 65) == [list(range(1000))]  # all 65 windows fit: one group
    groups = isw.window_groups(pairs, 9)
    assert sorted(i for g in groups for i in g) == list(range(1000))
    assert all(len({w for i in g for w in pairs[i]}) <= 9 for g in groups)
    # by hand: runs of a fast and b = 9 - a slow windows cost ceil(40 / a) x ceil(25 / b) groups;
    # b = 5 (a = 4) is the fewest, 10 x 5 = 50 groups of 4 + 5 windows: 450 moving averages, not 1,000
    assert len(groups) == 50 and all(len(g) == 20 for g in groups)
