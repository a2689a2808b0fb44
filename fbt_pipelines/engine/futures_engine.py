"""fbt's vectorised futures engine: target contracts in, trades and equity out.

Correctness rules (see DESIGN.md section 5):

- a target decided on bar t's close fills at bar t+1's open (``next_open``) or
  close (``next_close``); never on the bar that produced it;
- P&L = change in back-adjusted (Panama) price x multiplier x contracts, in
  the contract currency; Panama point changes equal the held contract's, so
  this is exact across rolls;
- each fill costs commission per contract per side plus slippage in ticks;
- an open position is rolled at each roll date's close: one round trip of
  costs, recorded as a roll trade;
- a trade that would need more initial margin than the equity is cut to the
  whole contracts the equity can carry; the refused contracts are recorded.
  Margin per contract may change over time (``margins``, one value per bar,
  e.g. from :func:`fbt_pipelines.futures.margin.margin_per_bar`): a fill on
  bar t is checked against bar t's margin, and margin in use is
  |contracts| x bar t's margin. A rise never forces a reduction of contracts
  already held (no maintenance-margin liquidation).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.kernel import FILL_NEXT_CLOSE, FILL_NEXT_OPEN, ROLL, TRADE, backtest_nb, bar_state_nb

TRADE_COLUMNS = [
    "ts", "contract", "kind", "contracts", "price", "raw_price", "to_raw_price", "commission", "slippage", "refused",
]

# trade kinds by kernel code (TRADE = 0, ROLL = 1), with the dtype pandas gives a column of Python strings
_KIND_LABELS = pd.Series(np.array(["trade", "roll"])).array
assert TRADE == 0 and ROLL == 1, "_KIND_LABELS is indexed by the kernel's kind code"


@dataclass(frozen=True)
class EngineConfig:
    """Frozen backtest settings; :meth:`config_hash` tags every result.

    Attributes
    ----------
    initial_capital : float
        Starting equity, contract currency.
    slippage_ticks : float
        Ticks lost per contract per side on every fill (and each roll leg).
    fill : "next_open" | "next_close"
        When a target decided on bar t's close is filled.
    commission : float | None
        Per contract per side; ``None`` takes the market's catalogue value.
    """

    initial_capital: float = 1_000_000.0
    slippage_ticks: float = 1.0
    fill: Literal["next_open", "next_close"] = "next_open"
    commission: float | None = None

    def __post_init__(self) -> None:
        # NaN fails every comparison: test for the valid range (and finiteness) so NaN/inf are refused
        if not (math.isfinite(self.initial_capital) and self.initial_capital > 0):
            raise ValueError(f"initial_capital must be finite and > 0, got {self.initial_capital}")
        if not (math.isfinite(self.slippage_ticks) and self.slippage_ticks >= 0):
            raise ValueError(f"slippage_ticks must be finite and >= 0, got {self.slippage_ticks}")
        if self.fill not in ("next_open", "next_close"):
            raise ValueError(f"fill must be 'next_open' or 'next_close', got {self.fill!r}")
        if self.commission is not None and not (math.isfinite(self.commission) and self.commission >= 0):
            raise ValueError(f"commission must be finite and >= 0, got {self.commission}")

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _KernelRun:
    """What :func:`run_backtest` keeps to build the frames on demand: the
    kernel's outputs and the input columns (pandas Series: copy-on-write keeps
    them as they were at the call even if the caller's frame changes later)."""

    ts: pd.Series
    contract: pd.Series
    close_column: pd.Series  # held so that ``close`` (a view of it) stays as it was
    close: np.ndarray
    raw_close: pd.Series
    margin: np.ndarray  # float64[n] per bar, or float64[1] for every bar
    equity: np.ndarray
    t_bar: np.ndarray
    t_kind: np.ndarray
    t_qty: np.ndarray
    t_price: np.ndarray
    t_comm: np.ndarray
    t_slip: np.ndarray
    t_refused: np.ndarray


class BacktestResult:
    """Per-bar path and trades of one backtest.

    ``equity`` (float64 array, currency at each bar's close) is computed by
    the kernel's single pass; ``bars`` and ``trades`` are pandas frames built
    from the kernel's arrays the first time they are read (then kept), so a
    caller that needs only the equity curve or the final P&L pays for neither.

    ``bars`` columns: ts, contract, close (adjusted points), position
    (contracts at the close), equity (currency at the close), pnl (currency,
    change in equity), margin (currency in use: |position| x the bar's margin
    per contract), costs (commission + slippage,
    currency). ``trades`` columns: :data:`TRADE_COLUMNS`.

    ``BacktestResult(bars=..., trades=..., initial_capital=...)`` wraps frames
    built elsewhere (``bars`` must then have an ``equity`` column).
    """

    def __init__(self, bars: pd.DataFrame | None = None, trades: pd.DataFrame | None = None,
                 initial_capital: float = 0.0, *, _run: _KernelRun | None = None) -> None:
        if _run is None and (bars is None or trades is None):
            raise TypeError("BacktestResult needs bars and trades frames")
        self.initial_capital = float(initial_capital)
        self._run = _run
        if bars is not None:
            self.__dict__["bars"] = bars
        if trades is not None:
            self.__dict__["trades"] = trades

    def __repr__(self) -> str:
        return (f"BacktestResult(bars={len(self.equity)}, initial_capital={self.initial_capital}, "
                f"final_equity={self.final_equity})")

    @cached_property
    def equity(self) -> np.ndarray:
        """Equity at each bar's close (currency), read-only."""
        eq = self._run.equity if self._run is not None else self.bars["equity"].to_numpy(float)
        eq = eq.view()
        eq.flags.writeable = False
        return eq

    @property
    def final_equity(self) -> float:
        return float(self.equity[-1]) if len(self.equity) else self.initial_capital

    @property
    def net_pnl(self) -> float:
        return self.final_equity - self.initial_capital

    @cached_property
    def bars(self) -> pd.DataFrame:
        r = self._run
        n = len(r.equity)
        position, margin, costs = bar_state_nb(n, r.t_bar, r.t_kind, r.t_qty, r.t_comm, r.t_slip, r.margin)
        # copy=False: the frame owns these fresh arrays as they are (no 2-D block
        # stacking, ~6x faster); close and equity are copied so the frame never
        # shares memory with the caller's prices or with ``self.equity``
        return pd.DataFrame({
            "ts": r.ts.array, "contract": r.contract.array, "close": r.close.copy(),
            "position": position, "equity": r.equity.copy(),
            "pnl": np.diff(r.equity, prepend=self.initial_capital),
            "margin": margin, "costs": costs,
        }, copy=False)

    @cached_property
    def trades(self) -> pd.DataFrame:
        r = self._run
        # .array keeps the dtype: .to_numpy() on tz-aware ts builds an object array of
        # Timestamps (~1.7 s per million bars)
        ts, contract = r.ts.array, r.contract.array
        t_bar = r.t_bar
        # raw (traded) prices: Panama offset of a bar is close - raw_close
        raw_close = r.raw_close.to_numpy(float)
        offset = r.close[t_bar] - raw_close[t_bar]
        last = len(r.close) - 1
        nxt = np.minimum(t_bar + 1, last)
        next_offset = r.close[nxt] - raw_close[nxt]
        is_roll = r.t_kind == ROLL
        return pd.DataFrame({
            "ts": ts[t_bar], "contract": contract[t_bar],
            "kind": _KIND_LABELS.take(r.t_kind),
            "contracts": r.t_qty, "price": r.t_price, "raw_price": r.t_price - offset,
            # a roll's new leg is bought at the next contract's close on the roll date
            "to_raw_price": np.where(is_roll, r.t_price - next_offset, np.nan),
            "commission": r.t_comm, "slippage": r.t_slip, "refused": r.t_refused,
        }, columns=TRADE_COLUMNS)


def _whole_contracts(target, n: int) -> np.ndarray:
    """``target`` as contiguous int64 contracts (no copy when it already is)."""
    target = np.asarray(target)
    if target.shape != (n,):
        raise ValueError(f"target has shape {target.shape}, prices have {n} rows")
    if target.dtype.kind in "iu":  # integers are whole and finite
        return np.ascontiguousarray(target, dtype=np.int64)
    if target.dtype.kind not in "bf":  # object/str arrays: np.isfinite would raise an opaque TypeError
        raise ValueError(f"target must be whole contracts (finite integers), got dtype {target.dtype}")
    if not np.all(np.isfinite(target)) or not np.all(target == np.round(target)):
        raise ValueError("target must be whole contracts (finite integers)")
    return target.astype(np.int64)


def _margin_per_bar(margins, spec: ContractSpec, n: int) -> np.ndarray:
    """float64[1] (the catalogue margin on every bar) or the validated float64[n]."""
    if margins is None:
        return np.array([float(spec.initial_margin)])
    per_contract = np.asarray(margins)
    if per_contract.shape != (n,):
        raise ValueError(f"margins has shape {per_contract.shape}, prices have {n} rows")
    if per_contract.dtype.kind not in "iuf":
        raise ValueError(f"margins must be numbers (currency per contract), got dtype {per_contract.dtype}")
    per_contract = np.ascontiguousarray(per_contract, dtype=np.float64)
    if not np.all(np.isfinite(per_contract)) or np.any(per_contract < 0):
        raise ValueError("margins must be finite and >= 0 (currency per contract)")
    return per_contract


def run_backtest(
    prices: pd.DataFrame,
    target: np.ndarray,
    spec: ContractSpec,
    config: EngineConfig,
    margins: np.ndarray | None = None,
) -> BacktestResult:
    """Run the engine on one market's continuous (Panama) prices.

    Parameters
    ----------
    prices
        Continuous prices with columns ts, contract, open, close (adjusted
        points), raw_close (points) and roll (bool), one row per session.
    target
        Whole contracts wanted after each bar's close (signed; length = rows).
    spec
        The market: multiplier, tick size, commission, initial margin.
    margins
        Initial margin per contract in force at each bar (contract currency,
        float, finite, >= 0; length = rows); ``None`` uses
        ``spec.initial_margin`` on every bar. 0 on a bar means no margin
        check for fills on that bar.

    One Numba pass computes the equity curve and the trades (and checks that
    every open and close is finite); the ``bars`` and ``trades`` frames are
    built when first read (see :class:`BacktestResult`).
    """
    n = len(prices)
    target = _whole_contracts(target, n)
    per_contract = _margin_per_bar(margins, spec, n)
    open_ = prices["open"].to_numpy(float)
    close_column = prices["close"]
    close = close_column.to_numpy(float)
    roll = prices["roll"].to_numpy(bool)
    commission = spec.commission if config.commission is None else config.commission
    (equity, t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused, bad_row) = backtest_nb(
        target, open_, close, roll,
        float(spec.multiplier), float(commission), float(config.slippage_ticks * spec.tick_size),
        per_contract, float(config.initial_capital),
        FILL_NEXT_OPEN if config.fill == "next_open" else FILL_NEXT_CLOSE,
    )
    if bad_row >= 0:
        for col, values in (("open", open_), ("close", close)):
            if not np.isfinite(values).all():
                raise ValueError(f"prices.{col} has non-finite values")
    run = _KernelRun(
        ts=prices["ts"], contract=prices["contract"], close_column=close_column, close=close,
        raw_close=prices["raw_close"],
        margin=per_contract, equity=equity, t_bar=t_bar, t_kind=t_kind, t_qty=t_qty, t_price=t_price,
        t_comm=t_comm, t_slip=t_slip, t_refused=t_refused,
    )
    return BacktestResult(initial_capital=config.initial_capital, _run=run)
