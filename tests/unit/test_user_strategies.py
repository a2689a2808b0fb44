"""User strategies in $FBT_HOME/strategies/*.py: discovery, validation feedback, CLI listing."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pandas as pd
from pathlib import Path

import pytest
from click.testing import CliRunner

from fbt_pipelines.cli import main
from fbt_pipelines.engine.strategies import (STRATEGIES, available_strategies, strategies_help, strategy_signal,
                                             validate_params)
from fbt_pipelines.engine.user_strategies import user_problems
from fbt_pipelines.errors import StrategyError

MOMENTUM = (Path(__file__).parents[1] / "user_strategies" / "momentum.py").read_text(encoding="utf-8").replace("lookback: int = 60", "lookback: int = 3")


@pytest.fixture
def folder(fbt_home):
    path = fbt_home / "strategies"
    path.mkdir()
    yield path
    for f in path.glob("*.py"):  # leave the registry as the next test expects it
        f.unlink()
    available_strategies(path)


def write(folder, name: str, text: str):
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_user_file_adds_a_strategy_that_runs_like_a_builtin(folder):
    path = write(folder, "momentum.py", MOMENTUM)
    library = available_strategies(folder)
    assert library["momentum"].source == str(path.resolve())
    assert library["sma_crossover"].source is None
    assert validate_params("momentum", {"lookback": 2.0}) == {"lookback": 2}
    close = np.array([10.0, 11.0, 12.0, 11.5, 11.0, 13.0])
    frame = pd.DataFrame({"close": close})
    # by hand, lookback 2: bars 0-1 flat; 12>10 +1; 11.5>11 +1; 11<12 -1; 13>11.5 +1
    assert strategy_signal("momentum", frame, {"lookback": 2}).tolist() == [0, 0, 1, 1, -1, 1]
    assert "momentum(lookback=3) [yours]" in strategies_help(folder)
    with pytest.raises(StrategyError, match=r"momentum: unknown parameter\(s\) \['window'\]"):
        validate_params("momentum", {"window": 3})
    # removing the file removes the strategy (the registry follows the folder)
    path.unlink()
    assert "momentum" not in available_strategies(folder)
    assert "sma_crossover" in STRATEGIES


@pytest.mark.parametrize("name, text, expected", [
    ("syntax.py", "def momentum(close:\n", r"syntax\.py: line 1: SyntaxError"),
    ("raises.py", "import numpy\nx = 1\nraise RuntimeError('no data here')\n",
     r"raises\.py: line 3: RuntimeError: no data here"),
    ("exits.py", "import sys\nsys.exit(3)\n", r"exits\.py: line 2: SystemExit: 3"),
    ("plain.py", "def signal(close, n=3):\n    return close\n",
     r"plain\.py: registers no strategy \(it defines signal but none is registered\)"),
    ("nodefault.py", "from fbt_pipelines.engine.strategies import register_strategy\n"
                     "@register_strategy('nodef', 'd')\ndef nodef(close, window):\n    return close\n",
     r"nodefault\.py: strategy 'nodef': parameter 'window' of nodef needs a default"),
    ("textparam.py", "from fbt_pipelines.engine.strategies import register_strategy\n"
                     "@register_strategy('texty', 'd')\ndef texty(close, mode='fast'):\n    return close\n",
     r"textparam\.py: strategy 'texty': parameter 'mode' of texty has default 'fast'"),
    ("inputs.py", "from fbt_pipelines.engine.strategies import register_strategy\n"
                  "@register_strategy('wrong_inputs', 'd', inputs=('close', 'raw_close'))\n"
                  "def wrong_inputs(raw_close, close, k=1.0):\n    return close\n",
     r"inputs\.py: strategy 'wrong_inputs': function wrong_inputs must take its inputs \['close', 'raw_close'\]"),
    ("clash.py", "from fbt_pipelines.engine.strategies import register_strategy\n"
                 "@register_strategy('ewmac', 'mine')\ndef ewmac(close, fast=8):\n    return close\n",
     r"clash\.py: strategy name 'ewmac' is already taken by fbt's template library"),
])
def test_a_bad_file_is_named_with_the_reason_and_the_others_still_load(folder, name, text, expected):
    write(folder, "momentum.py", MOMENTUM)
    write(folder, name, text)
    library = available_strategies(folder)
    assert "momentum" in library
    assert library["ewmac"].source is None  # a clash never replaces the built-in
    problems = [str(p) for p in user_problems(folder)]
    assert len(problems) == 1 and problems[0].startswith(str((folder / name).resolve()))
    assert any(re.search(expected, p) for p in problems), problems
    with pytest.raises(StrategyError, match=rf"unknown strategy 'nope'.*not loaded: .*{name}"):
        validate_params("nope", {})


def test_a_failing_or_malformed_signal_is_reported_with_its_file(folder):
    write(folder, "broken.py", """
        import numpy as np
        from fbt_pipelines.engine.strategies import register_strategy

        @register_strategy("divides", "d")
        def divides(close, k=1.0):
            return np.full(len(close), np.nan)

        @register_strategy("short_output", "d")
        def short_output(close, k=1.0):
            return np.ones(len(close) - 1)

        @register_strategy("crashes", "d")
        def crashes(close, k=1.0):
            return {}["missing"]
    """)
    available_strategies(folder)  # the workspace loads the trader's folder (the CLI and the code location do)
    frame = pd.DataFrame({"ts": pd.date_range("2024-01-02", periods=4, tz="UTC"), "close": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(StrategyError, match=r"divides \(.*broken\.py\): signal is NaN/inf at bar 0 \(2024-01-02"):
        strategy_signal("divides", frame, {})
    with pytest.raises(StrategyError, match=r"short_output \(.*broken\.py\): returned shape \(3,\), expected .*\(4,\)"):
        strategy_signal("short_output", frame, {})
    with pytest.raises(StrategyError, match=r"crashes \(.*broken\.py\): KeyError: 'missing'"):
        strategy_signal("crashes", frame, {})


def test_fbt_strategies_lists_user_strategies_and_names_bad_files_without_a_traceback(folder):
    write(folder, "momentum.py", MOMENTUM)
    write(folder, "plain.py", "def signal(close, n=3):\n    return close\n")
    result = CliRunner().invoke(main, ["strategies", "--json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["momentum"]["params"] == {"lookback": 3} and rows["momentum"]["source"].endswith("momentum.py")
    assert rows["sma_crossover"]["source"] == "fbt"
    assert "plain.py: registers no strategy" in result.stderr
    (folder / "plain.py").unlink()
    table = CliRunner().invoke(main, ["strategies"])
    assert table.exit_code == 0 and "momentum" in table.output and "yours: momentum.py" in table.output
