"""Contract months of a market: ids like ``ESZ2013``, last trade and first notice."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from fbt_pipelines.catalog.expiry import FIRST_NOTICE_RULES, resolve_expiry_rule
from fbt_pipelines.catalog.specs import MONTH_CODES, ContractSpec
from fbt_pipelines.errors import CatalogError

_CONTRACT_RE = re.compile(r"^(?P<root>[A-Z0-9]{1,4}?)(?P<code>[FGHJKMNQUVXZ])(?P<year>\d{4})$")


@dataclass(frozen=True, order=True)
class Contract:
    """One delivery month of a market. Dates are exchange-local calendar dates."""

    last_trade: dt.date
    contract_id: str
    root: str
    year: int
    month: int
    first_notice: dt.date | None

    @property
    def roll_reference(self) -> dt.date:
        """The date a calendar roll counts back from.

        First notice if the contract is physically delivered, else last trade.
        """
        return self.first_notice if self.first_notice is not None else self.last_trade


def contract_id(root: str, year: int, month: int) -> str:
    """``contract_id("ES", 2013, 12) == "ESZ2013"``."""
    if not 1 <= month <= 12:
        raise CatalogError(f"month must be 1..12, got {month}")
    return f"{root}{MONTH_CODES[month - 1]}{year:04d}"


def parse_contract_id(cid: str) -> tuple[str, int, int]:
    """``"ESZ2013" -> ("ES", 2013, 12)``; clear error otherwise."""
    m = _CONTRACT_RE.match(cid)
    if not m:
        raise CatalogError(f"not a contract id (ROOT + month code + 4-digit year): {cid!r}")
    return m["root"], int(m["year"]), MONTH_CODES.index(m["code"]) + 1


def make_contract(spec: ContractSpec, year: int, month: int) -> Contract:
    """The contract of ``spec`` for one delivery month, with its dates."""
    last_trade = resolve_expiry_rule(spec.expiry_rule)(year, month)
    first_notice = FIRST_NOTICE_RULES[spec.first_notice_rule](year, month, last_trade)
    return Contract(
        last_trade=last_trade,
        contract_id=contract_id(spec.root, year, month),
        root=spec.root,
        year=year,
        month=month,
        first_notice=first_notice,
    )


def listed_contracts(spec: ContractSpec, first_year: int, last_year: int) -> list[Contract]:
    """All contracts in ``spec.cycle`` with delivery years in ``[first_year, last_year]``.

    Ordered by last trade date.
    """
    months = [MONTH_CODES.index(c) + 1 for c in spec.cycle]
    return sorted(make_contract(spec, y, m) for y in range(first_year, last_year + 1) for m in months)


def contracts_from_frame(frame) -> list[Contract]:
    """Contracts from rows of the warehouse ``contracts`` table."""
    import pandas as pd  # local: keep this module importable without pandas at call sites

    out = []
    for row in frame.itertuples(index=False):
        fn = row.first_notice
        out.append(Contract(
            last_trade=pd.Timestamp(row.last_trade).date(),
            contract_id=row.contract,
            root=row.root,
            year=int(row.year),
            month=int(row.month),
            first_notice=None if fn is None or pd.isna(fn) else pd.Timestamp(fn).date(),
        ))
    return sorted(out)
