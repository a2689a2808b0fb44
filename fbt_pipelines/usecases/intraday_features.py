"""The daily features on an intraday (1m, 1h) continuous series, windows in bars.

For the ``intraday_features`` asset (``assets/intraday_features.py``). The
features are :data:`~fbt_pipelines.ml.features.FEATURE_COLUMNS`, computed by
the daily :func:`~fbt_pipelines.ml.features.build_features` on the stored
Panama series of a key (``ES|1m``, ``intraday_continuous_prices``), every
window counted in bars of the interval (``ret_20``: 20 bars, ``rsi_14``: 14
bars), with four intraday rules:

- ``vol_20`` annualises the 20-bar st. dev. of held-contract returns with
  bars per year (bars per session x 252:
  :func:`~fbt_pipelines.usecases.intraday.periods_per_year`), not sqrt(252);
- ``day_of_week``, ``month`` and ``days_to_roll`` are of the bar's trading
  day (its ``session``: a Sunday 17:00 CT bar is Monday's), not of its UTC date;
- ``roll_yield``: the held contract's raw close against the *next* contract's
  last close at or before the bar in the same session (the next contract: the
  first one expiring later with such a close), annualised as the daily one;
  NaN where no later contract has traded yet in the session.
  Minute data often has no second contract outside the roll weeks, so the
  ``features_finite_after_warmup`` check leaves roll_yield out (its finite
  share is reported);
- the label (``label``, ``horizon``, ``dead_zone``) is the daily
  :func:`~fbt_pipelines.ml.features.forward_return_label` over ``horizon`` bars.

Causality (docs/guide.md, "What may a feature use"): every value at bar t
uses bars up to t's close only: point differences of the Panama series, the
held contract's raw prices and trailing windows, never a ratio of Panama
levels or a full-sample statistic. Times are UTC, prices in points,
returns and volatilities fractions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.errors import DataError
from fbt_pipelines.ml.dataset import LabelConfig
from fbt_pipelines.ml.features import FEATURE_COLUMNS, build_features, forward_return_label, planned_roll_dates
from fbt_pipelines.primitives.performance import annualisation
from fbt_pipelines.primitives.returns import contract_returns
from fbt_pipelines.services import warehouse as wh
from fbt_pipelines.usecases.intraday import SessionedBars, periods_per_year

__all__ = ["CHECKED_COLUMNS", "INTRADAY_FEATURE_COLUMNS", "IntradayFeatures", "WARMUP_BARS",
           "build_intraday_features", "intraday_features", "intraday_roll_yield", "store_intraday_features"]

WARMUP_BARS = 64
"""Bars before every checked feature can be finite (the 64-bar EWMA of ewmac_16_64), as daily."""
CHECKED_COLUMNS = [c for c in FEATURE_COLUMNS if c != "roll_yield"]
"""The columns ``features_finite_after_warmup`` reads (roll_yield needs a second contract trading)."""
INTRADAY_FEATURE_COLUMNS = ["series", "session", "ts", *FEATURE_COLUMNS, "label", "horizon", "dead_zone"]
"""Columns of the ``intraday_features`` table."""
_NS_PER_S = 10**9
_KEY_SCALE = 10**10  # (contract code, second) -> one sortable int64, as in usecases.intraday
_DAY_SCALE = 10**6  # (contract code, day number) -> one int64


def _session_days(prices: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(prices["session"], utc=True))


def build_intraday_features(prices: pd.DataFrame, bars_per_year: float, carry: np.ndarray | None = None,
                            roll_dates: pd.Series | None = None) -> pd.DataFrame:
    """Feature frame of an intraday Panama series: ts and :data:`FEATURE_COLUMNS`.

    ``prices``: one series' bars in time order (``session``, ``ts`` UTC,
    ``contract``, adjusted OHLC and ``raw_close`` in points,
    ``days_to_expiry``); ``bars_per_year``: the annualisation of ``vol_20``
    (bars per session x 252); ``carry``: :func:`intraday_roll_yield` per bar
    (None: NaN); ``roll_dates``: the held contract's planned roll date per bar
    (UTC midnight; None: NaN). Every window is in bars; see the module docstring
    for the four intraday rules.
    """
    ts = pd.DatetimeIndex(pd.to_datetime(prices["ts"], utc=True))
    # naive UTC into the daily code (a tz-aware column comes back as Python objects); set back below
    table = build_features(prices.assign(root="", ts=ts.tz_localize(None)),
                           None if carry is None else pd.Series(carry), None)
    table["ts"] = ts
    r = contract_returns(prices)
    day = _session_days(prices)
    table["vol_20"] = (r.rolling(20).std() * annualisation(bars_per_year)).to_numpy()
    if roll_dates is not None:
        planned = pd.DatetimeIndex(pd.to_datetime(roll_dates, utc=True))
        table["days_to_roll"] = np.asarray((planned - day).days, dtype=float)
    table["day_of_week"] = np.asarray(day.dayofweek, dtype=float)
    table["month"] = np.asarray(day.month, dtype=float)
    return table.drop(columns="root")


def _planned_per_bar(prices: pd.DataFrame, contracts: Sequence[Contract], days_before: int) -> pd.Series:
    """The held contract's planned roll date per bar (UTC), computed once per contract."""
    codes, unique = pd.factorize(prices["contract"].astype(str))
    planned = planned_roll_dates(pd.DataFrame({"contract": np.asarray(unique, dtype=object)}), contracts, days_before)
    per_bar = pd.DatetimeIndex(planned).take(codes)
    return pd.Series(per_bar, index=prices.index, name="planned_roll")


def intraday_roll_yield(sb: SessionedBars, prices: pd.DataFrame, contracts: Sequence[Contract]) -> np.ndarray:
    """Annualised roll yield of the held contract at every bar (fraction per year).

    ``(raw_close - next_close) / next_close x 365 / days between the two last
    trades``, where *next* is the first contract expiring after the held one
    with a bar at or before this one in the same session, and ``next_close``
    its last close by then (the daily rule, bar by bar); NaN without one. Uses
    no bar after t. ``sb``: the market's bars by session
    (:func:`~fbt_pipelines.usecases.intraday.sessioned_bars`); ``prices``: the
    series (``session``, ``ts``, ``contract``, ``raw_close``).
    """
    n = len(prices)
    out = np.full(n, np.nan)
    if n == 0 or len(sb) == 0:
        return out
    last_trade = {c.contract_id: np.datetime64(c.last_trade, "D") for c in contracts}
    expiry = np.array([last_trade.get(str(c), np.datetime64("NaT", "D")) for c in sb.contracts])
    names = prices["contract"].astype(str).to_numpy(dtype=object)
    held = np.minimum(np.searchsorted(sb.contracts, names), len(sb.contracts) - 1)
    known = sb.contracts[held] == names
    day = _session_days(prices).tz_localize(None).to_numpy().astype("datetime64[D]")
    # which contracts trade in which session: one (contract, day) key per pair
    present = set(np.unique(sb.code * _DAY_SCALE + sb.day.astype("int64")).tolist())
    order = [k for k in np.argsort(expiry, kind="stable") if not np.isnat(expiry[k])]
    later = {k: [m for m in order if expiry[m] > expiry[k]] for k in range(len(sb.contracts))}
    pairs, inverse = np.unique(np.where(known, held * _DAY_SCALE + day.astype("int64"), -1), return_inverse=True)
    inverse = inverse.ravel()
    # per (held contract, session): the later contracts trading in that session, by expiry (a few thousand pairs)
    candidates = [[] if p < 0 else [m for m in later.get(p // _DAY_SCALE, []) if m * _DAY_SCALE + p % _DAY_SCALE
                                    in present] for p in pairs.tolist()]
    ts_s = pd.DatetimeIndex(pd.to_datetime(prices["ts"], utc=True)).as_unit("ns").asi8 // _NS_PER_S
    keys = sb.code * _KEY_SCALE + sb.ts // _NS_PER_S
    raw = prices["raw_close"].to_numpy(float)
    for j in range(max(map(len, candidates), default=0)):
        nth = np.array([c[j] if len(c) > j else -1 for c in candidates], dtype=np.int64)[inverse]
        rows = np.flatnonzero((nth >= 0) & np.isnan(out))
        if len(rows) == 0:
            break
        pos = np.searchsorted(keys, nth[rows] * _KEY_SCALE + ts_s[rows], "right") - 1
        safe = np.maximum(pos, 0)
        # the candidate's last close at or before the bar, in the same session (a later one is skipped)
        found = (pos >= 0) & (sb.code[safe] == nth[rows]) & (sb.day[safe] == day[rows]) & (sb.close[safe] > 0)
        rows, safe = rows[found], safe[found]
        next_close = sb.close[safe]
        days = (expiry[nth[rows]] - expiry[held[rows]]).astype("int64").astype(float)
        out[rows] = (raw[rows] - next_close) / next_close * 365.0 / days
    return out


@dataclass(frozen=True)
class IntradayFeatures:
    """One series' features table and what its check reads.

    ``table``: :data:`INTRADAY_FEATURE_COLUMNS`, one row per bar of the series.
    """

    key: str
    interval: str
    table: pd.DataFrame
    label: LabelConfig
    bars_per_year: float

    @property
    def finite_after_warmup(self) -> float:
        """Share of rows after the first :data:`WARMUP_BARS` with every checked feature set.

        The daily check's rule (no NaN among :data:`CHECKED_COLUMNS`); 0 when
        there is no such row.
        """
        if len(self.table) <= WARMUP_BARS:
            return 0.0
        return float(self.table[CHECKED_COLUMNS].iloc[WARMUP_BARS:].notna().all(axis=1).mean())

    @property
    def roll_yield_share(self) -> float:
        """Share of rows with a roll yield (a second contract traded in the session by then)."""
        return float(self.table["roll_yield"].notna().mean()) if len(self.table) else 0.0

    @property
    def labelled_rows(self) -> int:
        return int(self.table["label"].notna().sum())

    @property
    def up_label_share(self) -> float:
        """Share of labelled rows whose label is an up move (NaN with no label)."""
        return float(self.table["label"].mean())


def intraday_features(key: str, interval: str, prices: pd.DataFrame, spec: ContractSpec,
                      contracts: Sequence[Contract], sb: SessionedBars | None = None,
                      label: LabelConfig = LabelConfig()) -> IntradayFeatures:
    """The features table of series ``key`` from its stored Panama ``prices``.

    ``prices``: :func:`~fbt_pipelines.usecases.intraday.read_intraday_prices`
    (ts order); ``sb``: the market's bars by session for the roll yield (None:
    roll_yield NaN); ``label``: horizon (bars) and dead zone of the label.
    """
    if prices.empty:
        raise DataError(f"no intraday continuous prices for {key}: materialize intraday_continuous_prices")
    prices = prices.reset_index(drop=True)
    ppy = periods_per_year(spec, interval)
    carry = intraday_roll_yield(sb, prices, contracts) if sb is not None else None
    planned = _planned_per_bar(prices, contracts, spec.roll_days_before)
    table = build_intraday_features(prices, ppy, carry, planned)
    table["label"] = forward_return_label(prices, label.horizon, label.dead_zone).to_numpy()
    table["horizon"] = label.horizon
    table["dead_zone"] = float(label.dead_zone)
    table["series"] = key
    table["session"] = _session_days(prices)
    return IntradayFeatures(key, interval, table[INTRADAY_FEATURE_COLUMNS], label, ppy)


def store_intraday_features(conn, features: IntradayFeatures) -> str:
    """Replace series ``key``'s rows of ``intraday_features``; returns their data version."""
    return wh.replace_partition(conn, "intraday_features", features.key, features.table)
