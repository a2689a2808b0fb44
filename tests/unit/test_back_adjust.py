"""fbt_pipelines.futures.back_adjust: a hand example with exact values, and
properties on seeded random markets.

Hand market (sessions s0..s7 = 2024-03-11 .. 2024-03-20, XNYS), closes:

          s0     s1     s2     s3     s4     s5     s6     s7
    A    98     99    100    101    100.5    -      -      -     last trade 2024-03-15
    B   107    108    110    112    115    120    119    118     last trade 2024-06-21
    C    -      -      -      -     125    126    130    128     last trade 2024-09-20

Rolls (explicit table): s2 A->B (100 -> 110: gap 10, ratio 1.1),
                        s5 B->C (120 -> 126: gap 6,  ratio 1.05).
Held: A on s0..s2 (roll date = last session in A), B on s3..s5, C on s6..s7.
Raw held closes: 98, 99, 100 | 112, 115, 120 | 130, 128.

Panama: A segment + (10 + 6) = 114, 115, 116; B segment + 6 = 118, 121, 126; C raw.
Ratio:  A segment x 1.1 x 1.05 = x 1.155 -> 113.19, 114.345, 115.5;
        B segment x 1.05 -> 117.6, 120.75, 126; C raw 130, 128.
Zero gap: panama close on s2 = 116 = B(s2) 110 + later gap 6; on s5 = 126 = C(s5).
          ratio close on s2 = 115.5 = B(s2) 110 x 1.05; on s5 = 126 = C(s5).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.errors import RollError
from fbt_pipelines.futures.back_adjust import (
    CONTINUOUS_COLUMNS,
    AdjustmentMethod,
    back_adjust,
    roll_continuity_errors,
    stitch_segments,
)
from fbt_pipelines.futures.roll_schedule import ROLL_COLUMNS, calendar_roll_schedule
from tests.unit._futures_data import ROOT, bars_from_closes, make_contract, random_market, utc, xnys_sessions

NaN = np.nan
SESSIONS = xnys_sessions("2024-03-11", "2024-03-20")
HAND_CONTRACTS = [
    make_contract("TSU2024", dt.date(2024, 9, 20)),
    make_contract("TSH2024", dt.date(2024, 3, 15)),
    make_contract("TSM2024", dt.date(2024, 6, 21)),
]
A, B, C = "TSH2024", "TSM2024", "TSU2024"


def hand_closes() -> pd.DataFrame:
    frame = pd.DataFrame({
        A: [98, 99, 100, 101, 100.5, NaN, NaN, NaN],
        B: [107, 108, 110, 112, 115, 120, 119, 118],
        C: [NaN, NaN, NaN, NaN, 125, 126, 130, 128],
    }, index=SESSIONS, dtype=float)
    frame.index.name = "ts"
    frame.columns.name = "contract"
    return frame


def hand_schedule() -> pd.DataFrame:
    return pd.DataFrame([
        (ROOT, "hand", utc("2024-03-13"), A, B, 100.0, 110.0, 10.0, 110.0 / 100.0),
        (ROOT, "hand", utc("2024-03-18"), B, C, 120.0, 126.0, 6.0, 126.0 / 120.0),
    ], columns=ROLL_COLUMNS)


def hand(method: str) -> pd.DataFrame:
    return back_adjust(bars_from_closes(hand_closes()), hand_schedule(), HAND_CONTRACTS, method)


def test_hand_sessions():
    assert list(SESSIONS.strftime("%m-%d")) == ["03-11", "03-12", "03-13", "03-14", "03-15", "03-18", "03-19", "03-20"]


def test_hand_panama_values():
    out = hand("panama")
    assert list(out.columns) == CONTINUOUS_COLUMNS
    assert out["close"].tolist() == [114.0, 115.0, 116.0, 118.0, 121.0, 126.0, 130.0, 128.0]
    # open = close - 0.25 in the bars, shifted like the close
    assert out["open"].tolist() == [113.75, 114.75, 115.75, 117.75, 120.75, 125.75, 129.75, 127.75]
    assert out["high"].tolist() == [115.0, 116.0, 117.0, 119.0, 122.0, 127.0, 131.0, 129.0]
    assert out["low"].tolist() == [113.0, 114.0, 115.0, 117.0, 120.0, 125.0, 129.0, 127.0]
    assert out["raw_close"].tolist() == [98.0, 99.0, 100.0, 112.0, 115.0, 120.0, 130.0, 128.0]
    assert out["contract"].tolist() == [A, A, A, B, B, B, C, C]
    assert out["roll"].tolist() == [False, False, True, False, False, True, False, False]
    assert (out["method"] == "panama").all() and (out["root"] == ROOT).all()
    assert list(out["ts"]) == list(SESSIONS)


def test_hand_ratio_values():
    out = hand(AdjustmentMethod.RATIO)
    expected = [113.19, 114.345, 115.5, 117.6, 120.75, 126.0, 130.0, 128.0]
    np.testing.assert_allclose(out["close"], expected, rtol=1e-13, atol=0)
    # open = (close - 0.25) x factor: A segment 97.75 x 1.155 = 112.90125
    assert out["open"].iloc[0] == pytest.approx(112.90125, rel=1e-13)
    assert out["raw_close"].tolist() == [98.0, 99.0, 100.0, 112.0, 115.0, 120.0, 130.0, 128.0]
    assert out["roll"].tolist() == [False, False, True, False, False, True, False, False]
    # last segment is exactly raw
    assert out["close"].iloc[6:].tolist() == [130.0, 128.0]


def test_hand_none_values():
    out = hand("none")
    assert out["close"].tolist() == [98.0, 99.0, 100.0, 112.0, 115.0, 120.0, 130.0, 128.0]
    assert out["close"].tolist() == out["raw_close"].tolist()
    assert (out["method"] == "none").all()


def test_hand_days_to_expiry_is_calendar_days_to_last_trade():
    out = hand("panama")
    # A (03-15): from 03-11 -> 4, 03-12 -> 3, 03-13 -> 2
    # B (06-21): from 03-14: 17 (rest of March) + 30 + 31 + 21 = 99; 03-15 -> 98; 03-18 -> 95
    # C (09-20): from 03-19: 12 + 30 + 31 + 30 + 31 + 31 + 20 = 185; 03-20 -> 184
    assert out["days_to_expiry"].tolist() == [4, 3, 2, 99, 98, 95, 185, 184]


def test_hand_volume_and_open_interest_are_the_held_contracts():
    bars = bars_from_closes(hand_closes())
    out = back_adjust(bars, hand_schedule(), HAND_CONTRACTS, "panama")
    key = bars.set_index(["ts", "contract"])
    expected = key.loc[list(zip(out["ts"], out["contract"]))]
    assert out["volume"].tolist() == expected["volume"].tolist()
    assert out["open_interest"].tolist() == expected["open_interest"].tolist()


def test_hand_continuity_errors():
    bars = bars_from_closes(hand_closes())
    panama = hand("panama")
    assert roll_continuity_errors(panama, bars) == 0
    # Raw stitching jumps at both rolls: s3 moves 112 - 100 = 12 but B moved 112 - 110 = 2;
    # s6 moves 130 - 120 = 10 but C moved 130 - 126 = 4.
    assert roll_continuity_errors(hand("none"), bars) == 2
    # Corrupt one interior adjusted close (s4): the changes into and out of it are both wrong.
    bad = panama.copy()
    bad.loc[4, "close"] += 0.5
    assert roll_continuity_errors(bad, bars) == 2
    # Corrupt the roll-date close of the new contract in the raw bars instead (B on s2 = 110 -> 111):
    # B's own change into s3 becomes 1, the series moved 2.
    bars2 = bars.copy()
    bars2.loc[(bars2["contract"] == B) & (bars2["ts"] == utc("2024-03-13")), "close"] = 111.0
    assert roll_continuity_errors(panama, bars2) == 1
    # A continuous bar whose held contract has no raw bar cannot be checked and counts as bad:
    # without B's s4 bar neither s4 (115 - 112) nor s5 (120 - 115) has an expected change.
    bars3 = bars[~((bars["contract"] == B) & (bars["ts"] == utc("2024-03-15")))]
    assert roll_continuity_errors(panama, bars3) == 2


def test_schedule_from_calendar_rule_matches_hand_schedule():
    # 2 bd before A's last trade 03-15 is 03-13 (A 100 -> B 110). With B's last trade moved to
    # 03-20, 2 bd before it is 03-18 (B 120 -> C 126): the same table as the hand schedule.
    contracts = [make_contract(A, dt.date(2024, 3, 15)), make_contract(B, dt.date(2024, 3, 20)),
                 make_contract(C, dt.date(2024, 9, 20))]
    schedule = calendar_roll_schedule(ROOT, contracts, hand_closes(), 2)
    cols = ["roll_date", "from_contract", "to_contract", "from_close", "to_close", "gap", "ratio"]
    pd.testing.assert_frame_equal(schedule[cols], hand_schedule()[cols], check_dtype=False)  # ts unit s vs us


@pytest.mark.parametrize("ratio", [-0.5, 0.0, NaN], ids=["negative", "zero", "nan"])
def test_ratio_needs_positive_roll_prices(ratio):
    # NaN is what calendar_roll_schedule writes when from_close == 0
    schedule = hand_schedule()
    schedule.loc[0, "ratio"] = ratio
    with pytest.raises(RollError, match="ratio adjustment needs positive prices"):
        back_adjust(bars_from_closes(hand_closes()), schedule, HAND_CONTRACTS, "ratio")
    # panama does not use the ratio
    assert back_adjust(bars_from_closes(hand_closes()), schedule, HAND_CONTRACTS, "panama")["close"].iloc[0] == 114.0


def test_empty_bars_and_unknown_method_raise():
    bars = bars_from_closes(hand_closes())
    with pytest.raises(RollError, match="no bars"):
        back_adjust(bars.iloc[:0], hand_schedule(), HAND_CONTRACTS, "panama")
    with pytest.raises(ValueError):
        back_adjust(bars, hand_schedule(), HAND_CONTRACTS, "geometric")


def test_stitch_segments_numbers_segments_from_zero():
    st = stitch_segments(bars_from_closes(hand_closes()), hand_schedule(), HAND_CONTRACTS)
    assert st["segment"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


# --- properties on seeded random markets ------------------------------------

SEEDS = [1, 7, 42]


def market(seed: int):
    contracts, closes, bars = random_market(seed)
    schedule = calendar_roll_schedule(ROOT, contracts, closes, 5)
    return contracts, closes, bars, schedule


def expected_segment(ts: pd.DatetimeIndex, schedule: pd.DataFrame) -> np.ndarray:
    """Independent: number of rolls strictly before each session (a plain loop)."""
    dates = list(schedule["roll_date"])
    return np.array([sum(1 for d in dates if d < t) for t in ts])


@pytest.fixture(scope="module", params=SEEDS)
def random_case(request):
    contracts, closes, bars, schedule = market(request.param)
    out = {m: back_adjust(bars, schedule, contracts, m) for m in ("none", "panama", "ratio")}
    return contracts, closes, bars, schedule, out


def test_random_market_has_several_rolls_and_missing_bars(random_case):
    # guard: the property tests below are only meaningful with rolls and holes in the data
    _, closes, _, schedule, _ = random_case
    assert len(schedule) == 5
    assert closes.isna().to_numpy().sum() > 0
    assert (schedule["gap"] != 0).all()


def test_random_held_contract_and_raw_close(random_case):
    _, closes, _, schedule, out = random_case
    held_chain = [schedule["from_contract"].iloc[0]] + list(schedule["to_contract"])
    for frame in out.values():
        seg = expected_segment(pd.DatetimeIndex(frame["ts"]), schedule)
        assert frame["contract"].tolist() == [held_chain[k] for k in seg]
        raw = [closes.at[t, c] for t, c in zip(frame["ts"], frame["contract"])]
        assert frame["raw_close"].tolist() == raw
        # every session where the held contract has a close appears, in order
        n_expected = sum(1 for t in closes.index
                         if np.isfinite(closes.at[t, held_chain[expected_segment([t], schedule)[0]]]))
        assert len(frame) == n_expected
        assert pd.DatetimeIndex(frame["ts"]).is_monotonic_increasing


def test_random_last_segment_equals_raw(random_case):
    _, _, _, schedule, out = random_case
    last = schedule["to_contract"].iloc[-1]
    for frame in out.values():
        tail = frame[frame["contract"] == last]
        assert len(tail) > 10
        assert tail["close"].tolist() == tail["raw_close"].tolist()


def test_random_adjusted_values_match_independent_shift(random_case):
    _, _, _, schedule, out = random_case
    gaps, ratios = schedule["gap"].tolist(), schedule["ratio"].tolist()
    seg = expected_segment(pd.DatetimeIndex(out["panama"]["ts"]), schedule)
    raw = out["panama"]["raw_close"].to_numpy()
    shift = np.array([sum(gaps[k:]) for k in seg])
    factor = np.array([np.prod(ratios[k:]) for k in seg])
    np.testing.assert_allclose(out["panama"]["close"], raw + shift, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["ratio"]["close"], raw * factor, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(out["none"]["close"], raw)


def test_random_changes_inside_segments_equal_the_held_contract(random_case):
    _, _, _, _, out = random_case
    for method, check in (("panama", "points"), ("ratio", "pct")):
        frame = out[method]
        same = (frame["contract"].to_numpy()[1:] == frame["contract"].to_numpy()[:-1])
        adj, raw = frame["close"].to_numpy(), frame["raw_close"].to_numpy()
        if check == "points":
            np.testing.assert_allclose(np.diff(adj)[same], np.diff(raw)[same], rtol=0, atol=1e-9)
        else:
            np.testing.assert_allclose((adj[1:] / adj[:-1])[same], (raw[1:] / raw[:-1])[same], rtol=1e-12)
        assert same.sum() > 200


def test_random_zero_gap_on_roll_dates(random_case):
    _, closes, _, schedule, out = random_case
    gaps, ratios = schedule["gap"].tolist(), schedule["ratio"].tolist()
    for k, r in enumerate(schedule.itertuples(index=False)):
        to_raw = closes.at[r.roll_date, r.to_contract]
        assert to_raw == r.to_close
        p = out["panama"].set_index("ts")
        assert p.at[r.roll_date, "close"] == pytest.approx(to_raw + sum(gaps[k + 1:]), abs=1e-9)
        assert p.at[r.roll_date, "raw_close"] == closes.at[r.roll_date, r.from_contract]
        q = out["ratio"].set_index("ts")
        assert q.at[r.roll_date, "close"] == pytest.approx(to_raw * np.prod(ratios[k + 1:]), rel=1e-12)


def test_random_roll_flags_are_the_roll_dates(random_case):
    _, _, _, schedule, out = random_case
    for frame in out.values():
        assert list(frame.loc[frame["roll"], "ts"]) == list(schedule["roll_date"])


def test_random_days_to_expiry(random_case):
    contracts, _, _, _, out = random_case
    last = {c.contract_id: c.last_trade for c in contracts}
    frame = out["panama"]
    expected = [(last[c] - t.date()).days for t, c in zip(frame["ts"], frame["contract"])]
    assert frame["days_to_expiry"].tolist() == expected
    assert (frame["days_to_expiry"] >= 0).all()


def test_random_continuity_errors(random_case):
    _, _, bars, schedule, out = random_case
    assert roll_continuity_errors(out["panama"], bars) == 0
    # raw stitching: one bad bar per roll (all random gaps are non-zero)
    assert roll_continuity_errors(out["none"], bars) == len(schedule)
    bad = out["panama"].copy()
    i = len(bad) // 2
    bad.loc[i, "close"] += 0.01
    assert roll_continuity_errors(bad, bars) == 2
    last = out["panama"].copy()
    last.loc[len(last) - 1, "close"] -= 0.01
    assert roll_continuity_errors(last, bars) == 1
