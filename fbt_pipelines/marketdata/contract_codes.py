"""Contract codes as vendors write them -> fbt contract ids.

Accepted: ``ESZ2013`` (fbt's own) and ``ESZ13`` (two-digit year: 00-69 ->
2000s, 70-99 -> 1900s). The root must be a catalogue market.
"""

from __future__ import annotations

import re
from typing import Collection

from fbt_pipelines.catalog.specs import MONTH_CODES

_CODE = re.compile(r"^(?P<root>[A-Z0-9]{1,4}?)(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{4}|\d{2})$")


def normalise_contract_code(code: str, markets: Collection[str]) -> tuple[str | None, str | None, str | None]:
    """``(contract_id, root, None)`` for a good code, ``(None, None, reason)`` otherwise."""
    text = (code or "").strip().strip('"').upper()
    m = _CODE.match(text)
    if not m:
        return None, None, f"malformed contract code {code!r} (expected e.g. ESZ2013 or ESZ13)"
    root, year = m["root"], m["year"]
    if len(year) == 2:
        yy = int(year)
        year = str(2000 + yy if yy < 70 else 1900 + yy)
    if root not in markets:
        return None, None, f"unknown market root {root!r} in contract {code!r}"
    return f"{root}{m['month']}{year}", root, None


def contract_from_month(root: str, yyyymm: str) -> str:
    """``("ES", "201312") -> "ESZ2013"`` (LEAN names contracts by delivery month)."""
    return f"{root}{MONTH_CODES[int(yyyymm[4:6]) - 1]}{yyyymm[:4]}"
