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
  |contracts| x bar t's margin;
- with a maintenance margin (``maintenance_margins``), at each close an
  equity below maintenance x contracts held is a margin call: at the next
  fill the smallest number of contracts is liquidated that brings the
  equity back to the initial margin of what is left (trade reason
  ``margin_call``); an equity at or below zero at a close stops the account
  (what is held is liquidated at the next fill, nothing trades after it).
  Without one (``None``) the engine has no margin calls: a caller that keeps
  its own account (the PyBroker comparison, the engine's oracles) gets the
  plain accounting;
- stop-loss, take-profit, trailing-stop and limit-entry orders
  (:class:`EngineConfig` ``stop_loss`` ... ``limit_offset``) fill inside a
  bar from its open, high and low by the rules of
  :func:`fbt_pipelines.engine.kernel._orders_nb` (docs/guide.md, "Orders
  and margin").
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
from fbt_pipelines.engine.kernel import backtest_nb, bar_state_nb, margin_runs_nb
from fbt_pipelines.engine.rules import Distance, DistanceUnit, FillRule, TradeKind, TradeReason
from fbt_pipelines.futures.margin import MarginSchedule
from fbt_pipelines.primitives.indicators import wilder_atr

TRADE_COLUMNS = [
    "ts", "contract", "kind", "reason", "contracts", "price", "raw_price", "to_raw_price", "commission", "slippage",
    "refused",
]
ATR_WINDOW = 14  # bars of Wilder's ATR behind an "atr" distance

# trade-kind and reason labels indexed by code, with the dtype pandas gives a column of Python strings
_KIND_LABELS = pd.Series(np.array([kind.label for kind in sorted(TradeKind)])).array
_REASON_LABELS = pd.Series(np.array([reason.label for reason in sorted(TradeReason)])).array
assert [int(kind) for kind in sorted(TradeKind)] == list(range(len(TradeKind))), "_KIND_LABELS is indexed by code"
assert [int(r) for r in sorted(TradeReason)] == list(range(len(TradeReason))), "_REASON_LABELS is indexed by code"

ORDER_FIELDS = ("stop_loss", "take_profit", "trailing_stop", "limit_offset")  # EngineConfig's order distances


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
        When a target decided on bar t's close is filled (the label of a
        :class:`~fbt_pipelines.engine.rules.FillRule`; :attr:`fill_rule` is
        the rule itself).
    commission : float | None
        Per contract per side; ``None`` takes the market's catalogue value.
    stop_loss, take_profit, trailing_stop : str | None
        Distances of the exit orders from the entry fill (the trailing stop:
        from the best close since entry), spelled ``"40"`` (points),
        ``"2%"`` or ``"3atr"`` (:class:`~fbt_pipelines.engine.rules.Distance`);
        ``None``: no such order. Kept in their canonical spelling.
    limit_offset : str | None
        Entries become limit orders this far beyond the deciding bar's close
        (below it for a buy, above for a sell); ``None``: market entries.
    """

    initial_capital: float = 1_000_000.0
    slippage_ticks: float = 1.0
    fill: Literal["next_open", "next_close"] = "next_open"
    commission: float | None = None
    stop_loss: str | None = None
    take_profit: str | None = None
    trailing_stop: str | None = None
    limit_offset: str | None = None

    def __post_init__(self) -> None:
        # NaN fails every comparison: test for the valid range (and finiteness) so NaN/inf are refused
        if not (math.isfinite(self.initial_capital) and self.initial_capital > 0):
            raise ValueError(f"initial_capital must be finite and > 0, got {self.initial_capital}")
        if not (math.isfinite(self.slippage_ticks) and self.slippage_ticks >= 0):
            raise ValueError(f"slippage_ticks must be finite and >= 0, got {self.slippage_ticks}")
        FillRule.from_label(self.fill)  # ValueError naming the bad value
        if self.commission is not None and not (math.isfinite(self.commission) and self.commission >= 0):
            raise ValueError(f"commission must be finite and >= 0, got {self.commission}")
        for name in ORDER_FIELDS:
            value = getattr(self, name)
            if value is not None:  # canonical spelling, so equal settings hash alike
                object.__setattr__(self, name, Distance.parse(value, name).label)

    def distance(self, name: str) -> Distance | None:
        """The :class:`Distance` of order field ``name`` (None when unset)."""
        value = getattr(self, name)
        return None if value is None else Distance.parse(value, name)

    @property
    def has_orders(self) -> bool:
        """True when a stop, target, trailing stop or limit offset is set (the bar's high and low are read)."""
        return any(getattr(self, name) is not None for name in ORDER_FIELDS)

    @property
    def fill_rule(self) -> FillRule:
        """The :class:`FillRule` of :attr:`fill`."""
        return FillRule.from_label(self.fill)

    def config_hash(self) -> str:
        """16 hex of the settings (order fields only when set: a config without
        orders keeps the hash it had before they existed)."""
        fields = {k: v for k, v in asdict(self).items() if k not in ORDER_FIELDS or v is not None}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


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
    margins: MarginSchedule
    equity: np.ndarray
    t_bar: np.ndarray
    t_kind: np.ndarray
    t_qty: np.ndarray
    t_price: np.ndarray
    t_comm: np.ndarray
    t_slip: np.ndarray
    t_refused: np.ndarray
    t_reason: np.ndarray
    stopped_bar: int


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
    currency). ``trades`` columns: :data:`TRADE_COLUMNS` (``kind``: trade or
    roll; ``reason``: a :class:`~fbt_pipelines.engine.rules.TradeReason`
    label). :attr:`margin_calls` and :attr:`account_stopped` say when the
    account was called or stopped.

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
    def margin_calls(self) -> pd.DataFrame:
        """One row per margin call: ``called`` (ts of the close that found the
        equity below maintenance, UTC), ``ts`` (the fill that liquidated),
        ``contracts`` (signed, 0 when nothing had to go), ``price`` (adjusted
        points, slippage included)."""
        trades = self.trades
        calls = trades[trades["reason"] == TradeReason.MARGIN_CALL.label]
        if self._run is not None:
            bars = self._run.t_bar[self._run.t_reason == TradeReason.MARGIN_CALL]
            called = self._run.ts.array[np.maximum(bars - 1, 0)]
        else:
            ts = pd.DatetimeIndex(self.bars["ts"])
            called = ts[np.maximum(ts.searchsorted(pd.DatetimeIndex(calls["ts"])) - 1, 0)]
        return pd.DataFrame({"called": called, "ts": calls["ts"].array, "contracts": calls["contracts"].to_numpy(),
                             "price": calls["price"].to_numpy()})

    @property
    def account_stopped(self) -> pd.Timestamp | None:
        """The ts of the close at which the equity was at or below zero (the
        account stopped trading), or None."""
        if self._run is not None:
            return None if self._run.stopped_bar < 0 else self._run.ts.iloc[self._run.stopped_bar]
        eq = self.equity
        hit = np.flatnonzero(eq <= 0)
        return None if len(hit) == 0 else self.bars["ts"].iloc[int(hit[0])]

    @cached_property
    def bars(self) -> pd.DataFrame:
        r = self._run
        n = len(r.equity)
        state = bar_state_nb(n, r.t_bar, r.t_kind, r.t_qty, r.t_comm, r.t_slip, r.margins.starts, r.margins.initial)
        # copy=False: the frame owns these fresh arrays as they are (no 2-D block
        # stacking, ~6x faster); close and equity are copied so the frame never
        # shares memory with the caller's prices or with ``self.equity``
        return pd.DataFrame({
            "ts": r.ts.array, "contract": r.contract.array, "close": r.close.copy(),
            "position": state.position, "equity": r.equity.copy(),
            "pnl": np.diff(r.equity, prepend=self.initial_capital),
            "margin": state.margin_used, "costs": state.costs,
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
        # a roll at the last bar's close goes into the series' last segment, which a
        # back-adjusted series (Panama, ratio) leaves unadjusted: offset 0
        next_offset = np.where(t_bar < last, r.close[nxt] - raw_close[nxt], 0.0)
        is_roll = r.t_kind == TradeKind.ROLL
        return pd.DataFrame({
            "ts": ts[t_bar], "contract": contract[t_bar],
            "kind": _KIND_LABELS.take(r.t_kind), "reason": _REASON_LABELS.take(r.t_reason),
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


def _margin_per_bar(margins, spec: ContractSpec, n: int, name: str = "margins", check: bool = True) -> np.ndarray:
    """Margins per contract as float64[1] (one for every bar) or float64[n].

    float64[1]: the catalogue initial margin, or the one number given; else
    the float64[n] given. Its values are validated unless not ``check``."""
    if margins is None:
        return np.array([float(spec.initial_margin)])
    per_contract = np.asarray(margins)
    if per_contract.ndim == 0:
        per_contract = per_contract.reshape(1)
    elif per_contract.shape != (n,):
        raise ValueError(f"{name} has shape {per_contract.shape}, prices have {n} rows")
    if per_contract.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numbers (currency per contract), got dtype {per_contract.dtype}")
    per_contract = np.ascontiguousarray(per_contract, dtype=np.float64)
    if check:
        _check_margin_values(per_contract, name)
    return per_contract


def _check_margin_values(per_contract: np.ndarray, name: str) -> None:
    """``ValueError`` unless every margin (currency per contract) is finite and >= 0."""
    # one reduction for both tests (min is NaN if any value is NaN; inf fails the sum)
    low, total = float(per_contract.min()) if len(per_contract) else 0.0, float(per_contract.sum())
    if not (low >= 0 and math.isfinite(total)):
        raise ValueError(f"{name} must be finite and >= 0 (currency per contract)")


def margin_schedule_of(margins, maintenance_margins, spec: ContractSpec, n: int) -> MarginSchedule:
    """The engine's :class:`MarginSchedule` from :func:`run_backtest`'s margin arguments.

    ``margins`` and ``maintenance_margins``, validated (see there). Per-bar arrays are checked and cut into segments by one compiled pass
    (:func:`~fbt_pipelines.engine.kernel.margin_runs_nb`); a value it doubts
    goes to the exact checks, which raise as before (and in the same order)."""
    if isinstance(margins, MarginSchedule):
        if maintenance_margins is not None:
            raise ValueError("maintenance_margins must be None when margins is a MarginSchedule (it holds both)")
        if margins.n != n:
            raise ValueError(f"the margin schedule covers {margins.n} bars, prices have {n} rows")
        return margins
    initial = _margin_per_bar(margins, spec, n, check=False)

    def check_values() -> None:
        if margins is not None:
            _check_margin_values(initial, "margins")
        if maint is not None:
            _check_margin_values(maint, "maintenance_margins")

    maint = None
    try:
        if maintenance_margins is not None:
            maint = _margin_per_bar(maintenance_margins, spec, n, "maintenance_margins", check=False)
    except ValueError:
        check_values()  # the margins' values are checked before the maintenance margins' shape
        raise
    if len(initial) == 1 and (maint is None or len(maint) == 1):
        check_values()
        return MarginSchedule.constant(n, float(initial[0]), np.nan if maint is None else float(maint[0]))
    starts = margin_runs_nb(initial, np.zeros(0) if maint is None else maint, n)
    if len(starts) == 0:  # a value NaN, infinite, negative or huge: the exact checks
        check_values()
        full = initial if len(initial) == n else np.full(n, initial[0])
        if maint is not None and len(maint) != n:
            maint = np.full(n, maint[0])
        return MarginSchedule.from_per_bar(full, maint)
    k = len(starts)
    return MarginSchedule(starts, initial[starts] if len(initial) == n else np.full(k, initial[0]),
                          np.full(k, np.nan) if maint is None else (maint[starts] if len(maint) == n
                                                                     else np.full(k, maint[0])), n)


def order_arguments(config: EngineConfig, prices: pd.DataFrame) -> tuple:
    """The kernel's order arguments for ``config``.

    ``(sl_unit, sl, tp_unit, tp, tr_unit, tr, lim_unit, lim, atr, raw_off)``
    (units as ``int``; ``atr``: ATR(14) in points at each close when a
    distance is in ATR, else float64[1]; ``raw_off``: ``close - raw_close``
    per bar in points when a distance is in % and ``prices`` has
    ``raw_close``, else float64[1]: a % distance is of the held contract's
    raw price, which later rolls do not move).
    """
    args: list = []
    need_atr = need_raw = False
    for name in ORDER_FIELDS:
        d = config.distance(name)
        args += [int(DistanceUnit.NONE), 0.0] if d is None else [int(d.unit), float(d.value)]
        need_atr |= d is not None and d.unit is DistanceUnit.ATR
        need_raw |= d is not None and d.unit is DistanceUnit.PERCENT
    atr = np.zeros(1)
    if need_atr:
        atr = np.ascontiguousarray(wilder_atr(prices["high"], prices["low"], prices["close"], ATR_WINDOW)
                                   .to_numpy(float))
    raw_off = np.zeros(1)
    if need_raw and "raw_close" in prices:
        raw_off = np.ascontiguousarray(prices["close"].to_numpy(float) - prices["raw_close"].to_numpy(float))
    return (*args, atr, raw_off)


def price_columns(prices: pd.DataFrame, config: EngineConfig) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) as float64 arrays when ``config`` has orders (they are
    read), else the close twice (not read). Clear error naming the missing
    column or a high below the low."""
    close = prices["close"].to_numpy(float)
    if not config.has_orders:
        return close, close
    missing = [c for c in ("high", "low") if c not in prices]
    if missing:
        raise ValueError(f"stop, target, trailing-stop and limit orders need the bars' high and low; prices lack "
                         f"{', '.join(missing)}")
    return prices["high"].to_numpy(float), prices["low"].to_numpy(float)


def run_backtest(
    prices: pd.DataFrame,
    target: np.ndarray,
    spec: ContractSpec,
    config: EngineConfig,
    margins: np.ndarray | MarginSchedule | None = None,
    maintenance_margins: np.ndarray | float | None = None,
) -> BacktestResult:
    """Run the engine on one market's continuous (Panama) prices.

    Parameters
    ----------
    prices
        Continuous prices with columns ts, contract, open, close (adjusted
        points), raw_close (points) and roll (bool), one row per session;
        also high and low (adjusted points) when ``config`` has stop, target,
        trailing-stop or limit orders.
    target
        Whole contracts wanted after each bar's close (signed; length = rows).
    spec
        The market: multiplier, tick size, commission, initial margin.
    margins
        Initial margin per contract in force at each bar (contract currency,
        float, finite, >= 0; length = rows); ``None`` uses
        ``spec.initial_margin`` on every bar. 0 on a bar means no margin
        check for fills on that bar. Or a
        :class:`~fbt_pipelines.futures.margin.MarginSchedule` (segments, e.g.
        :func:`~fbt_pipelines.futures.margin.margin_schedule` of a dated
        history), which holds the maintenance margins too: the fast form (no
        per-bar array is read or validated).
    maintenance_margins
        Maintenance margin per contract (contract currency, finite, >= 0): one
        number for every bar or one per bar. Given, it switches on margin
        calls and the account stop (module docstring); ``None``: neither.
        :func:`fbt_pipelines.usecases.backtest.backtest_market` always gives
        it (the market's history, else its catalogue value).

    One Numba pass computes the equity curve and the trades (and checks that
    every price it reads is finite); the ``bars`` and ``trades`` frames are
    built when first read (see :class:`BacktestResult`).
    """
    n = len(prices)
    target = _whole_contracts(target, n)
    schedule = margin_schedule_of(margins, maintenance_margins, spec, n)
    open_ = prices["open"].to_numpy(float)
    close_column = prices["close"]
    close = close_column.to_numpy(float)
    high, low = price_columns(prices, config)
    roll = prices["roll"].to_numpy(bool)
    commission = spec.commission if config.commission is None else config.commission
    out = backtest_nb(
        target, open_, high, low, close, roll,
        float(spec.multiplier), float(commission), float(config.slippage_ticks * spec.tick_size),
        schedule.starts, schedule.initial, schedule.maintenance, float(config.initial_capital), int(config.fill_rule),
        *order_arguments(config, prices),
    )
    if out.bad_row >= 0:
        checked = (("open", open_), ("close", close)) + ((("high", high), ("low", low)) if config.has_orders else ())
        for col, values in checked:
            if not np.isfinite(values).all():
                raise ValueError(f"prices.{col} has non-finite values")
    run = _KernelRun(
        ts=prices["ts"], contract=prices["contract"], close_column=close_column, close=close,
        raw_close=prices["raw_close"],
        margins=schedule, equity=out.equity, t_bar=out.t_bar, t_kind=out.t_kind, t_qty=out.t_qty,
        t_price=out.t_price, t_comm=out.t_comm, t_slip=out.t_slip, t_refused=out.t_refused,
        t_reason=out.t_reason, stopped_bar=int(out.stopped_bar),
    )
    return BacktestResult(initial_capital=config.initial_capital, _run=run)
