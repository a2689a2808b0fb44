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
