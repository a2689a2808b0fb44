"""A reference futures account written from the trader's view (not a test module).

It shares no code with fbt's engine: it imports only NumPy, pandas and the
standard library (a test in ``test_roll_margin_oracle.py`` reads this file's
imports to keep it so).
It never sees a continuous or back-adjusted series. It holds actual
contracts and keeps a cash ledger, as a broker statement would:

- **Bars.** Per-contract RAW bars (each contract's own open and close,
  points) and a roll schedule (``roll_date``, ``from_contract``,
  ``to_contract``; nothing else of the table is read). The contract held on
  a session is the first roll's ``from_contract`` up to and including its
  roll date, then each roll's ``to_contract`` from the session after its
  roll date (an empty schedule: the bars' one contract throughout). A
  session on which the held contract has no bar is no bar of the account
  (sessions are the union of all contracts' timestamps, UTC).
- **Ledger.** ``cash`` (USD) starts at the capital. Buying ``q`` contracts
  at ``p`` points moves ``-q x p x multiplier`` into cash (selling: ``q``
  negative) and pays ``|q| x commission``. Equity (USD) at any moment =
  cash + sum over contracts held of contracts x that contract's own raw
  price x multiplier. So P&L is the change of the held contract's raw price x
  multiplier x contracts; nothing is marked on any other contract's price.
- **Fills.** The target decided at bar t's close (whole contracts, signed)
  fills at bar t+1's open (``next_open``) or close (``next_close``), in the
  contract held on bar t+1, at that contract's raw price moved by the
  slippage against the trader: buy at ``price + ticks x tick_size``, sell at
  ``price - ticks x tick_size`` (so slippage costs ``ticks x tick_size x
  multiplier`` USD per contract per side). The last bar's target is never
  filled.
- **Initial-margin cap.** Only a fill that adds exposure (more contracts on
  the same side, a flip, or a fill from flat) is checked, against the margin
  per contract of the bar it fills on (USD). The trader asks for W contracts
  (``|target|``); the broker accepts the largest whole ``n <= W`` such that,
  right after the fill (its commission and slippage paid) and marked at the
  fill bar's unslipped price, the account's equity covers ``n x margin``.
  An increase on the same side is never turned into a reduction: ``n`` never
  goes below the contracts already held. A flip or a fill from flat can be
  cut down to 0 (a flip then only closes). ``W - n`` contracts are refused
  and recorded; a fill whose every wanted contract is refused leaves a
  record with 0 contracts. A margin of 0 on a bar means no check on that bar
  (the engine's stated convention). A reduction is never refused, and a rise
  of the initial margin alone never forces a sale.
- **Maintenance margin** (only when ``maintenance`` is given; without it
  none of this happens). At each close (after any roll), if the equity is
  below that bar's maintenance margin per contract x contracts held, the
  broker issues a margin call. If the equity at a close is zero or less,
  the account is stopped (and, if it holds contracts, called). At the next
  fill, after the strategy's own order (which the cap above still applies
  to): a called account sells (buys back) the smallest number of contracts
  q such that right after that liquidation (its costs paid, marked at the
  fill bar's unslipped price) the equity covers the fill bar's INITIAL
  margin x the contracts left; all of them if no q does, and all of them
  when the account is stopped. Each call leaves one ``margin_call`` record,
  with 0 contracts when the strategy's order or the prices already restored
  the margin. A stopped account fills no order after that (no record).
- **Rolls.** At the close of a roll date on which contracts are held: sell
  (buy back) all N of the old contract at ITS close, buy (sell) N of the new
  contract at ITS close on that date, both legs with slippage and commission
  (one round trip of costs). A roll keeps the exposure and is not margin
  checked. On a roll date a fill comes first (it is in the bar's own, old,
  contract: with ``next_close`` it fills at the old contract's close), then
  the roll.

Arithmetic is exact: every price, margin, cost and the capital is read as
the decimal it prints as (``Decimal(repr(x))``: 90.51, not the binary float
nearest to it) and the ledger is kept in :class:`decimal.Decimal`, so the
margin check decides a tie (margin exactly equal to the equity) the way the
rule says, never by float noise. Outputs are converted back to float.

Units: prices in points, money in USD, quantities in contracts, timestamps
UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class OracleMarket:
    """The market's contract terms, as plain numbers."""

    multiplier: float      # USD per point
    tick_size: float       # points
    commission: float      # USD per contract per side
    slippage_ticks: float  # ticks per contract per side

    @property
    def slip_points(self) -> float:
        """Slippage per contract per side, points."""
        return self.slippage_ticks * self.tick_size


@dataclass(frozen=True)
class OracleFill:
    """One line of the statement: a fill towards the target, or a roll."""

    ts: pd.Timestamp        # session (UTC) of the fill
    kind: Literal["trade", "roll"]
    reason: Literal["signal", "margin_call", "roll"]
    contract: str           # the contract traded (a roll: the one left)
    contracts: int          # signed contracts bought (+) / sold (-); a roll: contracts carried over (signed)
    refused: int            # contracts refused for margin (a roll: 0)
    price: float            # raw points paid/received, slippage included (a roll: the old contract's close)
    to_contract: str | None = None   # a roll: the contract entered
    to_price: float | None = None    # a roll: the new contract's close on the roll date, raw points
    commission: float = 0.0          # USD
    slippage: float = 0.0            # USD


@dataclass
class OracleRun:
    """The account, bar by bar: sessions, held contract, equity at each close."""

    ts: list[pd.Timestamp]
    held: list[str]
    equity: np.ndarray                       # USD at each bar's close, float64
    position: np.ndarray                     # contracts held at each bar's close (after any roll), int64
    margin: np.ndarray                       # USD per contract in force on each bar
    fills: list[OracleFill] = field(default_factory=list)
    # margin checks decided by an exact tie (margin == equity: it fits, no call): (session, which check).
    # A float computation can land on either side of such a tie.
    ties: list[tuple[pd.Timestamp, str]] = field(default_factory=list)
    calls: list[pd.Timestamp] = field(default_factory=list)  # closes that issued a margin call
    stopped: pd.Timestamp | None = None                      # the close that stopped the account


def account_bars(bars: pd.DataFrame, rolls: pd.DataFrame) -> tuple[list[pd.Timestamp], list[str]]:
    """The account's bars: (sessions, contract held on each).

    By the module docstring's rule. ``bars``: long frame with ``contract``
    and ``ts`` (UTC).
    """
    if len(rolls) == 0:  # no roll: the one contract of the bars is held throughout
        only = sorted(set(bars["contract"].astype(str)))
        if len(only) != 1:
            raise ValueError(f"no roll schedule but {len(only)} contracts")
        rows = bars.sort_values("ts")
        return list(pd.DatetimeIndex(rows["ts"])), [only[0]] * len(rows)
    dates = [pd.Timestamp(d) for d in rolls["roll_date"]]
    froms = [str(c) for c in rolls["from_contract"]]
    tos = [str(c) for c in rolls["to_contract"]]
    for a, b in zip(dates, dates[1:]):
        assert a < b, "roll dates must increase"
    traded = set(zip(bars["contract"].astype(str), pd.DatetimeIndex(bars["ts"])))
    sessions = sorted(set(pd.DatetimeIndex(bars["ts"])))
    out_ts: list[pd.Timestamp] = []
    out_held: list[str] = []
    for s in sessions:
        held = froms[0]
        for date, to in zip(dates, tos):
            if s > date:   # the session after a roll date is held in the new contract
                held = to
        if (held, s) in traded:
            out_ts.append(s)
            out_held.append(held)
    return out_ts, out_held


def _dec(x: float) -> Decimal:
    """The decimal ``x`` prints as (exact: ``Decimal(repr(90.51)) == Decimal("90.51")``)."""
    return Decimal(repr(float(x)))


def simulate(
    bars: pd.DataFrame,
    rolls: pd.DataFrame,
    targets: Sequence[int],
    margins: Mapping[pd.Timestamp, float] | float,
    capital: float,
    market: OracleMarket,
    fill: Literal["next_open", "next_close"] = "next_open",
    maintenance: Mapping[pd.Timestamp, float] | float | None = None,
) -> OracleRun:
    """Run the account (see the module docstring).

    Parameters
    ----------
    bars
        Long per-contract raw bars: ``contract``, ``ts`` (UTC), ``open``,
        ``close`` (points).
    rolls
        Roll schedule: ``roll_date``, ``from_contract``, ``to_contract``.
    targets
        Whole contracts wanted after each bar's close, one per bar of
        :func:`account_bars`.
    margins
        Initial margin per contract (USD) in force on each session, keyed by
        ts, or one number for every session.
    capital
        Starting equity, USD.
    maintenance
        Maintenance margin per contract (USD) per session, or one number;
        ``None``: no margin calls and no account stop.
    """
    with localcontext() as ctx:
        ctx.prec = 60  # far more digits than any ledger here needs: every operation below is exact
        return _simulate(bars, rolls, targets, margins, capital, market, fill, maintenance)


def _per_session(values: Mapping[pd.Timestamp, float] | float, s: pd.Timestamp) -> Decimal:
    """USD per contract on session ``s``: one number for every session, or the session's."""
    return _dec(values if isinstance(values, (int, float)) else values[s])


def _simulate(bars, rolls, targets, margins, capital, market, fill, maintenance) -> OracleRun:
    ts, held = account_bars(bars, rolls)
    n = len(ts)
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} bars")
    opens: dict[tuple[str, pd.Timestamp], Decimal] = {}
    closes: dict[tuple[str, pd.Timestamp], Decimal] = {}
    for c, t, o, cl in zip(bars["contract"].astype(str), pd.DatetimeIndex(bars["ts"]),
                           bars["open"].to_numpy(float), bars["close"].to_numpy(float)):
        opens[(c, t)] = _dec(o)
        closes[(c, t)] = _dec(cl)
    roll_to = {pd.Timestamp(d): (str(f), str(t)) for d, f, t in
               zip(rolls["roll_date"], rolls["from_contract"], rolls["to_contract"])}
    mult = _dec(market.multiplier)                               # USD per point
    slip = _dec(market.slippage_ticks) * _dec(market.tick_size)  # points per contract per side
    commission = _dec(market.commission)                         # USD per contract per side

    cash = _dec(capital)                 # USD
    book: dict[str, int] = {}            # contract -> contracts held (signed)
    fills: list[OracleFill] = []
    ties: list[tuple[pd.Timestamp, str]] = []
    calls: list[pd.Timestamp] = []
    called = False                       # a margin call waits for the next fill
    stopped: pd.Timestamp | None = None  # the close that stopped the account
    equity = np.empty(n)
    position = np.empty(n, dtype=np.int64)
    margin_in_force = np.empty(n)

    def value(prices: dict[str, Decimal]) -> Decimal:
        """Equity (USD): cash plus every holding at its own contract's price."""
        return cash + sum((q * prices[c] * mult for c, q in book.items() if q != 0), Decimal(0))

    def trade(contract: str, qty: int, raw: Decimal) -> tuple[Decimal, Decimal, Decimal]:
        """Book ``qty`` contracts at ``raw`` points moved against the trader.

        Returns (price paid in points, commission USD, slippage USD).
        """
        nonlocal cash
        paid = raw + slip if qty > 0 else raw - slip
        fee = abs(qty) * commission
        cash -= qty * paid * mult + fee
        book[contract] = book.get(contract, 0) + qty
        return paid, fee, abs(qty) * slip * mult

    for i in range(n):
        s, c = ts[i], held[i]
        m = _per_session(margins, s)  # initial margin, USD per contract
        margin_in_force[i] = float(m)
        # the holding must be in this bar's contract (moved there by the roll at the last close)
        assert all(q == 0 or k == c for k, q in book.items()), (s, c, book)
        if i > 0:
            want = int(targets[i - 1])
            pos = book.get(c, 0)
            raw = opens[(c, s)] if fill == "next_open" else closes[(c, s)]
            if want != pos and stopped is None:
                asked = abs(want)
                adds = asked > abs(pos) or want * pos < 0
                n_ok = asked
                if adds and m > 0:
                    floor = abs(pos) if want * pos > 0 else 0
                    sign = 1 if want > 0 else -1

                    def carries(k: int) -> bool:
                        """Whether the equity carries ``k`` contracts after trading to them here.

                        The equity right after the fill (costs paid), marked at
                        the unslipped fill price, must cover ``k`` x margin.
                        """
                        q = sign * k - pos
                        paid = raw + slip if q > 0 else raw - slip
                        cash_after = cash - q * paid * mult - abs(q) * commission
                        equity_after = cash_after + (pos + q) * raw * mult
                        if k * m == equity_after:
                            ties.append((s, f"initial margin of {k} contracts"))
                        return k * m <= equity_after

                    while n_ok > floor and not carries(n_ok):
                        n_ok -= 1
                    want = sign * n_ok
                refused = asked - n_ok
                if want != pos:
                    paid, fee, slip_usd = trade(c, want - pos, raw)
                    fills.append(OracleFill(s, "trade", "signal", c, want - pos, refused, float(paid),
                                            commission=float(fee), slippage=float(slip_usd)))
                elif refused:
                    fills.append(OracleFill(s, "trade", "signal", c, 0, refused, float(raw)))
            if called:
                held_now = book.get(c, 0)
                sign = 1 if held_now > 0 else -1

                def covered(q: int) -> bool:
                    """Whether selling (buying back) q contracts here restores the initial margin.

                    The equity right after that liquidation, marked at the
                    unslipped fill price, must cover the rest's initial margin.
                    """
                    paid = raw - slip if held_now > 0 else raw + slip
                    cash_after = cash + sign * q * paid * mult - q * commission
                    equity_after = cash_after + (held_now - sign * q) * raw * mult
                    if (abs(held_now) - q) * m == equity_after:
                        ties.append((s, f"liquidation of {q} contracts"))
                    return (abs(held_now) - q) * m <= equity_after

                q = abs(held_now)
                if stopped is None:
                    q = next((k for k in range(abs(held_now) + 1) if covered(k)), abs(held_now))
                if q:
                    paid, fee, slip_usd = trade(c, -sign * q, raw)
                    fills.append(OracleFill(s, "trade", "margin_call", c, -sign * q, 0, float(paid),
                                            commission=float(fee), slippage=float(slip_usd)))
                else:
                    fills.append(OracleFill(s, "trade", "margin_call", c, 0, 0, float(raw)))
                called = False
        if s in roll_to and book.get(c, 0) != 0:
            old, new = roll_to[s]
            assert old == c, (s, old, c)
            q = book[c]
            _, fee_out, slip_out = trade(old, -q, closes[(old, s)])
            _, fee_in, slip_in = trade(new, q, closes[(new, s)])
            fills.append(OracleFill(s, "roll", "roll", old, q, 0, float(closes[(old, s)]), new,
                                    float(closes[(new, s)]), float(fee_out + fee_in), float(slip_out + slip_in)))
            del book[old]
            marks = {new: closes[(new, s)]}
        else:
            marks = {c: closes[(c, s)]}
        eq = value(marks)
        held_contracts = sum(book.values())
        if maintenance is not None:
            need = _per_session(maintenance, s) * abs(held_contracts)  # USD
            if eq <= 0 and stopped is None:
                stopped = s
            if held_contracts != 0 and eq == need or eq == 0:
                ties.append((s, "maintenance margin" if eq == need else "zero equity"))
            if held_contracts != 0 and (eq < need or stopped is not None):
                called = True
                calls.append(s)
        equity[i] = float(eq)
        position[i] = held_contracts
    return OracleRun(ts, held, equity, position, margin_in_force, fills, ties, calls, stopped)
