"""Properties of roll rules and back-adjustment on random markets (hypothesis).

Each example is a random market: 3-6 contracts in random delivery months
(random last trade inside the month, physically delivered or not), a random
data window, random-walk closes > 0 with a few holes, and volume / open
interest that migrate from one contract to the next (open interest
sometimes sparse). For every rule kind (``calendar:N``, ``volume``,
``open_interest``, ``first_of_month``, ``day_of_month:D``, with random
``hold=`` / ``depth=``) and every :class:`AdjustmentMethod`:

- the schedule equals an independent, loop-by-loop reading of the rules in
  :mod:`fbt_pipelines.futures.roll_rules` (the module docstring): calendar =
  the latest session on or before the backstop where both contracts trade;
  volume / open interest = the first session after the previous roll where
  the next contract's value exceeds the held one's (an unknown value is no
  crossing), else the calendar backstop;
- roll dates strictly increase and chain, never lie after the backstop of
  the front whose expiry drives them, and the held contract is ``depth - 1``
  chain places after that front and in the hold cycle;
- the series holds, on each session, the contract the schedule says
  (``roll_date`` = last session in the old contract);
- none / panama / ratio: the last segment is raw; forward_panama: the first
  segment is raw; inside a segment, point changes (panama, forward_panama)
  or percentage changes (ratio) equal the held contract's;
- the adjusted gap on every roll date is zero: the adjusted close of the old
  contract on the roll date equals the adjusted close the new contract has
  there (its raw close there moved by the next segment's adjustment);
- ``roll_continuity_errors`` is 0 for panama and forward_panama.

Bounded and reproducible: 25 derandomized examples per rule kind, the whole file
~13 s.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.expiry import (
    _business_days,
    business_day_offset,
    last_business_day,
)
from fbt_pipelines.catalog.specs import MONTH_CODES, market_spec
from fbt_pipelines.errors import RollError
from fbt_pipelines.futures.back_adjust import (
    AdjustmentMethod,
    back_adjust,
    roll_continuity_errors,
)
from fbt_pipelines.futures.roll_rules import KINDS, RollRule, build_roll_schedule

ROOT = "TS"
METHODS = list(AdjustmentMethod)
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- random markets -----------------------------------------------------------------------------


@dataclass(repr=False)
class Market:
    contracts: list[Contract]
    bars: pd.DataFrame          # long: contract, root, ts, open, high, low, close, volume, open_interest
    closes: pd.DataFrame        # wide, index = sessions (UTC), NaN where no bar
    volume: pd.DataFrame
    open_interest: pd.DataFrame

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis prints failing examples: keep it short
        p.text(repr(self))

    def __repr__(self) -> str:
        spans = {c: (str(s.first_valid_index().date()), str(s.last_valid_index().date()), int(s.isna().sum()))
                 for c, s in self.closes.items()}
        return (f"Market({[(c.contract_id, str(c.last_trade), str(c.first_notice)) for c in self.contracts]}, "
                f"sessions {self.closes.index[0].date()}..{self.closes.index[-1].date()}, "
                f"bars (first, last, holes) {spans})")


def xnys_days(start: dt.date, end: dt.date) -> list[dt.date]:
    days = _business_days()
    days = days[(days >= np.datetime64(start)) & (days <= np.datetime64(end))]
    return [pd.Timestamp(d).date() for d in days]


@st.composite
def markets(draw, holes: bool = True) -> Market:
    n = draw(st.integers(3, 6), label="contracts")
    year0 = draw(st.integers(2014, 2030), label="year0")
    month0 = draw(st.integers(1, 12), label="month0")
    steps = draw(st.lists(st.integers(1, 3), min_size=n - 1, max_size=n - 1), label="month steps")
    physical = draw(st.booleans(), label="physically delivered")
    contracts = []
    ym = year0 * 12 + month0 - 1
    for k in range(n):
        if k:
            ym += steps[k - 1]
        year, month = divmod(ym, 12)
        month += 1
        day = draw(st.integers(10, 20), label="last trade day")
        last_trade = business_day_offset(dt.date(year, month, day) + dt.timedelta(days=1), -1)
        first_notice = last_business_day(*((year - 1, 12) if month == 1 else (year, month - 1))) if physical else None
        contracts.append(Contract(last_trade=last_trade, contract_id=f"{ROOT}{MONTH_CODES[month - 1]}{year}",
                                  root=ROOT, year=year, month=month, first_notice=first_notice))
    lead = draw(st.integers(5, 90), label="sessions before the first last trade")
    tail = draw(st.integers(0, 40), label="sessions cut from the end")
    missing = draw(st.sampled_from([0.0, 0.0, 0.03, 0.08]), label="missing bar fraction") if holes else 0.0
    sparse_oi = draw(st.booleans(), label="sparse open interest")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)

    all_days = xnys_days(contracts[0].last_trade - dt.timedelta(days=200), contracts[-1].last_trade)
    first_lt = all_days.index(contracts[0].last_trade)
    days = all_days[max(0, first_lt - lead): len(all_days) - tail]
    sessions = pd.DatetimeIndex([pd.Timestamp(d, tz="UTC") for d in days], name="ts")
    m = len(sessions)
    spot = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.012, m)))
    carry = rng.uniform(-0.1, 0.1)
    width = rng.uniform(5, 40)   # how fast activity moves to the next contract
    closes, vol, oi = {}, {}, {}
    for c in contracts:
        alive = np.array([d <= c.last_trade for d in days])
        if not alive.any():
            continue
        years = np.array([(c.last_trade - d).days / 365.0 for d in days])
        own = 1.0 + rng.normal(0.0, 0.003, m)
        close = np.round(spot * np.exp(carry * years) * own, 2)
        to_ref = np.array([(c.roll_reference - d).days for d in days], dtype=float)
        # volume peaks while the contract is the front, fades as its roll reference nears
        base = 1e5 * np.exp(-((to_ref - 60.0) / (width + 30.0)) ** 2) * (to_ref > -5)
        v = np.floor(base * rng.uniform(0.5, 1.5, m)) + rng.integers(0, 3, m)
        o = np.floor(np.r_[base[:1], base[:-1]] * 3 * rng.uniform(0.8, 1.2, m)) + rng.integers(0, 3, m)
        dropped = rng.random(m) < missing
        dropped[0] = False
        close[~alive | dropped] = np.nan
        v[np.isnan(close)] = np.nan
        o[np.isnan(close)] = np.nan
        if sparse_oi:
            o[rng.random(m) < 0.5] = np.nan
        if np.isfinite(close).any():
            closes[c.contract_id], vol[c.contract_id], oi[c.contract_id] = close, v, o
    wide = pd.DataFrame(closes, index=sessions)
    wide.columns.name = "contract"
    keep = wide.notna().any(axis=1).to_numpy()  # a session exists where some contract trades
    wide = wide[keep]
    volume = pd.DataFrame(vol, index=sessions)[keep]
    open_interest = pd.DataFrame(oi, index=sessions)[keep]
    rows = []
    for cid in wide.columns:
        has = wide[cid].notna().to_numpy()
        rows.append(pd.DataFrame({"contract": cid, "root": ROOT, "ts": wide.index[has],
                                  "close": wide[cid].to_numpy()[has], "volume": volume[cid].to_numpy()[has],
                                  "open_interest": open_interest[cid].to_numpy()[has]}))
    long = pd.concat(rows, ignore_index=True)
    long["open"] = np.round(long["close"] * (1 + rng.normal(0, 0.002, len(long))), 2)
    long["high"] = np.maximum(long["open"], long["close"]) + 0.5
    long["low"] = np.minimum(long["open"], long["close"]) - 0.5
    bars = long[["contract", "root", "ts", "open", "high", "low", "close", "volume", "open_interest"]]
    bars = bars.sort_values(["ts", "contract"]).reset_index(drop=True)
    return Market(contracts, bars, wide, volume, open_interest)


@st.composite
def rules(draw, kind: str, months: str) -> RollRule:
    hold = ""
    if draw(st.booleans(), label="use a hold cycle"):
        hold = "".join(sorted(draw(st.sets(st.sampled_from(months), min_size=1)), key=MONTH_CODES.index))
    return RollRule(
        kind=kind,
        days_before=draw(st.integers(0, 8), label="days_before"),
        day=draw(st.integers(1, 28), label="day") if kind == "day_of_month" else 1,
        hold=hold,
        depth=draw(st.integers(1, 3), label="depth"),
    )


# --- independent expectations -------------------------------------------------------------------


def chain_of(market: Market, rule: RollRule) -> list[Contract]:
    return sorted(c for c in market.contracts if c.contract_id in market.closes.columns
                  and (not rule.hold or MONTH_CODES[c.month - 1] in rule.hold))


def backstop(rule: RollRule, front: Contract) -> dt.date:
    """The latest date the rule allows leaving ``front`` (calendar backstop; month rules earlier)."""
    limit = front.roll_reference
    for _ in range(rule.days_before):  # one XNYS business day at a time
        limit = business_day_offset(limit, -1)
    if rule.kind == "first_of_month":
        limit = min(limit, dt.date(front.year, front.month, 1) - dt.timedelta(days=1))
    elif rule.kind == "day_of_month":
        limit = min(limit, dt.date(front.year, front.month, rule.day) - dt.timedelta(days=1))
    return limit


def expected_schedule(market: Market, rule: RollRule) -> tuple[list[tuple], list[Contract], str | None]:
    """(rolls as (session index, front, held, next), chain, contract held at the start)."""
    days = [ts.date() for ts in market.closes.index]
    chain = chain_of(market, rule)
    close = {c: market.closes[c].tolist() for c in market.closes.columns}
    activity = {"volume": market.volume, "open_interest": market.open_interest}.get(rule.kind)
    rolls: list[tuple] = []
    prev = -1
    k = 0
    while k + rule.depth < len(chain):
        front, held, nxt = chain[k], chain[k + rule.depth - 1], chain[k + rule.depth]
        limit = backstop(rule, front)
        if limit > days[-1]:
            break
        window = [i for i in range(prev + 1, len(days)) if days[i] <= limit]
        both = [i for i in window if math.isfinite(close[held.contract_id][i])
                and math.isfinite(close[nxt.contract_id][i])]
        chosen = None
        if activity is not None:
            for i in both:
                a_held, a_next = activity[held.contract_id].iloc[i], activity[nxt.contract_id].iloc[i]
                if a_next > a_held:  # NaN (unknown) compares False: no crossing
                    chosen = i
                    break
        if chosen is None and both:
            chosen = both[-1]
        if chosen is None:
            assert prev < 0, "the generated markets always have a common session"
            k += 1
            continue  # the data starts after this roll
        rolls.append((chosen, front, held, nxt))
        prev = chosen
        k += 1
    start = rolls[0][2].contract_id if rolls else (
        chain[min(k + rule.depth - 1, len(chain) - 1)].contract_id if chain else None)
    return rolls, chain, start


# --- the properties -----------------------------------------------------------------------------


def check_schedule(market: Market, rule: RollRule, schedule: pd.DataFrame) -> tuple[list[Contract], str | None]:
    rolls, chain, start = expected_schedule(market, rule)
    sessions = market.closes.index
    got = [(r.roll_date, r.from_contract, r.to_contract, r.from_close, r.to_close, r.gap, r.ratio)
           for r in schedule.itertuples(index=False)]
    want = []
    for i, _front, held, nxt in rolls:
        fc = market.closes[held.contract_id].iloc[i]
        nc = market.closes[nxt.contract_id].iloc[i]
        want.append((sessions[i], held.contract_id, nxt.contract_id, fc, nc, nc - fc, nc / fc))
    assert got == want
    assert (schedule["rule"] == rule.label).all() and (schedule["root"] == ROOT).all()
    dates = list(schedule["roll_date"])
    assert all(a < b for a, b in itertools.pairwise(dates)), "roll dates strictly increase"
    assert list(schedule["to_contract"])[:-1] == list(schedule["from_contract"])[1:], "rolls chain"
    ids = [c.contract_id for c in chain]
    for row, (_, front, _, _) in zip(schedule.itertuples(index=False), rolls):
        # the front whose expiry drives the roll, depth - 1 places before the held contract
        assert ids.index(row.from_contract) - ids.index(front.contract_id) == rule.depth - 1
        assert ids.index(row.to_contract) == ids.index(row.from_contract) + 1
        assert row.roll_date.date() <= backstop(rule, front), "never after the backstop"
        if rule.hold:
            assert row.from_contract[len(ROOT)] in rule.hold and row.to_contract[len(ROOT)] in rule.hold
    if rule.kind in ("volume", "open_interest"):
        activity = market.volume if rule.kind == "volume" else market.open_interest
        prev = None
        for row, (_, front, _, _) in zip(schedule.itertuples(index=False), rolls):
            after = sessions > prev if prev is not None else np.ones(len(sessions), bool)
            upto = sessions.tz_localize(None).normalize() <= pd.Timestamp(backstop(rule, front))
            both = market.closes[row.from_contract].notna() & market.closes[row.to_contract].notna()
            crossed = both & (activity[row.to_contract] > activity[row.from_contract]) & after & upto
            if crossed.any():
                event("a roll on an activity crossing")
                assert row.roll_date == crossed.idxmax(), "the first crossing session"
            else:
                event("a roll on the backstop (no crossing)")
                assert row.roll_date == (both & after & upto)[::-1].idxmax(), "no crossing: the backstop"
            prev = row.roll_date
    return chain, start


def check_series(market: Market, rule: RollRule, schedule: pd.DataFrame, method: AdjustmentMethod,
                 prices: pd.DataFrame, chain: list[Contract], start: str | None) -> None:
    assert (prices["method"] == method.value).all()
    ts = pd.DatetimeIndex(prices["ts"])
    assert ts.is_monotonic_increasing and ts.is_unique
    # the contract held on each session is the schedule's, every bar is that contract's raw bar
    roll_dates = list(schedule["roll_date"])
    held_ids = [start] + list(schedule["to_contract"])
    segment = np.searchsorted(pd.DatetimeIndex(roll_dates), ts, side="left") if roll_dates else np.zeros(len(ts), int)
    assert prices["contract"].tolist() == [held_ids[s] for s in segment]
    raw = market.bars.set_index(["ts", "contract"])
    key = pd.MultiIndex.from_arrays([ts, prices["contract"]])
    assert np.array_equal(prices["raw_close"].to_numpy(), raw["close"].reindex(key).to_numpy())
    raw_open = raw["open"].reindex(key).to_numpy()
    all_sessions = market.closes.index
    seg_all = (np.searchsorted(pd.DatetimeIndex(roll_dates), all_sessions, side="left") if roll_dates
               else np.zeros(len(all_sessions), int))
    cols = market.closes.columns.get_indexer([held_ids[s] for s in seg_all])
    trades = np.isfinite(market.closes.to_numpy()[np.arange(len(all_sessions)), cols])
    expected_ts = all_sessions[trades]
    assert ts.equals(expected_ts), "every session where the held contract trades, nothing else"
    assert np.array_equal(prices["roll"].to_numpy(), ts.isin(roll_dates))
    assert set(prices["contract"]) <= {c.contract_id for c in chain}, "only contracts of the chain"
    if rule.hold:
        assert all(cid[len(ROOT)] in rule.hold for cid in prices["contract"]), "only months of the hold cycle"

    close = prices["close"].to_numpy(float)
    opened = prices["open"].to_numpy(float)
    rc = prices["raw_close"].to_numpy(float)
    seg = segment
    last, first = seg == seg.max(), seg == seg.min()
    same = seg[1:] == seg[:-1]
    if method in (AdjustmentMethod.NONE, AdjustmentMethod.PANAMA, AdjustmentMethod.RATIO):
        assert np.array_equal(close[last], rc[last]), "last segment is raw"
        assert np.array_equal(opened[last], raw_open[last])
    if method is AdjustmentMethod.NONE:
        assert np.array_equal(close, rc) and np.array_equal(opened, raw_open)
    if method is AdjustmentMethod.FORWARD_PANAMA:
        assert np.array_equal(close[first], rc[first]), "forward_panama: first segment is raw"
    if method in (AdjustmentMethod.PANAMA, AdjustmentMethod.FORWARD_PANAMA):
        np.testing.assert_allclose(np.diff(close)[same], np.diff(rc)[same], rtol=0, atol=1e-9)
        np.testing.assert_allclose(close - opened, rc - raw_open, rtol=0, atol=1e-9)
    if method is AdjustmentMethod.RATIO:
        np.testing.assert_allclose((close[1:] / close[:-1])[same], (rc[1:] / rc[:-1])[same], rtol=1e-12)
        np.testing.assert_allclose(close / opened, rc / raw_open, rtol=1e-12)

    # zero adjusted gap on every roll date: old contract's adjusted close there == the new
    # contract's raw close there, adjusted like the new contract's segment
    held = prices["contract"].to_numpy(object)
    gaps, ratios = schedule["gap"].to_numpy(float), schedule["ratio"].to_numpy(float)
    for k, row in enumerate(schedule.itertuples(index=False)):
        at = np.flatnonzero(ts == row.roll_date)
        assert len(at) == 1 and held[at[0]] == row.from_contract
        old_adjusted = close[at[0]]
        assert rc[at[0]] == row.from_close
        nxt = np.flatnonzero(held == row.to_contract)  # the new contract's segment
        if method is AdjustmentMethod.NONE:
            assert old_adjusted == row.from_close  # the raw gap stays in the series
        elif method is AdjustmentMethod.RATIO:
            factor = close[nxt[0]] / rc[nxt[0]] if len(nxt) else float(np.prod(ratios[k + 1:]))
            assert math.isclose(old_adjusted, row.to_close * factor, rel_tol=1e-12)
        else:
            if len(nxt):
                offset = close[nxt[0]] - rc[nxt[0]]
            elif method is AdjustmentMethod.PANAMA:
                offset = float(gaps[k + 1:].sum())
            else:
                offset = -float(gaps[:k + 1].sum())
            assert math.isclose(old_adjusted, row.to_close + offset, rel_tol=0, abs_tol=1e-9)
    if method in (AdjustmentMethod.PANAMA, AdjustmentMethod.FORWARD_PANAMA):
        assert roll_continuity_errors(prices, market.bars) == 0
    elif method is AdjustmentMethod.NONE and len(schedule):
        nonzero = (schedule["gap"] != 0).sum()
        # each roll with a gap (and a bar of the new contract after it) is one discontinuity
        assert roll_continuity_errors(prices, market.bars) <= nonzero


@pytest.mark.parametrize("kind", KINDS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_roll_rules_and_adjustments_on_random_markets(kind: str, data) -> None:
    market = data.draw(markets(), label="market")
    months = "".join(sorted({MONTH_CODES[c.month - 1] for c in market.contracts}, key=MONTH_CODES.index))
    rule = data.draw(rules(kind, months), label="rule")
    schedule = build_roll_schedule(ROOT, market.contracts, market.bars, rule)
    chain, start = check_schedule(market, rule, schedule)
    event(f"rolls: {min(len(schedule), 3)}{'+' if len(schedule) >= 3 else ''}")
    event(f"depth {rule.depth}, hold cycle: {bool(rule.hold)}")
    if len(schedule) == 0 and chain:
        event(f"no rolls: starts in chain[{[c.contract_id for c in chain].index(start)}]")
    if not chain:
        return
    for method in METHODS:
        if method is AdjustmentMethod.RATIO and len(schedule) and not (schedule["ratio"] > 0).all():
            continue
        prices = back_adjust(market.bars, schedule, market.contracts, method)
        check_series(market, rule, schedule, method, prices, chain, start)


@PROPERTY_SETTINGS
@given(market=markets(holes=False), kind=st.sampled_from(["calendar", "first_of_month", "day_of_month"]),
       days_before=st.integers(0, 8), day=st.integers(1, 28))
def test_depth_two_holds_the_contract_after_the_front(market: Market, kind: str, days_before: int, day: int) -> None:
    """Same dates as depth 1 (the front's expiry drives both), one contract further out on every session."""
    front_rule = RollRule(kind, days_before=days_before, day=day if kind == "day_of_month" else 1)
    second_rule = RollRule(kind, days_before=days_before, day=front_rule.day, depth=2)
    front = build_roll_schedule(ROOT, market.contracts, market.bars, front_rule)
    second = build_roll_schedule(ROOT, market.contracts, market.bars, second_rule)
    ids = [c.contract_id for c in chain_of(market, front_rule)]
    after = dict(itertools.pairwise(ids))
    assert list(second["roll_date"]) == list(front["roll_date"])[:len(second)]
    assert list(second["from_contract"]) == [after[c] for c in front["from_contract"][:len(second)]]
    held1 = back_adjust(market.bars, front, market.contracts, "none").set_index("ts")["contract"]
    held2 = back_adjust(market.bars, second, market.contracts, "none").set_index("ts")["contract"]
    # on every session both series trade, depth 2 holds the depth-1 contract's successor (the
    # last contract of the data once the depth-1 series holds that itself: the chain ends there)
    common = held2.index.intersection(held1.index)
    assert len(common) and all(held2[t] == after.get(held1[t], held1[t]) for t in common)


# --- RollRule.parse -----------------------------------------------------------------------------


@st.composite
def any_rule(draw) -> RollRule:
    kind = draw(st.sampled_from(KINDS))
    return RollRule(
        kind=kind,
        days_before=draw(st.integers(0, 30)),
        day=draw(st.integers(1, 28)) if kind == "day_of_month" else 1,
        hold="".join(sorted(draw(st.sets(st.sampled_from(MONTH_CODES), max_size=4)), key=MONTH_CODES.index)),
        depth=draw(st.integers(1, 4)),
    )


@settings(max_examples=100, deadline=None, derandomize=True)
@given(rule=any_rule())
def test_parse_label_round_trips(rule: RollRule) -> None:
    assert RollRule.parse(rule.label) == rule
    # the label round trips through any spec too: it spells out what differs from the defaults
    assert RollRule.parse(rule.label, market_spec("ES")) == rule
    # options may come in any order, with spaces
    head, *opts = rule.label.split(",")
    assert RollRule.parse(" , ".join([head, *reversed(opts)])) == rule


def test_parse_defaults_come_from_the_spec() -> None:
    es = market_spec("ES")
    assert RollRule.parse("volume", es) == RollRule("volume", days_before=es.roll_days_before, hold=es.hold_cycle)
    assert RollRule.parse("") == RollRule("calendar", days_before=5)
    assert RollRule.parse("calendar:8") == RollRule("calendar", days_before=8)
    assert RollRule.parse("open_interest,backstop=2,hold=hz,depth=2") == RollRule(
        "open_interest", days_before=2, hold="HZ", depth=2)
    assert RollRule.parse("day_of_month:15") == RollRule("day_of_month", day=15)


@pytest.mark.parametrize("text, message", [
    ("weekly", "unknown roll rule 'weekly'"),
    ("calendr:5", "unknown roll rule 'calendr'"),
    ("volume,speed=3", "unknown roll rule option 'speed'"),
    ("calendar:5,hold=Z,foo=1", "unknown roll rule option 'foo'"),
    ("volume:3", "roll rule 'volume' takes no argument"),
    ("first_of_month:2", "roll rule 'first_of_month' takes no argument"),
    ("calendar:x", "a number was expected"),
    ("volume,depth=two", "a number was expected"),
    ("day_of_month", "a number was expected"),
    ("day_of_month:0", "1 <= day <= 28"),
    ("day_of_month:29", "1 <= day <= 28"),
    ("volume,depth=0", "depth >= 1"),
    ("calendar:-1", "days_before >= 0"),
    ("volume,hold=Z1", "hold months 'Z1'"),
])
def test_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(RollError, match=message.replace("(", r"\(")):
        RollRule.parse(text)
