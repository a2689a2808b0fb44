"""Docstrings open with one short summary line (issue 19, item 5).

Every module, class, function and method docstring of the modules listed in
:data:`MODULES` starts with a single summary line of at most
:data:`MAX_SUMMARY` characters, followed by a blank line and the rest of the
text when there is more. A summary that wraps over several lines, or one
line that is too long, fails the test naming the module, the object and its
line. Dagster asset functions (``assets/*.py``) are left out on purpose:
Dagster shows line 1 of their docstring as the asset's description.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_SUMMARY = 84

MODULES = [
    "fbt_pipelines/engine/allocator.py",
    "fbt_pipelines/catalog/__init__.py",
    "fbt_pipelines/catalog/contracts.py",
    "fbt_pipelines/catalog/expiry.py",
    "fbt_pipelines/catalog/pysystemtrade.py",
    "fbt_pipelines/catalog/tables.py",
    "fbt_pipelines/cli/__init__.py",
    "fbt_pipelines/cli/app.py",
    "fbt_pipelines/cli/portfolio.py",
    "fbt_pipelines/cli/report.py",
    "fbt_pipelines/cli/status.py",
    "fbt_pipelines/cli/workers.py",
    "fbt_pipelines/config.py",
    "fbt_pipelines/errors.py",
    "fbt_pipelines/futures/back_adjust.py",
    "fbt_pipelines/futures/continuous.py",
    "fbt_pipelines/futures/roll_rules.py",
    "fbt_pipelines/futures/roll_schedule.py",
    "fbt_pipelines/location/__init__.py",
    "fbt_pipelines/location/automation_backup.py",
    "fbt_pipelines/location/automation_ml.py",
    "fbt_pipelines/location/definitions.py",
    "fbt_pipelines/location/executors.py",
    "fbt_pipelines/location/instance.py",
    "fbt_pipelines/location/pipeline_runner.py",
    "fbt_pipelines/location/sweep_fanout.py",
    "fbt_pipelines/ml/monitoring.py",
    "fbt_pipelines/ml/training.py",
    "fbt_pipelines/ml/walk_forward.py",
    "fbt_pipelines/portfolio/book.py",
    "fbt_pipelines/portfolio/portfolio.py",
    "fbt_pipelines/portfolio/targets.py",
    "fbt_pipelines/primitives/__init__.py",
    "fbt_pipelines/primitives/indicators.py",
    "fbt_pipelines/primitives/returns.py",
    "fbt_pipelines/primitives/versioning.py",
    "fbt_pipelines/reports/charts.py",
    "fbt_pipelines/reports/export.py",
    "fbt_pipelines/reports/numbers.py",
    "fbt_pipelines/reports/pdf.py",
    "fbt_pipelines/reports/sparkline.py",
    "fbt_pipelines/risk/__init__.py",
    "fbt_pipelines/risk/correlation.py",
    "fbt_pipelines/risk/metrics.py",
    "fbt_pipelines/risk/monte_carlo.py",
    "fbt_pipelines/risk/overfitting.py",
    "fbt_pipelines/risk/report.py",
    "fbt_pipelines/risk/scenarios.py",
    "fbt_pipelines/services/__init__.py",
    "fbt_pipelines/services/alerts.py",
    "fbt_pipelines/services/backup.py",
    "fbt_pipelines/services/backup_rotation.py",
    "fbt_pipelines/services/cached_reads.py",
    "fbt_pipelines/services/home.py",
    "fbt_pipelines/services/local.py",
    "fbt_pipelines/services/model_tracking.py",
    "fbt_pipelines/services/summary.py",
    "fbt_pipelines/services/tracking.py",
    "fbt_pipelines/services/warehouse.py",
    "fbt_pipelines/usecases/__init__.py",
    "fbt_pipelines/usecases/continuous.py",
    "fbt_pipelines/usecases/ml.py",
    "fbt_pipelines/usecases/portfolio.py",
    "fbt_pipelines/usecases/report.py",
    "fbt_pipelines/usecases/risk.py",
    "resources/__init__.py",
    "resources/bus.py",
    "resources/files.py",
    "resources/tracking.py",
    "resources/warehouse.py",
    "fbt_pipelines/marketdata/daily_bars.py",
    "fbt_pipelines/marketdata/session_hours.py",
    "fbt_pipelines/marketdata/session_table.py",
    "fbt_pipelines/cli/sweep.py",
    "fbt_pipelines/usecases/requests.py",
    "fbt_pipelines/location/request_batches.py",
    "fbt_pipelines/reports/roll_table.py",
    "fbt_pipelines/usecases/margin_check.py",
    "fbt_pipelines/ingest/dbn.py",
    "fbt_pipelines/ingest/presets.py",
    "fbt_pipelines/ingest/bulk_arrays.py",
    "fbt_pipelines/usecases/intraday.py",
    "fbt_pipelines/usecases/intraday_features.py",
    "fbt_pipelines/usecases/intraday_portfolio.py",
    "fbt_pipelines/marketdata/sample_minutes.py",
    "fbt_pipelines/location/intraday.py",
    "fbt_pipelines/cli/intraday.py",
    "fbt_pipelines/engine/sweep_kernel.py",
    "fbt_pipelines/engine/intraday_sweep_kernel.py",
    "fbt_pipelines/usecases/intraday_sweep.py",
]

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def long_summaries(source: str) -> list[str]:
    """``name:line`` of every docstring in ``source`` whose summary is not one short line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, _DOCUMENTED):
            continue
        doc = ast.get_docstring(node, clean=False)
        if not doc or not doc.strip():
            continue
        text = doc.strip()
        wraps = "\n" in text.split("\n\n")[0].strip()
        too_long = len(text.splitlines()[0]) > MAX_SUMMARY
        if wraps or too_long:
            found.append(f"{getattr(node, 'name', '<module>')}:{getattr(node, 'lineno', 1)}")
    return found


def test_checker_flags_wrapped_and_long_summaries():
    good = '"""Short.\n\nMore text\nover lines.\n"""\ndef f():\n    """One line."""\n'
    wrapped = 'def f():\n    """A summary that\n    wraps."""\n'
    too_long = f'class C:\n    """{"x" * (MAX_SUMMARY + 1)}"""\n'
    assert long_summaries(good) == []
    assert long_summaries(wrapped) == ["f:1"]
    assert long_summaries(too_long) == ["C:1"]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_summaries_are_one_short_line(module):
    offenders = long_summaries((REPO / module).read_text(encoding="utf-8"))
    assert not offenders, (
        f"{module}: docstring summary not one line of <= {MAX_SUMMARY} characters "
        f"(put a short first line, a blank line, then the details): {', '.join(offenders)}"
    )
