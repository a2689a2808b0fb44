"""fbt_pipelines.futures.roll_schedule on a hand-built three-contract market.

Convention under test (module docstring): ``roll_date`` is the LAST session
held in the old contract; gap = to_close - from_close and ratio = to_close /
from_close, both on the roll date's closes. The target roll date is
``days_before`` XNYS business days before the roll reference (first notice if
physically delivered, else last trade); if either contract lacks a close there
the roll moves to the latest EARLIER session where both trade.

The hand market (XNYS sessions 2024-03-11 .. 2024-04-05; Fri 2024-03-29 is
Good Friday, an XNYS holiday, so it is not a session):

    idx  date    TSH2024  TSJ2024  TSK2024
     0   03-11     99.0    101.5      -
     1   03-12     99.5    102.0      -
     2   03-13    100.0    102.5      -
     3   03-14    100.5    103.0      -
     4   03-15    101.0    104.0      -      <- TSH2024 last trade
     5   03-18      -      105.0      -
     6   03-19      -      106.0      -
     7   03-20      -      107.0    105.0
     8   03-21      -      108.0    105.5
     9   03-22      -      108.5    105.75
    10   03-25      -      109.0    106.0
    11   03-26      -      109.25   106.5
    12   03-27      -      109.5    107.0
    13   03-28      -      110.0    107.25
         03-29   (Good Friday: no session)
    14   04-01      -      110.5    107.5
    15   04-02      -      111.0    108.0   <- TSJ2024 last trade
    16   04-03      -        -      108.25
    17   04-04      -        -      108.5
    18   04-05      -        -      109.0   (TSK2024 last trade 04-19: beyond the data)
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.errors import RollError
from fbt_pipelines.futures.roll_schedule import (
    ROLL_COLUMNS,
    ROLL_TRIGGER_COLUMNS,
    calendar_roll_schedule,
    first_contract,
    roll_dates_utc,
    validate_roll_schedule,
)
from tests.unit._futures_data import ROOT, make_contract, utc, xnys_sessions

NaN = np.nan
A, B, C = "TSH2024", "TSJ2024", "TSK2024"

SESSIONS = xnys_sessions("2024-03-11", "2024-04-05")
CLOSES = {
    A: [99.0, 99.5, 100.0, 100.5, 101.0] + [NaN] * 14,
    B: [101.5, 102.0, 102.5, 103.0, 104.0, 105.0, 106.0, 107.0, 108.0, 108.5,
        109.0, 109.25, 109.5, 110.0, 110.5, 111.0] + [NaN] * 3,
    C: [NaN] * 7 + [105.0, 105.5, 105.75, 106.0, 106.5, 107.0, 107.25, 107.5,
                    108.0, 108.25, 108.5, 109.0],
}


def closes_frame() -> pd.DataFrame:
    frame = pd.DataFrame(CLOSES, index=SESSIONS)
    frame.index.name = "ts"
    return frame


def contracts(b_first_notice: dt.date | None = None) -> list:
    # Deliberately unsorted, plus two contracts without prices (must be ignored).
    return [
        make_contract(C, dt.date(2024, 4, 19)),
        make_contract("TSM2024", dt.date(2024, 5, 17)),
        make_contract(A, dt.date(2024, 3, 15)),
        make_contract("TSZ2023", dt.date(2023, 12, 15)),
        make_contract(B, dt.date(2024, 4, 2), first_notice=b_first_notice),
    ]


def rows(schedule: pd.DataFrame) -> list[tuple]:
    return [(r.roll_date, r.from_contract, r.to_contract, r.from_close, r.to_close)
            for r in schedule.itertuples(index=False)]


def test_sessions_are_xnys_with_good_friday_closed():
    # Guard for the hand table above: 19 sessions, 2024-03-29 missing.
    assert len(SESSIONS) == 19
    assert utc("2024-03-29") not in SESSIONS
    assert SESSIONS[13] == utc("2024-03-28") and SESSIONS[14] == utc("2024-04-01")


@pytest.mark.parametrize(
    "days_before, expected",
    [
        # N = 0: roll on the last trade itself. A: 03-15 (101.0 -> 104.0); B: 04-02 (111.0 -> 108.0).
        (0, [("2024-03-15", A, B, 101.0, 104.0), ("2024-04-02", B, C, 111.0, 108.0)]),
        # N = 1: A: 03-14 (100.5 -> 103.0); B: 04-01 (110.5 -> 107.5).
        (1, [("2024-03-14", A, B, 100.5, 103.0), ("2024-04-01", B, C, 110.5, 107.5)]),
        # N = 2: A: 03-15 -1bd 03-14, -2bd 03-13 (100.0 -> 102.5).
        #        B: 04-02 -1bd 04-01, -2bd 03-28 (Good Friday skipped) (110.0 -> 107.25).
        (2, [("2024-03-13", A, B, 100.0, 102.5), ("2024-03-28", B, C, 110.0, 107.25)]),
        # N = 3: A: 03-12 (99.5 -> 102.0). B: 04-01, 03-28, 03-27 (109.5 -> 107.0).
        #        Counting plain weekdays would give 03-28 instead: this row
        #        fails if Good Friday were treated as a business day.
        (3, [("2024-03-12", A, B, 99.5, 102.0), ("2024-03-27", B, C, 109.5, 107.0)]),
    ],
)
def test_calendar_roll_dates_gaps_and_ratios(days_before, expected):
    schedule = calendar_roll_schedule(ROOT, contracts(), closes_frame(), days_before)
    # the existing columns first, in order; why each roll happened after them (tests/unit/test_roll_table.py)
    assert list(schedule.columns) == [*ROLL_COLUMNS, *ROLL_TRIGGER_COLUMNS]
    assert rows(schedule) == [(utc(d), f, t, fc, tc) for d, f, t, fc, tc in expected]
    assert (schedule["root"] == ROOT).all()
    assert (schedule["rule"] == f"calendar:{days_before}").all()
    # gap and ratio by hand from the closes listed above, e.g. N = 2:
    # 102.5 - 100.0 = 2.5, 102.5 / 100.0 = 1.025; 107.25 - 110.0 = -2.75, 107.25 / 110 = 0.975.
    for (_, _, _, fc, tc), gap, ratio in zip(expected, schedule["gap"], schedule["ratio"]):
        assert gap == tc - fc
        assert ratio == pytest.approx(tc / fc, rel=1e-15)


def test_calendar_roll_hand_gaps_for_two_days_before():
    schedule = calendar_roll_schedule(ROOT, contracts(), closes_frame(), 2)
    assert schedule["gap"].tolist() == [2.5, -2.75]
    assert schedule["ratio"].tolist() == [1.025, 0.975]  # both exact: 102.5/100, 107.25/110


def test_roll_beyond_the_data_is_not_scheduled():
    # TSK2024's roll (2 bd before 04-19 = 04-17) is after the last session 04-05: no third roll,
    # and TSM2024/TSZ2023 (no price columns) never appear.
    schedule = calendar_roll_schedule(ROOT, contracts(), closes_frame(), 2)
    assert len(schedule) == 2
    assert set(schedule["from_contract"]) | set(schedule["to_contract"]) == {A, B, C}


def test_missing_close_on_target_moves_the_roll_to_an_earlier_session():
    closes = closes_frame()
    closes.loc[utc("2024-03-28"), B] = NaN  # the from contract lacks a close on the target
    s1 = calendar_roll_schedule(ROOT, contracts(), closes, 2)
    # latest earlier session with both: 03-27 (109.5 -> 107.0)
    assert rows(s1)[1] == (utc("2024-03-27"), B, C, 109.5, 107.0)
    assert s1["gap"].iloc[1] == -2.5

    closes.loc[utc("2024-03-27"), C] = NaN  # now the to contract lacks 03-27 as well
    s2 = calendar_roll_schedule(ROOT, contracts(), closes, 2)
    assert rows(s2)[1] == (utc("2024-03-26"), B, C, 109.25, 106.5)
    assert s2["gap"].iloc[1] == -2.75

    # never AFTER the target: A missing on 03-13 -> 03-12 (99.5 -> 102.0), not 03-14
    closes = closes_frame()
    closes.loc[utc("2024-03-13"), A] = NaN
    s3 = calendar_roll_schedule(ROOT, contracts(), closes, 2)
    assert rows(s3)[0] == (utc("2024-03-12"), A, B, 99.5, 102.0)
    # the other roll is unaffected
    assert rows(s3)[1] == (utc("2024-03-28"), B, C, 110.0, 107.25)


def test_physically_delivered_contract_rolls_off_first_notice():
    # TSJ2024 with first notice Tue 2024-03-26 (before its 04-02 last trade):
    # 2 bd before 03-26 = 03-25, 03-22 -> roll on Fri 03-22 (108.5 -> 105.75).
    schedule = calendar_roll_schedule(ROOT, contracts(b_first_notice=dt.date(2024, 3, 26)), closes_frame(), 2)
    assert rows(schedule) == [
        (utc("2024-03-13"), A, B, 100.0, 102.5),
        (utc("2024-03-22"), B, C, 108.5, 105.75),
    ]
    assert schedule["gap"].iloc[1] == -2.75
    assert schedule["ratio"].iloc[1] == pytest.approx(105.75 / 108.5, rel=1e-15)


def test_first_notice_property_of_contract():
    b = make_contract(B, dt.date(2024, 4, 2), first_notice=dt.date(2024, 3, 26))
    assert b.roll_reference == dt.date(2024, 3, 26)
    assert make_contract(A, dt.date(2024, 3, 15)).roll_reference == dt.date(2024, 3, 15)


def test_no_common_session_since_previous_roll_raises():
    closes = closes_frame()
    # TSK2024 only starts 04-01: between the first roll (03-13) and the target 03-28 there is
    # no session where both TSJ2024 and TSK2024 trade.
    closes.loc[: utc("2024-03-28"), C] = NaN
    with pytest.raises(RollError, match=r"TS: no session where both TSJ2024 and TSK2024 trade"):
        calendar_roll_schedule(ROOT, contracts(), closes, 2)


def test_data_starting_after_a_roll_starts_in_the_later_contract():
    # Data from 03-14: A's roll target 03-13 is before the first session, so the schedule
    # starts with B -> C and the series starts in B.
    closes = closes_frame().loc[utc("2024-03-14"):]
    schedule = calendar_roll_schedule(ROOT, contracts(), closes, 2)
    assert rows(schedule) == [(utc("2024-03-28"), B, C, 110.0, 107.25)]
    assert first_contract(schedule, closes, contracts()) == B


def test_negative_days_before_raises():
    with pytest.raises(RollError, match="days_before must be >= 0, got -1"):
        calendar_roll_schedule(ROOT, contracts(), closes_frame(), -1)


def test_tz_naive_session_index_gives_the_same_dates():
    closes = closes_frame()
    closes.index = closes.index.tz_localize(None)
    schedule = calendar_roll_schedule(ROOT, contracts(), closes, 2)
    assert list(schedule["roll_date"]) == [pd.Timestamp("2024-03-13"), pd.Timestamp("2024-03-28")]


def test_first_contract_without_rolls_and_roll_dates_utc():
    closes = closes_frame().loc[utc("2024-03-18"):utc("2024-03-20")]  # only B (and C from 03-20)
    empty = pd.DataFrame(columns=ROLL_COLUMNS)
    # A's last trade 03-15 is before the first session 03-18 -> B
    assert first_contract(empty, closes, contracts()) == B
    with pytest.raises(RollError, match="no contract has prices"):
        first_contract(empty, closes[[]], contracts())
    schedule = calendar_roll_schedule(ROOT, contracts(), closes_frame(), 2)
    assert roll_dates_utc(schedule) == [dt.datetime(2024, 3, 13, tzinfo=dt.timezone.utc),
                                        dt.datetime(2024, 3, 28, tzinfo=dt.timezone.utc)]


# --- validate_roll_schedule -------------------------------------------------


def good_schedule() -> pd.DataFrame:
    return calendar_roll_schedule(ROOT, contracts(), closes_frame(), 2)


def test_valid_schedule_is_returned_unchanged():
    s = good_schedule()
    assert validate_roll_schedule(s) is s
    empty = pd.DataFrame(columns=ROLL_COLUMNS)
    assert validate_roll_schedule(empty) is empty


def test_validate_rejects_missing_columns():
    with pytest.raises(RollError, match=r"roll schedule lacks columns \['gap', 'ratio'\]"):
        validate_roll_schedule(good_schedule().drop(columns=["gap", "ratio"]))


@pytest.mark.parametrize("dates", [["2024-03-28", "2024-03-13"], ["2024-03-13", "2024-03-13"]],
                         ids=["decreasing", "equal"])
def test_validate_rejects_non_increasing_dates(dates):
    s = good_schedule()
    s["roll_date"] = [utc(d) for d in dates]
    with pytest.raises(RollError, match="roll dates must strictly increase"):
        validate_roll_schedule(s)


def test_validate_rejects_broken_chain():
    s = good_schedule()
    s.loc[1, "from_contract"] = "TSX2024"
    with pytest.raises(RollError, match="roll 1 goes into TSJ2024 but roll 2 leaves TSX2024"):
        validate_roll_schedule(s)


@pytest.mark.parametrize("column, value", [("from_close", NaN), ("to_close", np.inf), ("from_close", -np.inf)])
def test_validate_rejects_non_finite_prices(column, value):
    s = good_schedule()
    s.loc[0, column] = value
    with pytest.raises(RollError, match="roll prices must be finite"):
        validate_roll_schedule(s)
