"""The futures engine's small vocabularies: when a target is filled, what a
trade record is and why it was made, and the distances of stop, target,
trailing-stop and limit orders.

Both are ``IntEnum``: the member *is* the integer code the Numba kernel
(:mod:`fbt_pipelines.engine.kernel`) reads and writes, so arrays of codes
(``t_kind``) compare with the members directly (``t_kind == TradeKind.ROLL``)
and ``label`` is the string run configs and trade frames use.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import IntEnum


class FillRule(IntEnum):
    """When a target decided on bar t's close is filled: bar t+1's open or close."""

    NEXT_OPEN = 0
    NEXT_CLOSE = 1

    @classmethod
    def from_label(cls, label: str) -> FillRule:
        """The rule of a config label, ``"next_open"`` or ``"next_close"``."""
        rule = _FILL_RULES.get(label) if isinstance(label, str) else None
        if rule is None:
            raise ValueError(f"fill must be {' or '.join(map(repr, _FILL_RULES))}, got {label!r}")
        return rule

    @property
    def label(self) -> str:
        """``"next_open"`` or ``"next_close"``: the config spelling."""
        return self.name.lower()


_FILL_RULES = {rule.label: rule for rule in FillRule}  # label -> rule, for from_label


class TradeKind(IntEnum):
    """What a trade record is: a fill towards the target, or a roll (one
    round trip at the roll date's close, from the old contract to the new)."""

    TRADE = 0
    ROLL = 1

    @property
    def label(self) -> str:
        """``"trade"`` or ``"roll"``: the ``kind`` column of the trade frames."""
        return self.name.lower()


class TradeReason(IntEnum):
    """Why a trade record exists (the ``reason`` column of the trade frames).

    ``SIGNAL``: a market order towards the strategy's wanted position (the
    fill rule); ``STOP`` / ``TARGET`` / ``TRAILING_STOP``: an exit at a
    stop-loss, take-profit or trailing-stop level; ``LIMIT``: a limit entry
    filled; ``ROLL``: the held contract switched at a roll date's close;
    ``MARGIN_CALL``: contracts liquidated because the equity fell below the
    maintenance margin (or the account was exhausted).
    """

    SIGNAL = 0
    STOP = 1
    TARGET = 2
    TRAILING_STOP = 3
    LIMIT = 4
    ROLL = 5
    MARGIN_CALL = 6

    @property
    def label(self) -> str:
        """``"signal"``, ``"stop"``, ``"target"``, ``"trailing_stop"``, ``"limit"``, ``"roll"`` or ``"margin_call"``."""
        return self.name.lower()


class DistanceUnit(IntEnum):
    """The unit of an order distance (stop-loss, take-profit, trailing stop,
    limit offset): ``NONE`` (no such order), ``POINTS`` (``40``: price points
    of the continuous series), ``PERCENT`` (``2%``: of the reference price),
    ``ATR`` (``3atr``: multiples of Wilder's ATR(14) in points)."""

    NONE = 0
    POINTS = 1
    PERCENT = 2
    ATR = 3


_SUFFIX = {DistanceUnit.POINTS: "", DistanceUnit.PERCENT: "%", DistanceUnit.ATR: "atr"}


@dataclass(frozen=True)
class Distance:
    """A distance of an order from its reference price: ``value`` in ``unit``.

    Spelled ``"40"`` (40 points), ``"2%"`` (2 % of the reference price, the held contract's RAW
    price: a percentage of a Panama level would move with later rolls) or
    ``"3atr"`` (3 x ATR(14)); :meth:`parse` reads the spelling, :attr:`label`
    writes it back (the canonical form kept in specs and run configs).
    """

    value: float
    unit: DistanceUnit

    @classmethod
    def parse(cls, spelling: str | float | int, option: str = "distance") -> Distance:
        """The distance of ``"40"``, ``40``, ``"2%"``, ``"3atr"`` (case and
        spaces ignored). ``ValueError`` naming ``option`` and the value for a
        negative or zero distance, an unknown unit, NaN or inf."""
        if isinstance(spelling, bool) or not isinstance(spelling, (str, int, float)):
            raise ValueError(f"{option} must be a distance like 40 (points), 2% or 3atr, got {spelling!r}")
        text = str(spelling).strip().lower().replace(" ", "")
        unit = DistanceUnit.POINTS
        number = text
        if text.endswith("%"):
            unit, number = DistanceUnit.PERCENT, text[:-1]
        elif text.endswith("atr"):
            unit, number = DistanceUnit.ATR, text[:-3]
        elif text.endswith("points"):
            number = text[:-6]
        elif text.endswith("pts"):
            number = text[:-3]
        if not _NUMBER.fullmatch(number):
            raise ValueError(f"{option} {spelling!r} is not a distance: expected a positive number of points (40), "
                             "a percentage (2%) or a multiple of ATR(14) (3atr)")
        value = float(number)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{option} must be a positive distance, got {spelling!r}")
        if unit is DistanceUnit.PERCENT and value >= 100:
            raise ValueError(f"{option} {spelling!r}: a percentage distance must be below 100%")
        return cls(value, unit)

    @property
    def label(self) -> str:
        """The canonical spelling: ``"40"``, ``"2.5%"``, ``"3atr"``."""
        return f"{self.value:.12g}{_SUFFIX[self.unit]}"


# a sign is read so that "-40" is refused as "not positive", not as "not a number"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?")
