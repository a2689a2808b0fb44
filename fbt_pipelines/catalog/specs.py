"""Market (contract root) specifications loaded from the built-in TOML table."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from fbt_pipelines.errors import CatalogError

BUILTIN_TABLE = Path(__file__).with_name("markets.toml")
MONTH_CODES = "FGHJKMNQUVXZ"


@dataclass(frozen=True)
class ContractSpec:
    """One futures market (a contract root).

    Attributes
    ----------
    root : str
        Contract root, e.g. ``"ES"``.
    multiplier : float
        Point value: contract currency per 1.0 price point (ES: 50 USD).
    tick_size : float
        Minimum price increment in points (ES: 0.25).
    cycle : str
        Listed month codes, e.g. ``"HMUZ"``.
    commission : float
        Contract currency per contract per side.
    initial_margin, maintenance_margin : float
        Contract currency per contract.
    roll_days_before : int
        Default roll: business days before last trade (or first notice).
    """

    root: str
    name: str
    exchange: str
    asset_class: str
    currency: str
    multiplier: float
    tick_size: float
    cycle: str
    expiry_rule: str
    first_notice_rule: str
    roll_days_before: int
    commission: float
    initial_margin: float
    maintenance_margin: float
    sample: Mapping[str, float] = field(default_factory=dict)

    @property
    def tick_value(self) -> float:
        """Contract currency per tick (ES: 12.50 USD)."""
        return self.tick_size * self.multiplier

    @property
    def physically_delivered(self) -> bool:
        return self.first_notice_rule != "none"


def _spec_from_row(root: str, row: Mapping[str, object], source: str) -> ContractSpec:
    from fbt_pipelines.catalog import expiry  # local: expiry imports specs' constants

    if not isinstance(row, Mapping):
        raise CatalogError(f"{source}: market [{root}] must be a table, got {row!r}")
    if not re.fullmatch(r"[A-Z0-9]{1,4}", root):
        # contract ids are ROOT + month code + year; parse_contract_id accepts only these roots
        raise CatalogError(f"{source}: market [{root}] has an invalid root (1-4 of A-Z, 0-9)")
    required = [f for f in ContractSpec.__dataclass_fields__ if f not in ("root", "sample")]
    missing = [f for f in required if f not in row]
    if missing:
        raise CatalogError(f"{source}: market [{root}] is missing {', '.join(missing)}")
    values = {f: row[f] for f in required}
    for name in ("multiplier", "tick_size", "commission", "initial_margin", "maintenance_margin"):
        try:
            v = float(values[name])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise CatalogError(f"{source}: market [{root}] has invalid {name}={values[name]!r}") from None
        if not math.isfinite(v) or v < 0 or (name in ("multiplier", "tick_size") and v == 0):
            raise CatalogError(f"{source}: market [{root}] has invalid {name}={values[name]!r}")
        values[name] = v
    cycle = str(values["cycle"])
    if not cycle or any(c not in MONTH_CODES for c in cycle) or len(set(cycle)) != len(cycle):
        raise CatalogError(f"{source}: market [{root}] has invalid cycle {cycle!r} (month codes {MONTH_CODES})")
    if values["expiry_rule"] not in expiry.EXPIRY_RULES:
        raise CatalogError(
            f"{source}: market [{root}] has unknown expiry_rule {values['expiry_rule']!r}; "
            f"known: {', '.join(sorted(expiry.EXPIRY_RULES))}"
        )
    if values["first_notice_rule"] not in expiry.FIRST_NOTICE_RULES:
        raise CatalogError(
            f"{source}: market [{root}] has unknown first_notice_rule {values['first_notice_rule']!r}; "
            f"known: {', '.join(sorted(expiry.FIRST_NOTICE_RULES))}"
        )
    roll = values["roll_days_before"]
    if isinstance(roll, bool) or not isinstance(roll, int) or roll < 0:
        raise CatalogError(f"{source}: market [{root}] has invalid roll_days_before={roll!r} (integer >= 0)")
    try:
        sample = MappingProxyType({k: float(v) for k, v in dict(row.get("sample", {})).items()})  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CatalogError(f"{source}: market [{root}] has invalid sample={row.get('sample')!r} "
                           "(a table of numbers)") from None
    return ContractSpec(root=root, sample=sample, **values)  # type: ignore[arg-type]


def parse_catalog(text: str, source: str) -> dict[str, ContractSpec]:
    """Parse a TOML market table (one ``[ROOT]`` table per market)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from exc
    return {root: _spec_from_row(root, row, source) for root, row in sorted(data.items())}


USER_TABLE_NAME = "markets.toml"


def user_table_path() -> Path:
    """``$FBT_HOME/markets.toml``: a user's extra markets, or overrides of
    built-in ones (same TOML format, a whole ``[ROOT]`` table per market)."""
    from fbt_pipelines.config import paths

    return paths().home / USER_TABLE_NAME


@lru_cache(maxsize=8)
def _load(user_path: str, user_mtime_ns: int) -> Mapping[str, ContractSpec]:
    markets = parse_catalog(BUILTIN_TABLE.read_text(), str(BUILTIN_TABLE))
    if user_path:
        markets.update(parse_catalog(Path(user_path).read_text(encoding="utf-8"), user_path))
    return MappingProxyType(dict(sorted(markets.items())))


def load_catalog() -> Mapping[str, ContractSpec]:
    """Built-in markets plus the user's table under ``FBT_HOME``, keyed by root
    (sorted). Re-read when the user file changes."""
    user = user_table_path()
    if user.is_file():
        return _load(str(user), user.stat().st_mtime_ns)
    return _load("", 0)


def market_spec(root: str) -> ContractSpec:
    """Spec of one market; clear error for an unknown root."""
    catalog = load_catalog()
    try:
        return catalog[root]
    except KeyError:
        raise CatalogError(f"unknown market {root!r}; known: {', '.join(catalog)}") from None
