"""The built-in market table against published contract specs, and
``parse_catalog``'s errors.

Independent sources:
- CME Group contract specifications (multiplier, minimum tick, tick value),
  written out per market below;
- pysystemtrade's instrument and roll configuration (multiplier =
  ``pointsize``, listed cycle = ``priced_roll_cycle``), copied as a few rows
  into ``tests/fixtures/`` (see the README there for source and licence).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from fbt_pipelines.catalog import tables
from fbt_pipelines.catalog.specs import BUILTIN_TABLE, ContractSpec, load_catalog, market_spec, parse_catalog
from fbt_pipelines.errors import CatalogError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUILTIN = ("6A", "6B", "6C", "6E", "6J", "CL", "ES", "GC", "HG", "HO", "LE", "NG", "NQ", "RB", "RTY", "SI",
           "YM", "ZB", "ZC", "ZF", "ZN", "ZS", "ZT", "ZW")
PYSYSTEMTRADE_SYMBOL = {"ES": "SP500", "NQ": "NASDAQ", "CL": "CRUDE_W", "GC": "GOLD", "ZN": "US10", "6E": "EUR"}
# further markets whose pysystemtrade instrument is the same contract size (their
# roll cycles are pysystemtrade's trading choices, not the listed cycle)
PYSYSTEMTRADE_MULTIPLIER_ONLY = {"ZT": "US2", "ZF": "US5", "ZB": "US20", "NG": "GAS_US", "HO": "HEATOIL",
                                 "HG": "COPPER", "6J": "JPY", "6B": "GBP", "6A": "AUD", "6C": "CAD",
                                 "ZC": "CORN", "ZS": "SOYBEAN", "ZW": "WHEAT", "LE": "LIVECOW"}
PHYSICAL = ("CL", "GC", "ZN", "ZT", "ZF", "ZB", "NG", "HO", "RB", "SI", "HG", "ZC", "ZS", "ZW")

# root: (multiplier, tick size, tick value in USD, exchange, asset class, cycle)
# CME Group contract specs: ES $50 x index, 0.25 pt = $12.50; NQ $20 x index,
# 0.25 pt = $5.00; CL 1,000 bbl, $0.01 = $10.00; GC 100 troy oz, $0.10 = $10.00;
# ZN $100,000 face (1 pt = $1,000), 1/2 of 1/32 pt = $15.625; 6E EUR 125,000,
# $0.00005 per EUR = $6.25.
PUBLISHED = {
    "ES": (50.0, 0.25, 12.50, "CME", "equity", "HMUZ"),
    "NQ": (20.0, 0.25, 5.00, "CME", "equity", "HMUZ"),
    "CL": (1000.0, 0.01, 10.00, "NYMEX", "energy", "FGHJKMNQUVXZ"),
    "GC": (100.0, 0.10, 10.00, "COMEX", "metals", "GJMQVZ"),
    "ZN": (1000.0, 1 / 64, 15.625, "CBOT", "rates", "HMUZ"),
    "6E": (125000.0, 0.00005, 6.25, "CME", "fx", "HMUZ"),
    # CME Group contract specs for the further markets (tick value = tick x multiplier):
    "YM": (5.0, 1.0, 5.00, "CBOT", "equity", "HMUZ"),
    "RTY": (50.0, 0.1, 5.00, "CME", "equity", "HMUZ"),
    "ZT": (2000.0, 1 / 256, 7.8125, "CBOT", "rates", "HMUZ"),
    "ZF": (1000.0, 1 / 128, 7.8125, "CBOT", "rates", "HMUZ"),
    "ZB": (1000.0, 1 / 32, 31.25, "CBOT", "rates", "HMUZ"),
    "NG": (10000.0, 0.001, 10.00, "NYMEX", "energy", "FGHJKMNQUVXZ"),
    "HO": (42000.0, 0.0001, 4.20, "NYMEX", "energy", "FGHJKMNQUVXZ"),
    "RB": (42000.0, 0.0001, 4.20, "NYMEX", "energy", "FGHJKMNQUVXZ"),
    "SI": (5000.0, 0.005, 25.00, "COMEX", "metals", "HKNUZ"),
    "HG": (25000.0, 0.0005, 12.50, "COMEX", "metals", "HKNUZ"),
    "6J": (12500000.0, 0.0000005, 6.25, "CME", "fx", "HMUZ"),
    "6B": (62500.0, 0.0001, 6.25, "CME", "fx", "HMUZ"),
    "6A": (100000.0, 0.00005, 5.00, "CME", "fx", "HMUZ"),
    "6C": (100000.0, 0.00005, 5.00, "CME", "fx", "HMUZ"),
    "ZC": (50.0, 0.25, 12.50, "CBOT", "grains", "HKNUZ"),
    "ZS": (50.0, 0.25, 12.50, "CBOT", "grains", "FHKNQUX"),
    "ZW": (50.0, 0.25, 12.50, "CBOT", "grains", "HKNUZ"),
    "LE": (400.0, 0.025, 10.00, "CME", "livestock", "GJMQVZ"),
}


def read_fixture_csv(name: str) -> dict[str, dict[str, str]]:
    with open(FIXTURES / name, newline="") as fh:
        first = fh.readline()
        assert first.startswith("# Source: tisonpatrik/pysystemtrade_preprocessing")
        assert "GPL-3.0" in first
        return {row["symbol"]: row for row in csv.DictReader(fh)}


def test_builtin_table_loads_all_markets():
    catalog = load_catalog()
    assert list(catalog) == sorted(BUILTIN)
    assert all(isinstance(s, ContractSpec) and s.root == r for r, s in catalog.items())
    assert load_catalog() is catalog  # cached
    with pytest.raises(TypeError):
        catalog["XX"] = catalog["ES"]  # read-only view


@pytest.mark.parametrize("root", BUILTIN)
def test_builtin_specs_match_published_contract_specs(root):
    multiplier, tick, tick_value, exchange, asset_class, cycle = PUBLISHED[root]
    s = market_spec(root)
    assert s.multiplier == multiplier
    assert s.tick_size == pytest.approx(tick, rel=1e-12)
    assert s.tick_value == pytest.approx(tick_value, rel=1e-12)
    assert (s.exchange, s.asset_class, s.cycle, s.currency) == (exchange, asset_class, cycle, "USD")
    assert s.physically_delivered is (root in PHYSICAL)
    assert 0 < s.maintenance_margin <= s.initial_margin
    assert 0 < s.commission < 10
    assert 1 <= s.roll_days_before <= 20


@pytest.mark.parametrize("root", sorted(PYSYSTEMTRADE_MULTIPLIER_ONLY))
def test_multiplier_matches_pysystemtrade(root):
    instruments = read_fixture_csv("pysystemtrade_instrumentconfig_subset.csv")
    symbol = PYSYSTEMTRADE_MULTIPLIER_ONLY[root]
    assert market_spec(root).multiplier == float(instruments[symbol]["pointsize"])
    assert market_spec(root).currency == instruments[symbol]["currency"]


@pytest.mark.parametrize("root", sorted(PYSYSTEMTRADE_SYMBOL))
def test_multiplier_and_cycle_match_pysystemtrade(root):
    instruments = read_fixture_csv("pysystemtrade_instrumentconfig_subset.csv")
    rolls = read_fixture_csv("pysystemtrade_rollconfig_subset.csv")
    symbol = PYSYSTEMTRADE_SYMBOL[root]
    s = market_spec(root)
    assert s.multiplier == float(instruments[symbol]["pointsize"])
    assert s.currency == instruments[symbol]["currency"]
    assert s.cycle == rolls[symbol]["priced_roll_cycle"]


def test_market_spec_unknown_root_names_it():
    with pytest.raises(CatalogError, match=r"unknown market 'XX'; known: 6A, 6B, .*ES, .*ZW$"):
        market_spec("XX")


def test_builtin_table_file_is_the_one_loaded():
    assert BUILTIN_TABLE.name == "markets.toml"
    assert parse_catalog(BUILTIN_TABLE.read_text(), "x") == dict(load_catalog())


# --- parse_catalog errors -----------------------------------------------------

VALID = """
[ES]
name = "E-mini S&P 500"
exchange = "CME"
asset_class = "equity"
currency = "USD"
multiplier = 50.0
tick_size = 0.25
cycle = "HMUZ"
expiry_rule = "third_friday"
first_notice_rule = "none"
roll_days_before = 8
commission = 2.10
initial_margin = 13200.0
maintenance_margin = 12000.0
sample = { start_price = 1450.0, annual_vol = 0.17 }
"""


def test_parse_valid_snippet():
    specs = parse_catalog(VALID, "snippet.toml")
    es = specs["ES"]
    assert es.multiplier == 50.0 and es.tick_value == 12.5 and es.roll_days_before == 8
    assert dict(es.sample) == {"start_price": 1450.0, "annual_vol": 0.17}
    # sample is optional
    no_sample = parse_catalog(VALID.replace("sample = { start_price = 1450.0, annual_vol = 0.17 }", ""), "s")
    assert dict(no_sample["ES"].sample) == {}


def expect_error(text: str, *fragments: str) -> str:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "my/markets.toml")
    msg = str(info.value)
    assert msg.startswith("my/markets.toml: ")
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def test_not_toml():
    expect_error("[ES\nname = 1", "not valid TOML")


def test_missing_field_names_market_and_field():
    expect_error(VALID.replace("tick_size = 0.25\n", ""), "market [ES]", "missing tick_size")
    expect_error(VALID.replace("cycle = \"HMUZ\"\n", "").replace("commission = 2.10\n", ""),
                 "market [ES]", "missing cycle, commission")


def test_unknown_expiry_rule():
    msg = expect_error(VALID.replace('"third_friday"', '"fourth_friday"'),
                       "market [ES]", "unknown expiry_rule 'fourth_friday'")
    assert "third_friday" in msg  # lists the known rules


def test_unknown_first_notice_rule():
    expect_error(VALID.replace('first_notice_rule = "none"', 'first_notice_rule = "sometimes"'),
                 "market [ES]", "unknown first_notice_rule 'sometimes'")


@pytest.mark.parametrize("cycle", ["HMUA", "", "hmuz", "HMUZH"])
def test_bad_cycle(cycle):
    expect_error(VALID.replace('cycle = "HMUZ"', f'cycle = "{cycle}"'), "market [ES]", f"invalid cycle {cycle!r}")


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("multiplier = 0.0", "invalid multiplier=0.0"),
        ("multiplier = -50.0", "invalid multiplier=-50.0"),
        ("multiplier = nan", "invalid multiplier=nan"),
        ('multiplier = "fifty"', "invalid multiplier='fifty'"),
        ("tick_size = 0", "invalid tick_size=0"),
        ("tick_size = inf", "invalid tick_size=inf"),
        ("commission = -1.0", "invalid commission=-1.0"),
    ],
)
def test_bad_number(line, fragment):
    field = line.split(" =")[0]
    old = next(ln for ln in VALID.splitlines() if ln.startswith(field + " ="))
    expect_error(VALID.replace(old, line), "market [ES]", fragment)


@pytest.mark.parametrize("value", ["-1", "2.5", '"eight"', "true"])
def test_bad_roll_days_before(value):
    expect_error(VALID.replace("roll_days_before = 8", f"roll_days_before = {value}"),
                 "market [ES]", "invalid roll_days_before")


def test_market_must_be_a_table():
    expect_error("ES = 5\n", "market [ES] must be a table")


def test_bad_root():
    expect_error(VALID.replace("[ES]", "[es]"), "market [es] has an invalid root")
    expect_error(VALID.replace("[ES]", "[ABCDE]"), "market [ABCDE] has an invalid root")


def test_bad_sample():
    expect_error(VALID.replace("start_price = 1450.0", 'start_price = "high"'), "market [ES]", "invalid sample")


def test_error_names_the_right_market():
    two = VALID + VALID.replace("[ES]", "[NQ]").replace('cycle = "HMUZ"', 'cycle = "HMUA"')
    expect_error(two, "market [NQ]", "invalid cycle 'HMUA'")


# --- plausibility bound fields (min_price, max_price, price_band) ----------------

def test_a_table_without_the_bound_fields_gets_the_defaults_from_the_spec():
    """Backward compatible: VALID has none of the fields. Defaults, computed
    here from the ES spec by hand: one tick (0.25 points) .. the price at which
    one contract is worth 1e10 USD (1e10 / 50 = 2e8 points; 2**52 ticks would
    be 1.1e15), band 10."""
    es = parse_catalog(VALID, "s")["ES"]
    assert (es.min_price, es.max_price, es.price_band) == (None, None, 10.0)
    assert es.price_bounds == (0.25, 2e8)
    # the cap at 2**52 ticks binds for a tiny multiplier: 0.25 * 2**52 < 1e10 / 1e-6
    tiny = parse_catalog(VALID.replace("multiplier = 50.0", "multiplier = 0.000001"), "s")["ES"]
    assert tiny.price_bounds == (0.25, 0.25 * 2.0**52)


def test_explicit_bound_fields_are_used():
    text = VALID.replace("roll_days_before = 8", "roll_days_before = 8\nmin_price = 100\nmax_price = 20000.5\n"
                                                 "price_band = 4")
    es = parse_catalog(text, "s")["ES"]
    assert es.price_bounds == (100.0, 20000.5) and es.price_band == 4.0


@pytest.mark.parametrize("lines, fragment", [
    ("max_price = 0", "invalid max_price=0"),
    ("max_price = -5.0", "invalid max_price=-5.0"),
    ("max_price = inf", "invalid max_price=inf"),
    ("max_price = nan", "invalid max_price=nan"),
    ('min_price = "low"', "invalid min_price='low'"),
    ("min_price = true", "invalid min_price=True"),
    ("price_band = 1.0", "invalid price_band=1.0"),
    ("price_band = 0.5", "invalid price_band=0.5"),
    ("min_price = 5000\nmax_price = 4000", "min_price 5000.0 >= max_price 4000.0"),
    ("min_price = 3e8", "min_price 300000000.0 >= max_price 200000000.0"),
    ("max_price = 2e15", "above 2**52 ticks"),
])
def test_bad_bound_fields_are_refused_naming_file_market_and_field(lines, fragment):
    expect_error(VALID.replace("roll_days_before = 8", f"roll_days_before = 8\n{lines}"), "market [ES]", fragment)


def test_the_builtin_markets_bound_their_own_sample_prices():
    """Every built-in market's default bounds hold its sample start price
    and a thousand times it (the bound is a backstop, the band the tight rule)."""
    for spec in load_catalog().values():
        lo, hi = spec.price_bounds
        assert lo == spec.tick_size and hi <= spec.tick_size * 2.0**52
        start = spec.sample.get("start_price")
        if start:
            assert lo < start and 1000 * start < hi, spec.root


# --- warehouse tables ---------------------------------------------------------

def test_catalog_tables():
    markets, contracts = tables.catalog_tables([market_spec("ES"), market_spec("CL")], 2013, 2013)
    assert list(markets["root"]) == ["ES", "CL"]
    assert list(markets.columns) == tables.MARKET_COLUMNS
    assert markets.set_index("root").loc["CL", "multiplier"] == 1000.0
    assert len(contracts) == 4 + 12
    es = contracts[contracts["root"] == "ES"].set_index("contract")
    assert es.loc["ESZ2013", "last_trade"] == pd.Timestamp("2013-12-20")
    assert es["first_notice"].isna().all()
    cl = contracts[contracts["root"] == "CL"].set_index("contract")
    assert cl.loc["CLF2013", "last_trade"] == pd.Timestamp("2012-12-19")
    assert cl.loc["CLF2013", "first_notice"] == pd.Timestamp("2012-12-20")
    assert (cl["year"] == 2013).all() and sorted(cl["month"]) == list(range(1, 13))
    assert pd.api.types.is_datetime64_any_dtype(contracts["last_trade"])
    assert pd.api.types.is_datetime64_any_dtype(contracts["first_notice"])


def test_contracts_from_frame_round_trip():
    from fbt_pipelines.catalog.contracts import contracts_from_frame, listed_contracts

    specs = [market_spec("GC"), market_spec("6E")]
    _, frame = tables.catalog_tables(specs, 2013, 2014)
    expected = sorted(c for s in specs for c in listed_contracts(s, 2013, 2014))
    got = contracts_from_frame(frame)
    assert got == expected
    gcg = next(c for c in got if c.contract_id == "GCG2013")
    assert (gcg.first_notice, gcg.last_trade) == (dt.date(2013, 1, 31), dt.date(2013, 2, 26))


def test_user_table_under_fbt_home_adds_and_overrides_markets(tmp_path):
    es = BUILTIN_TABLE.read_text().split("[ES]")[1].split("\n[")[0]
    (tmp_path / "markets.toml").write_text(
        "[MES]" + es.replace('name = "E-mini S&P 500"', 'name = "Micro E-mini S&P 500"').replace("multiplier = 50.0", "multiplier = 5.0")
        + "\n[ES]" + es.replace("commission = 2.10", "commission = 1.25")
    )
    assert "MES" not in load_catalog()  # without the trader's home: the built-in markets only
    catalog = load_catalog(tmp_path)
    assert catalog["MES"].multiplier == 5.0 and catalog["MES"].name == "Micro E-mini S&P 500"
    assert catalog["ES"].commission == 1.25 and catalog["ES"].multiplier == 50.0
    assert len(catalog) == len(BUILTIN) + 1
    (tmp_path / "markets.toml").write_text("[MES]\nname = 1\n")
    with pytest.raises(CatalogError, match=r"markets.toml: market \[MES\] is missing"):
        load_catalog(tmp_path)
