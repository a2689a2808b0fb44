"""What a trader does, one function each: the only door of the CLI and the assets.

The CLI and the Dagster assets both go through these functions:

| trader's action | function |
| --- | --- |
| build a market's roll schedule and continuous series | :func:`fbt_pipelines.usecases.continuous.roll_schedule_for_market`, :func:`~fbt_pipelines.usecases.continuous.continuous_for_market`, :func:`~fbt_pipelines.usecases.continuous.continuous_variant` |
| backtest one strategy on one market | :func:`fbt_pipelines.usecases.backtest.backtest_market` (the one place a backtest runs) |
| sweep a strategy's parameters (+ walk-forward) | :func:`fbt_pipelines.usecases.sweep.run_sweep`, :func:`~fbt_pipelines.usecases.sweep.store_sweep` |
| features, train, predict | :mod:`fbt_pipelines.usecases.ml` |
| portfolio targets and book, risk report | :mod:`fbt_pipelines.usecases.portfolio`, :mod:`fbt_pipelines.usecases.risk` |

Inputs are typed values (a :class:`~fbt_pipelines.usecases.spec.BacktestSpec`, a
:class:`~fbt_pipelines.usecases.backtest.MarketData`, a
:class:`~fbt_pipelines.usecases.workspace.Workspace` for the trader's own files);
the services (warehouse connection, tracking client) come in as arguments.
Nothing here reads the environment or imports Dagster.
"""
