"""Numbers by kind in Markdown tables and metadata (issue 20, item 2): expected strings by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from assets._support import md_table, number, numbers
from fbt_pipelines.reports.numbers import format_number, kind_of, metadata_number


def _md(value) -> str:
    return value.value if hasattr(value, "value") else value.md_str


def test_each_kind_prints_as_a_trader_reads_it():
    frame = pd.DataFrame({"strategy": ["a", "b"], "net_pnl": [1234567.891, -0.0],
                          "sharpe": [0.44346908887387754, -0.004],
                          "max_drawdown": [0.1234, -0.00001], "trades": [642.0, 1234.0], "price": [4500.0, -0.001]})
    md = _md(md_table(frame, kinds={"net_pnl": "money", "sharpe": "ratio", "max_drawdown": "percent",
                                    "trades": "count"}))
    assert md.splitlines() == [
        "| strategy | net_pnl | sharpe | max_drawdown | trades | price |",
        "|---|---|---|---|---|---|",
        "| a | 1,234,568 | 0.44 | 12.3% | 642 | 4,500.00 |",
        "| b | 0 | 0.00 | 0.0% | 1,234 | 0.00 |",  # -0.0, -0.004, -0.00001 and -0.001 lose the sign
    ]


def test_old_call_shape_still_works_and_nan_is_named():
    md = _md(md_table(pd.DataFrame({"x": [1.5, float("nan"), -0.0001], "n": [3, 4, 5]}), ".2f"))
    assert md.splitlines()[2:] == ["| 1.50 | 3 |", "| n/a | 4 |", "| 0.00 | 5 |"]


def test_auto_kinds_from_column_names():
    frame = pd.DataFrame({"root": ["ES"], "net_pnl_usd": [-2500.4], "max_exposure": [1.5], "rolls": [12.0]})
    assert _md(md_table(frame, kinds="auto")).splitlines()[2] == "| ES | -2,500 | 150.0% | 12 |"


def test_bad_kinds_are_refused_naming_the_problem():
    with pytest.raises(ValueError, match=r"lacks: \['nope'\]"):
        md_table(pd.DataFrame({"x": [1.0]}), kinds={"nope": "money"})
    with pytest.raises(ValueError, match="unknown number kind"):
        format_number(1.0, "dollars")


@pytest.mark.parametrize(("value", "kind", "text"), [
    (-0.0, "money", "0"), (-0.4, "money", "0"), (-0.6, "money", "-1"), (1234.5, "money2", "1,234.50"),
    (0.05, "percent2", "5.00%"), (-0.0004, "percent", "0.0%"), (2.5, "count", "2"), (3.5, "count", "4"),
    (1.005, "ratio", "1.00"), (float("inf"), "ratio", "inf"), (True, "count", "True"), ("x", "money", "x"),
    (pd.Timestamp("2024-03-01", tz="UTC"), "ratio", "2024-03-01"),
])
def test_format_number(value, kind, text):
    assert format_number(value, kind) == text


def test_metadata_numbers_are_rounded_by_kind():
    assert metadata_number(0.44346908887387754, "ratio") == 0.443
    assert metadata_number(-0.123456, "percent") == -0.1235
    assert metadata_number(1234567.891, "money") == 1234567.89
    assert metadata_number(642.0, "count") == 642 and isinstance(metadata_number(642.0, "count"), int)
    assert str(metadata_number(-0.00001, "percent")) == "0.0"  # no -0.0
    assert math.isnan(metadata_number(float("nan"), "ratio"))
    assert number(642.0, "count").value == 642
    shown = numbers({"sharpe": 0.44346908887387754, "days": 252.0, "net_pnl_usd": 10.129, "worst_scenario": "x"})
    assert {k: getattr(v, "value", v) for k, v in shown.items()} == {
        "sharpe": 0.443, "days": 252, "net_pnl_usd": 10.13, "worst_scenario": "x"}


@pytest.mark.parametrize(("name", "kind"), [
    ("net_pnl", "money"), ("last_gross_exposure_usd", "money"), ("final_equity_p50", "money"),
    ("trades", "count"), ("max_drawdown_duration", "count"), ("max_drawdown", "percent"),
    ("max_drawdown_p5", "percent"), ("var_99", "percent"), ("cf_cvar_95", "percent"), ("annual_vol", "percent"),
    ("max_margin_to_equity", "percent"), ("sharpe", "ratio"), ("sharpe_ci_low", "ratio"), ("max_leverage", "ratio"),
    ("avg_market_correlation", "ratio"), ("volume", None), ("contract", None),
])
def test_kind_of(name, kind):
    assert kind_of(name) == kind
