"""The ``fbt`` command: ``app`` defines the group and the pipeline commands,
``data`` the market-data commands (ingest, contracts, catalog)."""

from fbt_pipelines.cli import backtest as _backtest  # noqa: F401  (registers its commands)
from fbt_pipelines.cli import data as _data  # noqa: F401
from fbt_pipelines.cli import portfolio as _portfolio  # noqa: F401
from fbt_pipelines.cli import report as _report  # noqa: F401
from fbt_pipelines.cli import status as _status  # noqa: F401
from fbt_pipelines.cli import workers as _workers  # noqa: F401
from fbt_pipelines.cli.app import main

__all__ = ["main"]
