"""Deterministic synthetic intraday (1-minute or 1-hour) bars per contract.

The intraday sibling of :mod:`fbt_pipelines.marketdata.sample_data`, for the
intraday demo, its tests and the benches:

- bars only inside the market's trading sessions
  (:func:`fbt_pipelines.marketdata.sessions.market_table`: CME Globex
  17:00-16:00 CT for ES, no bar in the maintenance break, on a weekend or a
  holiday), on a clock grid of the interval, stamped UTC at the bar's start;
- one spot log-price per market: per-bar Gaussian steps whose volatility is
  the market's ``annual_vol`` spread over the bars of a year (bars per session
  x 252), higher in the regular (day) hours than overnight, plus a trend
  regime per session (up / down / flat, ~60 sessions long) so intraday trend
  strategies have something to find;
- each contract priced off spot with a cost-of-carry term ``exp(carry x
  years to expiry)``, on the tick grid, ``low <= open, close <= high``;
- a contract trades from ``overlap_days`` calendar days before its
  predecessor's last trade until its own last trade; volume migrates from
  the old to the new contract over that overlap (the new one leads ~10 days
  before the old one expires), so a volume roll rule rolls inside it.

Prices are in points, volume and open interest in contracts, ``ts`` UTC.
Seeded: the same arguments give the same bars.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import listed_contracts
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.marketdata.sample_data import SAMPLE_COLUMNS, round_to_tick, tick_decimals
from fbt_pipelines.marketdata.sessions import bars_per_session, interval_ns, market_table

NS_PER_DAY = 86_400_000_000_000
REGIME_SESSIONS = 60  # mean length of a trend regime, sessions
OVERLAP_DAYS = 16  # calendar days two contracts trade side by side around a roll


def session_grid(spec: ContractSpec, start: dt.date, end: dt.date, interval: str = "1m") -> tuple[np.ndarray, np.ndarray]:
    """(bar start times, session index) of every bar in the sessions ``start..end``.

    Times are int64 ns UTC on the interval's clock grid, inside a trading
    segment of the market; the session index counts sessions from 0.
    """
    tab = market_table(spec)
    step = interval_ns(interval)
    lo = np.searchsorted(tab.labels, np.datetime64(start, "D"))
    hi = np.searchsorted(tab.labels, np.datetime64(end, "D"), side="right")
    seg = (tab.seg_session >= lo) & (tab.seg_session < hi)
    s0, s1, sess = tab.seg_start[seg], tab.seg_end[seg], tab.seg_session[seg] - lo
    first = -(-s0 // step) * step  # the first grid time at or after the segment's start
    counts = np.maximum((s1 - first + step - 1) // step, 0)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(first, counts) + offsets * step, np.repeat(sess, counts)


@dataclass(frozen=True)
class MinuteSample:
    """Generated intraday bars: one frame per contract (:data:`SAMPLE_COLUMNS`, ts UTC)."""

    bars: dict[str, pd.DataFrame]
    interval: str

    @property
    def rows(self) -> int:
        return sum(len(f) for f in self.bars.values())

    def frame(self) -> pd.DataFrame:
        """All contracts in one frame, sorted by (ts, contract)."""
        out = pd.concat(self.bars.values(), ignore_index=True)
        return out.sort_values(["ts", "contract"], kind="mergesort").reset_index(drop=True)


def simulate_minutes(spec: ContractSpec, start: dt.date, end: dt.date, seed: int = 0, interval: str = "1m",
                     overlap_days: int = OVERLAP_DAYS) -> MinuteSample:
    """Intraday bars of every contract of ``spec`` trading in the sessions ``start..end``.

    See the module docstring for the model. ``interval``: ``"1m"`` (default)
    or any sub-daily interval of :func:`~fbt_pipelines.marketdata.sessions.interval_ns`.
    """
    p = dict(spec.sample) or {"start_price": 100.0, "annual_vol": 0.2, "carry_rate": 0.0, "drift": 0.0}
    rng = np.random.default_rng((zlib.crc32(f"{spec.root}:{interval}".encode()) + 7919 * seed) % 2**32)
    t, sess = session_grid(spec, start, end, interval)
    n = len(t)
    if n == 0:
        raise ValueError(f"no {spec.root} session between {start} and {end}")
    n_sessions = int(sess[-1]) + 1
    per_year = bars_per_session(spec, interval) * 252.0
    local = pd.DatetimeIndex(t).tz_localize("UTC").tz_convert(market_table(spec).tz)
    minute_of_day = local.hour.to_numpy() * 60 + local.minute.to_numpy()
    day_hours = (minute_of_day >= 8 * 60 + 30) & (minute_of_day < 15 * 60 + 15)  # the US cash session, local
    profile = np.where(day_hours, 1.6, 0.6)
    profile /= np.sqrt(np.mean(profile ** 2))  # the bars' mean variance stays annual_vol^2 / per_year
    # trend regimes per session: flat, up, down (annualised drift +-0.8 vol)
    switch = rng.random(n_sessions) < 1.0 / REGIME_SESSIONS
    state = np.where(switch, rng.integers(0, 3, n_sessions), -1)
    state[0] = max(state[0], 0)
    state = pd.Series(np.where(state < 0, np.nan, state)).ffill().to_numpy(int)
    mu = (p["drift"] + np.array([0.0, 0.8, -0.8])[state] * p["annual_vol"]) / per_year
    steps = mu[sess] + p["annual_vol"] / np.sqrt(per_year) * profile * rng.standard_normal(n)
    log_close = np.log(p["start_price"]) + np.cumsum(steps)
    log_open = np.r_[np.log(p["start_price"]), log_close[:-1]]
    wick = p["annual_vol"] / np.sqrt(per_year) * profile * 0.5
    log_high = np.maximum(log_open, log_close) + np.abs(rng.standard_normal(n)) * wick
    log_low = np.minimum(log_open, log_close) - np.abs(rng.standard_normal(n)) * wick
    base = {"equity": 1_500_000, "energy": 600_000, "metals": 250_000, "rates": 1_200_000, "fx": 200_000}
    per_bar = base.get(spec.asset_class, 100_000) / bars_per_session(spec, interval)
    activity = per_bar * np.where(day_hours, 2.5, 0.4) * np.exp(0.4 * rng.standard_normal(n))

    day = (t // NS_PER_DAY).astype("datetime64[D]")
    contracts = [c for c in listed_contracts(spec, start.year - 1, end.year + 1)]
    decimals = tick_decimals(spec.tick_size)
    out: dict[str, pd.DataFrame] = {}
    for prev, c in zip(contracts[:-1], contracts[1:]):
        first = np.datetime64(prev.last_trade - dt.timedelta(days=overlap_days), "D")
        live = (day >= first) & (day <= np.datetime64(c.last_trade, "D"))
        idx = np.flatnonzero(live)
        if len(idx) == 0:
            continue
        years_left = (np.datetime64(c.last_trade, "D") - day[idx]).astype(float) / 365.25
        shift = p["carry_rate"] * years_left
        o, hi, lo, cl = (round_to_tick(np.exp(x[idx] + shift), spec.tick_size)
                         for x in (log_open, log_high, log_low, log_close))
        hi, lo = np.maximum(hi, np.maximum(o, cl)), np.minimum(lo, np.minimum(o, cl))
        # share of the market's volume: rises from 0.05 to 0.95 over the overlap, crossing 1/2 at its 6th day
        ramp = (day[idx] - first).astype(float)
        share = np.where(day[idx] > np.datetime64(prev.last_trade, "D"), 1.0,
                         0.05 + 0.9 / (1.0 + np.exp(-(ramp - 6.0) / 1.5)))
        # the outgoing contract's share near its own expiry
        tail_first = np.datetime64(c.last_trade - dt.timedelta(days=overlap_days), "D")
        in_tail = day[idx] >= tail_first
        ramp_out = (day[idx] - tail_first).astype(float)
        share = np.where(in_tail, share * (1.0 - 0.9 / (1.0 + np.exp(-(ramp_out - 6.0) / 1.5))), share)
        volume = np.maximum(np.round(activity[idx] * share), 1).astype(np.int64)
        oi = np.round(2_000_000 * share).astype(np.int64) + 1
        out[c.contract_id] = pd.DataFrame({
            "contract": c.contract_id,
            "ts": pd.DatetimeIndex(t[idx]).tz_localize("UTC"),
            "open": np.round(o, decimals), "high": np.round(hi, decimals),
            "low": np.round(lo, decimals), "close": np.round(cl, decimals),
            "volume": volume, "open_interest": oi,
        }, columns=SAMPLE_COLUMNS)
    return MinuteSample(out, interval)


def write_minute_sample(dest: Path, spec: ContractSpec, start: dt.date, end: dt.date, seed: int = 0,
                        interval: str = "1m") -> MinuteSample:
    """Write :func:`simulate_minutes` as one canonical CSV per contract in ``dest``.

    ``dest/<CONTRACT>.csv`` with ISO 8601 UTC times (``2024-01-02T14:31:00Z``);
    each file is written under a temporary name and renamed.
    """
    sample = simulate_minutes(spec, start, end, seed, interval)
    dest.mkdir(parents=True, exist_ok=True)
    fmt = f"%.{tick_decimals(spec.tick_size)}f"
    for cid, frame in sample.bars.items():
        tmp = dest / f".{cid}.csv.tmp"
        frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(tmp, index=False, float_format=fmt)
        tmp.replace(dest / f"{cid}.csv")
    return sample
