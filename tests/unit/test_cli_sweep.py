"""`fbt sweep`'s grid syntax (hand-worked values) and its usage errors (exit 2, before any data is read)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fbt_pipelines.cli import main
from fbt_pipelines.cli.sweep import MAX_GRID_VALUES, GridError, grid_range, parse_grid


def test_integer_ranges_include_the_stop():
    grid = parse_grid(["fast=5:100:5", "slow=110:600:10"])
    assert grid["fast"] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100]
    assert len(grid["slow"]) == 50 and grid["slow"][0] == 110 and grid["slow"][-1] == 600  # (600-110)/10 + 1
    assert all(type(v) is int for v in grid["fast"] + grid["slow"])


def test_a_stop_the_steps_do_not_reach_is_left_out():
    assert grid_range("1", "10", "4") == [1, 5, 9]  # 13 would pass 10
    assert grid_range("7", "7", "3") == [7]  # start == stop: one value


def test_float_steps_land_exactly_on_the_written_decimals():
    # float accumulation gives 0.5 + 0.05 + 0.05 = 0.6000000000000001 (> 0.6: the stop dropped) and
    # 0.1 * 3 = 0.30000000000000004; counting steps in decimals gives the values as written
    assert 0.5 + 0.05 + 0.05 > 0.6 and 0.1 + 0.1 + 0.1 != 0.3  # the trap, checked
    assert parse_grid(["threshold=0.5:0.6:0.05"]) == {"threshold": [0.5, 0.55, 0.6]}
    assert grid_range("0.1", "0.3", "0.1") == [0.1, 0.2, 0.3]
    assert grid_range("0", "1", "0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert grid_range("1.5", "2.5", "0.5") == [1.5, 2.0, 2.5]
    assert all(type(v) is float for v in grid_range("1", "2", "0.5"))  # one decimal operand: floats
    assert grid_range("2", "10", "2.0") == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_comma_lists_keep_order_and_type():
    grid = parse_grid(["fast=10, 20,50", "k=1.5,2,2.5", "slow=200"])
    assert grid == {"fast": [10, 20, 50], "k": [1.5, 2, 2.5], "slow": [200]}
    assert [type(v) for v in grid["k"]] == [float, int, float]
    assert type(grid["slow"][0]) is int


def test_order_distances_may_be_text():
    assert parse_grid(["stop_loss=40,2%,3atr"]) == {"stop_loss": [40, "2%", "3atr"]}
    with pytest.raises(GridError, match=r"'fast=10,2%': '2%' is not a number"):
        parse_grid(["fast=10,2%"])  # not a distance: a number is required


@pytest.mark.parametrize(("items", "message"), [
    (["fast"], r"'fast' is not NAME=START:STOP:STEP or NAME=V1,V2"),
    (["fast="], r"'fast=' is not NAME="),
    (["=1,2"], r"'=1,2' is not NAME="),
    (["fa st=1"], r"'fa st=1': 'fa st' is not a parameter name"),
    (["fast=1:5"], r"'fast=1:5': a range is START:STOP:STEP"),
    (["fast=1:5:1:2"], r"'fast=1:5:1:2': a range is START:STOP:STEP"),
    (["fast=a:5:1"], r"'fast=a:5:1': 'a' is not a number"),
    (["fast=9:5:1"], r"'fast=9:5:1': start 9 is above stop 5"),
    (["fast=1:5:0"], r"'fast=1:5:0': the step must be > 0"),
    (["fast=1:5:-1"], r"'fast=1:5:-1': the step must be > 0"),
    (["fast=1:nan:1"], r"'fast=1:nan:1': 'nan' is not a finite number"),
    (["fast=1,,2"], r"'fast=1,,2': an empty value"),
    (["fast=10,20,10"], r"'fast=10,20,10': 10 is repeated"),
    (["fast=10", "fast=20"], r"'fast=20': fast is given twice"),
    ([f"fast=1:{MAX_GRID_VALUES + 1}:1"], r"100,001 values"),
])
def test_bad_items_are_named(items, message):
    with pytest.raises(GridError, match=message):
        parse_grid(items)


def _sweep(*args: str):
    return CliRunner().invoke(main, ["sweep", "--market", "ES", *args])


def test_bad_grid_syntax_is_bad_usage_naming_the_item(fbt_home):
    out = _sweep("--grid", "fast=5:100", "--grid", "slow=110:600:10")
    assert out.exit_code == 2, out.output
    assert "'fast=5:100': a range is START:STOP:STEP" in out.output and "--grid" in out.output


def test_unknown_strategy_and_parameter_are_bad_usage_with_a_hint(fbt_home):
    out = _sweep("--strategy", "sma_crossovr", "--grid", "fast=10,20")
    assert out.exit_code == 2 and "did you mean 'sma_crossover'" in out.output, out.output
    out = _sweep("--grid", "fsat=10,20", "--grid", "slow=50")
    assert out.exit_code == 2, out.output
    assert "'fsat': did you mean 'fast'" in out.output and "--grid" in out.output
    out = _sweep("--grid", "fast=10", "--grid", "stop_los=40")  # an order setting's typo
    assert out.exit_code == 2 and "'stop_los': did you mean 'stop_loss'?" in out.output, out.output


def test_a_grid_with_no_valid_set_and_a_bad_distance_are_bad_usage(fbt_home):
    out = _sweep("--grid", "fast=100,200", "--grid", "slow=50")  # fast >= slow in every set
    assert out.exit_code == 2 and "no valid parameter set" in out.output, out.output
    out = _sweep("--grid", "fast=10", "--grid", "slow=50", "--grid", "stop_loss=2furlongs")
    assert out.exit_code == 2 and "2furlongs" in out.output, out.output


def test_unknown_market_is_bad_usage(fbt_home):
    out = CliRunner().invoke(main, ["sweep", "--market", "ES,EZZ", "--grid", "fast=10"])
    assert out.exit_code == 2 and "unknown market" in out.output, out.output


def test_no_warehouse_exits_1_with_a_message(fbt_home):
    out = _sweep("--grid", "fast=10,20", "--grid", "slow=50")
    assert out.exit_code == 1, out.output
    assert "no warehouse at" in out.output and "fbt demo" in out.output
