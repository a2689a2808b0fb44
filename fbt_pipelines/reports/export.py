"""CSV export of a backtest: equity.csv, trades.csv, metrics.csv.

Plain CSV (comma separated, header row, ``.`` decimals, no index column);
timestamps as ``2018-01-02 00:00:00+00:00`` (ISO 8601 with a space). Each
file is written to a temporary name and renamed, so a reader never sees half
a file.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["export_csv"]


def _write(frame: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (dt.date, dt.datetime, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # empty cell
    return value


def export_csv(
    folder: Path,
    equity: pd.DataFrame | pd.Series,
    trades: pd.DataFrame,
    metrics: Mapping[str, Any],
) -> dict[str, Path]:
    """Write ``equity.csv``, ``trades.csv`` and ``metrics.csv`` into ``folder``.

    ``equity``: a frame (written as is, one row per bar) or a Series indexed
    by ts (written as columns ts, equity). ``trades``: written as is.
    ``metrics``: name -> value, written as two columns ``metric,value``
    (non-finite floats as empty cells, dates ISO). Returns name -> path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(equity, pd.Series):
        name = equity.name if isinstance(equity.name, str) else "equity"
        equity = equity.rename(name).rename_axis(equity.index.name or "ts").reset_index()
    rows = pd.DataFrame({"metric": list(metrics), "value": [_scalar(v) for v in metrics.values()]})
    return {
        "equity": _write(equity, folder / "equity.csv"),
        "trades": _write(trades, folder / "trades.csv"),
        "metrics": _write(rows, folder / "metrics.csv"),
    }
