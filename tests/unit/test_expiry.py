"""Last-trade / first-notice rules and contract ids against published dates.

Every expected date below is either public record (the exchange's published
last trade date of that contract) or hand-worked from the rule text in the
CME Group rulebook chapter named next to it, with the calendar reasoning
written out. Weekdays quoted in comments were checked against a calendar
(``datetime.date.weekday``), not against the code under test.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import pytest

from fbt_pipelines.catalog import expiry
from fbt_pipelines.catalog.contracts import contract_id, listed_contracts, make_contract, parse_contract_id
from fbt_pipelines.catalog.specs import MONTH_CODES, market_spec
from fbt_pipelines.errors import CatalogError

D = dt.date
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def last_trade(root: str, year: int, month: int) -> dt.date:
    return make_contract(market_spec(root), year, month).last_trade


def first_notice(root: str, year: int, month: int) -> dt.date | None:
    return make_contract(market_spec(root), year, month).first_notice


# --- last trade dates: published facts -------------------------------------

# ES: CME Rulebook ch. 358 (E-mini S&P 500), NQ: ch. 359 (E-mini Nasdaq-100):
# trading terminates on the 3rd Friday of the contract month.
# ESH2008: 2008-03-21 (3rd Friday) was Good Friday, an exchange holiday; the
# March 2008 S&P futures and options expired on Thursday 2008-03-20.
@pytest.mark.parametrize(
    "root, year, month, expected",
    [
        ("ES", 2013, 12, D(2013, 12, 20)),
        ("ES", 2014, 3, D(2014, 3, 21)),
        ("ES", 2014, 6, D(2014, 6, 20)),
        ("ES", 2016, 3, D(2016, 3, 18)),
        ("ES", 2008, 3, D(2008, 3, 20)),  # holiday case: Good Friday -> Thursday
        ("NQ", 2015, 12, D(2015, 12, 18)),
        ("NQ", 2016, 3, D(2016, 3, 18)),
        ("NQ", 2013, 12, D(2013, 12, 20)),
    ],
)
def test_equity_index_third_friday(root, year, month, expected):
    assert last_trade(root, year, month) == expected
    assert first_notice(root, year, month) is None  # cash settled


# CL: NYMEX Rulebook ch. 200 (Light Sweet Crude Oil): trading terminates 3
# business days before the 25th calendar day of the month before the contract
# month; if the 25th is not a business day, 3 business days before the
# business day preceding the 25th (= 4 business days before the 25th).
@pytest.mark.parametrize(
    "year, month, expected",
    [
        # 2012-12-25 Christmas (Tue) -> preceding business day Mon 12-24 -> 12-21, 12-20, 12-19.
        (2013, 1, D(2012, 12, 19)),
        # 2014-01-25 is a Saturday -> Fri 01-24 -> 01-23, 01-22, 01-21.
        (2014, 2, D(2014, 1, 21)),
        # 2013-11-25 is a Monday (business day) -> Fri 11-22, Thu 11-21, Wed 11-20.
        (2013, 12, D(2013, 11, 20)),
        # 2008-12-25 Christmas (Thu) -> Wed 12-24 -> 12-23, 12-22, Fri 12-19.
        (2009, 1, D(2008, 12, 19)),
        # CLK2020, the contract that settled at -37.63 on 2020-04-20, expired the
        # next day: 2020-04-25 is a Saturday -> Fri 04-24 -> 04-23, 04-22, Tue 04-21.
        (2020, 5, D(2020, 4, 21)),
    ],
)
def test_crude_25th_minus_3(year, month, expected):
    assert last_trade("CL", year, month) == expected


# GC: COMEX Rulebook ch. 113 (Gold): trading terminates on the third last
# business day of the delivery month.
@pytest.mark.parametrize(
    "year, month, expected",
    [
        (2013, 2, D(2013, 2, 26)),   # last business day Thu 02-28 -> 02-27 -> 02-26
        (2013, 12, D(2013, 12, 27)),  # Tue 12-31, Mon 12-30, Fri 12-27
        (2020, 4, D(2020, 4, 28)),   # Thu 04-30, Wed 04-29, Tue 04-28
        (2013, 8, D(2013, 8, 28)),   # Fri 08-30, Thu 08-29, Wed 08-28
    ],
)
def test_gold_third_last_business_day(year, month, expected):
    assert last_trade("GC", year, month) == expected


# ZN: CBOT Rulebook ch. 19 (10-Year T-Note): last trading day is the seventh
# business day preceding the last business day of the delivery month.
@pytest.mark.parametrize(
    "year, month, expected",
    [
        # Good Friday 2013-03-29 is not a business day: last business day is
        # Thu 03-28; seven back: 27, 26, 25, 22, 21, 20, 19.
        (2013, 3, D(2013, 3, 19)),
        # Last business day Fri 06-28: 27, 26, 25, 24, 21, 20, 19.
        (2013, 6, D(2013, 6, 19)),
        # Last business day Tue 12-31, Christmas skipped: 30, 27, 26, 24, 23, 20, 19.
        (2013, 12, D(2013, 12, 19)),
        # Last business day Mon 2014-03-31: 28, 27, 26, 25, 24, 21, 20.
        (2014, 3, D(2014, 3, 20)),
    ],
)
def test_ten_year_note_seventh_business_day_before_last(year, month, expected):
    assert last_trade("ZN", year, month) == expected


# 6E: CME Rulebook ch. 261 (Euro FX): trading terminates on the second
# business day immediately preceding the third Wednesday of the contract month.
@pytest.mark.parametrize(
    "year, month, expected",
    [
        (2013, 3, D(2013, 3, 18)),   # 3rd Wed 03-20 -> Mon 03-18
        (2013, 6, D(2013, 6, 17)),   # 3rd Wed 06-19 -> Mon 06-17
        (2013, 12, D(2013, 12, 16)),  # 3rd Wed 12-18 -> Mon 12-16
        (2014, 3, D(2014, 3, 17)),   # 3rd Wed 03-19 -> Mon 03-17
        # Holiday case (hand-worked): 3rd Wed 2023-06-21; Mon 06-19 is
        # Juneteenth, a US federal/exchange holiday -> Tue 06-20, Fri 06-16.
        (2023, 6, D(2023, 6, 16)),
    ],
)
def test_euro_fx_two_business_days_before_third_wednesday(year, month, expected):
    assert last_trade("6E", year, month) == expected
    assert first_notice("6E", year, month) is None


# ZC (not in the built-in table; rule tested directly): CBOT Rulebook ch. 10
# (Corn): the business day prior to the 15th calendar day of the contract month.
@pytest.mark.parametrize(
    "year, month, expected",
    [
        (2013, 12, D(2013, 12, 13)),  # 15th is a Sunday -> Fri 13th
        (2014, 3, D(2014, 3, 14)),   # 15th is a Saturday -> Fri 14th
        (2013, 7, D(2013, 7, 12)),   # 15th is a Monday -> Fri 12th
        (2013, 5, D(2013, 5, 14)),   # 15th is a Wednesday -> Tue 14th
        (2013, 3, D(2013, 3, 14)),   # 15th is a Friday -> Thu 14th
    ],
)
def test_corn_business_day_before_15th(year, month, expected):
    assert expiry.business_day_before_15th(year, month) == expected
    assert expiry.EXPIRY_RULES["business_day_before_15th"](year, month) == expected


# NG: NYMEX Rulebook ch. 220: trading terminates on the third last business
# day of the month prior to the contract month, i.e. three business days
# before the first calendar day of the contract month. Published last trade
# dates (CME Group NG product calendar): NGF14 2013-12-27, NGG14 2014-01-29,
# NGH14 2014-02-26.
@pytest.mark.parametrize("year, month, expected", [
    (2014, 1, D(2013, 12, 27)),  # Jan 1 (Wed): Dec 31, 30, 27 (Christmas week)
    (2014, 2, D(2014, 1, 29)),   # Feb 1 (Sat): Jan 31, 30, 29
    (2014, 3, D(2014, 2, 26)),   # Mar 1 (Sat): Feb 28, 27, 26
])
def test_natural_gas_three_business_days_before_the_month(year, month, expected):
    assert last_trade("NG", year, month) == expected
    assert first_notice("NG", year, month) == expiry.business_day_offset(expected, 1)


# HO/RB: NYMEX Rulebook ch. 150/191: trading terminates on the last business
# day of the month prior to the contract month. HOF14 2013-12-31, HOG14
# 2014-01-31, HOH14 2014-02-28 (Fri).
@pytest.mark.parametrize("root", ["HO", "RB"])
@pytest.mark.parametrize("year, month, expected", [
    (2014, 1, D(2013, 12, 31)), (2014, 2, D(2014, 1, 31)), (2014, 3, D(2014, 2, 28)),
    (2015, 6, D(2015, 5, 29)),  # May 31 2015 is a Sunday -> Fri 29th
])
def test_heating_oil_and_gasoline_last_business_day_prior_month(root, year, month, expected):
    assert last_trade(root, year, month) == expected


# ZT/ZF: CBOT Rulebook ch. 21/20: last business day of the contract month.
# ZTH14 2014-03-31, ZTM14 2014-06-30, ZTZ13 2013-12-31; ZFU14 2014-09-30.
@pytest.mark.parametrize("root, year, month, expected", [
    ("ZT", 2014, 3, D(2014, 3, 31)), ("ZT", 2014, 6, D(2014, 6, 30)), ("ZT", 2013, 12, D(2013, 12, 31)),
    ("ZF", 2014, 9, D(2014, 9, 30)), ("ZF", 2015, 5, D(2015, 5, 29)),
])
def test_short_notes_last_business_day(root, year, month, expected):
    assert last_trade(root, year, month) == expected
    assert first_notice(root, year, month) == expiry.last_business_day(*(
        (year - 1, 12) if month == 1 else (year, month - 1)))


# 6C: CME Rulebook ch. 252: trading terminates on the business day
# immediately preceding the third Wednesday of the contract month.
@pytest.mark.parametrize("year, month, expected", [
    (2014, 3, D(2014, 3, 18)),   # 3rd Wed 03-19 -> Tue 18
    (2014, 6, D(2014, 6, 17)),   # 3rd Wed 06-18 -> Tue 17
    (2013, 12, D(2013, 12, 17)),  # 3rd Wed 12-18 -> Tue 17
])
def test_canadian_dollar_business_day_before_third_wednesday(year, month, expected):
    assert last_trade("6C", year, month) == expected


def test_every_rule_is_covered_above():
    """A new expiry rule must come with published dates in this file."""
    assert set(expiry.EXPIRY_RULES) == {
        "third_friday", "cl_25th_minus_3", "third_last_business_day",
        "seventh_business_day_before_last", "two_business_days_before_third_wednesday",
        "business_day_before_15th", "last_business_day", "last_business_day_prior_month",
        "three_business_days_before_month", "business_day_before_third_wednesday",
    }
    assert set(expiry.FIRST_NOTICE_RULES) == {"none", "last_business_day_prior_month", "business_day_after_last_trade"}


def test_real_lean_esz13_bars_end_on_computed_last_trade():
    """Independent cross-check: LEAN's real ESZ13 daily bars (tests/fixtures)
    stop on the last trade day our rule computes."""
    with zipfile.ZipFile(FIXTURES / "lean" / "es_trade.zip") as z:
        text = z.read("es_trade_201312.csv").decode()
    last_row = text.strip().splitlines()[-1]
    assert last_row.startswith("20131220 00:00,")
    assert last_trade("ES", 2013, 12) == D(2013, 12, 20)


# --- first notice ------------------------------------------------------------

# GC / ZN: first notice day is the last business day of the month before the
# delivery month (COMEX ch. 113, CBOT ch. 19 delivery procedures).
@pytest.mark.parametrize(
    "root, year, month, expected",
    [
        ("GC", 2013, 2, D(2013, 1, 31)),
        ("GC", 2013, 4, D(2013, 3, 28)),   # 03-29 Good Friday -> Thu 03-28
        ("GC", 2013, 12, D(2013, 11, 29)),  # day after Thanksgiving is a business day
        ("ZN", 2013, 3, D(2013, 2, 28)),
        ("ZN", 2013, 6, D(2013, 5, 31)),
        ("ZN", 2014, 6, D(2014, 5, 30)),   # 05-31 is a Saturday
        ("ZN", 2013, 12, D(2013, 11, 29)),
    ],
)
def test_first_notice_last_business_day_of_prior_month(root, year, month, expected):
    c = make_contract(market_spec(root), year, month)
    assert c.first_notice == expected
    assert c.roll_reference == expected  # physically delivered: roll counts back from first notice
    assert c.first_notice < c.last_trade


# CL: first notice is the business day after the last trade day.
@pytest.mark.parametrize(
    "year, month, expected",
    [
        (2013, 1, D(2012, 12, 20)),   # LT Wed 12-19 -> Thu 12-20
        (2009, 1, D(2008, 12, 22)),   # LT Fri 12-19 -> Mon 12-22
        (2014, 2, D(2014, 1, 22)),    # LT Tue 01-21 -> Wed 01-22
        (2013, 4, D(2013, 3, 21)),    # LT: 03-25 Mon -> Wed 03-20; next business day Thu 03-21
    ],
)
def test_crude_first_notice_day_after_last_trade(year, month, expected):
    c = make_contract(market_spec("CL"), year, month)
    assert c.first_notice == expected
    assert c.roll_reference == expected


def test_cash_settled_roll_reference_is_last_trade():
    c = make_contract(market_spec("ES"), 2013, 12)
    assert c.first_notice is None
    assert c.roll_reference == D(2013, 12, 20)


# --- calendar helpers ----------------------------------------------------------

@pytest.mark.parametrize(
    "day, expected",
    [
        (D(2013, 12, 25), False),  # Christmas
        (D(2013, 12, 24), True),   # early close is still a business day
        (D(2008, 3, 21), False),   # Good Friday
        (D(2013, 3, 30), False),   # Saturday
        (D(2013, 7, 4), False),    # Independence Day
        (D(2013, 11, 29), True),   # day after Thanksgiving
    ],
)
def test_is_business_day(day, expected):
    assert expiry.is_business_day(day) is expected


@pytest.mark.parametrize(
    "day, n, expected",
    [
        # Around Good Friday 2013-03-29 (Thu 28 | Fri 29 holiday | Sat 30, Sun 31 | Mon Apr 1)
        (D(2013, 3, 28), 1, D(2013, 4, 1)),
        (D(2013, 4, 1), -1, D(2013, 3, 28)),
        (D(2013, 3, 30), -1, D(2013, 3, 28)),  # from a Saturday: the business day before
        (D(2013, 3, 30), 1, D(2013, 4, 1)),    # from a Saturday: the next business day
        (D(2013, 3, 29), -1, D(2013, 3, 28)),  # from the holiday itself
        (D(2013, 3, 29), 1, D(2013, 4, 1)),
        (D(2013, 3, 28), -2, D(2013, 3, 26)),
        (D(2013, 3, 26), 3, D(2013, 4, 1)),    # Wed 27, Thu 28, Mon Apr 1
        (D(2013, 12, 20), 0, D(2013, 12, 20)),
        (D(2013, 12, 23), 2, D(2013, 12, 26)),  # Tue 24, (Christmas), Thu 26
        (D(2013, 12, 20), 5, D(2013, 12, 30)),  # 23, 24, 26, 27, 30
    ],
)
def test_business_day_offset(day, n, expected):
    assert expiry.business_day_offset(day, n) == expected


def test_business_day_offset_zero_on_holiday_names_the_day():
    with pytest.raises(ValueError, match="2013-03-29 is not a business day"):
        expiry.business_day_offset(D(2013, 3, 29), 0)


def test_business_day_offset_outside_calendar():
    # calendar starts 1990-01-01; 1990-01-02 is its first session
    assert expiry.business_day_offset(D(1990, 1, 1), 1) == D(1990, 1, 2)
    with pytest.raises(ValueError, match="1990-01-02 -1 business days is outside the calendar"):
        expiry.business_day_offset(D(1990, 1, 2), -1)
    with pytest.raises(ValueError, match="outside the calendar"):
        expiry.business_day_offset(D(2200, 1, 1), 1)


@pytest.mark.parametrize(
    "year, month, expected",
    [(2013, 3, D(2013, 3, 28)), (2013, 11, D(2013, 11, 29)), (2014, 5, D(2014, 5, 30)), (2013, 12, D(2013, 12, 31))],
)
def test_last_business_day(year, month, expected):
    assert expiry.last_business_day(year, month) == expected


def test_nth_weekday():
    assert expiry.nth_weekday(2013, 12, 4, 3) == D(2013, 12, 20)   # 3rd Friday
    assert expiry.nth_weekday(2013, 3, 2, 3) == D(2013, 3, 20)     # 3rd Wednesday
    assert expiry.nth_weekday(2013, 9, 6, 1) == D(2013, 9, 1)      # month starting on that weekday
    assert expiry.nth_weekday(2013, 9, 0, 1) == D(2013, 9, 2)


# --- contract ids and listings ----------------------------------------------

@pytest.mark.parametrize(
    "root, year, month, cid",
    [("ES", 2013, 12, "ESZ2013"), ("6E", 2013, 3, "6EH2013"), ("CL", 2013, 1, "CLF2013"),
     ("GC", 2020, 4, "GCJ2020"), ("ZN", 2014, 6, "ZNM2014"), ("GF", 2013, 1, "GFF2013")],
)
def test_contract_id_known(root, year, month, cid):
    assert contract_id(root, year, month) == cid
    assert parse_contract_id(cid) == (root, year, month)


def test_contract_id_round_trip_every_month():
    assert MONTH_CODES == "FGHJKMNQUVXZ"  # CME month codes, January..December
    for root in ("ES", "6E", "ZN", "F", "ABCD"):
        for month in range(1, 13):
            assert parse_contract_id(contract_id(root, 2013, month)) == (root, 2013, month)


@pytest.mark.parametrize("month", [0, 13, -1])
def test_contract_id_bad_month(month):
    with pytest.raises(CatalogError, match=f"month must be 1..12, got {month}"):
        contract_id("ES", 2013, month)


@pytest.mark.parametrize("cid", ["ESZ13", "esz2013", "ESA2013", "", "ESZ2013x", "ABCDEZ2013", "Z2013", "ES Z2013"])
def test_parse_contract_id_errors_name_the_input(cid):
    with pytest.raises(CatalogError) as info:
        parse_contract_id(cid)
    assert repr(cid) in str(info.value)


def test_listed_contracts_order_and_cycle():
    es = listed_contracts(market_spec("ES"), 2013, 2014)
    assert [c.contract_id for c in es] == [
        "ESH2013", "ESM2013", "ESU2013", "ESZ2013", "ESH2014", "ESM2014", "ESU2014", "ESZ2014",
    ]
    assert [c.last_trade for c in es][3:6] == [D(2013, 12, 20), D(2014, 3, 21), D(2014, 6, 20)]
    assert all(a.last_trade < b.last_trade for a, b in zip(es, es[1:]))

    gc = listed_contracts(market_spec("GC"), 2013, 2013)
    assert [c.month for c in gc] == [2, 4, 6, 8, 10, 12]  # G J M Q V Z

    cl = listed_contracts(market_spec("CL"), 2013, 2013)
    assert [c.contract_id for c in cl] == [f"CL{code}2013" for code in "FGHJKMNQUVXZ"]
    # CLF2013 trades out in December 2012: ordering is by last trade, not by year label
    assert cl[0].last_trade == D(2012, 12, 19)

    assert listed_contracts(market_spec("ES"), 2014, 2013) == []
