"""Seeded synthetic futures data shared by the futures / features unit tests.

Not a test module. Builds a few quarterly contracts on real XNYS sessions,
each a random walk around a common spot path with its own carry, with a few
bars missing at random (so the roll-date fallback and dropped sessions are
exercised), plus the long ``bars`` frame the warehouse would hold.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.expiry import _business_days

ROOT = "TS"


def xnys_sessions(start: str, end: str) -> pd.DatetimeIndex:
    """XNYS sessions in [start, end] as UTC midnights (the bar-file convention)."""
    days = _business_days()
    days = days[(days >= np.datetime64(start)) & (days <= np.datetime64(end))]
    return pd.DatetimeIndex(pd.to_datetime(days)).tz_localize("UTC")


def utc(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def make_contract(cid: str, last_trade: dt.date, first_notice: dt.date | None = None) -> Contract:
    return Contract(last_trade=last_trade, contract_id=cid, root=ROOT, year=last_trade.year,
                    month=last_trade.month, first_notice=first_notice)


def bars_from_closes(closes: pd.DataFrame) -> pd.DataFrame:
    """Long per-contract bars (the warehouse shape) from a wide close frame.

    open = close - 0.25, high = close + 1, low = close - 1; volume and open
    interest are arbitrary distinct integers.
    """
    long = closes.stack().rename("close").reset_index()
    long.columns = ["ts", "contract", "close"]
    long = long.sort_values(["contract", "ts"]).reset_index(drop=True)
    long["root"] = ROOT
    long["open"] = long["close"] - 0.25
    long["high"] = long["close"] + 1.0
    long["low"] = long["close"] - 1.0
    long["volume"] = np.arange(len(long), dtype=np.int64) + 1000
    long["open_interest"] = np.arange(len(long), dtype=np.int64) + 5000
    return long[["contract", "root", "ts", "open", "high", "low", "close", "volume", "open_interest"]]


# Third Fridays (all XNYS sessions) of six quarterly contracts.
RANDOM_LAST_TRADES = [
    ("TSH2021", dt.date(2021, 3, 19)),
    ("TSM2021", dt.date(2021, 6, 18)),
    ("TSU2021", dt.date(2021, 9, 17)),
    ("TSZ2021", dt.date(2021, 12, 17)),
    ("TSH2022", dt.date(2022, 3, 18)),
    ("TSM2022", dt.date(2022, 6, 17)),
]


def random_market(seed: int, missing: float = 0.03) -> tuple[list[Contract], pd.DataFrame, pd.DataFrame]:
    """(contracts, wide closes, long bars) for 2021-01-04 .. 2022-05-31.

    Each contract trades from 130 sessions before its last trade through its
    last trade; its price = common spot random walk x exp(carry x years to
    expiry) x (1 + small own noise). A fraction ``missing`` of bars is dropped
    at random (never a contract's first bar).
    """
    rng = np.random.default_rng(seed)
    sessions = xnys_sessions("2021-01-04", "2022-05-31")
    n = len(sessions)
    spot = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.012, n)))
    contracts = [make_contract(cid, lt) for cid, lt in RANDOM_LAST_TRADES]
    carry = rng.uniform(-0.08, 0.08)
    closes = {}
    for c in contracts:
        last = int(np.searchsorted(sessions, utc(c.last_trade.isoformat()), side="right")) - 1
        first = max(0, last - 130)
        col = np.full(n, np.nan)
        years = (pd.Timestamp(c.last_trade) - sessions[first:last + 1].tz_localize(None)).days.to_numpy() / 365.0
        own = 1.0 + rng.normal(0.0, 0.002, last + 1 - first)
        col[first:last + 1] = np.round(spot[first:last + 1] * np.exp(carry * years) * own, 2)
        drop = rng.random(n) < missing
        drop[: first + 1] = False
        col[drop] = np.nan
        closes[c.contract_id] = col
    wide = pd.DataFrame(closes, index=sessions)
    wide.index.name = "ts"
    wide.columns.name = "contract"
    return contracts, wide, bars_from_closes(wide)
