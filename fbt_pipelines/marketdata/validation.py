"""Row-level validation of staged bars: which rows to quarantine, and why.

Input is a *staged frame*: one row per data line of a source file, already
split into fields, with unparseable values as NaN/NaT. Columns: ``line``,
``nf`` and ``expected_nf`` (fields found / expected), ``contract`` (fbt id or
None), ``contract_error`` (reason or None), ``ts`` (UTC), ``open``, ``high``,
``low``, ``close`` (points), ``volume``, ``open_interest`` (contracts), and
optionally ``open_interest_unparsed`` (True where a value was given but is not
a number; NaN open interest alone means unknown).

The semantic rules are a pandera schema (lazy validation: every failing row
is reported, not just the first); structural and parse problems are flagged
before it. The first failing rule names the reason. Warnings (off the tick
grid, single-bar spikes) never quarantine a row; they are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import pandera.pandas as pa

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.marketdata.quality import spike_count
from fbt_pipelines.marketdata.sessions import session_filter

PRICES = ["open", "high", "low", "close"]


def _whole(s: pd.Series) -> pd.Series:
    return s.isna() | (s == np.floor(s))


# Semantic rules of a bar; `error` is the reason a trader reads in `quarantine`.
BAR_RULES = pa.DataFrameSchema(
    {
        "open": pa.Column(float, pa.Check.gt(0, error="non-positive price")),
        "high": pa.Column(float, pa.Check.gt(0, error="non-positive price")),
        "low": pa.Column(float, pa.Check.gt(0, error="non-positive price")),
        "close": pa.Column(float, pa.Check.gt(0, error="non-positive price")),
        "volume": pa.Column(float, [pa.Check.ge(0, error="negative volume"),
                                    pa.Check(_whole, error="volume is not a whole number"),
                                    pa.Check.lt(2.0**63, error="volume too large to store")]),
        "open_interest": pa.Column(float, [pa.Check.ge(0, error="negative open interest"),
                                           pa.Check(_whole, error="open interest is not a whole number"),
                                           pa.Check.lt(2.0**63, error="open interest too large to store")],
                                   nullable=True),
    },
    checks=[
        pa.Check(lambda d: d["high"] >= d["low"], error="high < low"),
        pa.Check(lambda d: d["open"].between(d["low"], d["high"]), error="open outside [low, high]"),
        pa.Check(lambda d: d["close"].between(d["low"], d["high"]), error="close outside [low, high]"),
    ],
    coerce=False,
)


@dataclass(frozen=True)
class Validation:
    """``reasons``: "" for an accepted row, else why it is quarantined
    (aligned with the staged frame). ``warnings``: rule -> rows flagged."""

    reasons: pd.Series
    warnings: dict[str, int]

    @property
    def accepted(self) -> np.ndarray:
        return (self.reasons == "").to_numpy()


def validate_staged(staged: pd.DataFrame, interval: str, specs: Mapping[str, ContractSpec],
                    spike_z: float = 10.0) -> Validation:
    """Reasons per row; see the module docstring for the rules."""
    n = len(staged)
    reasons = np.full(n, "", dtype=object)

    def flag(mask: np.ndarray, reason: str | np.ndarray) -> None:
        target = mask & (reasons == "")
        reasons[target] = reason if isinstance(reason, str) else reason[target]

    nf = staged["nf"].to_numpy()
    expected = staged["expected_nf"].to_numpy()
    flag(nf == 0, "empty line")
    if (nf != expected).any():
        msg = np.array([f"expected {e} fields, found {f}" for e, f in zip(expected, nf)], dtype=object)
        flag(nf != expected, msg)
    if "contract_error" in staged:
        err = staged["contract_error"].to_numpy(dtype=object)
        has = pd.notna(err)
        flag(has, np.where(has, err, ""))
    flag(staged["ts"].isna().to_numpy(), "ts is not a timestamp")
    for col in PRICES + ["volume"]:
        v = staged[col].to_numpy(float)
        flag(np.isnan(v), f"{col} is not a number")
        flag(np.isinf(v), f"{col} is not finite")
    oi = staged["open_interest"].to_numpy(float)
    flag(np.isinf(oi), "open_interest is not finite")
    if "open_interest_unparsed" in staged:  # a value that is there but not a number (empty = unknown)
        flag(staged["open_interest_unparsed"].to_numpy(bool), "open_interest is not a number")

    parsed = reasons == ""
    if parsed.any():
        frame = staged.loc[parsed, PRICES + ["volume", "open_interest"]].astype(float)
        try:
            BAR_RULES.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases.dropna(subset=["index"])
            # pandera lists frame-wide checks first; column rules come first in BAR_RULES
            cases = cases.sort_values("schema_context", key=lambda s: s.ne("Column"), kind="stable")
            pos = staged.index.get_indexer(cases["index"].to_numpy())
            for p, check in zip(pos, cases["check"].astype(str)):
                if reasons[p] == "":
                    reasons[p] = check
    ok = reasons == ""
    dup = staged[["contract", "ts"]].assign(ok=ok)
    dup_mask = np.zeros(n, dtype=bool)
    dup_mask[ok] = dup[ok].duplicated(subset=["contract", "ts"], keep="first").to_numpy()
    flag(dup_mask, "duplicate (contract, ts) in this file (first kept)")
    ok = reasons == ""
    in_session = session_filter(staged["ts"], interval)
    flag(ok & ~in_session, "ts outside the market's trading sessions")

    warnings = {"off_tick_grid": 0, "spikes": 0}
    ok = reasons == ""
    if ok.any():
        good = staged[ok]
        tick = good["contract"].map(lambda c: specs[_root_of(c, specs)].tick_size).to_numpy(float)
        prices = good[PRICES].to_numpy(float)
        off = np.abs(prices / tick[:, None] - np.round(prices / tick[:, None])) > 1e-6
        warnings["off_tick_grid"] = int(off.any(axis=1).sum())
        warnings["spikes"] = spike_count(good, spike_z)
    return Validation(pd.Series(reasons, index=staged.index, dtype=object), warnings)


def _root_of(contract: str, specs: Mapping[str, ContractSpec]) -> str:
    return contract[:-5]  # ROOT + month code + 4-digit year
