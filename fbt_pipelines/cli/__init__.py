"""The ``fbt`` command: ``app`` (group, pipeline commands) and ``data`` (market data).

``app`` defines the group and the pipeline commands, ``data`` the
market-data commands (ingest, contracts, catalog).
"""

from fbt_pipelines.config import pin_process_settings

pin_process_settings()  # the CLI is an entry point: Numba's cache under FBT_HOME before anything loads it

from fbt_pipelines.cli import backtest as _backtest  # noqa: E402,F401  (registers its commands)
from fbt_pipelines.cli import data as _data  # noqa: F401
from fbt_pipelines.cli import intraday as _intraday  # noqa: F401
from fbt_pipelines.cli import portfolio as _portfolio  # noqa: F401
from fbt_pipelines.cli import report as _report  # noqa: F401
from fbt_pipelines.cli import status as _status  # noqa: F401
from fbt_pipelines.cli import sweep as _sweep  # noqa: F401
from fbt_pipelines.cli import workers as _workers  # noqa: F401
from fbt_pipelines.cli.app import main

__all__ = ["main"]
