"""Every `fbt` command's --help runs, and every example it shows names a real command."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from fbt_pipelines.cli import main


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append((*path, name))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, (*path, name)))
    return out


COMMANDS = _commands(main)


def _resolves(words: list[str]) -> bool:
    """Whether ``fbt w1 w2 ...`` starts with a command path of the CLI."""
    cmd: click.Command = main
    for word in words:
        if not isinstance(cmd, click.Group):
            return True
        if word not in cmd.commands:
            return word.startswith("-") or cmd is not main
        cmd = cmd.commands[word]
    return True


def test_the_cli_has_the_trader_commands():
    for path in [("markets",), ("catalog", "list"), ("contracts",), ("report",), ("status",), ("backtest",)]:
        assert path in COMMANDS, path


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_runs_and_its_examples_name_real_commands(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    examples = [line.strip() for line in result.output.splitlines() if line.strip().startswith("fbt ")]
    for line in examples:
        words = re.split(r"\s+", line.split("#")[0].split("|")[0].strip())[1:]
        assert _resolves(words), (path, line)


@pytest.mark.parametrize("path", [("markets",), ("catalog", "list"), ("contracts",), ("report",), ("backtest",)])
def test_trader_commands_show_examples_of_themselves(path):
    out = CliRunner().invoke(main, [*path, "--help"]).output
    assert re.search(r"Examples?:", out), out
    assert f"fbt {' '.join(path)}" in out, out


def test_unknown_strategy_and_parameter_names_are_bad_usage_with_a_hint():
    from fbt_pipelines.cli.app import check_strategy_names, close_names
    from fbt_pipelines.cli.app import workspace_here

    library = workspace_here().strategies()
    with pytest.raises(click.BadParameter, match="did you mean 'sma_crossover'") as bad:
        check_strategy_names("sma_crossovr", {}, library)
    assert bad.value.exit_code == 2
    with pytest.raises(click.BadParameter, match=r"unknown parameter\(s\) \['fsat'\]: 'fsat': did you mean 'fast'"):
        check_strategy_names("sma_crossover", {"fsat": 10.0}, library)
    check_strategy_names("sma_crossover", {"fast": 10.0}, library)  # known names pass
    assert close_names("EZ", ["ES", "ZW", "6E"]) == ["ES"]  # one substitution; ZW and 6E need two
    assert close_names("ewmac", ["ewmac_multi", "carry"]) == ["ewmac_multi"]  # a prefix
    assert close_names("qqq", ["ES", "CL"]) == []
