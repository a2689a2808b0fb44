"""Cross-check adapter: run fbt's target positions through lib-pybroker.

:func:`run_pybroker_backtest` takes the same inputs as
:func:`fbt_pipelines.engine.futures_engine.run_backtest` (continuous Panama
prices, whole-contract targets decided at each bar's close, a
:class:`~fbt_pipelines.catalog.specs.ContractSpec` and an
:class:`~fbt_pipelines.engine.futures_engine.EngineConfig`) and replays them
with PyBroker's ``Strategy`` API, so an independent accounting engine checks
fbt's fills and P&L.

PyBroker is built for stocks and crypto; its maintainer states it does not
support futures (edtechre/pybroker issue 43): it has no contract multiplier,
no margin and no rolls. The mapping below keeps the arithmetic exact anyway.

Mapping (fbt -> PyBroker)
-------------------------
- Data: one symbol, the market root (``spec.root``), a DataFrame data source
  with columns date, symbol, open, high, low, close, volume taken from the
  continuous (back-adjusted) prices. ``ts`` becomes a naive-UTC ``date``;
  missing high/low default to max/min(open, close), missing volume to 0.
- Size: one fbt contract = ``multiplier`` PyBroker shares, so PyBroker's P&L
  (shares x price change) equals contracts x multiplier x point change, i.e.
  USD. A non-integer multiplier switches on fractional shares.
- Target: at each bar's close the execution function compares
  ``target[t] x multiplier`` with the net shares held (long - short) and buys
  (``ctx.buy_shares``) or sells (``ctx.sell_shares``) the difference. A sell
  larger than the long position sells it and shorts the rest (PyBroker's
  ``Portfolio.sell``), a buy larger than the short covers it and goes long,
  so a flip is one order, like fbt's one trade.
- Fill timing: ``buy_delay = sell_delay = 1`` schedules the order on the next
  bar; ``ctx.buy_fill_price`` / ``ctx.sell_fill_price`` are callables that
  PyBroker evaluates on the fill bar (``BarData`` ends at the fill bar), so
  ``bar.open[-1]`` (``fill="next_open"``) or ``bar.close[-1]``
  (``"next_close"``) is the next bar's price, exactly fbt's rule.
- Slippage: ``slippage_ticks x tick_size`` points added to buys and taken
  from sells inside that fill-price callable (PyBroker's slippage models are
  not used); ``round_fill_price=False`` so ticks smaller than a cent survive.
- Commission: ``FeeMode.PER_SHARE`` with ``fee_amount = commission /
  multiplier``, i.e. commission per contract per side.
- Equity: P&L is PyBroker's final ``market_value`` (cash + longs at the close
  + shorts' collateral and unrealised P&L) minus its starting cash. Open
  positions are not closed on the last bar (``exit_on_last_bar=False``),
  matching fbt, which marks them to the last close.

What PyBroker cannot express
----------------------------
- Rolls. PyBroker sees one continuous symbol; a roll (sell the old contract,
  buy the new one at the roll date's close) is a no-op there because the
  Panama series already carries the position across the gap. fbt charges one
  round trip per roll; the adapter computes that figure on fbt's side,
  ``roll_costs = sum over roll bars of 2 x |position at the close| x
  (commission + slippage_ticks x tick_size x multiplier)``, and
  ``PyBrokerResult.net_pnl = pybroker_pnl - roll_costs`` is the number to
  compare with fbt's ``BacktestResult.net_pnl``.
- Margin. PyBroker's account is a stock cash account: every long or short
  posts its full notional out of cash, and buying power is cash (or a
  leverage multiple of equity), not initial margin per contract. The adapter
  therefore funds PyBroker with ``initial_capital`` plus a pad of twice the
  largest notional the targets can reach (no interest is charged, so the pad
  changes no P&L) and refuses (``RuntimeError``) if PyBroker still did not
  fill an order in full. fbt's margin cap (refused contracts) has no
  equivalent: compare only runs in which fbt refuses nothing.
- Non-positive prices. PyBroker rejects fill prices <= 0 and values a
  position with a close <= 0 at cost, while Panama series can go negative.
  If any open/high/low/close (minus slippage) is <= 0, every price is
  shifted up by a whole number of points (``price_offset``); shares x price
  change is unchanged by the shift and fill prices are reported back in fbt's
  points.

Stops and targets (``config.stop_loss``, ``take_profit``, ``trailing_stop``)
------------------------------------------------------------------------
PyBroker's own stops are used: ``ctx.stop_loss`` / ``stop_profit`` /
``stop_trailing`` in points (an ATR distance converted to points with
ATR(14) of the deciding bar) or ``*_pct`` for a percentage, set on the order
that opens or flips the position; slippage is a PyBroker slippage model of
``slippage_ticks x tick_size`` points against the trader on every fill (stop
exits included). After a stop exit the adapter keeps the position flat until
the wanted position changes, as fbt does. Where PyBroker's rules differ
from fbt's (docs/guide.md, "Orders and margin"; numbers in
``tests/unit/test_pybroker_engine.py``):

- a gap: PyBroker exits a long at ``min(stop, high)`` when the low reaches the
  stop, so a bar that opens below the stop exits at its high, not at the
  open (fbt: at the open). Each such exit differs by ``(high - open) x
  contracts x multiplier`` (PyBroker better; a short and targets: the
  mirror images);
- the entry bar: PyBroker checks stops before the bar's fills, so a level is
  live from the bar after the entry (fbt: for the rest of the entry bar);
- the trailing stop follows the highest high (long) since the bar after
  entry; fbt's follows the best close (equal when each bar's high is
  max(open, close) and it opens at the previous close);
- a size change on the same side opens a new PyBroker entry with its own
  stops (fbt keeps the position's levels): compare fixed-size runs;
- limit entries (``limit_offset``) are not mapped (ValueError): PyBroker's
  limit price is tested against its fill price, not the bar's low;
- margin calls: PyBroker has no margin (compare runs without them).

With ``--engine pybroker`` the summary shows PyBroker's P&L; on bars where
none of the differences occurs the two agree to the cent (tested).

Side effects and determinism: PyBroker's disk caches (data source, indicator,
model) are switched off with :func:`pybroker.disable_caches` (process-wide;
none is used by a DataFrame source without indicators or models, so nothing
is written); its console output is silenced for the run only; bootstrap
metrics are off (``calc_bootstrap=False``); nothing random is drawn.
(PyBroker's Numba metric kernels keep their own ``cache=True`` compile cache
next to the package, like fbt's kernel.)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.engine.futures_engine import EngineConfig
from fbt_pipelines.engine.rules import FillRule

FILL_COLUMNS = ["bar", "ts", "contracts", "price", "shares", "fill_price", "commission"]


@dataclass(frozen=True)
class PyBrokerResult:
    """PyBroker's accounting of fbt's targets, plus fbt-side roll costs.

    Attributes
    ----------
    pybroker_pnl : float
        PyBroker's own P&L: final market value minus its starting cash (USD).
    roll_costs : float
        One round trip of commission + slippage per contract held at each
        roll bar's close, computed on fbt's side (PyBroker has no rolls).
    fills : DataFrame
        One row per PyBroker order, columns :data:`FILL_COLUMNS`: ``bar``
        (row of ``prices``), ``ts``, signed ``contracts`` (buy > 0),
        ``price`` in fbt's adjusted points (slippage included), PyBroker's
        ``shares`` and ``fill_price`` (shifted by ``price_offset``) and
        ``commission`` (PyBroker's fee, USD).
    orders, trades, portfolio : DataFrame
        PyBroker's ``TestResult.orders``, ``.trades`` and ``.portfolio``.
    initial_capital : float
        fbt's starting equity.
    pybroker_cash : float
        Starting cash given to PyBroker (capital plus the notional pad).
    price_offset : float
        Points added to every price to keep PyBroker's prices positive.
    """

    pybroker_pnl: float
    roll_costs: float
    fills: pd.DataFrame
    orders: pd.DataFrame
    trades: pd.DataFrame
    portfolio: pd.DataFrame
    initial_capital: float
    pybroker_cash: float
    price_offset: float

    @property
    def net_pnl(self) -> float:
        """P&L comparable with fbt's ``BacktestResult.net_pnl``."""
        return self.pybroker_pnl - self.roll_costs

    @property
    def final_equity(self) -> float:
        return self.initial_capital + self.net_pnl


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence PyBroker's console output (progress bar, banners) for one run."""
    from pybroker.scope import StaticScope

    logger = StaticScope.instance().logger
    suppress = getattr(logger, "_suppress", None)  # thread-local, leaves global state alone
    if suppress is not None:
        with suppress():
            yield
        return
    import pybroker

    pybroker.disable_logging()  # older PyBroker: no scoped switch
    try:
        yield
    finally:
        pybroker.enable_logging()


def roll_costs(position: np.ndarray, roll: np.ndarray, spec: ContractSpec, config: EngineConfig) -> float:
    """fbt's roll charge: 2 x |contracts held at each roll close| x cost per contract per side."""
    commission = spec.commission if config.commission is None else config.commission
    per_side = commission + config.slippage_ticks * spec.tick_size * spec.multiplier
    held = np.abs(np.asarray(position, dtype=float))[np.asarray(roll, dtype=bool)]
    return float(2.0 * held.sum() * per_side)


def _stop_distances(prices: pd.DataFrame, config: EngineConfig) -> dict[str, tuple[str, np.ndarray | float]]:
    """PyBroker stop attribute -> ("points", per-bar points or a number) or ("pct", percent) for each set distance."""
    from fbt_pipelines.engine.futures_engine import ATR_WINDOW
    from fbt_pipelines.engine.rules import DistanceUnit
    from fbt_pipelines.primitives.indicators import wilder_atr

    out: dict[str, tuple[str, np.ndarray | float]] = {}
    atr = None
    for name, attr in (("stop_loss", "stop_loss"), ("take_profit", "stop_profit"), ("trailing_stop", "stop_trailing")):
        d = config.distance(name)
        if d is None:
            continue
        if d.unit is DistanceUnit.PERCENT:
            out[attr] = ("pct", d.value)
        elif d.unit is DistanceUnit.ATR:
            if atr is None:
                atr = wilder_atr(prices["high"], prices["low"], prices["close"], ATR_WINDOW).to_numpy(float)
            out[attr] = ("points", d.value * atr)
        else:
            out[attr] = ("points", d.value)
    return out


def _stops_at(distances: dict, i: int) -> dict[str, float]:
    """The ``ctx`` stop attributes of an entry decided at bar ``i``'s close (none while its ATR is undefined)."""
    out = {}
    for attr, (kind, value) in distances.items():
        v = float(value[i]) if isinstance(value, np.ndarray) else float(value)
        if math.isfinite(v):
            out[attr if kind == "points" else f"{attr}_pct"] = v
    return out


def _points_slippage(points: float):
    """A PyBroker slippage model: ``points`` against the trader on every fill (buys up, sells down)."""
    from decimal import Decimal

    from pybroker.slippage import SlippageModel

    step = Decimal(repr(points))

    class PointsSlippage(SlippageModel):
        def apply_slippage(self, ctx):
            return ctx.shares, ctx.fill_price + step if ctx.side == "buy" else ctx.fill_price - step

    return PointsSlippage()


def run_pybroker_backtest(
    prices: pd.DataFrame, target: np.ndarray, spec: ContractSpec, config: EngineConfig
) -> PyBrokerResult:
    """Replay fbt's whole-contract ``target`` with PyBroker (see module docstring).

    Parameters are those of :func:`~fbt_pipelines.engine.futures_engine.run_backtest`:
    ``prices`` has columns ts, open, close, roll (bool) and optionally high,
    low, volume; ``target[t]`` is the signed contracts wanted after bar t's
    close.
    """
    import pybroker
    from pybroker import FeeMode, Strategy, StrategyConfig

    if config.limit_offset is not None:
        raise ValueError("the PyBroker comparison does not map limit entries (limit_offset): PyBroker tests a limit "
                         "against its fill price, not the bar's low; compare runs with market entries")
    n = len(prices)
    target = np.asarray(target)
    if target.shape != (n,):
        raise ValueError(f"target has shape {target.shape}, prices have {n} rows")
    if n < 2:
        raise ValueError("need at least two bars (a target fills on the next bar)")
    if target.dtype.kind not in "biuf" or not np.all(np.isfinite(target)) or not np.all(target == np.round(target)):
        raise ValueError("target must be whole contracts (finite integers)")
    target = target.astype(np.int64)
    for col in ("open", "close"):
        if not np.isfinite(prices[col].to_numpy(float)).all():
            raise ValueError(f"prices.{col} has non-finite values")

    open_ = prices["open"].to_numpy(float)
    close = prices["close"].to_numpy(float)
    high = prices["high"].to_numpy(float) if "high" in prices else np.maximum(open_, close)
    low = prices["low"].to_numpy(float) if "low" in prices else np.minimum(open_, close)
    volume = prices["volume"].to_numpy(float) if "volume" in prices else np.zeros(n)
    roll = prices["roll"].to_numpy(bool) if "roll" in prices else np.zeros(n, dtype=bool)
    ts = pd.DatetimeIndex(pd.to_datetime(prices["ts"]))
    dates = ts.tz_convert(None) if ts.tz is not None else ts
    if not dates.is_monotonic_increasing or dates.has_duplicates:
        raise ValueError("prices.ts must strictly increase")

    multiplier = float(spec.multiplier)
    commission = float(spec.commission if config.commission is None else config.commission)
    slip = float(config.slippage_ticks * spec.tick_size)  # points per side
    fractional = not float(multiplier).is_integer()

    # PyBroker needs positive prices: shift by whole points if the series dips to <= 0
    lowest = float(min(low.min(), open_.min(), close.min())) - slip
    offset = 0.0 if lowest > 0 else float(math.floor(-lowest) + 1)
    symbol = spec.root
    frame = pd.DataFrame({
        "date": dates.to_numpy(), "symbol": symbol,
        "open": open_ + offset, "high": high + offset, "low": low + offset, "close": close + offset,
        "volume": volume,
    })

    wanted = target.astype(float) * multiplier  # shares wanted after each close
    max_price = float(max(high.max(), open_.max(), close.max())) + offset + slip
    pad = 2.0 * float(np.abs(wanted).max()) * max_price
    cash = float(config.initial_capital) + pad

    price_col = "open" if config.fill_rule is FillRule.NEXT_OPEN else "close"
    stops = config.has_orders
    # with stops, slippage is a PyBroker model (it slips the stop exits too); else inside the fill price
    slip_in_price = 0.0 if stops else slip
    distances = _stop_distances(prices, config) if stops else {}

    def buy_price(_sym: str, bar) -> float:
        return float(getattr(bar, price_col)[-1]) + slip_in_price

    def sell_price(_sym: str, bar) -> float:
        return float(getattr(bar, price_col)[-1]) - slip_in_price

    state = {"ordered": 0.0, "blocked": None}  # shares our orders leave held; wanted shares when a stop exited

    def execute(ctx) -> None:
        i = ctx.bars - 1  # row of the bar whose close this is
        long_pos, short_pos = ctx.long_pos(), ctx.short_pos()
        held = (float(long_pos.shares) if long_pos else 0.0) - (float(short_pos.shares) if short_pos else 0.0)
        want = wanted[i]
        if stops:
            if held == 0 and state["ordered"] != 0:  # a stop exited since our last order: flat until the wish changes
                state["blocked"] = wanted[i - 1] if i > 0 else 0.0
                state["ordered"] = 0.0
            if state["blocked"] is not None:
                if want == state["blocked"]:
                    want = 0.0
                else:
                    state["blocked"] = None
        diff = want - held
        if diff > 0:
            ctx.buy_shares = diff
            ctx.buy_fill_price = buy_price
        elif diff < 0:
            ctx.sell_shares = -diff
            ctx.sell_fill_price = sell_price
        if stops and diff != 0:
            state["ordered"] = want
            if want != 0 and (held == 0 or (want > 0) != (held > 0)):  # opening or flipping: the new entry's stops
                for attr, value in _stops_at(distances, i).items():
                    setattr(ctx, attr, value)

    pb_config = StrategyConfig(
        initial_cash=cash,
        fee_mode=FeeMode.PER_SHARE,
        fee_amount=commission / multiplier,
        enable_fractional_shares=fractional,
        round_fill_price=False,
        round_test_result=False,
        buy_delay=1,
        sell_delay=1,
        exit_on_last_bar=False,
        # leverage (1.0: cash account) and interest_rate (0) stay at their defaults
    )
    pybroker.disable_caches()
    strategy = Strategy(frame, dates[0].to_pydatetime(), dates[-1].to_pydatetime(), pb_config)
    if stops:
        strategy.set_slippage_model(_points_slippage(slip))
    strategy.add_execution(execute, [symbol])
    with _quiet():
        result = strategy.backtest(calc_bootstrap=False, warmup=None)

    orders = result.orders
    bar_of = pd.Series(np.arange(n), index=dates)
    shares = orders["shares"].to_numpy(float) * np.where(orders["type"].to_numpy() == "buy", 1.0, -1.0)
    fills = pd.DataFrame({
        "bar": bar_of.loc[pd.DatetimeIndex(orders["date"])].to_numpy(np.int64),
        "ts": ts[bar_of.loc[pd.DatetimeIndex(orders["date"])].to_numpy(np.int64)],
        "contracts": shares / multiplier,
        "price": orders["fill_price"].to_numpy(float) - offset,
        "shares": shares,
        "fill_price": orders["fill_price"].to_numpy(float),
        "commission": orders["fees"].to_numpy(float),
    }, columns=FILL_COLUMNS)
    if not fractional:
        fills["contracts"] = np.round(fills["contracts"]).astype(np.int64)

    # every target must have been reached in full on the next bar: PyBroker has
    # no margin model, so a clamped or dropped order would compare nonsense
    # (with stops, exits leave positions the targets do not show: not checked)
    held = np.zeros(n)
    np.add.at(held, fills["bar"].to_numpy(), fills["shares"].to_numpy())
    held = np.cumsum(held)
    expected = np.r_[0.0, wanted[:-1]]
    bad = [] if stops else np.flatnonzero(np.abs(held - expected) > 1e-9 * max(1.0, multiplier))
    if len(bad):
        i = int(bad[0])
        raise RuntimeError(
            f"PyBroker holds {held[i]:g} shares after bar {i} ({ts[i]}), target was {expected[i]:g}: "
            "an order was clamped or dropped"
        )

    position = (held if stops else expected) / multiplier  # contracts at each close
    final_value = float(result.portfolio["market_value"].iloc[-1])
    return PyBrokerResult(
        pybroker_pnl=final_value - cash,
        roll_costs=roll_costs(position, roll, spec, config),
        fills=fills,
        orders=orders,
        trades=result.trades,
        portfolio=result.portfolio,
        initial_capital=float(config.initial_capital),
        pybroker_cash=cash,
        price_offset=offset,
    )
