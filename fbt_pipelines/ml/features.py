"""Features of one market from its continuous (Panama) prices, plus
cross-market features joined on the pooled table.

Every feature at bar t uses data up to and including t's close only (the
cross-market ones: the other market's sessions strictly before t).
Returns are the held contract's own percentage returns: on a Panama series the
point change is exact, and the denominator is the held contract's raw price
at the previous close, ``close[t-1] - (close[t] - raw_close[t])``.

Causality by construction. Panama adjustment adds the sum of all *later*
roll gaps to every earlier bar, so the level of ``close`` at t moves whenever
a later roll gap changes (new data, a corrected print). A feature may use only
what that shift cannot move: point differences of the Panama series (any
shift-invariant function of the window: differences, moving-average spreads,
ranges, st. devs. of changes, z-scores), the held contract's raw prices and
returns (``raw_close``, :func:`~fbt_pipelines.primitives.returns.contract_returns`),
a point distance divided by the held raw price, ratio-adjusted series, and
trailing (rolling or expanding) windows. Never a ratio of Panama levels
(``close / close.rolling(n).max()``, a percentage change of ``close``) and
never a statistic of the full sample. ``tests/e2e/test_causality.py`` checks
this end to end by moving every raw price on or after a date.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.expiry import business_day_offset
from fbt_pipelines.primitives.indicators import rsi, wilder_atr
from fbt_pipelines.primitives.performance import annualisation
from fbt_pipelines.primitives.returns import contract_returns

FEATURE_COLUMNS = ["ret_1", "ret_5", "ret_20", "vol_20", "ewmac_16_64", "dist_high_60", "dist_low_60", "rsi_14",
                   "atr_14", "atr_pct_14", "days_to_expiry", "days_to_roll", "roll_yield", "day_of_week", "month"]
"""Own-market features, stored per market in the ``features`` table."""
CROSS_MARKET_SOURCES: tuple[str, ...] = ("ES", "ZN")
"""Markets whose recent returns are features of every market (equity index, 10-year note)."""
CROSS_MARKET_RETURNS: tuple[str, ...] = ("ret_5", "ret_20")
CROSS_MARKET_COLUMNS = [f"{src.lower()}_{col}" for src in CROSS_MARKET_SOURCES for col in CROSS_MARKET_RETURNS]
"""``es_ret_5, es_ret_20, zn_ret_5, zn_ret_20``: joined by :func:`add_cross_market_features`."""
MODEL_FEATURES = FEATURE_COLUMNS + CROSS_MARKET_COLUMNS
RSI_WINDOW = 14
ATR_WINDOW = 14


def _compound(r: pd.Series, window: int) -> pd.Series:
    return np.exp(np.log1p(r).rolling(window).sum()) - 1.0


def planned_roll_dates(prices: pd.DataFrame, contracts: Sequence[Contract], days_before: int) -> pd.Series:
    """Per bar: the held contract's calendar roll date, ``days_before``
    business days before its roll reference (first notice if physically
    delivered, else last trade), as a UTC midnight.

    This is the market's calendar rule, or the backstop of a volume/open-interest
    rule: fixed by the exchange calendar when the contract is listed, so it
    looks at no price. (The realised volume-crossover date would: it depends
    on future volume.) NaT for a contract not in ``contracts``.
    """
    by_id = {c.contract_id: c for c in contracts}
    planned = {cid: pd.Timestamp(business_day_offset(c.roll_reference, -days_before), tz="UTC")
               for cid, c in by_id.items()}
    return pd.Series([planned.get(c, pd.NaT) for c in prices["contract"]], index=prices.index,
                     name="planned_roll", dtype="datetime64[ns, UTC]")


def build_features(prices: pd.DataFrame, carry: pd.Series | None = None,
                   roll_dates: pd.Series | None = None) -> pd.DataFrame:
    """Feature frame: root, ts and :data:`FEATURE_COLUMNS`.

    - ``ret_k``: compounded held-contract return over the last k bars (fraction)
    - ``vol_20``: annualised st. dev. of daily returns over 20 bars (fraction)
    - ``ewmac_16_64``: EWMA(16) - EWMA(64) of the adjusted close, divided by
      the 25-bar st. dev. of daily point changes (a unit-free trend forecast)
    - ``dist_high_60``: (close - its 60-bar high) / the held contract's raw
      close (<= 0, a fraction of the held price). Not ``close / high - 1``:
      that ratio of Panama levels moves with every later roll gap
    - ``dist_low_60``: (close - its 60-bar low) / the held contract's raw close
      (>= 0, a fraction of the held price; point distances are exact on a
      Panama series, and the raw price stays positive where adjusted ones may not)
    - ``rsi_14``: Wilder's RSI over 14 bars (0-100) of the adjusted close
    - ``atr_14``: Wilder's average true range over 14 bars, in points;
      ``atr_pct_14``: the same over the held raw close (fraction)
    - ``days_to_expiry``: calendar days to the held contract's last trade
    - ``days_to_roll``: calendar days from the bar to the held contract's
      planned roll date (``roll_dates``, see :func:`planned_roll_dates`;
      NaN when not given)
    - ``roll_yield``: annualised carry of the held contract against the next
      (``carry``, from :func:`fbt_pipelines.futures.back_adjust.roll_yield`;
      NaN when not given)
    - ``day_of_week`` (0 = Monday) and ``month`` (1-12) of the trading day (UTC date)
    """
    close = prices["close"].astype(float)
    raw = prices["raw_close"].astype(float)
    r = contract_returns(prices)
    point_vol = close.diff().rolling(25).std()
    ewmac = (close.ewm(span=16, adjust=False).mean() - close.ewm(span=64, adjust=False).mean()) / point_vol
    ts = pd.DatetimeIndex(pd.to_datetime(prices["ts"], utc=True))
    if "high" in prices.columns and "low" in prices.columns:
        atr = wilder_atr(prices["high"], prices["low"], close, ATR_WINDOW).to_numpy()
    else:
        atr = np.full(len(prices), np.nan)
    if roll_dates is None:
        to_roll = np.full(len(prices), np.nan)
    else:
        planned = pd.DatetimeIndex(pd.to_datetime(np.asarray(roll_dates), utc=True))
        to_roll = np.asarray((planned - ts).days, dtype=float)
    return pd.DataFrame({
        "root": prices["root"].to_numpy(),
        "ts": prices["ts"].to_numpy(),
        "ret_1": r.to_numpy(),
        "ret_5": _compound(r, 5).to_numpy(),
        "ret_20": _compound(r, 20).to_numpy(),
        "vol_20": (r.rolling(20).std() * annualisation()).to_numpy(),
        "ewmac_16_64": ewmac.to_numpy(),
        "dist_high_60": ((close - close.rolling(60).max()) / raw).to_numpy(),
        "dist_low_60": ((close - close.rolling(60).min()) / raw).to_numpy(),
        "rsi_14": rsi(close.to_numpy(), RSI_WINDOW),
        "atr_14": atr,
        "atr_pct_14": atr / raw.to_numpy(),
        "days_to_expiry": prices["days_to_expiry"].astype(float).to_numpy(),
        "days_to_roll": to_roll,
        "roll_yield": np.full(len(prices), np.nan) if carry is None else np.asarray(carry, dtype=float),
        "day_of_week": np.asarray(ts.dayofweek, dtype=float),
        "month": np.asarray(ts.month, dtype=float),
    })


def add_cross_market_features(table: pd.DataFrame, sources: Sequence[str] = CROSS_MARKET_SOURCES,
                              returns: Sequence[str] = CROSS_MARKET_RETURNS) -> pd.DataFrame:
    """The pooled features ``table`` (every market's rows: root, ts, ret_5,
    ret_20, ...) with ``<source>_<ret>`` columns for every market.

    Alignment: the row of market m at session t gets the source market's value
    at the source's last session strictly *before* t. Same-day values would
    peek: the daily bars of different markets close at different times (ES
    settles after CL), and the label of t starts at m's own close of t. The
    source market's own rows get its previous session's value too.

    A source market absent from ``table`` gives an all-NaN column (see
    :func:`available_features`, which drops such columns from the model).
    Row order and index are kept.
    """
    out = table.copy()
    ts = pd.to_datetime(out["ts"], utc=True)
    left = pd.DataFrame({"ts": ts.to_numpy(), "_row": np.arange(len(out))}).sort_values("ts", kind="stable")
    for src in sources:
        mine = table[table["root"] == src]
        cols = [f"{src.lower()}_{c}" for c in returns]
        if mine.empty:
            for c in cols:
                out[c] = np.nan
            continue
        right = pd.DataFrame({"ts": pd.to_datetime(mine["ts"], utc=True).to_numpy(),
                              **{c: mine[r].to_numpy(float) for c, r in zip(cols, returns)}}).sort_values("ts")
        joined = pd.merge_asof(left, right, on="ts", direction="backward", allow_exact_matches=False)
        joined = joined.sort_values("_row")
        for c in cols:
            out[c] = joined[c].to_numpy()
    return out


def available_features(table: pd.DataFrame, candidates: Sequence[str] = MODEL_FEATURES) -> list[str]:
    """The ``candidates`` the model can use on ``table``: present with at least
    one finite value (a cross-market feature whose source market is not in
    the warehouse, or roll_yield without a second contract, is left out
    rather than dropping every row)."""
    return [c for c in candidates if c in table.columns and np.isfinite(table[c].to_numpy(float)).any()]


def forward_return_label(prices: pd.DataFrame, horizon: int = 5, dead_zone: float = 0.0) -> pd.Series:
    """1.0 if the held-contract return over the next ``horizon`` bars is > 0,
    0.0 if not, NaN where the horizon runs past the data. The label of bar t
    uses bars t+1..t+horizon: it is a target, never a feature.

    ``dead_zone`` (a fraction, >= 0): a move with ``|return| < dead_zone``
    gets NaN, i.e. the row is excluded from training and from the out-of-sample
    scores (small moves are mostly noise and cost more than they earn). The
    model still predicts on such rows. 0 (default) keeps every row (a return
    of exactly 0 is a 0 label).
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not dead_zone >= 0:
        raise ValueError(f"dead_zone must be >= 0, got {dead_zone}")
    fwd = forward_return(prices, horizon)
    label = np.where(fwd.isna(), np.nan, (fwd > 0).astype(float))
    if dead_zone > 0:
        label = np.where(np.abs(fwd.to_numpy()) < dead_zone, np.nan, label)
    return pd.Series(label, index=prices.index, name="label")


def forward_return(prices: pd.DataFrame, horizon: int) -> pd.Series:
    """Compounded held-contract return over bars t+1..t+horizon (NaN past the data)."""
    r = contract_returns(prices)
    return ((np.exp(np.log1p(r).rolling(horizon).sum()) - 1.0).shift(-horizon)).rename("forward_return")
