import pandas as pd
import pytest

from fbt_pipelines.engine.comparison import compare_strategies


def test_comparison_by_hand():
    runs = pd.DataFrame({
        "root": ["ES", "CL", "ES", "CL"], "strategy": ["trend", "trend", "buy_and_hold", "buy_and_hold"],
        "sharpe": [0.8, 0.2, 0.5, -0.1], "net_pnl": [100.0, -20.0, 50.0, -10.0],
        "max_drawdown": [0.1, 0.3, 0.2, 0.2], "roll_costs": [5.0, 7.0, 3.0, 3.0],
    })
    t = compare_strategies(runs).set_index("strategy")
    assert list(t.index) == ["trend", "buy_and_hold"]  # mean Sharpe 0.5 vs 0.2
    assert t.loc["trend", "mean_sharpe"] == pytest.approx(0.5)
    assert t.loc["trend", "total_net_pnl"] == 80.0 and t.loc["trend", "markets_positive"] == 1
    # (0.8 - 0.5 + 0.2 - (-0.1)) / 2 = 0.3
    assert t.loc["trend", "sharpe_vs_buy_and_hold"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no backtest runs"):
        compare_strategies(runs.iloc[0:0])


def test_ruined_and_failed_rank_last_and_are_marked():
    # buy_and_hold has the best mean Sharpe over the markets where it has one
    # (ES 1.5) but was ruined on CL: it must rank after every clean strategy.
    runs = pd.DataFrame({
        "root": ["ES", "CL", "ES", "CL", "ES", "CL", "ES", "CL"],
        "strategy": ["buy_and_hold", "buy_and_hold", "trend", "trend", "carry", "carry", "slow", "slow"],
        "sharpe": [1.5, float("nan"), 0.3, 0.1, 0.9, float("nan"), 0.6, 0.4],
        "net_pnl": [90.0, -1_000.0, 10.0, 5.0, 40.0, 0.0, 20.0, 8.0],
        "max_drawdown": [0.1, 1.0, 0.2, 0.2, 0.1, 0.0, 0.1, 0.1],
        "roll_costs": [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
        "ruined": [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "account_stopped": ["", "2015-01-02", "", "", "", "", "", ""],
        "margin_calls": [0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0],
    })
    t = compare_strategies(runs)
    # clean first (trend), then margin-called but alive (slow, mean 0.5 > trend's 0.2
    # yet after it), then failed (carry: no Sharpe on CL), then ruined (buy_and_hold)
    assert list(t["strategy"]) == ["trend", "slow", "carry", "buy_and_hold"]
    assert list(t["rank"]) == [1, 2, 3, 4]
    t = t.set_index("strategy")
    assert list(t["verdict"]) == ["ok", "margin called", "failed", "ruined"]
    assert t.loc["buy_and_hold", "flagged"] == "CL ruined 2015-01-02"
    assert t.loc["carry", "flagged"] == "CL failed" and t.loc["slow", "flagged"] == "ES margin called"
    assert t.loc["trend", "flagged"] == ""
    assert t.loc["buy_and_hold", "markets_ruined"] == 1 and t.loc["carry", "markets_failed"] == 1
    assert t.loc["buy_and_hold", "markets"] == 2  # the ruined market is counted, not skipped
    assert t.loc["buy_and_hold", "total_net_pnl"] == -910.0
    # ruin detected from the account_stopped date alone too
    alone = runs.drop(columns=["ruined"])
    assert compare_strategies(alone).set_index("strategy").loc["buy_and_hold", "verdict"] == "ruined"


def test_comparison_names_missing_columns():
    with pytest.raises(ValueError, match="roll_costs"):
        compare_strategies(pd.DataFrame({"root": ["ES"], "strategy": ["x"], "sharpe": [1.0], "net_pnl": [1.0],
                                         "max_drawdown": [0.1]}))
