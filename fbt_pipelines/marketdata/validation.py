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

import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
import pandera.pandas as pa

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.marketdata.quality import spike_count
from fbt_pipelines.marketdata.sessions import session_filter

PRICES = ["open", "high", "low", "close"]

# Every reason a row can be quarantined for (regexes). ``_Reasons.flag``
# refuses any other text, and the corpus test needs a malformed file for each,
# so a new rule cannot ship without its bad-file example.
REASON_PATTERNS: tuple[str, ...] = (
    r"empty line",
    r"expected \d+ fields, found \d+",
    r"ts is not a timestamp",
    *(rf"{c} is not a number" for c in PRICES + ["volume", "open_interest"]),
    *(rf"{c} is not finite" for c in PRICES + ["volume", "open_interest"]),
    r"non-positive price", r"negative volume", r"volume is not a whole number", r"volume too large to store",
    r"negative open interest", r"open interest is not a whole number", r"open interest too large to store",
    r"high < low", r"open outside \[low, high\]", r"close outside \[low, high\]",
    r"duplicate \(contract, ts\) in this file \(first kept\)",
    r"ts outside the market's trading sessions",
    r"malformed contract code .*", r"unknown market root .*", r"no contract code .*",
)
# Rows flagged but kept, counted per file in ``ingests.warnings``.
WARNING_NAMES = ("off_tick_grid", "spikes")
_REASON_RE = re.compile("|".join(f"(?:{p})" for p in REASON_PATTERNS))


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


class _Reasons:
    """First-failing-rule bookkeeping without string compares on every row:
    a 'bad' mask plus a small integer code per row into a list of messages."""

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, dtype=bool)
        self.code = np.full(n, -1, dtype=np.int32)
        self.messages: list[str] = []

    def flag(self, mask: np.ndarray, reason: str) -> None:
        if not _REASON_RE.fullmatch(reason):
            raise ValueError(f"quarantine reason {reason!r} is not in REASON_PATTERNS")
        new = mask & ~self.bad
        if new.any():
            self.code[new] = len(self.messages)
            self.messages.append(reason)
            self.bad |= new

    def flag_each(self, mask: np.ndarray, texts: np.ndarray) -> None:
        """Per-row messages (few distinct values among the flagged rows)."""
        new = mask & ~self.bad
        for text in pd.unique(texts[new]):
            self.flag(new & (texts == text), str(text))

    def series(self, index: pd.Index) -> pd.Series:
        table = np.array([""] + self.messages, dtype=object)
        return pd.Series(table[self.code + 1], index=index, dtype=object)


def validate_staged(staged: pd.DataFrame, interval: str, specs: Mapping[str, ContractSpec],
                    spike_z: float = 10.0) -> Validation:
    """Reasons per row; see the module docstring for the rules."""
    n = len(staged)
    r = _Reasons(n)

    nf = staged["nf"].to_numpy()
    expected = staged["expected_nf"].to_numpy()
    r.flag(nf == 0, "empty line")
    wrong = nf != expected
    if wrong.any():
        texts = np.full(n, "", dtype=object)
        texts[wrong] = [f"expected {e} fields, found {f}" for e, f in zip(expected[wrong], nf[wrong])]
        r.flag_each(wrong, texts)
    if "contract_error" in staged:
        err = staged["contract_error"].to_numpy(dtype=object)
        has = pd.notna(err)
        if has.any():
            r.flag_each(has, np.where(has, err, ""))
    r.flag(staged["ts"].isna().to_numpy(), "ts is not a timestamp")
    for col in PRICES + ["volume"]:
        v = staged[col].to_numpy(float)
        r.flag(np.isnan(v), f"{col} is not a number")
        r.flag(np.isinf(v), f"{col} is not finite")
    oi = staged["open_interest"].to_numpy(float)
    r.flag(np.isinf(oi), "open_interest is not finite")
    if "open_interest_unparsed" in staged:  # a value that is there but not a number (empty = unknown)
        r.flag(staged["open_interest_unparsed"].to_numpy(bool), "open_interest is not a number")

    parsed = ~r.bad
    if parsed.any():
        frame = staged.loc[parsed, PRICES + ["volume", "open_interest"]].astype(float)
        try:
            BAR_RULES.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases.dropna(subset=["index"])
            # pandera lists frame-wide checks first; column rules come first in BAR_RULES
            cases = cases.sort_values("schema_context", key=lambda s: s.ne("Column"), kind="stable")
            pos = staged.index.get_indexer(cases["index"].to_numpy())
            texts = np.full(n, "", dtype=object)
            seen = np.zeros(n, dtype=bool)
            for p_, check in zip(pos, cases["check"].astype(str)):
                if not seen[p_]:
                    texts[p_], seen[p_] = check, True
            r.flag_each(seen, texts)
    ok = ~r.bad
    dup_mask = np.zeros(n, dtype=bool)
    dup_mask[ok] = staged.loc[ok, ["contract", "ts"]].duplicated(keep="first").to_numpy()
    r.flag(dup_mask, "duplicate (contract, ts) in this file (first kept)")
    ok = ~r.bad
    r.flag(ok & ~session_filter(staged["ts"], interval), "ts outside the market's trading sessions")

    warnings = dict.fromkeys(WARNING_NAMES, 0)
    ok = ~r.bad
    if ok.any():
        good = staged[ok]
        tick = good["contract"].map(lambda c: specs[_root_of(c, specs)].tick_size).to_numpy(float)
        prices = good[PRICES].to_numpy(float)
        off = np.abs(prices / tick[:, None] - np.round(prices / tick[:, None])) > 1e-6
        warnings["off_tick_grid"] = int(off.any(axis=1).sum())
        warnings["spikes"] = spike_count(good, spike_z)
    return Validation(r.series(staged.index), warnings)


def _root_of(contract: str, specs: Mapping[str, ContractSpec]) -> str:
    return contract[:-5]  # ROOT + month code + 4-digit year
