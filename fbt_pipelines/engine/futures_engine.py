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
from typing import Literal

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.kernel import FILL_NEXT_CLOSE, FILL_NEXT_OPEN, ROLL, simulate_futures_nb

TRADE_COLUMNS = [
    "ts", "contract", "kind", "contracts", "price", "raw_price", "to_raw_price", "commission", "slippage", "refused",
]


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
class BacktestResult:
    """Per-bar path and trades of one backtest.

    ``bars`` columns: ts, contract, close (adjusted points), position
    (contracts at the close), equity (currency at the close), pnl (currency,
    change in equity), margin (currency in use: |position| x the bar's margin
    per contract), costs (commission + slippage,
    currency). ``trades`` columns: :data:`TRADE_COLUMNS`.
    """

    bars: pd.DataFrame
    trades: pd.DataFrame
    initial_capital: float

    @property
    def final_equity(self) -> float:
        return float(self.bars["equity"].iloc[-1]) if len(self.bars) else self.initial_capital

    @property
    def net_pnl(self) -> float:
        return self.final_equity - self.initial_capital


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
    """
    n = len(prices)
    target = np.asarray(target)
    if target.shape != (n,):
        raise ValueError(f"target has shape {target.shape}, prices have {n} rows")
    if target.dtype.kind not in "biuf":  # object/str arrays: np.isfinite would raise an opaque TypeError
        raise ValueError(f"target must be whole contracts (finite integers), got dtype {target.dtype}")
    if not np.all(np.isfinite(target)) or not np.all(target == np.round(target)):
        raise ValueError("target must be whole contracts (finite integers)")
    for col in ("open", "close"):
        if not np.isfinite(prices[col].to_numpy(float)).all():
            raise ValueError(f"prices.{col} has non-finite values")
    if margins is None:
        per_contract = np.full(n, float(spec.initial_margin), dtype=np.float64)
    else:
        per_contract = np.asarray(margins)
        if per_contract.shape != (n,):
            raise ValueError(f"margins has shape {per_contract.shape}, prices have {n} rows")
        if per_contract.dtype.kind not in "iuf":
            raise ValueError(f"margins must be numbers (currency per contract), got dtype {per_contract.dtype}")
        per_contract = np.ascontiguousarray(per_contract, dtype=np.float64)
        if not np.all(np.isfinite(per_contract)) or np.any(per_contract < 0):
            raise ValueError("margins must be finite and >= 0 (currency per contract)")
    commission = spec.commission if config.commission is None else config.commission
    open_ = prices["open"].to_numpy(float)
    close = prices["close"].to_numpy(float)
    roll = prices["roll"].to_numpy(bool)
    out = simulate_futures_nb(
        target.astype(np.int64), open_, close, roll,
        float(spec.multiplier), float(commission), float(config.slippage_ticks * spec.tick_size),
        per_contract, float(config.initial_capital),
        FILL_NEXT_OPEN if config.fill == "next_open" else FILL_NEXT_CLOSE,
    )
    position, equity, margin, costs, t_bar, t_kind, t_qty, t_price, t_comm, t_slip, t_refused = out
    # .array keeps the dtype: .to_numpy() on tz-aware ts builds an object array of
    # Timestamps (~1.7 s per million bars, 1000x the kernel's time)
    ts = prices["ts"].array
    contract = prices["contract"].array
    bars = pd.DataFrame({
        "ts": ts, "contract": contract, "close": close,
        "position": position, "equity": equity,
        "pnl": np.diff(equity, prepend=config.initial_capital),
        "margin": margin, "costs": costs,
    })
    # raw (traded) prices: Panama offset of the bar is close - raw_close
    offset = close - prices["raw_close"].to_numpy(float)
    next_offset = np.r_[offset[1:], offset[-1:]] if n else offset
    is_roll = t_kind == ROLL
    trades = pd.DataFrame({
        "ts": ts[t_bar], "contract": contract[t_bar],
        "kind": np.where(is_roll, "roll", "trade"),
        "contracts": t_qty, "price": t_price, "raw_price": t_price - offset[t_bar],
        # a roll's new leg is bought at the next contract's close on the roll date
        "to_raw_price": np.where(is_roll, t_price - next_offset[t_bar], np.nan),
        "commission": t_comm, "slippage": t_slip, "refused": t_refused,
    }, columns=TRADE_COLUMNS)
    return BacktestResult(bars=bars, trades=trades, initial_capital=config.initial_capital)
