"""Intraday features on generated ES minute bars, checked without fbt's feature code.

Two ES contracts (ESH2024, ESM2024) over the March 2024 roll, one-minute
bars. The values are recomputed here from the raw bars: held-contract returns
from each contract's own previous close, their 20-bar st. dev. annualised by
1,380 bars x 252 sessions, the 60-bar high distance with NumPy windows, the
roll yield from the next contract's last close in the same trading day (the
Chicago clock: 17:00 CT opens the next day's session), the weekday of the
trading day. The causality test moves only bars from D on (a later roll gap
changes, so every earlier Panama level moves) and requires every feature
row before D to stay; its guard shows a Panama-ratio feature moving there.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.catalog.contracts import listed_contracts
from fbt_pipelines.marketdata.sample_minutes import simulate_minutes
from fbt_pipelines.ml.features import FEATURE_COLUMNS
from fbt_pipelines.usecases import intraday as uc
from fbt_pipelines.usecases import intraday_features as uf
from fbt_pipelines.usecases.continuous import roll_rule_for

ES = market_spec("ES")
CONTRACTS = listed_contracts(ES, 2023, 2025)
START, END = dt.date(2024, 2, 26), dt.date(2024, 3, 15)
BARS_PER_YEAR = 23 * 60 * 252  # CME Globex 17:00-16:00 CT: 1,380 one-minute bars a session
D = pd.Timestamp("2024-03-04 15:00", tz="UTC")  # before the roll (2024-03-06): a later gap changes
TOL = 1e-9


def trading_day(ts: pd.Series) -> pd.Series:
    """The CME trading day of a UTC bar time from the Chicago clock alone (weekdays only here)."""
    local = pd.DatetimeIndex(ts).tz_convert("America/Chicago")
    day = local.normalize().tz_localize(None)
    return pd.Series(np.where(local.hour >= 17, day + pd.Timedelta(days=1), day), index=ts.index)


def build(bars: pd.DataFrame):
    sb = uc.sessioned_bars(bars, ES)
    rolls = uc.intraday_roll_schedule(sb, CONTRACTS, roll_rule_for(ES), "ES|1m", "1m")
    series = uc.intraday_continuous(sb, rolls.schedule, rolls.start_contract, CONTRACTS, "ES|1m", "1m")
    prices = series.prices.drop(columns="series")
    return rolls.schedule, prices, uf.intraday_features("ES|1m", "1m", prices, ES, CONTRACTS, sb)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    frame = simulate_minutes(ES, START, END, seed=3).frame()
    assert sorted(frame["contract"].unique()) == ["ESH2024", "ESM2024"]
    return frame


@pytest.fixture(scope="module")
def built(bars):
    return build(bars)


def test_one_row_per_bar_of_the_series(built):
    schedule, prices, made = built
    table = made.table
    assert list(table.columns) == uf.INTRADAY_FEATURE_COLUMNS
    assert len(table) == len(prices) == 15 * 1380  # 15 full sessions
    assert (table["ts"].to_numpy() == pd.to_datetime(prices["ts"], utc=True).to_numpy()).all()
    assert (table["series"] == "ES|1m").all() and made.bars_per_year == BARS_PER_YEAR
    assert len(schedule) == 1 and made.finite_after_warmup == 1.0


def test_values_by_hand_from_the_raw_bars(bars, built):
    _, prices, made = built
    t = made.table
    # the held contract's own return: its close over its own previous close at or before the previous bar
    held = prices[["ts", "contract", "raw_close"]].reset_index(drop=True)
    prev_ts = held["ts"].shift(1)
    own = bars[["contract", "ts", "close"]].rename(columns={"ts": "prev_ts", "close": "prev_close"})
    lookup = pd.merge_asof(held.assign(prev_ts=prev_ts).dropna(subset=["prev_ts"]).sort_values("prev_ts"),
                           own.sort_values("prev_ts"), on="prev_ts", by="contract", direction="backward")
    lookup = lookup.sort_values("ts").reset_index(drop=True)
    ret = np.r_[np.nan, lookup["raw_close"].to_numpy() / lookup["prev_close"].to_numpy() - 1.0]
    np.testing.assert_allclose(t["ret_1"].to_numpy(), ret, rtol=0, atol=1e-12, equal_nan=True)
    # vol_20: st. dev. (ddof 1) of 20 returns x sqrt(1,380 x 252)
    windows = np.lib.stride_tricks.sliding_window_view(ret, 20)
    vol = np.r_[np.full(19, np.nan), windows.std(axis=1, ddof=1) * np.sqrt(BARS_PER_YEAR)]
    np.testing.assert_allclose(t["vol_20"].to_numpy(), vol, rtol=1e-9, equal_nan=True)
    assert np.nanmedian(t["vol_20"] / (vol / np.sqrt(BARS_PER_YEAR) * np.sqrt(252))) > 30  # not the daily sqrt(252)
    # dist_high_60: point distance from the 60-bar high of the Panama close, over the held raw close
    close = prices["close"].to_numpy()
    high = np.r_[np.full(59, np.nan), np.lib.stride_tricks.sliding_window_view(close, 60).max(axis=1)]
    np.testing.assert_allclose(t["dist_high_60"].to_numpy(), (close - high) / prices["raw_close"].to_numpy(),
                               rtol=0, atol=1e-12, equal_nan=True)
    # weekday and month of the trading day (a Sunday 17:00 CT bar is Monday's)
    day = trading_day(pd.to_datetime(prices["ts"], utc=True))
    assert (t["day_of_week"].to_numpy() == day.dt.dayofweek.to_numpy()).all()
    assert (t["month"].to_numpy() == day.dt.month.to_numpy()).all()
    sunday_evening = pd.to_datetime(prices["ts"], utc=True).dt.tz_convert("America/Chicago").dt.dayofweek == 6
    assert sunday_evening.any() and (t.loc[sunday_evening.to_numpy(), "day_of_week"] == 0).all()
    # days to the planned roll: ES rolls at the latest 5 business days before the last trade
    # (ESH: Mar 15 -> Mar 8; ESM: Jun 21 -> Jun 13, Juneteenth (Jun 19) is no business day)
    planned = {"ESH2024": pd.Timestamp("2024-03-08"), "ESM2024": pd.Timestamp("2024-06-13")}
    expected = (prices["contract"].astype(str).map(planned) - day).dt.days.to_numpy(float)
    np.testing.assert_array_equal(t["days_to_roll"].to_numpy(), expected)


def test_roll_yield_from_the_next_contracts_last_close_in_the_session(bars, built):
    _, prices, made = built
    series = prices[["ts", "contract", "raw_close"]].reset_index(drop=True).assign(
        day=trading_day(pd.to_datetime(prices["ts"], utc=True)).to_numpy())
    nxt = bars[bars["contract"] == "ESM2024"][["ts", "close"]].rename(columns={"close": "next_close"})
    nxt = nxt.assign(next_ts=nxt["ts"], next_day=trading_day(nxt["ts"]).to_numpy())
    joined = pd.merge_asof(series, nxt, on="ts", direction="backward")
    days = (pd.Timestamp("2024-06-21") - pd.Timestamp("2024-03-15")).days  # last trades of ESM and ESH
    usable = (joined["contract"] == "ESH2024") & (joined["next_day"] == joined["day"])
    expected = np.where(usable, (joined["raw_close"] - joined["next_close"]) / joined["next_close"] * 365 / days,
                        np.nan)
    np.testing.assert_allclose(made.table["roll_yield"].to_numpy(), expected, rtol=1e-12, equal_nan=True)
    assert 0.2 < usable.mean() < 0.6  # the two contracts overlap only around the roll
    assert made.roll_yield_share == pytest.approx(usable.mean())
    # the new contract's first bar of a session gives nothing before it has traded in that session
    assert np.isnan(made.table["roll_yield"].to_numpy()[(joined["contract"] == "ESM2024").to_numpy()]).all()


def moved_rows(a: pd.DataFrame, b: pd.DataFrame, columns: list[str], before: np.ndarray) -> dict[str, int]:
    """Rows before D whose value differs by more than TOL between two runs (NaN equal to NaN), per column."""
    out = {}
    for c in columns:
        x, y = a[c].to_numpy(float)[before], b[c].to_numpy(float)[before]
        same = (np.isnan(x) & np.isnan(y)) | (np.abs(x - y) <= TOL)
        out[c] = int((~same).sum())
    return out


def test_changing_bars_from_d_on_moves_no_feature_before_d(bars, built):
    schedule, prices, made = built
    later = (bars["ts"] >= D).to_numpy()
    i = np.arange(len(bars))
    bump = np.where(bars["contract"] == "ESM2024", 2.0 + 0.25 * (i % 4), 0.25 * (i % 3)) * later
    moved = bars.assign(**{c: bars[c] + bump for c in ("open", "high", "low", "close")})
    schedule2, prices2, made2 = build(moved)
    assert schedule2["roll_date"].tolist() == schedule["roll_date"].tolist()
    assert schedule2["gap"].iloc[0] != pytest.approx(schedule["gap"].iloc[0])  # the later roll gap changed ...
    before = (pd.to_datetime(prices["ts"], utc=True) < D).to_numpy()
    assert (pd.to_datetime(prices2["ts"], utc=True) < D).to_numpy().tolist() == before.tolist()
    shift = prices2["close"].to_numpy()[before] - prices["close"].to_numpy()[before]
    assert np.abs(shift).min() > 0.2  # ... so every Panama level before D moved
    assert moved_rows(made.table, made2.table, FEATURE_COLUMNS, before) == {c: 0 for c in FEATURE_COLUMNS}
    after = moved_rows(made.table, made2.table, FEATURE_COLUMNS, ~before)
    assert after["ret_1"] > 1000 and after["roll_yield"] > 1000  # the change reached the features after D


def test_guard_a_ratio_of_panama_levels_moves_before_d(bars, built):
    _, prices, made = built
    later = (bars["ts"] >= D).to_numpy()
    i = np.arange(len(bars))
    bump = np.where(bars["contract"] == "ESM2024", 2.0 + 0.25 * (i % 4), 0.25 * (i % 3)) * later
    _, prices2, made2 = build(bars.assign(**{c: bars[c] + bump for c in ("open", "high", "low", "close")}))
    before = (pd.to_datetime(prices["ts"], utc=True) < D).to_numpy()

    def leaky(p: pd.DataFrame, t: pd.DataFrame) -> pd.DataFrame:
        close = p["close"].reset_index(drop=True)
        return t.assign(panama_ratio=(close / close.rolling(60).max() - 1).to_numpy(),
                        full_sample_z=((close.diff() - close.diff().mean()) / close.diff().std()).to_numpy())

    moved = moved_rows(leaky(prices, made.table), leaky(prices2, made2.table), ["panama_ratio", "full_sample_z"],
                       before)
    assert moved["panama_ratio"] > before.sum() // 2 and moved["full_sample_z"] > before.sum() // 2


def test_finite_share_check_counts_missing_values(built):
    _, _, made = built
    table = made.table.copy()
    n_after = len(table) - uf.WARMUP_BARS
    table.loc[uf.WARMUP_BARS:uf.WARMUP_BARS + n_after // 50 - 1, "rsi_14"] = np.nan  # 2% of the rows
    table["roll_yield"] = np.nan  # not checked: no second contract outside the roll weeks
    broken = uf.IntradayFeatures(made.key, made.interval, table, made.label, made.bars_per_year)
    assert broken.finite_after_warmup == pytest.approx(1 - (n_after // 50) / n_after)
    assert broken.finite_after_warmup < 0.99
