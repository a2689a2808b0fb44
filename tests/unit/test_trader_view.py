"""Issue 20: the margin check names market, strategy and dates; numbers worked by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.usecases.margin_check import margin_check, strategy_margin_report


def _bars(position, equity, margin) -> pd.DataFrame:
    n = len(position)
    return pd.DataFrame({"ts": pd.date_range("2024-03-04", periods=n, freq="D", tz="UTC"),
                         "position": np.asarray(position, float), "equity": np.asarray(equity, float),
                         "margin": np.asarray(margin, float)})


def test_a_close_below_maintenance_without_a_call_fails_and_is_dated():
    # maintenance 100 USD and initial 150 USD per contract
    #   bar 0 (03-04): 2 held, equity 1000, need 200, margin 300: fine
    #   bar 1 (03-05): equity 250 >= 200, margin 300 > 250: over equity by 50, no call needed
    #   bar 2 (03-06): equity 150 < 200: below maintenance, called -> handled; over by 150
    #   bar 3 (03-07): 1 held, equity 90 < 100, no call: the breach; over by 60
    #   bar 4 (03-08): equity 50 < 100 but the last close (nothing can liquidate); over by 100
    bars = _bars([2, 2, 2, 1, 1], [1000, 250, 150, 90, 50], [300, 300, 300, 150, 150])
    ts = bars["ts"]
    rep = strategy_margin_report(bars, np.full(5, 100.0), [ts[2]], None)
    assert rep["unhandled"] == ["2024-03-07"]
    assert rep["over_equity"] == {"closes": 4, "first": "2024-03-05", "last": "2024-03-08", "worst": "2024-03-06",
                                  "worst_shortfall_usd": 150.0}
    assert rep["margin_calls"] == 1 and rep["call_dates"] == ["2024-03-06"] and rep["account_stopped"] is None
    check = margin_check("ES", [("buy_and_hold", rep)])
    assert not check.passed
    assert check.metadata["market"] == "ES"
    assert check.metadata["breaches"] == {"buy_and_hold": {"closes": 1, "dates": ["2024-03-07"]}}
    line = check.metadata["summary"]
    assert line.startswith("ES buy_and_hold: BELOW MAINTENANCE WITHOUT A CALL on 1 closes 2024-03-07 .. 2024-03-07")
    assert "1 margin calls (2024-03-06 ..)" in line
    assert "margin above equity on 4 closes 2024-03-05 .. 2024-03-08 (worst 2024-03-06: 150.00 USD short)" in line
    # the same path with the account stopped at bar 3: nothing is left unhandled
    stopped = strategy_margin_report(bars, np.full(5, 100.0), [ts[2]], ts[3])
    assert stopped["unhandled"] == [] and stopped["account_stopped"] == "2024-03-07"
    # no maintenance margins (NaN): margin calls are off, nothing is a breach
    assert strategy_margin_report(bars, np.full(5, np.nan), [], None)["unhandled"] == []
    with pytest.raises(ValueError, match="maintenance has 4 values for 5 bars"):
        strategy_margin_report(bars, np.full(4, 100.0), [], None)


def test_the_engine_path_of_a_margin_call_passes_and_reports_margin_above_equity():
    # the hand-worked path of tests/unit/test_orders_margin.py::test_partial_margin_call_next_open:
    # ES 50 USD a point, initial 13,200 / maintenance 12,000 USD, 7 contracts from bar 1
    es = dataclasses.replace(market_spec("ES"), multiplier=50.0, tick_size=0.25, commission=2.10,
                             initial_margin=13_200.0, maintenance_margin=12_000.0)
    close = [4000, 3990, 3960, 3950, 3945, 3950]
    prices = pd.DataFrame({"ts": pd.date_range("2024-01-02", periods=6, tz="UTC"), "contract": "ESH4",
                           "open": [4000.0, 4000, 3980, 3955, 3940, 3950], "close": np.asarray(close, float),
                           "raw_close": np.asarray(close, float), "roll": False})
    r = run_backtest(prices, np.full(6, 7), es, EngineConfig(initial_capital=100_000.0), maintenance_margins=12_000.0)
    # equity 100,000.00 / 96,397.80 / 85,897.80 / 82,397.80 / 80,118.60 / 81,354.00 with 0/7/7/7/5/6 held;
    # margin in use 13,200 x held = 0 / 92,400 / 92,400 / 92,400 / 66,000 / 79,200:
    # above equity at bar 2 (01-04, short 6,502.20) and bar 3 (01-05, short 10,002.20);
    # bar 3 is below maintenance (82,397.80 < 7 x 12,000 = 84,000) and was called
    rep = strategy_margin_report(r.bars, np.full(6, 12_000.0), r.margin_calls["called"], r.account_stopped)
    assert rep["unhandled"] == []
    assert rep["over_equity"] == {"closes": 2, "first": "2024-01-04", "last": "2024-01-05", "worst": "2024-01-05",
                                  "worst_shortfall_usd": pytest.approx(10_002.20, abs=0.005)}
    assert rep["call_dates"] == ["2024-01-05"]
    check = margin_check("ES", [("sma_crossover", rep), ("carry", strategy_margin_report(
        r.bars.assign(position=0.0, margin=0.0), np.full(6, 12_000.0), [], None))])
    assert check.passed and check.metadata["breaches"] == {}
    assert check.metadata["summary"] == ("ES sma_crossover: 1 margin calls (2024-01-05 ..); margin above equity on "
                                         "2 closes 2024-01-04 .. 2024-01-05 (worst 2024-01-05: 10,002.20 USD short)")
    assert check.metadata["strategies"]["carry"]["over_equity"] == {"closes": 0}


# -- no_price_spikes: a move every contract made is the market, not a bad print ---------------------------------

def _contracts(moves: dict[str, np.ndarray]) -> pd.DataFrame:
    ts = pd.date_range("2013-01-01", periods=31, freq="D", tz="UTC")
    return pd.concat([pd.DataFrame({"contract": cid, "ts": ts, "close": 100 * np.exp(np.r_[0.0, np.cumsum(r)])})
                      for cid, r in moves.items()], ignore_index=True)


def test_spikes_are_moves_the_other_contracts_did_not_make_or_that_are_undone():
    from fbt_pipelines.marketdata.quality import spike_count

    # 30 moves of +/-1% alternately: robust scale 1.4826 x 0.01, limit 10 x 0.014826 = 0.148
    base = np.where(np.arange(30) % 2 == 0, 0.01, -0.01)
    jump = base.copy()
    jump[15] += np.log(1.2)  # +0.182 - 0.01 = 0.172 > 0.148 on session 16, kept afterwards
    # the market jumps: all three contracts alike -> not a spike
    assert spike_count(_contracts({"A": jump, "B": jump, "C": jump})) == 0
    # one contract alone jumps: |0.172 - (-0.01)| = 0.182 > 0.148 -> 1 spike (the others' mean is -0.01)
    assert spike_count(_contracts({"A": jump, "B": base, "C": base})) == 1
    # the market jumps and is undone the next session (a bad day in every file): 2 moves x 3 contracts
    undone = jump.copy()
    undone[16] -= np.log(1.2)  # -0.182 + 0.01 = -0.172
    assert spike_count(_contracts({"A": undone, "B": undone, "C": undone})) == 6
    # a single contract: nothing to compare with, every large move counts (the first form of the rule)
    assert spike_count(_contracts({"A": jump})) == 1


def test_the_demo_sample_data_has_no_spikes_although_its_tails_are_fat():
    from fbt_pipelines.catalog.specs import market_spec
    from fbt_pipelines.marketdata import sample_data as sd
    from fbt_pipelines.marketdata.quality import spike_count
    from fbt_pipelines.marketdata.sessions import trading_sessions

    sessions = trading_sessions(sd.DEFAULT_START, sd.DEFAULT_END)
    for root, day in (("GC", "2024-10-08"), ("6E", "2016-05-27")):
        frames = sd.simulate_market(market_spec(root), sessions, seed=0)
        bars = pd.concat([f.assign(contract=cid).rename(columns={"date": "ts"}) for cid, f in frames.items()])
        assert spike_count(bars) == 0, root
        # the large move is there, in every contract live that day (the first form counted each)
        bars["ts"] = pd.to_datetime(bars["ts"], utc=True)
        bars = bars.sort_values(["contract", "ts"])
        r = np.log(bars["close"]).groupby(bars["contract"]).diff()
        scale = r.abs().groupby(bars["contract"]).transform("median") * 1.4826
        big = bars[(r.abs() > 10 * scale).to_numpy()]
        live = bars[bars["ts"] == pd.Timestamp(day, tz="UTC")]["contract"]
        assert set(big["ts"].dt.strftime("%Y-%m-%d")) == {day}, root
        assert set(big["contract"]) <= set(live) and len(big) >= 3, root


# -- feature_drift: a persistent feature is compared with its own usual drift ------------------------------------

def test_a_cycling_feature_does_not_drift_but_a_new_level_does():
    from fbt_pipelines.ml.monitoring import DRIFT_MARGIN, drift_alarms, feature_drift, usual_drift

    rng = np.random.default_rng(0)
    n = 3_250  # 13 years of sessions: 3,000 training, the last 250 recent
    years = np.arange(n) / 252.0
    cycle = 0.02 + 0.01 * np.sin(2 * np.pi * years / 4.0) + 0.0005 * rng.standard_normal(n)  # like roll_yield
    noise = rng.standard_normal(n)
    shifted = noise.copy()
    shifted[3_000:] += 6.0  # a level never seen in training
    frame = pd.DataFrame({"cycle": cycle, "noise": noise, "shifted": shifted})
    train, recent = frame.iloc[:3_000], frame.iloc[3_000:]
    psi = feature_drift(train, recent, frame.columns)
    usual = usual_drift(train, frame.columns)
    assert psi["cycle"] > 1.0 and usual["cycle"] > psi["cycle"] / DRIFT_MARGIN  # PSI >= 0.25 alone would warn
    assert psi["noise"] < 0.25
    assert psi["shifted"] > 5.0 and usual["shifted"] < 0.25  # all 250 recent rows in the top decile
    assert list(drift_alarms(psi, usual).index) == ["shifted"]


# -- CLI: warm-up warning and help texts ---------------------------------------------------------------------------

def test_the_warm_up_warning_names_the_longest_look_back():
    from fbt_pipelines.cli.backtest import warmup_bars, warmup_warning

    assert warmup_bars({"fast": 20.0, "slow": 100.0}) == ("slow", 100)
    assert warmup_bars({"threshold": 0.55}) is None and warmup_bars({}) is None
    assert warmup_warning("sma_crossover", {"fast": 20, "slow": 100}, 100, 0).startswith(
        "the window has 100 bars, not more than sma_crossover's warm-up (slow=100 bars): 0 trades")
    assert warmup_warning("sma_crossover", {"fast": 20, "slow": 100}, 101, 3) is None
    assert warmup_warning("ml_signal", {"threshold": 0.55}, 500, 0) == (
        "0 trades in 500 bars: the Sharpe is undefined; widen the window (--start/--end) or check the parameters")


@pytest.mark.parametrize("path, phrases", [
    (["backtest"], ["exits 2 with the closest names", "warm-up", "fbt report RUN_ID"]),
    (["report"], ["any backtest's run id", "backtests asset"]),
    (["markets"], ["fbt markets"]),
    (["contracts"], ["this year's and next year's deliveries", "fbt contracts ES"]),
])
def test_help_texts_say_what_the_commands_do(path, phrases):
    from click.testing import CliRunner

    from fbt_pipelines.cli import main

    out = " ".join(CliRunner().invoke(main, [*path, "--help"]).output.split())
    for phrase in phrases:
        assert phrase in out, (path, phrase, out)


def test_unknown_strategy_on_submit_is_bad_usage_before_any_queue():
    from click.testing import CliRunner

    from fbt_pipelines.cli import main

    result = CliRunner().invoke(main, ["submit", "--market", "ES", "--strategy", "carr"])
    assert result.exit_code == 2 and "did you mean 'carry'?" in result.output, result.output
