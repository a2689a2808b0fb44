"""The intraday job: one market's bars, rolls, series, backtests and tear sheet."""

from __future__ import annotations

from typing import Collection

from dagster import AssetSelection, define_asset_job

from assets.intraday import GROUP
from assets.partitions import market_partitions

INTRADAY_JOB = "intraday_market"

intraday_job = define_asset_job(
    # the sweep is materialized on its own: a job's series may be days long, too short for its walk-forward
    INTRADAY_JOB, AssetSelection.groups(GROUP) - AssetSelection.assets("intraday_parameter_sweep"),
    partitions_def=market_partitions,
    description="One market at 1m or 1h (run config `interval`, optional `start`/`end` trading days): bars "
                "from landing/<ROOT>/<interval>/, intraday roll schedule, continuous series, backtests, tear sheet (`fbt demo-intraday`).",
)


def intraday_run_config(interval: str = "1m", start: str = "", end: str = "",
                        backtests: dict | None = None, assets: Collection[str] | None = None) -> dict:
    """Run config giving every intraday asset the same series (backtests: their settings).

    ``assets``: config for these assets only (a materialize of a selection
    rejects the config of an asset left out); None: every asset of the job.
    """
    series = {"interval": interval, "start": start, "end": end}
    ops = {name: {"config": dict(series)} for name in
           ("intraday_roll_schedule", "intraday_continuous_prices", "intraday_tear_sheet", "intraday_features",
            "intraday_portfolio")}
    ops["intraday_raw_bars"] = {"config": {"interval": interval}}
    ops["intraday_backtests"] = {"config": {**series, **(backtests or {})}}
    if assets is not None:
        ops = {name: value for name, value in ops.items() if name in set(assets)}
    return {"ops": ops}
