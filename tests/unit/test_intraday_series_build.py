"""The intraday series build (runs of session bars) against a bar-by-bar reference.

:func:`~fbt_pipelines.usecases.intraday.intraday_continuous` builds the Panama
series run by run (slices of the session bars) and checks continuity with a
shortcut inside runs. Here every column is recomputed one bar at a time in
plain Python from the rules in the module docstring (segment s holds the
chain's contract s in the sessions after roll s - 1 up to roll s; shift = the
sum of the later gaps; days to expiry from the UTC date), and the continuity
count from its definition (the held contract's last bar at or before the
previous bar's time), on generated hourly bars with three rolls and on the
same bars with planted duplicates, gaps and jumps. Also: the contract numbers
from a categorical column equal ``pd.factorize``'s, and the repeated-string
column equals a plain ``str`` array.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.catalog.contracts import listed_contracts
from fbt_pipelines.marketdata.sample_minutes import simulate_minutes
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases.continuous import roll_rule_for

ES = market_spec("ES")
CONTRACTS = listed_contracts(ES, 2023, 2025)
NS_PER_DAY = 86_400 * 10**9


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    """Hourly ES bars Nov 2023 .. Jun 2024: the Dec, Mar and Jun rolls."""
    return simulate_minutes(ES, dt.date(2023, 11, 1), dt.date(2024, 6, 28), seed=5, interval="1h").frame()


def reference(sb: uc.SessionedBars, schedule: pd.DataFrame, start: str, key: str) -> tuple[pd.DataFrame, int]:
    """The series and its continuity count, one bar at a time (no numpy indexing tricks)."""
    chain = [start, *schedule["to_contract"].astype(str)]
    roll_days = [pd.Timestamp(d).date() for d in schedule["roll_date"]]
    gaps = [float(g) for g in schedule["gap"]]
    shifts, acc = [0.0], 0.0
    for g in reversed(gaps):
        acc += g
        shifts.insert(0, acc)
    last_trade = {c.contract_id: c.last_trade for c in CONTRACTS}
    picked = []
    for i in range(len(sb)):
        day = sb.day[i].item()
        seg = sum(1 for d in roll_days if d < day)
        if sb.contracts[sb.code[i]] == chain[seg]:
            picked.append((seg, i))
    picked.sort()  # by segment, then by row of sb (time order within a contract)
    rows = []
    for n, (seg, i) in enumerate(picked):
        contract = str(sb.contracts[sb.code[i]])
        ts = pd.Timestamp(int(sb.ts[i]), tz="UTC")
        next_seg = picked[n + 1][0] if n + 1 < len(picked) else None
        rows.append({
            "series": key, "session": pd.Timestamp(sb.day[i].item(), tz="UTC"), "ts": ts,
            "contract": contract, "open": sb.open[i] + shifts[seg], "high": sb.high[i] + shifts[seg],
            "low": sb.low[i] + shifts[seg], "close": sb.close[i] + shifts[seg], "raw_close": sb.close[i],
            "volume": sb.volume[i], "open_interest": sb.open_interest[i],
            "days_to_expiry": (last_trade[contract] - ts.date()).days,
            "roll": next_seg != seg and seg < len(gaps)})
    frame = pd.DataFrame(rows, columns=uc.INTRADAY_CONTINUOUS_COLUMNS)
    times: dict[int, list[int]] = {}  # contract number -> its bars' times, in sb's order (time order)
    where: dict[int, list[int]] = {}
    for j in range(len(sb)):
        times.setdefault(int(sb.code[j]), []).append(int(sb.ts[j]))
        where.setdefault(int(sb.code[j]), []).append(j)
    errors = 0
    for t in range(1, len(picked)):
        i = picked[t][1]
        prev_ts = int(sb.ts[picked[t - 1][1]])
        k = bisect.bisect_right(times[int(sb.code[i])], prev_ts)  # its bars at or before the previous bar's time
        if k == 0:
            errors += 1
            continue
        expected = sb.close[i] - sb.close[where[int(sb.code[i])][k - 1]]
        change = frame["close"].iloc[t] - frame["close"].iloc[t - 1]
        errors += not abs(change - expected) <= uc.CONTINUITY_TOLERANCE
    return frame, errors


def build(sb: uc.SessionedBars, key: str = "ES|1h", rolls: uc.IntradayRolls | None = None):
    rolls = rolls or uc.intraday_roll_schedule(sb, CONTRACTS, roll_rule_for(ES), key, "1h")
    return rolls, uc.intraday_continuous(sb, rolls.schedule, rolls.start_contract, CONTRACTS, key, "1h")


def roll_days(rolls: uc.IntradayRolls) -> np.ndarray:
    return pd.DatetimeIndex(rolls.schedule["roll_date"]).tz_localize(None).to_numpy().astype("datetime64[D]")


def assert_matches_reference(sb: uc.SessionedBars, key: str = "ES|1h",
                             rolls: uc.IntradayRolls | None = None) -> uc.IntradayContinuous:
    rolls, series = build(sb, key, rolls)
    expected, errors = reference(sb, rolls.schedule, rolls.start_contract, key)
    got = series.prices
    assert list(got.columns) == uc.INTRADAY_CONTINUOUS_COLUMNS
    assert [str(t) for t in got.dtypes] == ["str", "datetime64[ns, UTC]", "datetime64[ns, UTC]", "str", *["float64"] * 7,
                                            "int64", "bool"]
    pd.testing.assert_frame_equal(got, expected.astype(got.dtypes.to_dict()), check_exact=True)
    assert series.bad_bars == errors
    last = got["contract"] == got["contract"].iloc[-1]
    assert series.last_segment_diff == float(np.abs(got.loc[last, "close"] - got.loc[last, "raw_close"]).max())
    return series


def test_series_equals_the_bar_by_bar_reference(bars):
    sb = uc.sessioned_bars(bars, ES)
    series = assert_matches_reference(sb)
    p = series.prices
    assert p["roll"].sum() == 3 and series.bad_bars == 0 and series.last_segment_diff == 0.0
    assert p["contract"].drop_duplicates().tolist() == ["ESZ2023", "ESH2024", "ESM2024", "ESU2024"]


def test_window_duplicates_and_missing_bars_match_the_reference(bars):
    """A window; bars repeated at the same time with another close (the later row is the contract's
    last at that time: searched, not taken from the row before); a hole in the held contract; and the
    new contract without any bar up to the first roll (the bar after that roll has nothing to move from)."""
    h = bars["contract"] == "ESH2024"
    dup = bars[h].iloc[[500, 800, 801]]
    hole = h & (bars["ts"] > pd.Timestamp("2024-01-10", tz="UTC")) & (bars["ts"] < pd.Timestamp("2024-01-10 06:00", tz="UTC"))
    edited = pd.concat([bars[~hole], dup.assign(close=dup["close"] + 3.0)], ignore_index=True)
    sb = uc.sessioned_bars(edited, ES, dt.date(2023, 11, 6), dt.date(2024, 6, 20))
    series = assert_matches_reference(sb)
    assert series.bad_bars > 0  # the repeated bars move the series by 3 points the contract does not
    rolls, _ = build(sb)
    first_roll = rolls.schedule["roll_ts"].iloc[0]
    cut = edited[~((edited["contract"] == rolls.schedule["to_contract"].iloc[0]) & (edited["ts"] <= first_roll))]
    series = assert_matches_reference(uc.sessioned_bars(cut, ES, dt.date(2023, 11, 6), dt.date(2024, 6, 20)),
                                      rolls=rolls)
    assert series.bad_bars > 0


def test_fast_continuity_count_equals_the_searched_one(bars):
    sb = uc.sessioned_bars(bars, ES)
    rolls, series = build(sb)
    codes = np.array([sb.index_of(c) for c in [rolls.start_contract, *rolls.schedule["to_contract"]]])
    runs = uc._held_runs(sb, codes, roll_days(rolls))
    p = series.prices
    code = np.searchsorted(sb.contracts, p["contract"].to_numpy(dtype=object))
    ts = uc.utc_ns(p["ts"])
    close, raw = p["close"].to_numpy().copy(), p["raw_close"].to_numpy()
    rng = np.random.default_rng(0)
    planted = 0
    for n, t in enumerate([1, *rng.integers(2, len(p), 25), len(p) - 1, int(np.flatnonzero(p["roll"])[0]) + 1]):
        if n % 4 == 3:
            close[t] = np.nan  # bars t and t + 1 no longer move like the contract
        else:
            close[t:] += 0.5  # a level jump: bar t moves by half a point more than its contract
        want = uc.continuity_errors(close, raw, ts, code, sb)
        assert uc._run_continuity_errors(close, raw, ts, sb, runs, codes) == want
        planted += 1
    assert want >= planted - 2  # the plants were seen (two may land on the same bar)
    # times before 1970 (outside the (contract, second) keys the shortcut relies on): the plain search
    early = 60 * 365 * NS_PER_DAY
    before = dataclasses.replace(sb, ts=sb.ts - early)
    assert (uc._run_continuity_errors(close, raw, ts - early, before, runs, codes)
            == uc.continuity_errors(close, raw, ts - early, code, before))


def test_runs_fall_back_to_bar_by_bar_when_sessions_are_out_of_order(bars):
    """Sessions out of time order within a contract (not what sessioned_bars gives): the runs are the
    reference's rows anyway."""
    sb = uc.sessioned_bars(bars, ES)
    rolls, _ = build(sb)
    days = roll_days(rolls)
    first_held = sb.slice_of(sb.index_of(rolls.start_contract))[0]
    day = sb.day.copy()
    day[first_held + 10] = days[0] + 1  # a bar of the first segment's contract in the next segment's sessions
    shuffled = dataclasses.replace(sb, day=day)
    codes = np.array([shuffled.index_of(c) for c in [rolls.start_contract, *rolls.schedule["to_contract"]]])
    runs = uc._held_runs(shuffled, codes, days)
    got = np.concatenate([np.arange(a, b) for a, b in zip(runs.lo, runs.hi)])
    segment = [sum(1 for d in days if d < shuffled.day[i]) for i in range(len(shuffled))]
    want = sorted((s, i) for i, s in enumerate(segment) if shuffled.code[i] == codes[s])
    np.testing.assert_array_equal(got, [i for _, i in want])
    assert list(runs.at) == [0, *np.cumsum(runs.hi - runs.lo)]


def test_contract_numbers_from_categories_equal_factorize(bars):
    keep = np.ones(len(bars), dtype=bool)
    keep[::7] = False
    as_text = bars.assign(contract=bars["contract"].astype(str))
    as_cat = bars.assign(contract=pd.Categorical(bars["contract"], categories=["ESU2024", "ESZ2030", "ESH2024",
                                                                              "ESZ2023", "ESM2024"]))
    for every in (True, False):
        k = keep if not every else np.ones(len(bars), dtype=bool)
        codes, names = uc._contract_numbers(as_cat["contract"], k, every)
        f_codes, f_names = pd.factorize(as_text["contract"][k], sort=True)
        np.testing.assert_array_equal(codes, f_codes)
        assert list(names) == list(f_names) and names.dtype == object
    sb_text, sb_cat = uc.sessioned_bars(as_text, ES), uc.sessioned_bars(as_cat, ES)
    for f in ("contracts", "code", "ts", "day", "close"):
        np.testing.assert_array_equal(getattr(sb_text, f), getattr(sb_cat, f))


def test_repeated_strings_equal_a_plain_str_array():
    got = uc._repeated_strings(["ESH2024", "", "ü€", "ESM2024"], [3, 2, 0, 1])
    want = pd.array(["ESH2024"] * 3 + [""] * 2 + ["ESM2024"], dtype="str")
    assert got.dtype == want.dtype and got.tolist() == want.tolist()
    pd.testing.assert_extension_array_equal(got, want)
    assert uc._repeated_strings(["ES|1m"], [0]).tolist() == []
