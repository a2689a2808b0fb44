"""Order settings everywhere a backtest is defined: the spec (and its hash), `fbt backtest`'s options,
the `backtests` and `parameter_sweep` run configs and the request queue's payload; bad values get an
error naming the option and the value."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fbt_pipelines.engine.strategies import STRATEGIES
from fbt_pipelines.errors import StrategyError
from fbt_pipelines.services.limits import LimitExceeded, check_backtest_request
from fbt_pipelines.usecases.requests import accept_request
from fbt_pipelines.usecases.spec import BacktestSpec, OrderSettings


def spec(params=None, **settings) -> BacktestSpec:
    return BacktestSpec.create("sma_crossover", params or {"fast": 10, "slow": 50}, library=STRATEGIES, **settings)


def test_order_settings_are_part_of_the_spec_hash_only_when_set() -> None:
    plain = spec()
    assert not {"stop_loss", "take_profit", "trailing_stop", "limit_offset", "contracts"} & set(plain.settings())
    with_stop = spec(orders=OrderSettings(stop_loss="40"))
    assert with_stop.settings()["stop_loss"] == "40" and with_stop.spec_hash() != plain.spec_hash()
    # the same setting spelled differently is the same spec
    assert spec(orders=OrderSettings(stop_loss=40.0)).spec_hash() == with_stop.spec_hash()
    assert spec(orders=OrderSettings(stop_loss=" 40 points")).spec_hash() == with_stop.spec_hash()
    assert spec(orders=OrderSettings(stop_loss="2%")).spec_hash() != with_stop.spec_hash()
    assert plain.engine_config().config_hash() == spec(orders=OrderSettings()).engine_config().config_hash()


def test_order_settings_among_the_parameters_are_split_off() -> None:
    s = spec({"fast": 10, "slow": 50, "stop_loss": 40, "contracts": 2.0})
    assert s.param_dict == {"fast": 10, "slow": 50}
    assert (s.orders.stop_loss, s.orders.contracts) == ("40", 2)
    assert s.with_params({"fast": 5, "slow": 20, "take_profit": "3atr"}).orders.take_profit == "3atr"
    with pytest.raises(ValueError, match="stop_loss must be a positive distance, got -3"):
        spec({"fast": 10, "slow": 50, "stop_loss": -3})
    with pytest.raises(ValueError, match="unknown order setting"):
        OrderSettings().with_options({"stop": "40"})


def test_the_backtests_and_sweep_run_configs_carry_order_settings() -> None:
    from assets.backtests import BacktestsConfig
    from assets.sweeps import SweepConfig

    cfg = BacktestsConfig(strategies=[{"name": "sma_crossover", "params": {"fast": 20, "slow": 100, "stop_loss": 40}},
                                      {"name": "buy_and_hold"}], take_profit="2%", trailing_stop="3atr", contracts=1)
    specs = {s.strategy: s for s in cfg.specs(STRATEGIES)}
    assert specs["sma_crossover"].orders == OrderSettings(stop_loss="40", take_profit="2%", trailing_stop="3atr",
                                                          contracts=1)
    assert specs["buy_and_hold"].orders.stop_loss is None and specs["buy_and_hold"].orders.take_profit == "2%"
    with pytest.raises(ValueError, match="limit_offset 'x' is not a distance"):
        BacktestsConfig(limit_offset="x").specs(STRATEGIES)
    sweep = SweepConfig(grid={"fast": [10], "slow": [50], "stop_loss": [20, 40]},
                        orders_grid={"take_profit": ["2%", "3atr"], "contracts": ["1"]})
    sets = sweep.sets()
    assert len(sets) == 4 and {s["stop_loss"] for s in sets} == {"20", "40"} and {s["contracts"] for s in sets} == {1}
    with pytest.raises(ValueError, match="contracts must be a whole number >= 1, got 'two'"):
        SweepConfig(grid={"fast": [10], "slow": [50]}, orders_grid={"contracts": ["two"]}).sets()


def test_cli_options_are_checked_and_name_the_option() -> None:
    from fbt_pipelines.cli import main

    for args, message in [(["--stop-loss", "-40"], "Invalid value for '--stop-loss': --stop-loss must be a positive "
                                                   "distance, got '-40'"),
                          (["--take-profit", "3pips"], "Invalid value for '--take-profit': --take-profit '3pips' is "
                                                       "not a distance"),
                          (["--trailing-stop", "120%"], "a percentage distance must be below 100%"),
                          (["--contracts", "0"], "Invalid value for '--contracts': 0 is not in the range x>=1")]:
        result = CliRunner().invoke(main, ["backtest", "--strategy", "sma_crossover", "--market", "ES", *args])
        assert result.exit_code == 2 and message in result.output, result.output
    help_text = CliRunner().invoke(main, ["backtest", "--help"]).output
    for phrase in ("--stop-loss", "--take-profit", "--trailing-stop", "--limit-offset", "--contracts",
                   "both in one bar: the stop", "margin_call"):
        assert phrase in help_text


def request(**extra) -> dict:
    return {"request_id": "r1", "market": "ES", "strategy": "sma_crossover", "params": {"fast": 10, "slow": 50},
            **extra}


def test_requests_carry_order_settings() -> None:
    body = request(orders={"stop_loss": "2%", "contracts": 1}, params={"fast": 10, "slow": 50, "take_profit": 60})
    check_backtest_request(body)
    accepted = accept_request(body, {"ES"}, STRATEGIES)
    assert accepted.spec.orders == OrderSettings(stop_loss="2%", take_profit="60", contracts=1)
    assert accepted.backtests_config() == {"strategies": [{"name": "sma_crossover", "params": {"fast": 10, "slow": 50}}],
                                           "fill": "next_open", "stop_loss": "2%", "take_profit": "60",
                                           "contracts": 1}


@pytest.mark.parametrize("orders, error, message", [
    ({"stop": "40"}, LimitExceeded, "request r1: unknown order setting 'stop'"),
    ({"stop_loss": ["40"]}, LimitExceeded, "request r1: order setting stop_loss must be a number or a short text"),
    ({"stop_loss": "4" * 40}, LimitExceeded, "order setting stop_loss must be a number or a short text"),
    ({"stop_loss": "-40"}, StrategyError, "request r1: stop_loss must be a positive distance, got '-40'"),
    ({"contracts": 1.5}, StrategyError, "request r1: contracts must be a whole number >= 1, got 1.5"),
    ({"fill": "tomorrow"}, StrategyError, "request r1: fill must be"),
])
def test_bad_order_settings_in_a_request_are_refused(orders, error, message) -> None:
    body = request(orders=orders)
    with pytest.raises(error, match=message.replace("(", r"\(")):
        check_backtest_request(body)
        accept_request(body, {"ES"}, STRATEGIES)
    with pytest.raises(LimitExceeded, match="orders must be an object"):
        check_backtest_request(request(orders=["stop_loss"]))
