"""fbt's stops, targets, trailing stops and limit entries against backtesting.py and vectorbt.

backtesting.py (``Strategy.buy(sl=..., tp=..., limit=...)``, ``Trade.sl``)
has fbt's rules: a stop order becomes a market order when touched and fills
at ``min(open, stop)`` (a long's stop: the open on a gap), a take-profit is a
limit order filled at ``max(open, limit)``, the stop is processed first when
both are touched, and a market entry's stop and target are checked on the
rest of its entry bar. A limit entry fills at ``min(open, limit)`` once the
low reaches it, as fbt's. Mapping: one contract = 50 units (ES multiplier),
the commission a callable of 2.10 USD per contract per side, no slippage
(backtesting.py has only a proportional spread), cash large enough that its
margin never binds. The replayed strategy holds fbt's wanted position with
the same "flat until the wanted position changes" rule (orders only when it
changes), places the stop and target at the entry fill's distance (the next
bar's open, read ahead: backtesting.py takes absolute levels when the order
is placed) and moves a trailing stop at each close to the best close minus
the distance. Compared: equity at every close (USD) and every fill.

Differences that cannot be aligned (so the cases avoid them, and say so):
backtesting.py does not check a limit-filled trade's stop and target on the
fill bar (it warns and acts on the next bar); fbt does.

vectorbt (``Portfolio.from_signals`` with ``sl_stop``, ``tp_stop``,
``sl_trail``; fractions of the fill price: ``stop_entry_price="fillprice"``)
has the gap (open) and both-touched (stop first) rules; it checks stops only
from the bar after the entry and trails the highest high since then. The
vectorbt cases therefore use bars whose entry bar touches no level (it does
not move) and whose highs and lows are the open and close (so the highest
high is the best close), percent distances, and no costs (its fixed fee per
order cannot follow a reversal of a size it does not know in advance).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog.specs import ContractSpec, market_spec
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest
from fbt_pipelines.primitives.indicators import wilder_atr

MULT = 50.0
COMM = 2.10
CAP = 1_000_000.0


@pytest.fixture(scope="module")
def es() -> ContractSpec:
    return dataclasses.replace(market_spec("ES"), multiplier=MULT, tick_size=0.25, commission=COMM,
                               initial_margin=13_200.0, maintenance_margin=12_000.0)


def market(seed: int, n: int = 300, gaps: bool = True, wicks: bool = True, quiet_entries: bool = False):
    """OHLC on the tick grid (gaps now and then) and a wanted position in {-1, 0, 1}, flat on bars 0-1."""
    rng = np.random.default_rng(seed)
    tick = lambda x: np.round(np.asarray(x) * 4.0) / 4.0  # noqa: E731
    runs = rng.integers(3, 15, n)
    target = np.repeat(rng.choice([-1, 0, 1], len(runs), p=[0.4, 0.2, 0.4]), runs)[:n].astype(np.int64)
    target[:2] = 0
    entry = np.r_[False, False, target[1:-1] != target[:-2]]
    step = tick(rng.normal(0.0, 6.0, n))
    if quiet_entries:
        step[entry] = 0.0
    close = 4000.0 + np.cumsum(step)
    gap = tick(np.where(rng.random(n) < 0.08, rng.normal(0.0, 15.0, n), 0.0)) if gaps else np.zeros(n)
    if quiet_entries:
        gap[entry] = 0.0
    open_ = np.r_[close[0], close[:-1]] + gap
    close = np.where(entry & quiet_entries, open_, close) if quiet_entries else close
    wide = np.where(rng.random(n) < 0.1, 20.0, 4.0)  # some bars wide enough to touch a stop and a target
    w = (lambda: tick(np.abs(rng.normal(0.0, wide, n)))) if wicks else (lambda: np.zeros(n))
    high, low = np.maximum(open_, close) + w(), np.minimum(open_, close) - w()
    if quiet_entries:
        high[entry] = low[entry] = open_[entry]
    prices = pd.DataFrame({"ts": pd.bdate_range("2022-01-03", periods=n, tz="UTC"), "contract": "ESH2",
                           "open": open_, "high": high, "low": low, "close": close, "raw_close": close,
                           "roll": False})
    return prices, target


def fbt_run(es, prices, target, **orders):
    cfg = EngineConfig(initial_capital=CAP, slippage_ticks=0.0, **orders)
    return run_backtest(prices, target, es, cfg)


# --------------------------------------------------------------------------- backtesting.py


def backtesting_run(prices, target, sl=None, tp=None, trail=None, limit=None, atr=None):
    """backtesting.py replaying fbt's wanted position (see the module docstring). ``sl``/``tp``/``trail``:
    distance functions (entry price, deciding bar) -> points; ``limit``: offset in points."""
    from backtesting import Backtest, Strategy

    o, c = prices["open"].to_numpy(), prices["close"].to_numpy()
    n = len(prices)

    class Replay(Strategy):
        def init(self):
            self.last = 0
            self.best = None

        def next(self):
            i = len(self.data) - 1
            want = int(target[i])
            if want != self.last:
                for order in list(self.orders):  # a resting limit entry: cancelled when the wish changes
                    if not order.is_contingent:
                        order.cancel()
                if want == 0:
                    self.position.close()
                elif i + 1 < n:
                    side = 1 if want > 0 else -1
                    kw = {"size": int(abs(want) * MULT)}
                    if limit is not None:
                        kw["limit"] = c[i] - side * limit
                    else:
                        entry = o[i + 1]  # the entry fill: read ahead (backtesting.py takes absolute levels)
                        stops = [entry - side * f(entry, i) for f in (sl, trail) if f is not None]
                        if stops:
                            kw["sl"] = max(stops) if side > 0 else min(stops)
                        if tp is not None:
                            kw["tp"] = entry + side * tp(entry, i)
                    (self.buy if side > 0 else self.sell)(**kw)
                self.last = want
            if trail is not None:  # the trailing stop: the best close since entry, from the next bar
                for t in self.trades:
                    side = 1 if t.is_long else -1
                    if t.entry_bar == i or self.best is None:
                        self.best = t.entry_price
                    self.best = max(self.best, c[i]) if side > 0 else min(self.best, c[i])
                    level = self.best - side * trail(t.entry_price, i)
                    t.sl = max(t.sl or -np.inf, level) if side > 0 else min(t.sl or np.inf, level)
                if not self.trades:
                    self.best = None

    data = pd.DataFrame({"Open": o, "High": prices["high"].to_numpy(), "Low": prices["low"].to_numpy(), "Close": c},
                        index=pd.DatetimeIndex(prices["ts"]).tz_localize(None))
    bt = Backtest(data, Replay, cash=1e9, commission=lambda size, price: abs(size) / MULT * COMM,
                  exclusive_orders=True, trade_on_close=False, finalize_trades=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = bt.run()
    return stats


CASES = [
    ("stop and target, points", {"stop_loss": "15", "take_profit": "30"},
     {"sl": lambda e, i: 15.0, "tp": lambda e, i: 30.0}),
    ("stop only, percent", {"stop_loss": "0.3%"}, {"sl": lambda e, i: abs(e) * 0.003}),
    ("target only, points", {"take_profit": "12"}, {"tp": lambda e, i: 12.0}),
    ("trailing stop and a looser stop", {"trailing_stop": "12", "stop_loss": "25"},
     {"trail": lambda e, i: 12.0, "sl": lambda e, i: 25.0}),
]


@pytest.mark.parametrize("name, orders, mapped", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("seed", [3, 4])
def test_backtesting_py_gives_the_same_equity_at_every_close(es, name, orders, mapped, seed) -> None:
    prices, target = market(seed)
    ours = fbt_run(es, prices, target, **orders)
    assert ours.trades["reason"].isin(["stop", "target", "trailing_stop"]).sum() >= 5  # the orders act
    stats = backtesting_run(prices, target, **mapped)
    theirs = stats["_equity_curve"]["Equity"].to_numpy() - 1e9
    np.testing.assert_allclose(theirs, ours.equity - CAP, rtol=0, atol=1e-5)  # (float noise ~1e-6 on 1e9 cash)
    assert len(stats["_trades"]) >= 10


def test_backtesting_py_cases_include_gaps_both_touched_and_entry_bar_exits(es) -> None:
    """The random cases above exercise the rules that matter: exits at the open (gaps), bars
    touching both the stop and the target (stop 15, target 30 points), exits on the entry bar."""
    gap_exits = both = entry_bar = 0
    for seed in (3, 4):
        prices, target = market(seed)
        t = fbt_run(es, prices, target, stop_loss="15", take_profit="30").trades
        bars = prices.set_index("ts")
        entry_price = None
        for row in t.itertuples():
            if row.reason == "signal" and row.contracts != 0 and entry_price is None:
                entry_price = row.price
            elif row.reason in ("stop", "target"):
                bar = bars.loc[row.ts]
                gap_exits += row.price == bar["open"]
                side = -np.sign(row.contracts)  # the exit sells a long
                if row.reason == "stop" and entry_price is not None:
                    target_level = entry_price + side * 30.0
                    both += bool(bar["high"] >= target_level if side > 0 else bar["low"] <= target_level)
                entry_price = None
            elif row.reason == "signal":
                entry_price = row.price if (row.contracts != 0) else entry_price
        entry_bar += int(sum(len(g) > 1 for _, g in t.groupby("ts")))
    assert gap_exits > 0 and entry_bar > 0 and both > 0


@pytest.mark.parametrize("seed", [5, 6])
def test_backtesting_py_limit_entries_fill_alike(es, seed) -> None:
    prices, target = market(seed)
    ours = fbt_run(es, prices, target, limit_offset="4")
    assert (ours.trades["reason"] == "limit").sum() >= 5
    stats = backtesting_run(prices, target, limit=4.0)
    np.testing.assert_allclose(stats["_equity_curve"]["Equity"].to_numpy() - 1e9, ours.equity - CAP, rtol=0,
                               atol=1e-5)


def test_backtesting_py_with_atr_distances(es) -> None:
    prices, target = market(7)
    atr = wilder_atr(prices["high"], prices["low"], prices["close"], 14).to_numpy()
    target[:16] = 0  # decisions once ATR(14) exists
    ours = fbt_run(es, prices, target, stop_loss="1.5atr", take_profit="2.5atr")
    stats = backtesting_run(prices, target, sl=lambda e, i: 1.5 * atr[i], tp=lambda e, i: 2.5 * atr[i])
    np.testing.assert_allclose(stats["_equity_curve"]["Equity"].to_numpy() - 1e9, ours.equity - CAP, rtol=0,
                               atol=1e-5)


# --------------------------------------------------------------------------- vectorbt


def vectorbt_run(prices, target, sl=None, tp=None, trail=False):
    import vectorbt as vbt

    pos = np.r_[0, target[:-1]]  # the wanted position on each bar (filled at its open)
    prev = np.r_[0, pos[:-1]]
    change = pos != prev
    entries = change & (pos > 0)
    short_entries = change & (pos < 0)
    exits = change & (pos == 0) & (prev > 0)
    short_exits = change & (pos == 0) & (prev < 0)
    kw = {}
    if sl is not None:
        kw["sl_stop"] = sl
        kw["sl_trail"] = trail
    if tp is not None:
        kw["tp_stop"] = tp
    pf = vbt.Portfolio.from_signals(
        prices["close"].to_numpy(), entries=entries, exits=exits, short_entries=short_entries,
        short_exits=short_exits, open=prices["open"].to_numpy(), high=prices["high"].to_numpy(),
        low=prices["low"].to_numpy(), price=prices["open"].to_numpy(), size=MULT, size_type="amount",
        init_cash=1e9, accumulate=False, upon_opposite_entry="reverse", stop_entry_price="fillprice",
        stop_exit_price="stopmarket", freq="1D", **kw)
    return pf


@pytest.mark.parametrize("orders, mapped", [
    ({"stop_loss": "0.3%", "take_profit": "0.5%"}, {"sl": 0.003, "tp": 0.005}),
    ({"stop_loss": "0.2%"}, {"sl": 0.002}),
    ({"trailing_stop": "0.25%"}, {"sl": 0.0025, "trail": True}),
])
@pytest.mark.parametrize("seed", [8, 9])
def test_vectorbt_gives_the_same_equity_where_conventions_align(es, orders, mapped, seed) -> None:
    trail = mapped.get("trail", False)  # trailing: no gaps, no wicks (vectorbt's highest high = fbt's best close)
    prices, target = market(seed, gaps=not trail, wicks=not trail, quiet_entries=True)
    cfg = EngineConfig(initial_capital=CAP, slippage_ticks=0.0, commission=0.0, **orders)
    ours = run_backtest(prices, target, es, cfg)
    assert ours.trades["reason"].isin(["stop", "target", "trailing_stop"]).sum() >= 5
    pf = vectorbt_run(prices, target, **mapped)
    np.testing.assert_allclose(pf.value().to_numpy() - 1e9, ours.equity - CAP, rtol=0, atol=1e-5)
