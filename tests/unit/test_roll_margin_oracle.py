"""The futures engine against an independent roll-and-margin oracle, to the cent.

The oracle (:mod:`tests.unit._oracle`) is a broker statement written from
the trader's view: it holds actual contracts, reads each contract's own RAW
open/close and the roll schedule (dates and contracts only), keeps an exact
(decimal) cash ledger, pays each roll as a close of the old contract and an
open of the new at each one's own close on the roll date, cuts a fill that
adds exposure to the whole contracts whose initial margin (the fill bar's)
the equity after that fill's costs covers, and, given a maintenance margin,
calls the account when its equity at a close is below maintenance x
contracts and stops it at an equity of zero or less. It imports nothing
from fbt (checked below) and never sees a continuous series.

The engine (system under test) gets what production gives it: the Panama
(back-adjusted) continuous series built by ``back_adjust`` from the same
bars and a ``calendar_roll_schedule``, the same targets, the per-bar initial
margin array (or ``None``: the catalogue margin) and the maintenance margins
(per bar, one number, or ``None``: no margin calls). Compared, bar by bar
and record by record:

- the sessions and the contract held on each;
- equity at each close (USD), to the cent; contracts held at each close and
  margin in use (USD);
- every record, in order: kind and reason (signal / margin_call / roll),
  session, contract, contracts traded (signed; a roll: contracts carried),
  contracts refused for margin, commission and slippage (USD, to the cent),
  raw fill price (points, slippage included) and, for a roll, both legs'
  raw closes.

Cases: three hand-worked examples (a roll with the initial margin binding; a
margin call after a roll; an account stop), numbers in their docstrings;
hypothesis random markets (ES, CL, GC, ZN, 6E terms from the catalogue; 4-6
contracts so 3-5 rolls, each example asserted to roll an open position at
least 3 times and to refuse contracts; missing bars; initial-margin
histories that step over time, sometimes to 0 = no check or above the whole
equity, or the catalogue margin; maintenance margins per bar, the
catalogue's or none; now and then a crash that stops the account) for both
fill rules; seeded cases asserted to liquidate on a margin call, to answer
a call with 0 contracts and to stop; and checks that the comparison fails
when the engine is fed something wrong.

Two disagreements were found, each with its minimal case:

- data that END on a roll date: the schedule rolls at that close; the
  engine did not (``back_adjust`` marked no roll on the last row), so the
  last bar's equity lacked one round trip of costs and the roll record was
  missing. Fixed: ``back_adjust`` marks that roll, the new leg is priced in
  the series' unadjusted last segment;
- an exact tie (initial margin x contracts == equity): the rule says the
  contracts fit; the engine's float equity can fall 1e-11 USD short and
  refuse one.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fbt_pipelines.catalog.contracts import Contract
from fbt_pipelines.catalog.expiry import _business_days
from fbt_pipelines.catalog.specs import MONTH_CODES, ContractSpec, market_spec
from fbt_pipelines.engine.futures_engine import BacktestResult, EngineConfig, run_backtest
from fbt_pipelines.futures.back_adjust import back_adjust
from fbt_pipelines.futures.roll_schedule import calendar_roll_schedule
from tests.unit import _oracle
from tests.unit._oracle import OracleMarket, OracleRun, simulate

CENT = 0.005  # USD: "equal to the cent"
POINTS = 1e-6  # points: raw prices recovered from Panama levels (float noise ~1e-12)
ROOT = "TS"
MARKETS = ("ES", "CL", "GC", "ZN", "6E")
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------- the comparison


def mismatches(prices: pd.DataFrame, result: BacktestResult, oracle: OracleRun) -> list[str]:
    """Every way the engine's run differs from the oracle's (empty = equal)."""
    out: list[str] = []
    if list(pd.DatetimeIndex(prices["ts"])) != oracle.ts:
        return ["sessions differ"]
    if list(prices["contract"].astype(str)) != oracle.held:
        return ["held contracts differ"]
    diff = np.abs(np.asarray(result.equity) - oracle.equity)
    if diff.max() > CENT:
        i = int(diff.argmax())
        out.append(f"equity differs on {int((diff > CENT).sum())} bars, first at bar {int(np.argmax(diff > CENT))}, "
                   f"largest at bar {i} ({oracle.ts[i].date()}): engine {result.equity[i]:.4f}, "
                   f"oracle {oracle.equity[i]:.4f} USD")
    bars = result.bars
    if not np.array_equal(bars["position"].to_numpy(), oracle.position):
        out.append(f"positions differ at bars {np.flatnonzero(bars['position'].to_numpy() != oracle.position)[:5]}")
    margin_used = np.abs(oracle.position) * oracle.margin
    if np.abs(bars["margin"].to_numpy() - margin_used).max(initial=0.0) > CENT:
        out.append("margin in use differs")
    trades = result.trades
    if len(trades) != len(oracle.fills):
        out.append(f"{len(trades)} engine records, {len(oracle.fills)} oracle records")
    for k, (row, f) in enumerate(zip(trades.itertuples(index=False), oracle.fills)):
        here = f"record {k} ({f.ts.date()}, {f.reason})"
        engine_says = (row.ts, row.kind, row.reason, str(row.contract), int(row.contracts), int(row.refused))
        oracle_says = (f.ts, f.kind, f.reason, f.contract, f.contracts, f.refused)
        if engine_says != oracle_says:
            out.append(f"{here}: engine {engine_says[1:]}, oracle {oracle_says[1:]} "
                       "(kind, reason, contract, contracts, refused)")
            continue
        if abs(row.commission - f.commission) > CENT or abs(row.slippage - f.slippage) > CENT:
            out.append(f"{here}: costs engine {row.commission}+{row.slippage}, oracle {f.commission}+{f.slippage} USD")
        if f.contracts != 0 and abs(row.raw_price - f.price) > POINTS:
            out.append(f"{here}: raw price engine {row.raw_price}, oracle {f.price}")
        if f.kind == "roll" and abs(row.to_raw_price - f.to_price) > POINTS:
            out.append(f"{here}: new leg engine {row.to_raw_price}, oracle {f.to_price}")
    if out and oracle.ties:
        out.append(f"note: the oracle decided {len(oracle.ties)} margin checks on an exact tie (it fits / no call), "
                   f"first {oracle.ties[0]}: float noise in the engine can land on the other side")
    return out


def run_both(bars: pd.DataFrame, schedule: pd.DataFrame, contracts: list[Contract], targets: np.ndarray,
             spec: ContractSpec, config: EngineConfig, margin: pd.Series | float | None,
             maintenance: pd.Series | float | None = None,
             method: str = "panama") -> tuple[OracleRun, pd.DataFrame, BacktestResult]:
    """The oracle on the raw bars, and the engine on the ``method`` continuous series.

    ``margin`` / ``maintenance``: USD per contract per session (a Series on
    the sessions, UTC), one number, or ``None`` (initial: the catalogue's;
    maintenance: no margin calls).
    """
    commission = spec.commission if config.commission is None else config.commission
    oracle = simulate(
        bars, schedule, targets,
        spec.initial_margin if margin is None else (margin if isinstance(margin, float) else margin.to_dict()),
        config.initial_capital, OracleMarket(spec.multiplier, spec.tick_size, commission, config.slippage_ticks),
        config.fill,
        maintenance=maintenance if maintenance is None or isinstance(maintenance, float) else maintenance.to_dict(),
    )
    prices = back_adjust(bars, schedule, contracts, method)

    def per_row(values: pd.Series | float | None) -> np.ndarray | float | None:
        if isinstance(values, pd.Series):
            return values.reindex(pd.DatetimeIndex(prices["ts"])).to_numpy(float)
        return values

    result = run_backtest(prices, targets, spec, config, margins=per_row(margin),
                          maintenance_margins=per_row(maintenance))
    return oracle, prices, result


# --------------------------------------------------------------------------- the oracle stays independent


def test_oracle_imports_nothing_from_fbt() -> None:
    tree = ast.parse(Path(_oracle.__file__).read_text())
    imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "dataclasses", "decimal", "typing", "numpy", "pandas"}


# --------------------------------------------------------------------------- hand-worked examples


def _bar(contract: str, day: str, open_: float, close: float) -> dict:
    return {"contract": contract, "root": ROOT, "ts": pd.Timestamp(day, tz="UTC"), "open": float(open_),
            "high": max(open_, close) + 1.0, "low": min(open_, close) - 1.0, "close": float(close),
            "volume": 100, "open_interest": 1000}


_A = Contract(last_trade=dt.date(2024, 1, 5), contract_id="TSF2024", root=ROOT, year=2024, month=1, first_notice=None)
_B = Contract(last_trade=dt.date(2024, 3, 15), contract_id="TSH2024", root=ROOT, year=2024, month=3, first_notice=None)
_SESSIONS = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"]
# multiplier 10 USD/point, tick 0.5 points, commission 1 USD/contract/side; slippage 1 tick = 5 USD/contract/side
_HAND_SPEC = dataclasses.replace(market_spec("ES"), multiplier=10.0, tick_size=0.5, commission=1.0,
                                 initial_margin=99_999.0, maintenance_margin=99_999.0)


def _hand_market(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw bars of A and B and their calendar roll schedule.

    A trades on the first three sessions and B on the last four (open, close
    given in points); the calendar roll is 1 business day before A's last
    trade: Thu 2024-01-04.
    """
    bars = pd.DataFrame([_bar("TSF2024", d, o, c) for d, (o, c) in zip(_SESSIONS[:3], a)]
                        + [_bar("TSH2024", d, o, c) for d, (o, c) in zip(_SESSIONS[1:], b)])
    schedule = calendar_roll_schedule(ROOT, [_A, _B], bars.pivot(index="ts", columns="contract", values="close"), 1)
    assert schedule["roll_date"].tolist() == [pd.Timestamp("2024-01-04", tz="UTC")]
    return bars, schedule


def _by_session(values: list[float]) -> pd.Series:
    return pd.Series(values, index=pd.DatetimeIndex([pd.Timestamp(d, tz="UTC") for d in _SESSIONS]), dtype=float)


def _statement(oracle: OracleRun) -> list[tuple]:
    return [(str(f.ts.date()), f.reason, f.contracts, f.refused, f.price, f.to_price) for f in oracle.fills]


def test_hand_worked_roll_and_binding_margin() -> None:
    """Five sessions, one roll, the initial margin binding three times.

    Market: multiplier 10 USD/point, tick 0.5 points, commission 1 USD per
    contract per side, slippage 1 tick = 0.5 points = 5 USD per contract per
    side, so 6 USD per contract per side. Capital 10,000 USD. Fills at the
    next open. No maintenance margin.

    Raw bars (open/close, points); contract A (TSF2024, last trade Fri
    2024-01-05) rolled 1 business day before: roll date Thu 2024-01-04,
    into B (TSH2024)::

        session      A open/close   B open/close   margin/contract   target at close
        Tue 01-02    100 / 101          -               1,000              +12
        Wed 01-03    101 / 103      110 / 111           1,000              +12
        Thu 01-04    104 / 102      111 / 112           1,100              +12   (roll at close)
        Fri 01-05        -          111 / 115             800              -20
        Mon 01-08        -          116 / 114             800                0

    - 01-02: flat, equity 10,000.
    - 01-03 open, A at 101, equity 10,000: n contracts need n x 1,000 <=
      10,000 - 6n, so n <= 9.94: buy 9 at 101.5, refuse 3 (without the
      costs 10 would fit). Cash 10,000 - 9 x 101.5 x 10 - 9 = 856; close
      103: equity 856 + 9 x 103 x 10 = **10,126**.
    - 01-04 open, A at 104: equity 856 + 9,360 = 10,216; 10 contracts need
      11,000 (the margin rose to 1,100) > 10,216 - 6: keep the 9 held, refuse 3
      (a record with 0 contracts). Close 102: 856 + 9,180 = 10,036. Roll: sell
      9 A at 102 - 0.5, buy 9 B at 112 + 0.5, 18 commission + 90 slippage:
      cash 856 + 9,135 - 9 - 10,125 - 9 = -152, equity -152 + 9 x 112 x 10 =
      **9,928** (= 10,036 - 108).
    - 01-05 open, B at 111: equity -152 + 9,990 = 9,838; 12 contracts need
      9,600 <= 9,838 - 3 x 6: buy 3 at 111.5. Cash -152 - 3,345 - 3 =
      -3,500; close 115: -3,500 + 13,800 = **10,300**.
    - 01-08 open, B at 116: equity -3,500 + 13,920 = 10,420. Flip to -20:
      -n needs n x 800 <= 10,420 - 6 (n + 12), n <= 12.84: sell 24 at 115.5
      (to -12), refuse 8 (without the costs 13 would fit). Cash -3,500 +
      27,720 - 24 = 24,196; close 114: 24,196 - 13,680 = **10,516**.
    """
    bars, schedule = _hand_market([(100, 101), (101, 103), (104, 102)],
                                  [(110, 111), (111, 112), (111, 115), (116, 114)])
    config = EngineConfig(initial_capital=10_000.0, slippage_ticks=1.0)
    oracle, prices, result = run_both(bars, schedule, [_A, _B], np.array([12, 12, 12, -20, 0]), _HAND_SPEC, config,
                                      _by_session([1000, 1000, 1100, 800, 800]))
    expected_equity = [10_000.0, 10_126.0, 9_928.0, 10_300.0, 10_516.0]
    np.testing.assert_allclose(oracle.equity, expected_equity, rtol=0, atol=1e-9)
    assert _statement(oracle) == [  # (session, reason, contracts, refused, raw price / old leg, new leg)
        ("2024-01-03", "signal", 9, 3, 101.5, None),
        ("2024-01-04", "signal", 0, 3, 104.0, None),
        ("2024-01-04", "roll", 9, 0, 102.0, 112.0),
        ("2024-01-05", "signal", 3, 0, 111.5, None),
        ("2024-01-08", "signal", -24, 8, 115.5, None),
    ]
    assert oracle.position.tolist() == [0, 9, 9, 12, -12]
    np.testing.assert_allclose(result.equity, expected_equity, rtol=0, atol=CENT)
    assert mismatches(prices, result, oracle) == []


def test_hand_worked_margin_call_after_a_roll() -> None:
    """A margin call two sessions after a roll, answered by selling 3 of 9.

    The market and roll of :func:`test_hand_worked_roll_and_binding_margin`
    (6 USD per contract per side); capital 10,000 USD; initial margin 1,000,
    maintenance 800 USD per contract on every session; target +9 throughout::

        session      A open/close   B open/close
        Tue 01-02    100 / 100          -
        Wed 01-03    100 / 100      110 / 110
        Thu 01-04    100 / 95       110 / 104     (roll at close)
        Fri 01-05        -          103 / 79
        Mon 01-08        -          77.5 / 76

    - 01-03 open: 9 x 1,000 <= 10,000 - 54: buy 9 at 100.5. Cash 10,000 -
      9,045 - 9 = 946; close 100: **9,946** (maintenance 9 x 800 = 7,200).
    - 01-04 close A 95: 946 + 8,550 = 9,496. Roll: sell 9 A at 94.5, buy 9 B
      at 104.5: cash 946 + 8,505 - 9 - 9,405 - 9 = 28; equity 28 + 9,360 =
      **9,388**.
    - 01-05 close B 79: 28 + 7,110 = **7,138** < 7,200: margin call.
    - 01-08 open, B at 77.5: equity 28 + 6,975 = 7,003; the target (+9) is
      what is held. Liquidate the smallest q with 7,003 - 6q >= (9 - q) x
      1,000: q = 2 gives 6,991 < 7,000 (without the liquidation's own costs
      it would do), q = 3 gives 6,985 >= 6,000: sell 3 at 77. Cash 28 +
      2,310 - 3 = 2,335; close 76: 2,335 + 4,560 = **6,895** (6 x 800 =
      4,800: no call).
    """
    bars, schedule = _hand_market([(100, 100), (100, 100), (100, 95)], [(110, 110), (110, 104), (103, 79), (77.5, 76)])
    config = EngineConfig(initial_capital=10_000.0, slippage_ticks=1.0)
    oracle, prices, result = run_both(bars, schedule, [_A, _B], np.full(5, 9), _HAND_SPEC, config,
                                      1000.0, maintenance=800.0)
    expected_equity = [10_000.0, 9_946.0, 9_388.0, 7_138.0, 6_895.0]
    np.testing.assert_allclose(oracle.equity, expected_equity, rtol=0, atol=1e-9)
    assert _statement(oracle) == [
        ("2024-01-03", "signal", 9, 0, 100.5, None),
        ("2024-01-04", "roll", 9, 0, 95.0, 104.0),
        ("2024-01-08", "margin_call", -3, 0, 77.0, None),
    ]
    assert oracle.position.tolist() == [0, 9, 9, 9, 6]
    assert oracle.calls == [pd.Timestamp("2024-01-05", tz="UTC")] and oracle.stopped is None
    np.testing.assert_allclose(result.equity, expected_equity, rtol=0, atol=CENT)
    assert mismatches(prices, result, oracle) == []


def test_hand_worked_account_stop() -> None:
    """An equity below zero at a close stops the account.

    All is sold at the next fill and no order fills after it.

    One contract (no roll), multiplier 10 USD/point, no commission, no
    slippage; capital 1,000 USD; initial margin 100, maintenance 80 USD per
    contract::

        session      open / close   target at close
        Tue 01-02     50 / 50            9
        Wed 01-03     50 / 50            9
        Thu 01-04     48 / 38           12
        Fri 01-05     40 / 45            5
        Mon 01-08     44 / 46            5

    - 01-03: buy 9 at 50 (900 <= 1,000); close **1,000**.
    - 01-04 close 38: 1,000 + 9 x (38 - 50) x 10 = **-80** <= 0: stopped
      (and called: 9 held).
    - 01-05 open 40: equity -80 + 180 = 100; the target 12 is not filled;
      sell all 9 at 40 (a margin_call record): flat, **100** at the close.
    - 01-08: the target 5 is not filled: **100**.
    """
    c = Contract(last_trade=dt.date(2024, 6, 21), contract_id="TSM2024", root=ROOT, year=2024, month=6,
                 first_notice=None)
    bars = pd.DataFrame([_bar("TSM2024", d, o, cl) for d, (o, cl) in
                         zip(_SESSIONS, [(50, 50), (50, 50), (48, 38), (40, 45), (44, 46)])])
    schedule = calendar_roll_schedule(ROOT, [c], bars.pivot(index="ts", columns="contract", values="close"), 1)
    assert len(schedule) == 0
    spec = dataclasses.replace(_HAND_SPEC, commission=0.0)
    config = EngineConfig(initial_capital=1_000.0, slippage_ticks=0.0)
    oracle, prices, result = run_both(bars, schedule, [c], np.array([9, 9, 12, 5, 5]), spec, config,
                                      100.0, maintenance=80.0)
    expected_equity = [1_000.0, 1_000.0, -80.0, 100.0, 100.0]
    np.testing.assert_allclose(oracle.equity, expected_equity, rtol=0, atol=1e-9)
    assert _statement(oracle) == [("2024-01-03", "signal", 9, 0, 50.0, None),
                                  ("2024-01-05", "margin_call", -9, 0, 40.0, None)]
    assert oracle.stopped == pd.Timestamp("2024-01-04", tz="UTC")
    np.testing.assert_allclose(result.equity, expected_equity, rtol=0, atol=CENT)
    assert mismatches(prices, result, oracle) == []


# --------------------------------------------------------------------------- random markets


@dataclass(frozen=True)
class Shape:
    """What hypothesis draws for one random market (the rest comes from ``seed``)."""

    root: str = "ES"
    n_contracts: int = 5
    spacing: int = 24           # sessions between successive last trades
    days_before: int = 3        # calendar roll: business days before the last trade
    overlap: int = 6            # sessions the next contract trades before the previous one's last trade
    holes: float = 0.0          # fraction of bars missing at random
    margin_kind: str = "history"  # initial margin: "history", "history with zeros" or "catalogue"
    maintenance_kind: str = "none"  # "none" (no margin calls), "history" (a share of the initial) or "catalogue"
    slippage_ticks: float = 1.0
    commission: float | None = None  # USD per contract per side; None = the catalogue's
    daily_risk: float = 0.02    # a contract's typical daily move, as a fraction of the base margin (USD/USD)
    crash: bool = False         # one session after the third roll, every contract drops 30-60 %
    fill: str = "next_open"
    seed: int = 0


@dataclass(repr=False)
class Case:
    """One random market and account."""

    contracts: list[Contract]
    bars: pd.DataFrame               # long raw bars
    schedule: pd.DataFrame           # calendar_roll_schedule
    margin: pd.Series | None         # initial margin, USD per contract per session (UTC); None = catalogue
    maintenance: pd.Series | float | None  # USD per contract per session, one number, or None (no calls)
    targets: np.ndarray              # contracts, one per account bar
    spec: ContractSpec
    config: EngineConfig
    note: str

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis prints failing examples: keep it short
        p.text(repr(self))

    def __repr__(self) -> str:
        return f"Case({self.note})"

    def run(self, method: str = "panama") -> tuple[OracleRun, pd.DataFrame, BacktestResult]:
        """(oracle, the engine's continuous prices, the engine's result)."""
        return run_both(self.bars, self.schedule, self.contracts, self.targets, self.spec, self.config,
                        self.margin, self.maintenance, method)


def _sessions(start: dt.date, count: int) -> pd.DatetimeIndex:
    days = _business_days()
    days = days[days >= np.datetime64(start)][:count]
    return pd.DatetimeIndex(pd.to_datetime(days)).tz_localize("UTC")


def build_case(shape: Shape) -> Case:
    """A random market and account of ``shape`` (deterministic in it)."""
    rng = np.random.default_rng(shape.seed)
    spec = market_spec(shape.root)
    start = dt.date(2012, 1, 2) + dt.timedelta(days=int(rng.integers(0, 4000)))
    first_last = shape.spacing + int(rng.integers(0, 10))
    last_idx = [first_last + k * shape.spacing for k in range(shape.n_contracts)]
    sessions = _sessions(start, last_idx[-1] + 1)
    tick, mult, base_margin = spec.tick_size, spec.multiplier, spec.initial_margin
    # prices (points): a common walk; each contract its own carry and noise, on the tick grid.
    # A contract's daily move is ``daily_risk`` of its margin in USD (2 %: the account survives
    # the leverage; more: its equity can fall below the margin of what it holds).
    step = shape.daily_risk * base_margin / mult
    level = float(spec.sample.get("start_price", 100.0))
    walk = level + np.cumsum(rng.normal(0.0, step, len(sessions)))
    if shape.crash:  # from one session after the third roll on (roll 3 is near last_idx[2])
        at = int(rng.integers(last_idx[2] + 1, last_idx[3]))
        walk[at:] -= level * rng.uniform(0.3, 0.6)
    spot = np.maximum(walk, level * 0.1)
    carry = rng.choice([-1, 1]) * rng.uniform(0.002, 0.03) * level  # points per contract further out
    rows, contracts = [], []
    for k, li in enumerate(last_idx):
        lt = sessions[li].date()
        # ids unique by position in the chain (the month code is a label here; the calendar roll reads last_trade)
        contracts.append(Contract(last_trade=lt, contract_id=f"{ROOT}{MONTH_CODES[k]}{lt.year}",
                                  root=ROOT, year=lt.year, month=k + 1, first_notice=None))
        first = 0 if k == 0 else max(0, last_idx[k - 1] - shape.overlap)
        idx = np.arange(first, li + 1)
        # whole ticks, then the float nearest that decimal (what a bar file holds: 90.51, not 9051 x 0.01)
        close_ticks = np.round((spot[idx] + carry * (k + 1) + rng.normal(0.0, step / 4, len(idx))) / tick)
        gap_ticks = np.round(rng.normal(0.0, step / 2, len(idx)) / tick)
        open_ticks = np.r_[close_ticks[0] - gap_ticks[0], close_ticks[:-1] + gap_ticks[1:]]
        close, open_ = np.round(close_ticks * tick, 8), np.round(open_ticks * tick, 8)
        keep = rng.random(len(idx)) >= shape.holes
        keep[0] = True  # the first bar, and this contract's bar on the next one's first session: a roll
        if k + 1 < len(last_idx):  # can then always happen (on the calendar date, or snapped back to there)
            keep[idx == li - shape.overlap] = True
        for i, o, c in zip(idx[keep], open_[keep], close[keep]):
            rows.append({"contract": contracts[-1].contract_id, "root": ROOT, "ts": sessions[i], "open": o,
                         "high": max(o, c) + tick, "low": min(o, c) - tick, "close": c,
                         "volume": 100, "open_interest": 1000})
    bars = pd.DataFrame(rows)
    closes = bars.pivot(index="ts", columns="contract", values="close")
    schedule = calendar_roll_schedule(ROOT, contracts, closes, shape.days_before)

    ts, _ = _oracle.account_bars(bars, schedule)
    n = len(ts)
    roll_bars = [ts.index(pd.Timestamp(d)) for d in schedule["roll_date"]]
    # initial margin history (USD per contract): exchange-style steps in whole USD, a change every ~10 sessions
    margin = None
    all_ts = pd.DatetimeIndex(sorted(set(bars["ts"])))
    if shape.margin_kind != "catalogue":
        changes = np.r_[True, rng.random(len(all_ts) - 1) < 0.1]
        levels = np.round(base_margin * rng.uniform(0.6, 2.0, int(changes.sum())))
        # now and then a level above the whole equity: a flip then only closes, a fill from flat is refused
        spikes = rng.random(len(levels)) < 0.08
        levels[spikes] = np.round(base_margin * rng.uniform(16.0, 30.0, int(spikes.sum())))
        if shape.margin_kind == "history with zeros":
            levels[rng.random(len(levels)) < 0.3] = 0.0
        margin = pd.Series(levels[np.cumsum(changes) - 1], index=all_ts)
        if margin[ts[1]] == 0:  # the forced refusal below needs a margin check on bar 1
            margin[ts[1]] = base_margin
        for r in roll_bars:  # no spike just before a roll: a position is open over it
            margin[ts[r - 1:r + 1]] = np.minimum(margin[ts[r - 1:r + 1]], base_margin)
    maintenance: pd.Series | float | None = None
    if shape.maintenance_kind == "catalogue":
        maintenance = float(spec.maintenance_margin)
    elif shape.maintenance_kind == "history":  # a share of the initial margin, following its steps
        initial = margin if margin is not None else pd.Series(base_margin, index=all_ts)
        maintenance = np.round(initial * rng.uniform(0.7, 0.95))
    capital = float(np.round(base_margin * rng.uniform(4, 15), -3))  # USD
    carry_max = max(1, int(capital / base_margin))  # contracts the capital carries at the base margin
    targets = np.zeros(n, dtype=np.int64)
    i = 0
    while i < n:
        hold = int(rng.integers(1, 9))
        size = 0 if rng.random() < 0.1 else int(rng.integers(1, 2 * carry_max + 1)) * int(rng.choice([-1, 1]))
        targets[i:i + hold] = size
        i += hold
    targets[0] = int(rng.choice([-1, 1])) * (5 * carry_max + 3)  # beyond any margin level: refused on bar 1
    for r in roll_bars:  # a position is open over every roll
        targets[r - 2:r + 1] = np.where(targets[r - 2:r + 1] == 0, 1, targets[r - 2:r + 1])
    config = EngineConfig(initial_capital=capital, slippage_ticks=shape.slippage_ticks, fill=shape.fill,
                          commission=shape.commission)
    note = f"{shape}: {len(schedule)} rolls, {n} bars, capital {capital:.0f} USD"
    return Case(contracts, bars, schedule, margin, maintenance, targets, spec, config, note)


@st.composite
def cases(draw, fill: str) -> Case:
    days_before = draw(st.integers(1, 6), label="roll days before last trade")
    return build_case(Shape(
        root=draw(st.sampled_from(MARKETS), label="market"),
        n_contracts=draw(st.integers(4, 6), label="contracts"),
        spacing=draw(st.integers(21, 28), label="sessions between last trades"),
        days_before=days_before,
        overlap=draw(st.integers(days_before, days_before + 8), label="overlap"),
        holes=draw(st.sampled_from([0.0, 0.0, 0.04]), label="missing bar fraction"),
        margin_kind=draw(st.sampled_from(["history", "history", "history with zeros", "catalogue"]), label="margin"),
        maintenance_kind=draw(st.sampled_from(["none", "history", "history", "catalogue"]), label="maintenance"),
        slippage_ticks=draw(st.sampled_from([0.0, 1.0, 2.0, 0.5]), label="slippage ticks"),
        commission=draw(st.sampled_from([None, None, 0.0, 4.75]), label="commission"),
        daily_risk=draw(st.sampled_from([0.02, 0.02, 0.06]), label="daily risk / margin"),
        crash=draw(st.sampled_from([False, False, False, True]), label="crash"),
        fill=fill,
        seed=draw(st.integers(0, 2**32 - 1), label="seed"),
    ))


def _assert_exercised(case: Case, oracle: OracleRun) -> None:
    """The example exercises rolls and the cap: >= 3 rolls of a position, bar 1 refused."""
    rolls = [f for f in oracle.fills if f.reason == "roll"]
    refusals = [f for f in oracle.fills if f.refused > 0]
    assert len(case.schedule) >= 3 and len(rolls) >= 3, case.note
    assert refusals and refusals[0].ts == oracle.ts[1], case.note


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
@PROPERTY_SETTINGS
@given(data=st.data())
def test_engine_equals_oracle_on_random_markets(fill: str, data: st.DataObject) -> None:
    case = data.draw(cases(fill), label="case")
    oracle, prices, result = case.run()
    assert mismatches(prices, result, oracle) == [], case.note
    _assert_exercised(case, oracle)
    calls = [f for f in oracle.fills if f.reason == "margin_call"]
    event(f"rolls of an open position: {sum(f.reason == 'roll' for f in oracle.fills)}")
    event(f"fills with refused contracts: {'10+' if sum(f.refused > 0 for f in oracle.fills) >= 10 else '1-9'}")
    event(f"margin calls: {'none' if not calls else ('1-4' if len(calls) < 5 else '5+')}")
    if any(f.contracts == 0 for f in calls):
        event("a margin call answered with 0 contracts")
    if oracle.stopped is not None:
        event("account stopped")
    if oracle.ties:
        event("an exact margin tie")


def _seeded(**kw) -> Case:
    return build_case(Shape(**kw))


def test_margin_calls_liquidate_and_stop_on_seeded_markets() -> None:
    """Seeded cases that surely exercise the maintenance rules, equal in the engine.

    Calls that sell contracts, a call answered with 0 contracts (the
    strategy's own order or the prices restored the margin), and an account
    stop after a crash.
    """
    called = _seeded(root="CL", maintenance_kind="history", daily_risk=0.06, seed=3)
    stopped = _seeded(root="ES", maintenance_kind="catalogue", crash=True, seed=8)
    for case in (called, stopped, dataclasses.replace(called, config=dataclasses.replace(called.config,
                                                                                         fill="next_close"))):
        oracle, prices, result = case.run()
        assert mismatches(prices, result, oracle) == [], case.note
        _assert_exercised(case, oracle)
    oracle, _, _ = called.run()
    calls = [f for f in oracle.fills if f.reason == "margin_call"]
    assert sum(f.contracts != 0 for f in calls) >= 3 and any(f.contracts == 0 for f in calls)
    oracle, _, result = stopped.run()
    assert oracle.stopped is not None and oracle.fills[-1].reason == "margin_call"
    assert oracle.position[-1] == 0 and not any(f.ts > oracle.fills[-1].ts for f in oracle.fills)


# --------------------------------------------------------------------------- the comparison can fail


def test_comparison_catches_a_series_without_back_adjustment() -> None:
    """Raw stitched prices instead of Panama: the comparison must fail.

    With the roll gaps left in the series the engine books each gap as P&L.
    """
    case = _seeded(seed=11)
    oracle, prices, result = case.run("panama")
    assert mismatches(prices, result, oracle) == []
    oracle, prices, result = case.run("none")
    assert any(p.startswith("equity differs") for p in mismatches(prices, result, oracle))


def test_comparison_catches_the_margin_of_the_wrong_bar() -> None:
    """The engine given the decision bar's margin, not the fill bar's: a refusal differs."""
    case = _seeded(seed=11)
    oracle, prices, result = case.run()
    assert mismatches(prices, result, oracle) == []
    shifted = case.margin.shift(1).bfill()
    engine = run_backtest(prices, case.targets, case.spec, case.config,
                          margins=shifted.reindex(pd.DatetimeIndex(prices["ts"])).to_numpy(float))
    assert any("records" in p or "refused" in p for p in mismatches(prices, engine, oracle))


# --------------------------------------------------------------------------- disagreements found by the oracle


def test_data_ending_on_a_roll_date_pay_the_roll() -> None:
    """Minimal case: the first hand-worked example cut after the roll date.

    The schedule rolls at the close of 2024-01-04, the last session of the
    data, and the account holds 9: the roll costs 9 x 2 x 6 = 108 USD, so
    the equity at that close is 10,036 - 108 = 9,928 (oracle), and there is a
    roll record whose new leg is bought at contract B's close, 112. (The
    engine once got ``roll`` False on that row and reported 10,036 USD.)
    """
    bars, schedule = _hand_market([(100, 101), (101, 103), (104, 102)], [(110, 111), (111, 112)])
    bars = bars[bars["ts"] <= pd.Timestamp("2024-01-04", tz="UTC")]
    assert len(schedule) == 1 and pd.Timestamp(schedule["roll_date"].iloc[0]) == bars["ts"].max()
    config = EngineConfig(initial_capital=10_000.0, slippage_ticks=1.0)
    oracle, prices, result = run_both(bars, schedule, [_A, _B], np.array([12, 12, 12]), _HAND_SPEC, config,
                                      _by_session([1000, 1000, 1100, 800, 800]))
    np.testing.assert_allclose(oracle.equity, [10_000.0, 10_126.0, 9_928.0], rtol=0, atol=1e-9)
    assert mismatches(prices, result, oracle) == []


def test_exact_margin_tie_fits() -> None:
    """Minimal case: one contract, no roll, no costs, multiplier 100 USD/point.

    Capital 10,000 USD, initial margin 1,002 USD per contract. Buy 1 at
    1,639.9 (02 Jan); 03 Jan opens at 1,640.1, so the equity is 10,000 + 0.2 x
    100 = 10,020 = 10 x 1,002 exactly: 10 contracts do not need MORE margin
    than the equity, so the target 10 fills in full (oracle). The engine's
    equity is 10,019.999999999982 (1,640.1 - 1,639.9 in binary floating
    point); it compares to the cent (``MARGIN_TOL``), so it fills 10 too.
    """
    c = Contract(last_trade=dt.date(2024, 6, 21), contract_id="TSM2024", root=ROOT, year=2024, month=6,
                 first_notice=None)
    bars = pd.DataFrame([_bar("TSM2024", d, p, p) for d, p in zip(_SESSIONS[:3], [1639.9, 1639.9, 1640.1])])
    schedule = calendar_roll_schedule(ROOT, [c], bars.pivot(index="ts", columns="contract", values="close"), 1)
    spec = dataclasses.replace(_HAND_SPEC, multiplier=100.0, tick_size=0.1, commission=0.0)
    config = EngineConfig(initial_capital=10_000.0, slippage_ticks=0.0)
    oracle, prices, result = run_both(bars, schedule, [c], np.array([1, 10, 10]), spec, config, 1002.0)
    assert [(f.contracts, f.refused) for f in oracle.fills] == [(1, 0), (9, 0)]
    assert oracle.ties
    assert mismatches(prices, result, oracle) == []
