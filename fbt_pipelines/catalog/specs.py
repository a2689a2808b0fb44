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
    hold_cycle: str = ""  # months a roll goes into ("" = every listed month), e.g. "Z" for CL
    roll_rule: str = "calendar"  # default roll rule (fbt_pipelines.futures.roll_rules), e.g. "volume"

    @property
    def held_months(self) -> str:
        return self.hold_cycle or self.cycle

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
    required = [f for f in ContractSpec.__dataclass_fields__ if f not in ("root", "sample", "hold_cycle", "roll_rule")]
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
    try:
        expiry.resolve_expiry_rule(str(values["expiry_rule"]))
    except KeyError:
        raise CatalogError(
            f"{source}: market [{root}] has unknown expiry_rule {values['expiry_rule']!r}; "
            f"known: {', '.join(sorted(expiry.EXPIRY_RULES))}, day_of_month:N, days_before_month:N"
        ) from None
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
    hold = str(row.get("hold_cycle", ""))
    if any(c not in cycle for c in hold) or len(set(hold)) != len(hold):
        raise CatalogError(f"{source}: market [{root}] has hold_cycle {hold!r} outside its cycle {cycle!r}")
    rule = str(row.get("roll_rule", "calendar"))
    if rule.split(",")[0].split(":")[0] not in ("calendar", "volume", "open_interest", "first_of_month", "day_of_month"):
        raise CatalogError(f"{source}: market [{root}] has unknown roll_rule {rule!r} "
                           "(calendar, volume, open_interest, first_of_month, day_of_month:D)")
    return ContractSpec(root=root, sample=sample, hold_cycle=hold, roll_rule=rule, **values)  # type: ignore[arg-type]


def parse_catalog(text: str, source: str) -> dict[str, ContractSpec]:
    """Parse a TOML market table (one ``[ROOT]`` table per market)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from exc
    return {root: _spec_from_row(root, row, source) for root, row in sorted(data.items())}


USER_TABLE_NAME = "markets.toml"
USER_TABLE_DIR = "markets.d"


def user_table_paths() -> list[Path]:
    """A user's extra markets, or overrides of built-in ones (same TOML format,
    a whole ``[ROOT]`` table per market): ``$FBT_HOME/markets.toml`` then
    ``$FBT_HOME/markets.d/*.toml`` in name order (later files win)."""
    from fbt_pipelines.config import paths

    home = paths().home
    files = [home / USER_TABLE_NAME] + sorted((home / USER_TABLE_DIR).glob("*.toml"))
    return [f for f in files if f.is_file()]


@lru_cache(maxsize=8)
def _load(user_files: tuple[tuple[str, int], ...]) -> Mapping[str, ContractSpec]:
    markets = parse_catalog(BUILTIN_TABLE.read_text(), str(BUILTIN_TABLE))
    for path, _mtime in user_files:
        markets.update(parse_catalog(Path(path).read_text(encoding="utf-8"), path))
    return MappingProxyType(dict(sorted(markets.items())))


def load_catalog() -> Mapping[str, ContractSpec]:
    """Built-in markets plus the user's tables under ``FBT_HOME``, keyed by root
    (sorted). Re-read when a user file changes."""
    return _load(tuple((str(p), p.stat().st_mtime_ns) for p in user_table_paths()))


def market_spec(root: str) -> ContractSpec:
    """Spec of one market; clear error for an unknown root."""
    catalog = load_catalog()
    try:
        return catalog[root]
    except KeyError:
        raise CatalogError(f"unknown market {root!r}; known: {', '.join(catalog)}") from None
