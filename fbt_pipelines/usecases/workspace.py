"""A trader's own files: extra markets, strategy files, margin histories (under ``FBT_HOME``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec, load_catalog, market_spec
from fbt_pipelines.engine.strategies import StrategyTemplate, available_strategies
from fbt_pipelines.engine.user_strategies import StrategyProblem, strategies_folder, sync_user_strategies
from fbt_pipelines.futures.margin import MarginSchedule, margin_per_bar, margin_schedule, read_margin_history


@dataclass(frozen=True)
class Workspace:
    """Where the trader's files live.

    ``home`` holds ``markets.toml`` / ``markets.d/*.toml`` (extra or overridden
    markets) and ``strategies/*.py`` (the trader's strategies);
    ``margins_dir`` holds dated margin histories ``<ROOT>.csv`` (LEAN's
    ``date,initial,maintenance``, USD per contract), default ``home/margins``.
    """

    home: Path
    margins_dir: Path | None = None

    def catalog(self) -> Mapping[str, ContractSpec]:
        """Every market: built-ins plus the trader's tables."""
        return load_catalog(self.home)

    def market(self, root: str) -> ContractSpec:
        """One market's spec (clear error naming the known roots for an unknown one)."""
        return market_spec(root, self.home)

    @property
    def strategies_dir(self) -> Path:
        return strategies_folder(self.home)

    def strategies(self) -> dict[str, StrategyTemplate]:
        """fbt's strategies plus the trader's files (loaded once per change of the folder)."""
        return available_strategies(self.strategies_dir)

    def strategy_problems(self) -> list[StrategyProblem]:
        """Why a strategy file of the trader's could not be loaded (empty when all load)."""
        return sync_user_strategies(self.strategies_dir)

    def margin_history_file(self, root: str) -> Path | None:
        """``<margins_dir>/<ROOT>.csv`` if present."""
        folder = self.margins_dir if self.margins_dir is not None else self.home / "margins"
        path = folder / f"{root}.csv"
        return path if path.is_file() else None

    def margins(self, root: str, ts: pd.Series, spec: ContractSpec) -> tuple[np.ndarray, str]:
        """(initial margin per contract at each bar in USD, its source): the
        market's dated history where the trader has one, else the catalogue value."""
        path = self.margin_history_file(root)
        history = read_margin_history(path) if path is not None else None
        return margin_per_bar(ts, spec, history), str(path) if path is not None else "catalogue"

    def margin_schedule(self, root: str, ts: pd.Series, spec: ContractSpec) -> tuple[MarginSchedule, str]:
        """(initial and maintenance margins per contract in USD over the bars
        ``ts`` as the engine's segments, their source): both columns of the
        market's dated history where the trader has one (the catalogue's
        values before its first row), else the catalogue's
        ``initial_margin`` and ``maintenance_margin``.
        ``schedule.per_bar("initial")`` equals :meth:`margins`."""
        path = self.margin_history_file(root)
        history = read_margin_history(path) if path is not None else None
        source = str(path) if path is not None else "catalogue"
        return margin_schedule(ts, spec, history), source
