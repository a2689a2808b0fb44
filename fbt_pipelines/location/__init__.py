"""The Dagster code location: the only ``fbt_pipelines`` package that imports Dagster.

Definitions, jobs, schedules, sensors, executors, the instance and the
in-process pipeline runner.

Importing it pins the process settings fbt needs before Numba loads (its cache folder under
``FBT_HOME``): the code location is a composition root, the domain below it does nothing at import.
"""

from fbt_pipelines.config import pin_process_settings

pin_process_settings()
