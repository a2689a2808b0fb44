"""Deterministic synthetic per-contract daily bars for the demo and tests.

The generator is a model of a futures market, not noise:

- one spot log-price per market with Markov trend regimes (up / down / flat,
  mean length ~180 sessions: a redraw every ~120 that keeps the state 1 time
  in 3) so trend strategies have something to find;
- every listed contract priced off spot with a cost-of-carry term structure
  ``F = S * exp(carry * years_to_expiry)`` (carry > 0 contango, < 0
  backwardation; carry drifts slowly around the market's ``carry_rate`` by
  +/- ``max(|carry_rate|, 0.01) / 2``, so the curve flips sign only for a
  market with ``|carry_rate| < 0.005`` -- none of the built-in ones);
- contracts trade from ``listing_days`` before last trade until last trade;
- volume and open interest migrate from the front to the next contract as
  the front approaches its roll reference (first notice if physically
  delivered, else last trade); open interest lags volume by a day or so;
- every price is on the market's tick grid and ``low <= open, close <= high``.

Files are written as ``<dest>/<ROOT>/<CONTRACT>.csv`` in fbt's canonical CSV
format: header ``contract,ts,open,high,low,close,volume,open_interest``, ``ts``
the trading day (ISO date = 00:00 UTC).
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import listed_contracts
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.marketdata.sessions import trading_sessions
from fbt_pipelines.primitives.performance import annualisation

SAMPLE_COLUMNS = ["contract", "ts", "open", "high", "low", "close", "volume", "open_interest"]
DEFAULT_MARKETS = ("ES", "NQ", "CL", "GC", "ZN", "6E")
DEFAULT_START = dt.date(2012, 1, 3)
DEFAULT_END = dt.date(2024, 12, 31)


@dataclass(frozen=True)
class SampleDataSummary:
    """What the generator wrote: files and rows per market."""

    files: dict[str, int]
    rows: dict[str, int]

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def tick_decimals(tick_size: float) -> int:
    """Decimals needed to print a price on the tick grid exactly (0.015625 -> 6)."""
    for d in range(0, 10):
        if abs(round(tick_size, d) - tick_size) < 1e-12:
            return d
    return 10


def round_to_tick(prices: np.ndarray, tick_size: float) -> np.ndarray:
    """Nearest price on the tick grid (points)."""
    return np.round(np.round(prices / tick_size) * tick_size, tick_decimals(tick_size))


def _market_seed(root: str, seed: int) -> int:
    return (zlib.crc32(root.encode()) + 7919 * seed) % (2**32)


def _spot_path(n: int, annual_vol: float, drift: float, rng: np.random.Generator) -> np.ndarray:
    """Daily log returns with Markov trend regimes."""
    regime_drift = np.array([0.0, 0.8, -0.8]) * annual_vol  # flat, up, down (per year)
    stay = 1.0 - 1.0 / 120.0
    state = np.empty(n, dtype=np.int64)
    s = 0
    u = rng.random(n)
    jumps = rng.integers(0, 3, n)
    for i in range(n):
        if u[i] > stay:
            s = int(jumps[i])
        state[i] = s
    mu = (drift + regime_drift[state]) / 252.0
    # fat-ish tails: Student-t with 5 degrees of freedom scaled to unit variance
    z = rng.standard_t(5, n) / np.sqrt(5.0 / 3.0)
    return mu + annual_vol / annualisation() * z


def simulate_market(
    spec: ContractSpec,
    sessions: pd.DatetimeIndex,
    seed: int = 0,
    listing_days: int = 300,
) -> dict[str, pd.DataFrame]:
    """Bars of every contract of ``spec`` that trades in ``sessions``.

    Returns a dict contract id -> frame with :data:`SAMPLE_COLUMNS` (prices in
    points on the tick grid, volume and open interest in contracts).
    """
    p = dict(spec.sample) or {"start_price": 100.0, "annual_vol": 0.2, "carry_rate": 0.0, "drift": 0.0}
    rng = np.random.default_rng(_market_seed(spec.root, seed))
    n = len(sessions)
    daily_vol = p["annual_vol"] / annualisation()
    log_close = np.log(p["start_price"]) + np.cumsum(_spot_path(n, p["annual_vol"], p["drift"], rng))
    log_open = np.concatenate([[np.log(p["start_price"])], log_close[:-1]]) + 0.25 * daily_vol * rng.standard_normal(n)
    hi_ext = np.abs(rng.standard_normal(n)) * 0.5 * daily_vol
    lo_ext = np.abs(rng.standard_normal(n)) * 0.5 * daily_vol
    t_years = np.arange(n) / 252.0
    amplitude = 0.5 * max(abs(p["carry_rate"]), 0.01)
    carry = p["carry_rate"] + amplitude * np.sin(2 * np.pi * t_years / 4.0)
    activity = np.exp(0.3 * rng.standard_normal(n)) * (1.0 + 20.0 * np.abs(log_close - log_open))
    base_volume = {"equity": 1_500_000, "energy": 600_000, "metals": 250_000, "rates": 1_200_000, "fx": 200_000}
    total_volume = base_volume.get(spec.asset_class, 100_000) * activity / (1.0 + 20.0 * daily_vol)
    total_oi = 2.5 * base_volume.get(spec.asset_class, 100_000) * np.exp(0.05 * np.sin(2 * np.pi * t_years))

    first, last = sessions[0].date(), sessions[-1].date()
    contracts = [
        c for c in listed_contracts(spec, first.year, last.year + 2)
        if c.last_trade >= first and c.last_trade - dt.timedelta(days=listing_days) <= last
    ]
    session_days = sessions.values.astype("datetime64[D]")
    live = np.zeros((len(contracts), n), dtype=bool)
    bd_to_ref = np.zeros((len(contracts), n))
    for k, c in enumerate(contracts):
        listed = np.datetime64(c.last_trade - dt.timedelta(days=listing_days), "D")
        live[k] = (session_days >= listed) & (session_days <= np.datetime64(c.last_trade, "D"))
        ref_idx = np.searchsorted(session_days, np.datetime64(c.roll_reference, "D"))
        bd_to_ref[k] = ref_idx - np.arange(n)

    # Share of activity by rank among live contracts: front vs next migrates with
    # days to the front's roll reference; deferred months share a small rest.
    centre = spec.roll_days_before + 1.0
    vol_share = np.zeros((len(contracts), n))
    oi_share = np.zeros((len(contracts), n))
    for i in range(n):
        ks = np.flatnonzero(live[:, i])
        if len(ks) == 0:
            continue
        front = ks[0]
        f_vol = 1.0 / (1.0 + np.exp(-(bd_to_ref[front, i] - centre) / 1.5))
        f_oi = 1.0 / (1.0 + np.exp(-(bd_to_ref[front, i] - centre + 1.5) / 1.5))
        # deferred months trade less than the next contract, which always keeps
        # a floor share (so "most active" is always front or next)
        rest = 0.02 * 0.5 ** np.arange(max(len(ks) - 2, 0))
        if len(ks) == 1:
            vol_share[front, i] = oi_share[front, i] = 1.0
            continue
        vol_share[front, i] = 0.93 * f_vol
        vol_share[ks[1], i] = 0.05 + 0.93 * (1.0 - f_vol)
        oi_share[front, i] = 0.85 * f_oi
        oi_share[ks[1], i] = 0.1 + 0.85 * (1.0 - f_oi)
        vol_share[ks[2:], i] = rest
        oi_share[ks[2:], i] = rest * 2.5

    decimals = tick_decimals(spec.tick_size)
    out: dict[str, pd.DataFrame] = {}
    for k, c in enumerate(contracts):
        idx = np.flatnonzero(live[k])
        if len(idx) == 0:
            continue
        years_left = (np.datetime64(c.last_trade, "D") - session_days[idx]).astype(float) / 365.25
        shift = carry[idx] * years_left
        o = round_to_tick(np.exp(log_open[idx] + shift), spec.tick_size)
        cl = round_to_tick(np.exp(log_close[idx] + shift), spec.tick_size)
        hi = round_to_tick(np.exp(np.maximum(log_open[idx], log_close[idx]) + hi_ext[idx] + shift), spec.tick_size)
        lo = round_to_tick(np.exp(np.minimum(log_open[idx], log_close[idx]) - lo_ext[idx] + shift), spec.tick_size)
        hi = np.maximum(hi, np.maximum(o, cl))
        lo = np.minimum(lo, np.minimum(o, cl))
        volume = np.maximum(np.round(total_volume[idx] * vol_share[k, idx]), 1).astype(np.int64)
        oi = np.maximum(np.round(total_oi[idx] * oi_share[k, idx]), 1).astype(np.int64)
        out[c.contract_id] = pd.DataFrame(
            {
                "contract": c.contract_id,
                "ts": sessions[idx].strftime("%Y-%m-%d"),
                "open": np.round(o, decimals),
                "high": np.round(hi, decimals),
                "low": np.round(lo, decimals),
                "close": np.round(cl, decimals),
                "volume": volume,
                "open_interest": oi,
            },
            columns=SAMPLE_COLUMNS,
        )
    return out


def write_sample_data(
    dest: Path,
    specs: Iterable[ContractSpec],
    start: dt.date = DEFAULT_START,
    end: dt.date = DEFAULT_END,
    seed: int = 0,
) -> SampleDataSummary:
    """Write per-contract CSV files under ``dest/<ROOT>/``.

    Each file is written to a temporary name and renamed, so a reader never
    sees half a file.
    """
    sessions = trading_sessions(start, end)
    files: dict[str, int] = {}
    rows: dict[str, int] = {}
    for spec in specs:
        folder = dest / spec.root
        folder.mkdir(parents=True, exist_ok=True)
        bars = simulate_market(spec, sessions, seed=seed)
        fmt = f"%.{tick_decimals(spec.tick_size)}f"
        for cid, frame in bars.items():
            tmp = folder / f".{cid}.csv.tmp"
            frame.to_csv(tmp, index=False, float_format=fmt)
            tmp.replace(folder / f"{cid}.csv")
        files[spec.root] = len(bars)
        rows[spec.root] = sum(len(f) for f in bars.values())
    return SampleDataSummary(files=files, rows=rows)
