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
# Plausibility bound of a price when the market table gives none (see ContractSpec.price_bounds):
DEFAULT_MAX_NOTIONAL = 1e10  # contract currency: one contract worth more than this is not a price
MAX_TICKS = 2.0**52  # prices/tick up to this are exact integers in float64: the tick-grid check stays exact
DEFAULT_PRICE_BAND = 10.0  # a close more than 10x (or under 1/10) the previous accepted close is implausible
_OPTIONAL_NUMBERS = ("min_price", "max_price", "price_band")  # optional fields of a market table row
# Trading hours of a market row, clock times in its calendar's time zone: "open-close", optionally
# " break start-end" (an open at or after the close starts the session the evening before).
HOURS_PATTERN = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})(?: break (\d{2}):(\d{2})-(\d{2}):(\d{2}))?")


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
    min_price, max_price : float or None
        Plausibility bound of every price, in points (see :attr:`price_bounds`);
        None: the default derived from the spec.
    calendar : str
        ``exchange_calendars`` name of the market's trading calendar (holidays,
        early closes); "" = the default, CMES (see
        :mod:`fbt_pipelines.marketdata.session_hours`).
    hours : str
        Regular trading hours in the calendar's time zone, ``"17:00-16:00"``
        or ``"19:00-13:20 break 07:45-08:30"``; "" = the default of the asset
        class.
    price_band : float
        A bar whose close is more than ``price_band`` times (or less than
        1/``price_band`` of) the previous accepted close of its contract is
        implausible (default 10).
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
    min_price: float | None = None  # points; None: one tick
    max_price: float | None = None  # points; None: DEFAULT_MAX_NOTIONAL / multiplier, at most MAX_TICKS ticks
    price_band: float = DEFAULT_PRICE_BAND
    calendar: str = ""  # exchange_calendars name; "" = default (CMES)
    hours: str = ""  # e.g. "17:00-16:00"; "" = default of the asset class

    @property
    def price_bounds(self) -> tuple[float, float]:
        """(lowest, highest) plausible price in points; a bar with a price
        outside is quarantined as ``implausible_price``. Defaults: one tick;
        the price at which one contract is worth ``DEFAULT_MAX_NOTIONAL``
        (1e10) in its currency, capped at ``MAX_TICKS`` (2**52) ticks, so that
        the tick-grid check (price / tick) never overflows or loses the
        integer part (ES: 0.25 .. 2e8 points)."""
        lo = self.tick_size if self.min_price is None else self.min_price
        hi = min(DEFAULT_MAX_NOTIONAL / self.multiplier, self.tick_size * MAX_TICKS) \
            if self.max_price is None else self.max_price
        return lo, hi

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
    required = [f for f in ContractSpec.__dataclass_fields__
                if f not in ("root", "sample", "hold_cycle", "roll_rule", "calendar", "hours", *_OPTIONAL_NUMBERS)]
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
    bounds = _price_bound_fields(root, row, values, source)
    calendar, hours = _session_fields(root, row, source)
    return ContractSpec(root=root, sample=sample, hold_cycle=hold, roll_rule=rule, **values,  # type: ignore[arg-type]
                        **bounds, calendar=calendar, hours=hours)


def _session_fields(root: str, row: Mapping[str, object], source: str) -> tuple[str, str]:
    """The optional ``calendar`` and ``hours`` of a market row, checked.

    ``calendar``: a name exchange_calendars knows; ``hours``:
    :data:`HOURS_PATTERN` with clock times below 24:00.
    """
    import exchange_calendars as xcals

    calendar, hours = str(row.get("calendar", "")), str(row.get("hours", ""))
    if calendar and calendar not in xcals.get_calendar_names(include_aliases=True):
        raise CatalogError(f"{source}: market [{root}] has unknown calendar {calendar!r} "
                           "(an exchange_calendars name, e.g. CMES, XEUR)")
    m = HOURS_PATTERN.fullmatch(hours)
    if hours and (m is None or any(int(h) > 23 for h in m.groups()[0::2] if h)
                  or any(int(mm) > 59 for mm in m.groups()[1::2] if mm)):
        raise CatalogError(f"{source}: market [{root}] has invalid hours {hours!r} "
                           "(HH:MM-HH:MM, optionally ' break HH:MM-HH:MM')")
    return calendar, hours



def _price_bound_fields(root: str, row: Mapping[str, object], values: Mapping[str, object],
                        source: str) -> dict[str, float]:
    """The optional plausibility fields of a market row (points; a table
    without them keeps the defaults of :attr:`ContractSpec.price_bounds`),
    checked: finite, 0 < min_price < max_price <= 2**52 ticks, price_band > 1."""
    out: dict[str, float] = {}
    for name in _OPTIONAL_NUMBERS:
        if name not in row:
            continue
        raw = row[name]
        try:
            if isinstance(raw, bool):
                raise TypeError
            v = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise CatalogError(f"{source}: market [{root}] has invalid {name}={raw!r} (a number)") from None
        if not math.isfinite(v) or v <= 0 or (name == "price_band" and v <= 1):
            limit = "a finite number > 1" if name == "price_band" else "a finite number > 0"
            raise CatalogError(f"{source}: market [{root}] has invalid {name}={raw!r} ({limit})")
        out[name] = v
    tick, multiplier = float(values["tick_size"]), float(values["multiplier"])  # type: ignore[arg-type]
    probe = ContractSpec(root=root, name="", exchange="", asset_class="", currency="", multiplier=multiplier,
                         tick_size=tick, cycle="", expiry_rule="", first_notice_rule="", roll_days_before=0,
                         commission=0.0, initial_margin=0.0, maintenance_margin=0.0, **out)
    lo, hi = probe.price_bounds
    if hi > tick * MAX_TICKS:
        raise CatalogError(f"{source}: market [{root}] has max_price={hi!r} above 2**52 ticks "
                           f"({tick * MAX_TICKS:.6g}): the tick-grid check would lose precision")
    if not lo < hi:
        raise CatalogError(f"{source}: market [{root}] has min_price {lo!r} >= max_price {hi!r}"
                           + ("" if "max_price" in out else " (the default max_price is 1e10 / multiplier: "
                                                            "set max_price)"))
    return out


def parse_catalog(text: str, source: str) -> dict[str, ContractSpec]:
    """Parse a TOML market table (one ``[ROOT]`` table per market)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from exc
    return {root: _spec_from_row(root, row, source) for root, row in sorted(data.items())}


USER_TABLE_NAME = "markets.toml"
USER_TABLE_DIR = "markets.d"


def user_table_paths(home: Path | None) -> list[Path]:
    """A user's extra markets, or overrides of built-in ones (same TOML format,
    a whole ``[ROOT]`` table per market): ``<home>/markets.toml`` then
    ``<home>/markets.d/*.toml`` in name order (later files win). None: none."""
    if home is None:
        return []
    files = [home / USER_TABLE_NAME] + sorted((home / USER_TABLE_DIR).glob("*.toml"))
    return [f for f in files if f.is_file()]


@lru_cache(maxsize=8)
def _load(user_files: tuple[tuple[str, int], ...]) -> Mapping[str, ContractSpec]:
    markets = parse_catalog(BUILTIN_TABLE.read_text(), str(BUILTIN_TABLE))
    for path, _mtime in user_files:
        markets.update(parse_catalog(Path(path).read_text(encoding="utf-8"), path))
    return MappingProxyType(dict(sorted(markets.items())))


def load_catalog(home: Path | None = None) -> Mapping[str, ContractSpec]:
    """Built-in markets plus the user's tables under ``home`` (the trader's
    ``FBT_HOME``; None: built-ins only), keyed by root (sorted). Re-read when a
    user file changes."""
    return _load(tuple((str(p), p.stat().st_mtime_ns) for p in user_table_paths(home)))


def market_spec(root: str, home: Path | None = None) -> ContractSpec:
    """Spec of one market (built-in or from the tables under ``home``); clear error for an unknown root."""
    catalog = load_catalog(home)
    try:
        return catalog[root]
    except KeyError:
        raise CatalogError(f"unknown market {root!r}; known: {', '.join(catalog)}") from None
