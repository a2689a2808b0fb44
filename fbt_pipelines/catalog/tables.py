"""The catalogue as warehouse rows (``markets`` and ``contracts`` tables)."""

from __future__ import annotations

import pandas as pd

from fbt_pipelines.catalog.contracts import listed_contracts
from fbt_pipelines.catalog.specs import ContractSpec

MARKET_COLUMNS = [
    "root", "name", "exchange", "asset_class", "currency", "multiplier", "tick_size", "cycle",
    "expiry_rule", "first_notice_rule", "roll_days_before", "commission", "initial_margin", "maintenance_margin",
]


def catalog_tables(specs: list[ContractSpec], first_year: int, last_year: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(markets, contracts) frames for the given markets and delivery years."""
    markets = pd.DataFrame([{c: getattr(s, c) for c in MARKET_COLUMNS} for s in specs], columns=MARKET_COLUMNS)
    rows = [
        {"contract": c.contract_id, "root": c.root, "year": c.year, "month": c.month,
         "first_notice": c.first_notice, "last_trade": c.last_trade}
        for s in specs for c in listed_contracts(s, first_year, last_year)
    ]
    contracts = pd.DataFrame(rows, columns=["contract", "root", "year", "month", "first_notice", "last_trade"])
    contracts["first_notice"] = pd.to_datetime(contracts["first_notice"])
    contracts["last_trade"] = pd.to_datetime(contracts["last_trade"])
    return markets, contracts
