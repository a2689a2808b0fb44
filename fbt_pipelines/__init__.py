"""fbt: futures backtesting on Dagster.

Importing the package first pins process-wide settings (Numba's cache folder
under ``FBT_HOME``) before any submodule imports Numba.
"""

from fbt_pipelines import config as _config  # noqa: F401  (sets NUMBA_CACHE_DIR)
