"""Import markets from pysystemtrade's configuration CSVs into fbt's TOML.

pysystemtrade (``instrumentconfig.csv``, ``rollconfig.csv``, optionally
``spreadcosts.csv``) gives multipliers (``pointsize``), currency, commission
per contract (``per_block``), listed and held roll cycles, the roll offset in
calendar days and an approximate expiry day. It has no tick sizes, margins or
exchange expiry rules, so an imported market gets:

- ``expiry_rule = "day_of_month:N"`` (``expiry_offset`` > 0) or
  ``"days_before_month:N"`` (<= 0): approximations, flagged in the file;
- ``tick_size`` = twice the quoted half-spread if ``spreadcosts.csv`` has it,
  else 0.01 (flagged: check the exchange's spec);
- margins 0 (no margin check) until the user fills them in;
- ``roll_days_before`` = the roll offset converted to business days (x 5/7).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass

from fbt_pipelines.errors import CatalogError

ROOT_RE = re.compile(r"^[A-Z0-9]{1,4}$")


@dataclass(frozen=True)
class ImportResult:
    toml: str
    imported: list[str]
    skipped: dict[str, str]  # symbol -> why


def _rows(text: str, source: str, key: str, required: list[str]) -> dict[str, dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise CatalogError(f"{source}: header lacks {', '.join(missing)}")
    return {row[key]: row for row in reader if row.get(key)}


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def import_pysystemtrade(instruments_csv: str, rolls_csv: str, spreads_csv: str | None = None,
                         symbols: dict[str, str] | None = None) -> ImportResult:
    """TOML for the chosen pysystemtrade symbols.

    ``symbols`` maps pysystemtrade symbol -> fbt root (1-4 of A-Z, 0-9). Without
    it, every symbol that is already a valid root (``AUD``, ``CAD``...) is taken.
    """
    inst = _rows(instruments_csv, "instrumentconfig.csv", "symbol",
                 ["symbol", "description", "pointsize", "currency", "asset_class", "per_block"])
    rolls = _rows(rolls_csv, "rollconfig.csv", "symbol",
                  ["symbol", "hold_roll_cycle", "roll_offset_days", "priced_roll_cycle", "expiry_offset"])
    spreads = _rows(spreads_csv, "spreadcosts.csv", "symbol", ["symbol", "spread_cost"]) if spreads_csv else {}
    wanted = symbols or {s: s for s in inst if ROOT_RE.match(s)}
    blocks, imported, skipped = [], [], {}
    for symbol, root in sorted(wanted.items()):
        if not ROOT_RE.match(root):
            skipped[symbol] = f"root {root!r} must be 1-4 of A-Z, 0-9 (map it: --symbol {symbol}=ROOT)"
            continue
        if symbol not in inst or symbol not in rolls:
            skipped[symbol] = "not in both instrumentconfig.csv and rollconfig.csv"
            continue
        i, r = inst[symbol], rolls[symbol]
        try:
            mult = float(i["pointsize"])
            offset = int(float(r["expiry_offset"]))
            roll_days = max(0, round(-int(float(r["roll_offset_days"])) * 5 / 7))
            commission = float(i["per_block"] or 0)
        except ValueError as exc:
            skipped[symbol] = f"unparseable number ({exc})"
            continue
        cycle = r["priced_roll_cycle"].strip()
        hold = r["hold_roll_cycle"].strip()
        if not cycle or not mult > 0:
            skipped[symbol] = "no priced cycle or pointsize"
            continue
        if any(c not in cycle for c in hold):
            hold = ""
        spread = float(spreads.get(symbol, {}).get("spread_cost") or 0)
        tick = 2 * spread if spread > 0 else 0.01
        tick = float(f"{tick:.6g}")
        rule = f"day_of_month:{min(offset, 31)}" if offset > 0 else f"days_before_month:{min(-offset, 31) or 1}"
        blocks.append("\n".join([
            f"# imported from pysystemtrade symbol {symbol}: expiry_rule and tick_size are approximations"
            + ("" if spread > 0 else " (tick_size default 0.01)") + "; margins unknown (0 = no margin check)",
            f"[{root}]" if root[0].isalpha() else f'["{root}"]',
            f"name = {_q(i['description'])}",
            f"exchange = {_q(i.get('region') or 'unknown')}",
            f"asset_class = {_q(i['asset_class'].lower())}",
            f"currency = {_q(i['currency'])}",
            f"multiplier = {mult!r}",
            f"tick_size = {tick!r}",
            f"cycle = {_q(cycle)}",
            f"hold_cycle = {_q(hold)}",
            f"expiry_rule = {_q(rule)}",
            'first_notice_rule = "none"',
            f"roll_days_before = {roll_days}",
            f"commission = {commission if math.isfinite(commission) else 0.0!r}",
            "initial_margin = 0.0",
            "maintenance_margin = 0.0",
        ]))
        imported.append(root)
    header = "# fbt markets imported from pysystemtrade configuration (GPL-3.0 data; see its licence)\n\n"
    return ImportResult(header + "\n\n".join(blocks) + "\n", imported, skipped)
