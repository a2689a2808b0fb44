"""The synthetic market generator: deterministic, valid bar files, and the
market structure its docstring promises (tick grid, OHLC order, expiry,
volume migration before the roll reference, carry sign).

Short windows keep this fast; one test runs the default 2012-2024 window on
one market.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.contracts import listed_contracts
from fbt_pipelines.catalog.specs import market_spec
from fbt_pipelines.marketdata import sample_data as sd
from fbt_pipelines.marketdata.quality import spike_count
from fbt_pipelines.marketdata.sessions import trading_sessions
from fbt_pipelines.ingest.files import ingest_path

START, END = dt.date(2013, 1, 2), dt.date(2014, 12, 31)  # a 2-year window
MARKETS = sd.DEFAULT_MARKETS


def read_dir(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, sd.SampleDataSummary]:
    dest = tmp_path_factory.mktemp("sample")
    summary = sd.write_sample_data(dest, [market_spec(m) for m in MARKETS], START, END, seed=0)
    return dest, summary


@pytest.fixture(scope="module")
def frames(written) -> dict[str, dict[str, pd.DataFrame]]:
    """root -> contract -> frame, read back from the written CSV files."""
    dest, _ = written
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for root in MARKETS:
        out[root] = {p.stem: pd.read_csv(p, parse_dates=["ts"]).rename(columns={"ts": "date"}) for p in sorted((dest / root).glob("*.csv"))}
    return out


def test_defaults_cover_six_markets_five_asset_classes_twelve_years():
    assert len(MARKETS) >= 6
    assert {market_spec(m).asset_class for m in MARKETS} == {"equity", "energy", "metals", "rates", "fx"}
    assert sd.DEFAULT_START <= dt.date(2012, 12, 31) and sd.DEFAULT_END >= dt.date(2024, 12, 31)
    assert (sd.DEFAULT_END - sd.DEFAULT_START).days >= 12 * 365


def test_same_seed_same_bytes_different_seed_different(tmp_path, written):
    dest, _ = written
    specs = [market_spec("ES"), market_spec("6E")]
    again = tmp_path / "again"
    sd.write_sample_data(again, specs, START, END, seed=0)
    first = {k: v for k, v in read_dir(dest).items() if k.split("/")[0] in ("ES", "6E")}
    second = read_dir(again)
    assert len(first) > 10 and first == second

    other = tmp_path / "other"
    sd.write_sample_data(other, specs, START, END, seed=1)
    third = read_dir(other)
    assert third.keys() == first.keys()  # same contracts ...
    assert all(third[k] != first[k] for k in first)  # ... every file's numbers differ
    assert not any(p.name.endswith(".tmp") for p in other.rglob("*"))  # temp files renamed away


def test_summary_matches_files(written):
    dest, summary = written
    for root in MARKETS:
        files = sorted((dest / root).glob("*.csv"))
        assert summary.files[root] == len(files)
        assert summary.rows[root] == sum(len(p.read_text().splitlines()) - 1 for p in files)
    assert summary.total_rows == sum(summary.rows.values())


def test_every_file_is_a_clean_bar_file(written, tmp_path):
    """The generator's output passes the ingest's validation untouched."""
    dest, summary = written
    total = 0
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        for root in MARKETS:
            for path in sorted((dest / root).glob("*.csv")):
                (result,) = ingest_path(conn, path)
                assert (result.quarantined, result.roots) == (0, (root,)), path
                assert result.warnings == {"off_tick_grid": 0, "spikes": 0}, path
                total += result.accepted
    assert total == summary.total_rows


@pytest.mark.parametrize("root", MARKETS)
def test_prices_on_tick_grid_and_ohlc_consistent(frames, root):
    tick = market_spec(root).tick_size
    for cid, f in frames[root].items():
        prices = f[["open", "high", "low", "close"]].to_numpy(float)
        units = prices / tick
        assert np.abs(units - np.round(units)).max() < 1e-6, cid
        assert (prices > 0).all(), cid
        assert (f["low"] <= f[["open", "close"]].min(axis=1)).all(), cid
        assert (f[["open", "close"]].max(axis=1) <= f["high"]).all(), cid
        assert (f["volume"] > 0).all() and (f["open_interest"] > 0).all(), cid
        assert f["date"].is_monotonic_increasing and f["date"].is_unique, cid


@pytest.mark.parametrize("root", MARKETS)
def test_contract_lives_from_listing_to_last_trade(frames, root):
    spec = market_spec(root)
    sessions = trading_sessions(START, END)
    by_id = {c.contract_id: c for c in listed_contracts(spec, START.year - 1, END.year + 2)}
    # exactly the cycle's contracts with last trade in the window, plus the
    # ones listed (300 calendar days before last trade) by the window's end
    expected = {cid for cid, c in by_id.items()
                if c.last_trade >= START and c.last_trade - dt.timedelta(days=300) <= END}
    assert set(frames[root]) == expected
    for cid, f in frames[root].items():
        c = by_id[cid]
        first, last = f["date"].iloc[0].date(), f["date"].iloc[-1].date()
        assert last <= c.last_trade, cid
        assert set(f["date"]) <= set(sessions), cid
        listed = max(c.last_trade - dt.timedelta(days=300), START)
        if c.last_trade <= END:  # trades up to the last session on or before its last trade day
            assert last == max(s.date() for s in sessions if s.date() <= c.last_trade), cid
        assert first == min(s.date() for s in sessions if s.date() >= listed), cid


def front_next_pairs(contracts: dict[str, pd.DataFrame], root: str):
    """(front, next, joined frame) in expiry order; the frame holds the dates
    on which ``front`` is the front month: both trade and the contract before
    ``front`` has expired."""
    order = [c for c in listed_contracts(market_spec(root), START.year - 1, END.year + 2) if c.contract_id in contracts]
    previous_end = pd.Timestamp.min
    for front, nxt in zip(order, order[1:]):
        a = contracts[front.contract_id].set_index("date")
        b = contracts[nxt.contract_id].set_index("date")
        j = a.join(b, how="inner", lsuffix="_front", rsuffix="_next")
        yield front, nxt, j[j.index > previous_end]
        previous_end = a.index[-1]


@pytest.mark.parametrize("root", ["ES", "CL", "GC"])
def test_volume_crosses_to_next_before_roll_reference(frames, root):
    spec = market_spec(root)
    sessions = pd.DatetimeIndex(trading_sessions(START, END))
    checked = 0
    for front, nxt, j in front_next_pairs(frames[root], root):
        ref = pd.Timestamp(front.roll_reference)
        if ref > sessions[-1] or ref < sessions[40]:
            continue  # roll outside the window (or before volumes could migrate in it)
        crossed = j.index[j["volume_next"] > j["volume_front"]]
        assert len(crossed) > 0, front.contract_id
        cross = crossed[0]
        assert cross < ref, (front.contract_id, cross, ref)
        # once crossed, the next contract stays the more active one
        assert (j.loc[cross:, "volume_next"] > j.loc[cross:, "volume_front"]).all(), front.contract_id
        # ... and it happens near the market's default roll (roll_days_before
        # business days before the reference), so the calendar roll follows liquidity
        sessions_before = int(((sessions >= cross) & (sessions < ref)).sum())
        assert abs(sessions_before - spec.roll_days_before) <= 2, (front.contract_id, sessions_before)
        # open interest follows volume: front still holds more OI on the crossover day
        assert j.loc[cross, "open_interest_front"] > j.loc[cross, "open_interest_next"], front.contract_id
        checked += 1
    # rolls whose reference falls in March 2013 .. December 2014 (hand-counted):
    # ES: H13..Z14 = 8; CL: J13 (first notice 2013-03-21) .. F15 (2014-12-18) = 22;
    # GC: J13 (first notice 2013-03-28) .. Z14 (2014-11-28) = 11
    expected = {"ES": 8, "CL": 22, "GC": 11}[root]
    assert checked == expected


@pytest.mark.parametrize("root", MARKETS)
def test_term_structure_sign_and_size_match_catalogue_carry(frames, root):
    """log(next/front) / (years between their last trades) is the annualised
    carry the catalogue's ``carry_rate`` specifies (>0 contango, <0
    backwardation): same sign, and within the documented +/-50% drift."""
    spec = market_spec(root)
    carry = spec.sample["carry_rate"]
    implied = []
    for front, nxt, j in front_next_pairs(frames[root], root):
        years = (nxt.last_trade - front.last_trade).days / 365.25
        implied.extend(np.log(j["close_next"] / j["close_front"]) / years)
    implied = np.asarray(implied)
    assert len(implied) > 400
    assert np.sign(implied.mean()) == np.sign(carry)
    assert 0.4 * abs(carry) < abs(implied.mean()) < 1.6 * abs(carry)


def test_cl_backwardation_gc_contango_in_price_points(frames):
    def mean_spread(root):
        spreads = np.concatenate([j["close_next"] - j["close_front"] for _, _, j in front_next_pairs(frames[root], root)])
        assert len(spreads) > 400
        return spreads.mean()
    assert mean_spread("CL") < 0 < mean_spread("GC")


def test_default_window_on_one_market(tmp_path):
    summary = sd.write_sample_data(tmp_path, [market_spec("ES")])  # 2012-01-03 .. 2024-12-31
    files = sorted(p.stem for p in (tmp_path / "ES").glob("*.csv"))
    # ESH2012 .. ESZ2024 (13 years x 4) plus ESH/ESM/ESU2025, whose listing
    # (300 days before their 2025 third-Friday expiry) falls before 2024-12-31.
    expected = sorted([f"ES{m}{y}" for y in range(2012, 2025) for m in "HMUZ"] + ["ESH2025", "ESM2025", "ESU2025"])
    assert files == expected and summary.files == {"ES": 55}
    first = pd.read_csv(tmp_path / "ES" / "ESH2012.csv")
    last = pd.read_csv(tmp_path / "ES" / "ESH2025.csv")
    assert first["ts"].iloc[0] == "2012-01-03"  # first session of 2012
    assert last["ts"].iloc[-1] == "2024-12-31"
    # ESZ2013 ends on its real last trade day
    assert pd.read_csv(tmp_path / "ES" / "ESZ2013.csv")["ts"].iloc[-1] == "2013-12-20"


# --- helpers ------------------------------------------------------------------

@pytest.mark.parametrize("tick, decimals", [(0.25, 2), (0.01, 2), (0.1, 1), (0.015625, 6), (0.00005, 5), (1.0, 0)])
def test_tick_decimals(tick, decimals):
    assert sd.tick_decimals(tick) == decimals


def test_round_to_tick_hand_worked():
    # 1450.13 / 0.25 = 5800.52 -> 5801 ticks = 1450.25
    assert sd.round_to_tick(np.array([1450.13, 1450.12]), 0.25).tolist() == [1450.25, 1450.0]
    # 132.01 / (1/64) = 8448.64 -> 8449 ticks = 132.015625
    assert sd.round_to_tick(np.array([132.01]), 0.015625).tolist() == [132.015625]
    # 1.32287 / 0.00005 = 26457.4 -> 26457 ticks = 1.32285
    assert sd.round_to_tick(np.array([1.32287]), 0.00005).tolist() == [1.32285]


def test_simulate_market_reproducible_in_memory():
    sessions = trading_sessions(dt.date(2014, 1, 2), dt.date(2014, 3, 31))
    a = sd.simulate_market(market_spec("ZN"), sessions, seed=3)
    b = sd.simulate_market(market_spec("ZN"), sessions, seed=3)
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)
    assert list(a["ZNH2014"].columns) == sd.SAMPLE_COLUMNS


# --- quality.spike_count ---------------------------------------------------------

def spike_frame(closes: np.ndarray, contract: str = "ESZ2013") -> pd.DataFrame:
    ts = pd.date_range("2013-01-01", periods=len(closes), freq="D", tz="UTC")
    return pd.DataFrame({"contract": contract, "ts": ts, "close": closes})


def test_spike_count_hand_worked():
    # 30 closes moving +/-1% alternately: every |log return| is 0.01, so the
    # threshold is 10 * 0.01 * 1.4826 = 0.148.
    steps = np.where(np.arange(29) % 2 == 0, 0.01, -0.01)
    closes = 100 * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))
    assert spike_count(spike_frame(closes)) == 0
    spiked = closes.copy()
    spiked[15] *= 1.2  # log(1.2) = 0.182: one jump up, one back down
    assert spike_count(spike_frame(spiked)) == 2
    spiked[15] = closes[15] * 1.1  # log(1.1) = 0.095 +/- 0.01 < 0.148
    assert spike_count(spike_frame(spiked)) == 0
    # fewer than 10 closes in a contract: not tested
    assert spike_count(spike_frame(np.array([100, 100, 100, 200, 100, 100, 100, 100, 100.0]))) == 0


def test_sample_data_has_no_spikes(frames):
    for root in MARKETS:
        bars = pd.concat([f.assign(contract=cid).rename(columns={"date": "ts"}) for cid, f in frames[root].items()])
        assert spike_count(bars) == 0, root


@pytest.mark.parametrize("root", ["ES", "CL"])
def test_next_contract_out_trades_deferred_months(frames, root):
    # deferred months must never out-trade the next contract, or a volume roll rule would jump two months
    contracts = frames[root]
    volume = pd.DataFrame({cid: f.set_index("date")["volume"] for cid, f in contracts.items()}).sort_index()
    order = sorted(contracts, key=lambda cid: listed_last_trade(root, cid))
    volume = volume[order]
    for date, row in volume.iterrows():
        live = [c for c in order if pd.notna(row[c])]
        assert row.idxmax() in live[:2], (date, row.idxmax(), live[:3])
        if len(live) > 2:
            assert row[live[1]] >= row[live[2:]].max(), (date, live[1], row[live[1]], row[live[2:]].max())


def listed_last_trade(root: str, cid: str) -> dt.date:
    return {c.contract_id: c.last_trade for c in listed_contracts(market_spec(root), 2000, 2040)}[cid]
