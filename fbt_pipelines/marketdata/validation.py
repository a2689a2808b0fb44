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

Plausibility (reason ``implausible_price: ...``), two rules:

- the catalogue bound: every price of the bar inside the market's
  ``[min_price, max_price]`` (:attr:`ContractSpec.price_bounds`; by default
  one tick .. 1e10 / multiplier, at most 2**52 ticks). Checked after the OHLC
  rules, so for a bar that reaches it ``low >= min_price and high <=
  max_price`` says it. It also keeps every later float computation finite
  and exact (1e308 passes every other rule; its tick-grid quotient would be
  inf);
- the band (:func:`band_outliers`): the last rule, over the bars that pass
  every other one, per contract in time order: a close more than
  ``price_band`` times (default 10) above, or below 1/``price_band`` of, the
  previous *accepted* close of the contract is implausible (``close / prev >
  band or prev / close > band``). The first bar's previous close is the last
  stored close of the contract (same interval) before it; with nothing stored,
  the lower median of the contract's first five closes in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pandera.pandas as pa

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.marketdata.quality import large_move_count
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
    r"implausible_price: a price outside \[\S+, \S+\] \(the market's min_price, max_price\)",
    r"implausible_price: close more than \S+x away from the contract's previous accepted close",
)
# Rows flagged but kept, counted per file in ``ingests.warnings``.
WARNING_NAMES = ("off_tick_grid", "spikes")
_REASON_RE = re.compile("|".join(f"(?:{p})" for p in REASON_PATTERNS))


def _whole(s: pd.Series) -> pd.Series:
    return s.isna() | (s == np.floor(s))


def _num(x: float) -> str:
    return f"{x:.15g}"


def bound_reason(spec: ContractSpec) -> str:
    """The quarantine reason of a bar outside ``spec``'s price bounds."""
    lo, hi = spec.price_bounds
    return f"implausible_price: a price outside [{_num(lo)}, {_num(hi)}] (the market's min_price, max_price)"


def band_reason(band: float) -> str:
    """The quarantine reason of a close outside the band around the previous accepted close."""
    return f"implausible_price: close more than {_num(band)}x away from the contract's previous accepted close"


# pandera's error of the bound check; validate_staged replaces it by bound_reason of the row's market
_BOUND = "implausible_price: bound"


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
        # the catalogue bound (per row: the market's bounds in columns min_price, max_price); a bar that
        # passes the checks above has low <= open, close <= high, so low and high say it
        pa.Check(lambda d: (d["low"] >= d["min_price"]) & (d["high"] <= d["max_price"]), error=_BOUND),
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


# contract -> first ts of its bars to check -> contract -> last stored close before that ts (points)
PreviousClose = Callable[[Mapping[str, pd.Timestamp]], Mapping[str, float]]


def validate_staged(staged: pd.DataFrame, interval: str, specs: Mapping[str, ContractSpec],
                    spike_z: float = 10.0, previous_close: PreviousClose | None = None) -> Validation:
    """Reasons per row; see the module docstring for the rules.

    ``previous_close``: the stored closes the band rule starts from (None:
    nothing stored)."""
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
        roots = staged.loc[parsed, "contract"].astype(object).map(lambda c: _root_of(c, specs))
        bounds = {root: specs[root].price_bounds for root in pd.unique(roots)}
        frame["min_price"] = roots.map(lambda root: bounds[root][0]).astype(float)
        frame["max_price"] = roots.map(lambda root: bounds[root][1]).astype(float)
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
            bound = seen & (texts == _BOUND)
            if bound.any():  # the reason names the market's bounds
                texts[bound] = [bound_reason(specs[_root_of(c, specs)]) for c in staged["contract"].to_numpy()[bound]]
            r.flag_each(seen, texts)
    ok = ~r.bad
    dup_mask = np.zeros(n, dtype=bool)
    dup_mask[ok] = staged.loc[ok, ["contract", "ts"]].duplicated(keep="first").to_numpy()
    r.flag(dup_mask, "duplicate (contract, ts) in this file (first kept)")
    ok = ~r.bad
    r.flag(ok & ~session_filter(staged["ts"], interval), "ts outside the market's trading sessions")
    ok = ~r.bad
    if ok.any():
        _flag_band(r, staged, ok, specs, previous_close)

    warnings = dict.fromkeys(WARNING_NAMES, 0)
    ok = ~r.bad
    if ok.any():
        good = staged[ok]
        tick = good["contract"].map(lambda c: specs[_root_of(c, specs)].tick_size).to_numpy(float)
        prices = good[PRICES].to_numpy(float)
        off = np.abs(prices / tick[:, None] - np.round(prices / tick[:, None])) > 1e-6
        warnings["off_tick_grid"] = int(off.any(axis=1).sum())
        warnings["spikes"] = large_move_count(good, spike_z)
    return Validation(r.series(staged.index), warnings)


def _root_of(contract: str, specs: Mapping[str, ContractSpec]) -> str:
    return contract[:-5]  # ROOT + month code + 4-digit year


def _flag_band(r: _Reasons, staged: pd.DataFrame, ok: np.ndarray, specs: Mapping[str, ContractSpec],
               previous_close: PreviousClose | None) -> None:
    """The band rule over the rows ``ok`` (they pass every other rule)."""
    pos = np.flatnonzero(ok)
    contract = staged["contract"].astype(object).to_numpy()[pos]
    ts = pd.to_datetime(staged["ts"], utc=True).to_numpy("datetime64[ns]")[pos]  # UTC
    order = np.lexsort((ts, contract.astype(str)))
    pos, contract, ts = pos[order], contract[order], ts[order]
    close = staged["close"].to_numpy(float)[pos]
    starts = np.flatnonzero(np.r_[True, contract[1:] != contract[:-1]])
    sizes = np.diff(np.r_[starts, len(pos)])
    names = [str(c) for c in contract[starts]]
    firsts = {c: pd.Timestamp(ts[i], tz="UTC") for c, i in zip(names, starts)}
    stored = dict(previous_close(firsts)) if previous_close else {}
    anchors = np.array([stored.get(c, np.nan) for c in names], dtype=float)
    bands = np.array([specs[_root_of(c, specs)].price_band for c in names], dtype=float)
    out = band_outliers(close, sizes, anchors, bands)
    if out.any():
        mask = np.zeros(len(ok), dtype=bool)
        mask[pos[out]] = True
        texts = np.full(len(ok), "", dtype=object)
        texts[pos] = np.repeat([band_reason(b) for b in bands], sizes)
        r.flag_each(mask, texts)


def lower_median(values: np.ndarray) -> float:
    """The lower median (an element, never an average of two)."""
    return float(np.sort(values)[(len(values) - 1) // 2])


def first_anchor(block: np.ndarray, stored: float) -> float:
    """The close the band rule compares a contract's first bar with: the last
    stored close before it, or (NaN: none) the lower median of the block's
    first five closes."""
    return stored if not np.isnan(stored) else lower_median(block[:5])


def outside_band(close: np.ndarray | float, previous: np.ndarray | float, band: float) -> np.ndarray | bool:
    """``close`` more than ``band`` times above, or below 1/``band`` of,
    ``previous`` (all positive and bounded: no overflow)."""
    return (close / previous > band) | (previous / close > band)


def band_outliers(close: np.ndarray, sizes: Sequence[int], anchors: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """Mask of the closes the band rule rejects.

    ``close``: points, > 0, in blocks of ``sizes`` rows, one contract per
    block in time order (the bars that pass every other rule); ``anchors``:
    per block, the last stored close before it (NaN: none); ``bands``: per
    block, the market's ``price_band``. A close is rejected when it is
    outside the band around the previous *accepted* close (the block's
    anchor for the first ones), so one bad print does not take the next good
    bar with it. Vectorised stretch by stretch: a block with no jump costs
    one pass."""
    out = np.zeros(len(close), dtype=bool)
    start = 0
    for n, anchor, band in zip(sizes, anchors, bands):
        block = close[start:start + n]
        if n:
            _band_block(block, first_anchor(block, anchor), float(band), out[start:start + n])
        start += n
    return out


def _first_true(values: np.ndarray, test: Callable[[np.ndarray, int], np.ndarray], start: int) -> int:
    """Index of the first ``i >= start`` where ``test(values[lo:hi], lo)``
    is True, searched in growing chunks (no pass over the whole rest for a
    hit nearby); ``len(values)`` if none."""
    size = 256
    lo = start
    while lo < len(values):
        hi = min(lo + size, len(values))
        hit = np.flatnonzero(test(values[lo:hi], lo))
        if len(hit):
            return lo + int(hit[0])
        lo, size = hi, min(size * 4, 1 << 20)
    return len(values)


def _band_block(c: np.ndarray, anchor: float, band: float, out: np.ndarray) -> None:
    """:func:`band_outliers` for one block (writes ``out``)."""
    n = len(c)
    jumps = outside_band(c[1:], c[:-1], band)
    if not outside_band(c[0], anchor, band) and not jumps.any():
        return
    pos, ref = 0, anchor
    while pos < n:
        if outside_band(c[pos], ref, band):  # rejected, and so are the next ones until one is near ref
            nxt = _first_true(c, lambda v, _lo: ~outside_band(v, ref, band), pos)
            out[pos:nxt] = True
            pos = nxt
            continue
        # c[pos] is accepted; so is every next close near its predecessor, up to the first jump
        nxt = _first_true(c, lambda v, lo: outside_band(v, c[lo - 1:lo - 1 + len(v)], band), pos + 1)
        ref = c[nxt - 1]
        pos = nxt
