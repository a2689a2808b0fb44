"""Roll rules: which contract a continuous series holds, and when it moves on.

Rules (text form used by the CLI and the catalogue, see :meth:`RollRule.parse`):

- ``calendar:N`` -- N business days before the front's roll reference (first
  notice if physically delivered, else last trade);
- ``volume`` / ``open_interest`` -- the first session (after the previous roll)
  on which the next contract's volume / open interest exceeds the front's
  (a session where either value is unknown is no crossing), never later than
  the calendar backstop ``calendar:N``;
- ``first_of_month`` -- the last session before the contract month begins;
  ``day_of_month:D`` -- the last session before day D of the contract month;
  both never later than the calendar backstop.

Options: ``hold`` (months rolled into, e.g. ``"Z"``: only December contracts,
as pysystemtrade's ``hold_roll_cycle``) and ``depth`` (1 = front, 2 = the
contract after it, ...). Options are written ``volume,hold=Z,depth=2``.

Whatever the rule, the roll happens at the close of ``roll_date`` (see
:mod:`fbt_pipelines.futures.roll_schedule`) and needs a close in both
contracts on that session; if either lacks one the roll moves to the latest
earlier session where both trade.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.expiry import business_day_offset
from fbt_pipelines.catalog.specs import MONTH_CODES, ContractSpec
from fbt_pipelines.errors import RollError
from fbt_pipelines.futures.roll_schedule import ROLL_COLUMNS, ROLL_TRIGGER_COLUMNS, validate_roll_schedule

KINDS = ("calendar", "volume", "open_interest", "first_of_month", "day_of_month")
# a roll target may move back over a few missing sessions (holidays, a
# contract without a print), not over a hole in the data
MAX_SNAP_DAYS = 10


def _unknown_kind(name: str) -> str:
    return (f"unknown roll rule {name!r}; known: calendar:N, volume, open_interest, "
            "first_of_month, day_of_month:D")


@dataclass(frozen=True)
class RollRule:
    """A parsed roll rule (see the module docstring)."""

    kind: str = "calendar"
    days_before: int = 5
    day: int = 1
    hold: str = ""
    depth: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RollError(_unknown_kind(self.kind))
        if self.days_before < 0 or not 1 <= self.day <= 28 or self.depth < 1:
            raise RollError(f"invalid roll rule {self}: days_before >= 0, 1 <= day <= 28, depth >= 1")
        if any(c not in MONTH_CODES for c in self.hold):
            raise RollError(f"hold months {self.hold!r} must be month codes {MONTH_CODES}")

    @classmethod
    def parse(cls, text: str, spec: ContractSpec | None = None) -> "RollRule":
        """Parse ``"volume,hold=Z,depth=2"``, ``"calendar:8"``... into a rule.

        The market's defaults (``roll_days_before``, ``hold_cycle``) fill what
        the text leaves out.
        """
        head, *opts = [p.strip() for p in text.split(",") if p.strip()] or ["calendar"]
        name, _, arg = head.partition(":")
        if name not in KINDS:  # before the argument checks: "calendr:5" is an unknown rule
            raise RollError(_unknown_kind(name))
        days = spec.roll_days_before if spec else 5
        kwargs: dict[str, object] = {"kind": name, "days_before": days, "hold": spec.hold_cycle if spec else ""}
        try:
            if name == "calendar" and arg:
                kwargs["days_before"] = int(arg)
            elif name == "day_of_month":
                kwargs["day"] = int(arg)
            elif arg:
                raise RollError(f"roll rule {name!r} takes no argument (got {head!r})")
            for opt in opts:
                key, _, value = opt.partition("=")
                if key == "hold":
                    kwargs["hold"] = value.upper()
                elif key == "depth":
                    kwargs["depth"] = int(value)
                elif key == "backstop":
                    kwargs["days_before"] = int(value)
                else:
                    raise RollError(f"unknown roll rule option {key!r} in {text!r} (hold=, depth=, backstop=)")
        except ValueError:
            raise RollError(f"roll rule {text!r}: a number was expected") from None
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        head = {"calendar": f"calendar:{self.days_before}", "day_of_month": f"day_of_month:{self.day}"}.get(
            self.kind, self.kind)
        extra = [f"backstop={self.days_before}"] if self.kind not in ("calendar",) else []
        extra += [f"hold={self.hold}"] if self.hold else []
        extra += [f"depth={self.depth}"] if self.depth > 1 else []
        return ",".join([head, *extra])


def _days_text(rule: RollRule, front: Contract) -> str:
    """``"5 business days before last trade (2024-03-15)"``: the calendar rule in words."""
    ref = "first notice" if front.first_notice is not None else "last trade"
    n = rule.days_before
    when = f"on {ref}" if n == 0 else f"{n} business day{'s' if n != 1 else ''} before {ref}"
    return f"{when} ({front.roll_reference:%Y-%m-%d})"


def _target(rule: RollRule, front: Contract) -> tuple[dt.date, str]:
    """The latest date the rule allows the roll out of ``front``, and why.

    The calendar backstop included; the text is the roll's ``trigger`` when
    no volume / open-interest crossing comes first.
    """
    backstop = business_day_offset(front.roll_reference, -rule.days_before) if rule.days_before else front.roll_reference
    if rule.kind == "calendar":
        return backstop, f"calendar: {_days_text(rule, front)}"
    if rule.kind in ("first_of_month", "day_of_month"):
        day = dt.date(front.year, front.month, rule.day if rule.kind == "day_of_month" else 1)
        if day - dt.timedelta(days=1) < backstop:
            name = "first of month" if rule.kind == "first_of_month" else f"day {rule.day} of month"
            return day - dt.timedelta(days=1), f"{name}: last session before {day:%Y-%m-%d}"
    none = {"volume": ", no volume crossover", "open_interest": ", no open interest crossover"}.get(rule.kind, "")
    return backstop, f"backstop: {_days_text(rule, front)}{none}"


def build_roll_schedule(root: str, contracts: Sequence[Contract], bars: pd.DataFrame, rule: RollRule) -> pd.DataFrame:
    """Roll schedule of one market under ``rule``.

    ``bars``: long per-contract daily bars (contract, ts, close, volume,
    open_interest). Returns :data:`ROLL_COLUMNS` then
    :data:`ROLL_TRIGGER_COLUMNS`, one row per roll inside the data, validated.

    ``trigger`` says why each roll happened (``"volume crossover"``,
    ``"calendar: 5 business days before last trade (2024-03-15)"``,
    ``"backstop: ..."``...); ``from_volume`` / ``to_volume`` (volume rule) or
    ``from_open_interest`` / ``to_open_interest`` (open-interest rule) are the
    two contracts' values (contracts) on the roll session itself, the session
    that decided it: no later bar is read. NaN where the rule reads neither.
    """
    closes = bars.pivot(index="ts", columns="contract", values="close").sort_index()
    activity = None
    if rule.kind in ("volume", "open_interest"):
        activity = bars.pivot(index="ts", columns="contract", values=rule.kind).reindex(closes.index)
    sessions = closes.index
    days = (sessions.tz_localize(None) if sessions.tz is not None else sessions).normalize()
    chain = sorted(c for c in contracts if c.contract_id in closes.columns
                   and (not rule.hold or MONTH_CODES[c.month - 1] in rule.hold))
    rows: list[tuple] = []
    prev = -1
    next_front = 0  # index in ``chain`` of the first front not rolled out of (or skipped) yet
    for k in range(len(chain) - rule.depth):
        front = chain[k]                      # the contract whose expiry drives the roll
        held, nxt = chain[k + rule.depth - 1], chain[k + rule.depth]
        target, why = _target(rule, front)
        if pd.Timestamp(target) > days[-1]:
            break  # beyond the data: ``held`` is the current contract
        last = int(np.searchsorted(days, pd.Timestamp(target), side="right")) - 1
        if last >= 0 and (pd.Timestamp(target) - days[last]).days > MAX_SNAP_DAYS:
            raise RollError(
                f"{root}: a gap in the data around the {held.contract_id} -> {nxt.contract_id} roll "
                f"({target}): the last session before it is {days[last]:%Y-%m-%d}; a continuous series cannot "
                "bridge it -- restrict the window (e.g. `fbt continuous --start/--end`)")
        h = closes[held.contract_id].to_numpy(float)
        n = closes[nxt.contract_id].to_numpy(float)
        both = np.isfinite(h) & np.isfinite(n)
        i, crossing = last, False
        a_front = a_next = None
        if activity is not None:
            a_front = activity[held.contract_id].to_numpy(float)
            a_next = activity[nxt.contract_id].to_numpy(float)
            # an unknown value (NaN, e.g. a session without an open-interest snapshot) is no crossing
            crossed = np.flatnonzero(both[prev + 1:last + 1]
                                     & (a_next[prev + 1:last + 1] > a_front[prev + 1:last + 1]))
            if len(crossed):
                i, crossing = prev + 1 + int(crossed[0]), True
                why = "volume crossover" if rule.kind == "volume" else "open interest crossover"
        while i > prev and not both[i]:
            i -= 1
        if i != last and i > prev and not crossing:
            why += f"; moved back from {days[last]:%Y-%m-%d} (a contract without a close there)"
        if i <= prev:
            if i < 0 or prev < 0:
                next_front = k + 1
                continue  # the data starts after this roll
            raise RollError(f"{root}: no session where both {held.contract_id} and {nxt.contract_id} trade "
                            f"between the previous roll and {target}")
        fc, nc = float(h[i]), float(n[i])
        vol = (float(a_front[i]), float(a_next[i])) if a_front is not None else (np.nan, np.nan)
        rows.append((root, rule.label, sessions[i], held.contract_id, nxt.contract_id, fc, nc, nc - fc,
                     nc / fc if fc != 0 else np.nan, why,
                     *(vol if rule.kind == "volume" else (np.nan, np.nan)),
                     *(vol if rule.kind == "open_interest" else (np.nan, np.nan))))
        prev = i
        next_front = k + 1
    frame = pd.DataFrame(rows, columns=[*ROLL_COLUMNS, *ROLL_TRIGGER_COLUMNS])
    schedule = validate_roll_schedule(frame.astype({c: float for c in ROLL_TRIGGER_COLUMNS[1:]}))
    if chain:
        # Without rows the table cannot say which contract the series holds: the one at ``depth``
        # from the first front not rolled out of (rolls before the data are skipped), in the hold
        # cycle. Read by roll_schedule.first_contract; not stored with the table.
        schedule.attrs["start_contract"] = chain[min(next_front + rule.depth - 1, len(chain) - 1)].contract_id
    return schedule
