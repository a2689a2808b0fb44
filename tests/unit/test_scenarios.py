"""Scenarios on today's book, hand-worked.

Book: ES +1,000,000 USD notional, CL -500,000 USD (short).
"""

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.risk.scenarios import (apply_shock, historical_replay, scenario_table, stressed_var,
                                          worst_windows)

BOOK = pd.Series({"ES": 1_000_000.0, "CL": -500_000.0})
Z99 = NormalDist().inv_cdf(0.99)


def returns_frame():
    idx = pd.bdate_range("2024-01-01", periods=8, tz="UTC")
    es = [0.01, 0.10, -0.05, 0.00, -0.02, -0.03, 0.01, 0.00]
    cl = [0.00, 0.00, 0.00, np.nan, 0.04, 0.02, 0.00, 0.01]
    return pd.DataFrame({"ES": es, "CL": cl}, index=idx)


def test_percentage_shock_by_hand():
    pnl = apply_shock(BOOK, {"ES": -0.10, "CL": 0.20, "GC": -0.5})
    # ES: 1,000,000 x -10% = -100,000 ; CL short: -500,000 x +20% = -100,000 ; GC not held
    assert pnl.to_dict() == pytest.approx({"ES": -100_000.0, "CL": -100_000.0})
    with pytest.raises(ValueError):
        apply_shock(BOOK, {"ES": -1.5})


def test_historical_replay_compounds_and_flags_missing_markets():
    r = returns_frame()
    pnl, missing = historical_replay(BOOK, r, "2024-01-02", "2024-01-03")
    # ES (1.10 x 0.95 - 1) = 4.5 % -> +45,000; CL 0 % -> 0
    assert pnl["ES"] == pytest.approx(45_000.0) and pnl["CL"] == pytest.approx(0.0) and missing == []
    pnl, missing = historical_replay(BOOK, r.assign(CL=np.nan), "2024-01-02", "2024-01-03")
    assert missing == ["CL"]
    with pytest.raises(ValueError, match="no session"):
        historical_replay(BOOK, r, "2030-01-01", "2030-02-01")


def test_worst_windows_by_hand():
    r = returns_frame()
    # daily linear P&L = 1e6 x ES - 5e5 x CL (NaN -> 0):
    # 10,000 ; 100,000 ; -50,000 ; 0 ; -40,000 ; -40,000 ; 10,000 ; -5,000
    w = worst_windows(BOOK, r, days=2, count=2)
    # 2-day sums: 110k, 50k, -50k, -40k, -80k, -30k, 5k -> worst at 01-05/01-08 (-80k), then 01-03/01-04 (-50k)
    assert w["linear_pnl_usd"].tolist() == pytest.approx([-80_000.0, -50_000.0])
    assert [d.date().isoformat() for d in w["start"]] == ["2024-01-05", "2024-01-03"]
    # the -40k window (01-04..01-05) overlaps the first and is skipped
    w1 = worst_windows(BOOK, r, days=1, count=3)
    assert w1["linear_pnl_usd"].tolist() == pytest.approx([-50_000.0, -40_000.0, -40_000.0])


def stress_returns():
    # uncorrelated, mean 0: var ES = 4e-4/3, var CL = 16e-4/3 (ddof 1), cov 0
    idx = pd.bdate_range("2024-01-01", periods=4, tz="UTC")
    return pd.DataFrame({"ES": [0.01, -0.01, 0.01, -0.01], "CL": [0.02, 0.02, -0.02, -0.02]}, index=idx)


def test_stressed_var_by_hand():
    r = stress_returns()
    long_book = pd.Series({"ES": 1_000_000.0, "CL": 500_000.0})
    sd_es, sd_cl = math.sqrt(4e-4 / 3), math.sqrt(16e-4 / 3)   # 1.1547 %, 2.3094 %
    base = stressed_var(long_book, r, 0.99)
    sigma_p = math.sqrt((1e6 * sd_es) ** 2 + (5e5 * sd_cl) ** 2)  # 16,329.93
    assert base["total"] == pytest.approx(Z99 * sigma_p)          # 37,989
    assert base["ES"] == pytest.approx(base["total"] / 2) and base["CL"] == pytest.approx(base["total"] / 2)
    assert stressed_var(long_book, r, 0.99, vol_factor=2.0)["total"] == pytest.approx(2 * Z99 * sigma_p)
    one = stressed_var(long_book, r, 0.99, correlation_one=True)
    assert one["total"] == pytest.approx(Z99 * (1e6 * sd_es + 5e5 * sd_cl))  # 53,725
    assert one[["ES", "CL"]].sum() == pytest.approx(one["total"])
    # long ES against short CL of equal volatility in USD: perfectly correlated, they cancel
    hedged = stressed_var(pd.Series({"ES": 1_000_000.0, "CL": -500_000.0}), r, 0.99, correlation_one=True)
    assert hedged["total"] == pytest.approx(0.0, abs=1e-6)


def test_scenario_table_has_every_kind_and_totals():
    table = scenario_table(BOOK, returns_frame(), shocks={"es_down_10": {"ES": -0.10}},
                           named_windows=[("jan", "2024-01-02", "2024-01-03"), ("outside", "2019-01-01", "2019-02-01")],
                           worst_days=(2,))
    assert set(table["kind"]) == {"shock", "replay", "worst", "stress"}
    assert "outside" not in set(table["scenario"])
    tot = table[table["root"] == "total"].set_index("scenario")["pnl_usd"]
    assert tot["es_down_10"] == pytest.approx(-100_000.0) and tot["jan"] == pytest.approx(45_000.0)
    assert tot["var_99_vol_x2"] == pytest.approx(2 * tot["var_99"])
    assert (table[table["kind"] == "stress"]["pnl_usd"] <= 1e-9).groupby(table["root"]).all().loc["total"]
