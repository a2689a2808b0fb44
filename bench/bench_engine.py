"""Benchmark of fbt's futures engine (a script, not a test).

    .venv/bin/python bench/bench_engine.py [--quick]

Builds two random-walk markets with periodic rolls (ES-like spec: 50 USD per
point, tick 0.25, commission 2.10 per contract per side, 1 tick slippage):

- 10 years of daily bars (2,520 sessions, a roll every 63 sessions);
- ~10 years of 1-minute bars (2,520,000 bars = 2,520 sessions x 1,000
  minutes, a roll every 63 sessions).

The target is an SMA crossover x 3 contracts. Timed, median of several runs
after a warm-up (the Numba kernel's first call, i.e. cache load or compile,
is reported apart):

- engine  = ``run_backtest`` (validation + the Numba pass; its ``bars`` and
  ``trades`` frames are built on first read, and this benchmark reads
  ``bars`` only to check it, outside the timing);
- kernel  = ``backtest_nb`` alone (the pass: equity per bar + trade records);
- reference = a straightforward pure-Python loop doing the same accounting
  (next-open fills, slippage, commission, rolls, initial-margin cuts);
- vectorbt (if installed) = ``Portfolio.from_orders`` on the same orders
  (contracts x multiplier shares, per-contract fee as |shares| x fee /
  multiplier per order, slippage as a percentage of the open). vectorbt has
  no rolls: its P&L plus the engine's roll costs must equal the engine's.

Plain asserts check that every implementation ends at the same equity to the
cent, so the timings cannot silently compare different things.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fbt_pipelines.catalog.specs import ContractSpec  # noqa: E402
from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest  # noqa: E402
from fbt_pipelines.engine.kernel import backtest_nb, simulate_futures_nb  # noqa: E402
from fbt_pipelines.futures.margin import MarginSchedule  # noqa: E402

NO_ORDERS = (0, 0.0, 0, 0.0, 0, 0.0, 0, 0.0, np.zeros(1))  # the kernel's order arguments: market orders only
from fbt_pipelines.engine.rules import FillRule  # noqa: E402
from fbt_pipelines.engine.strategies import sma_crossover  # noqa: E402

SPEC = ContractSpec(
    root="ES", name="E-mini S&P 500 (bench)", exchange="CME", asset_class="equity", currency="USD",
    multiplier=50.0, tick_size=0.25, cycle="HMUZ", expiry_rule="third_friday", first_notice_rule="none",
    roll_days_before=8, commission=2.10, initial_margin=13_200.0, maintenance_margin=12_000.0,
)
CONFIG = EngineConfig(initial_capital=10_000_000.0, slippage_ticks=1.0, fill="next_open")
CONTRACTS = 3
CENT = 0.005


def make_market(sessions: int, bars_per_session: int, seed: int) -> pd.DataFrame:
    """Panama-style continuous prices on the tick grid with a roll every 63 sessions."""
    n = sessions * bars_per_session
    rng = np.random.default_rng(seed)
    daily_vol = 0.01
    bar_vol = daily_vol / np.sqrt(bars_per_session)
    log_p = np.log(4000.0) + np.cumsum(rng.normal(0.0, bar_vol, n))
    close = np.round(np.exp(log_p) * 4) / 4
    gap = np.round(rng.normal(0.0, 0.5, n) * 4) / 4
    open_ = np.r_[close[0], close[:-1] + gap[1:]]
    open_ = np.maximum(open_, 0.25)
    session = np.arange(n) // bars_per_session
    roll = np.zeros(n, dtype=bool)
    last_bar_of_roll_session = (np.arange(62, sessions, 63) + 1) * bars_per_session - 1
    roll[last_bar_of_roll_session[last_bar_of_roll_session < n - 1]] = True
    segment = np.r_[0, np.cumsum(roll)[:-1]]
    # Panama offset of each segment (sum of later roll gaps), for raw_close only
    gaps = np.round(rng.normal(5.0, 3.0, roll.sum() + 1) * 4) / 4
    later = np.r_[np.cumsum(gaps[:-1][::-1])[::-1], 0.0]
    offset = later[segment]
    if bars_per_session == 1:
        ts = pd.bdate_range("2015-01-02", periods=n, tz="UTC")
    else:
        day = pd.bdate_range("2015-01-02", periods=sessions, tz="UTC")
        ts = day[session] + pd.to_timedelta(np.arange(n) % bars_per_session, unit="min")
    labels = np.array([f"ES{i:03d}" for i in range(segment.max() + 1)], dtype=object)
    return pd.DataFrame({
        "ts": ts, "contract": labels[segment], "open": open_, "close": close,
        "raw_close": close - offset, "roll": roll,
    })


def reference_backtest(target, open_, close, roll, spec: ContractSpec, cfg: EngineConfig) -> list[float]:
    """Straightforward pure-Python loop: the engine's accounting, one bar at a time."""
    mult = spec.multiplier
    side_cost = spec.commission + cfg.slippage_ticks * spec.tick_size * mult  # USD per contract per side
    margin = spec.initial_margin
    target, open_, close, roll = target.tolist(), open_.tolist(), close.tolist(), roll.tolist()
    equity = [0.0] * len(close)
    cash = cfg.initial_capital
    pos = 0
    for i in range(len(close)):
        if i > 0:
            cash += pos * (open_[i] - close[i - 1]) * mult      # hold overnight to this open
            want = target[i - 1]                                 # decided at the previous close
            increasing = abs(want) > abs(pos) or want * pos < 0
            if want != pos and increasing and margin > 0:
                can = int(max(cash, 0.0) // margin)
                if abs(want) > can:
                    keep = max(can, abs(pos)) if want * pos > 0 else can
                    want = keep if want > 0 else -keep
            cash -= abs(want - pos) * side_cost
            pos = want
            cash += pos * (close[i] - open_[i]) * mult            # open to close
        if roll[i] and pos:
            cash -= 2 * abs(pos) * side_cost                      # close old + open new
        equity[i] = cash
    return equity


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def cold_compile_seconds() -> float:
    """First call of the kernel in a fresh process with an empty Numba cache."""
    code = (
        "import time, numpy as np; t0 = time.perf_counter();"
        "from fbt_pipelines.engine.kernel import simulate_futures_nb as f;"
        "t1 = time.perf_counter();"
        "o = np.ones(3); f(np.zeros(3, np.int64), o, o, o, o, np.zeros(3, bool), 50., 2.1, .25,"
        " np.zeros(1, np.int64), np.full(1, 1e4), np.full(1, np.nan), 1e6, 0, 0, 0., 0, 0., 0, 0., 0, 0., np.zeros(1));"
        "print(time.perf_counter() - t1)"
    )
    import tempfile
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def vectorbt_pnl(prices: pd.DataFrame, target: np.ndarray):
    import vectorbt as vbt

    open_, close = prices["open"].to_numpy(), prices["close"].to_numpy()
    shares = np.r_[0, target[:-1]].astype(float) * SPEC.multiplier
    fees = np.abs(np.diff(np.r_[0.0, shares])) * SPEC.commission / SPEC.multiplier
    init_cash = 1e9
    pf = vbt.Portfolio.from_orders(
        close=close, size=shares, size_type="targetamount", direction="both", price=open_,
        slippage=CONFIG.slippage_ticks * SPEC.tick_size / open_, fixed_fees=fees,
        init_cash=init_cash, allow_partial=False, raise_reject=True,
    )
    return float(pf.final_value()) - init_cash


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10x fewer minute bars")
    args = ap.parse_args()
    t_start = time.perf_counter()

    try:
        import vectorbt  # noqa: F401
        have_vbt = True
    except ImportError:
        have_vbt = False

    # ---- Numba: first call (cache load or compile) apart from steady state
    t0 = time.perf_counter()
    one = MarginSchedule.constant(3, 1e4)
    simulate_futures_nb(np.zeros(3, np.int64), np.ones(3), np.ones(3), np.ones(3), np.ones(3), np.zeros(3, bool),
                        50.0, 2.1, 0.25, one.starts, one.initial, one.maintenance, 1e6, int(FillRule.NEXT_OPEN),
                        *NO_ORDERS)
    first_call = time.perf_counter() - t0
    cold = cold_compile_seconds()
    print(f"numba kernel first call in this process (cache load or compile): {first_call:.3f} s")
    print(f"numba kernel cold compile (fresh process, empty cache):           {cold:.3f} s")
    if have_vbt:
        t0 = time.perf_counter()
        vectorbt_pnl(make_market(50, 1, 0), np.ones(50, dtype=np.int64))
        print(f"vectorbt warm-up (import done; first from_orders call):           "
              f"{time.perf_counter() - t0:.3f} s")
    print()

    minutes_per_session = 100 if args.quick else 1_000
    cases = [
        ("daily, 10y", make_market(2_520, 1, seed=1), (20, 100), 7, 5),
        (f"1-minute, 10y ({minutes_per_session}/session)",
         make_market(2_520, minutes_per_session, seed=2), (60, 390), 5, 3),
    ]
    rows = []
    for name, prices, (fast, slow), repeat, ref_repeat in cases:
        n = len(prices)
        target = sma_crossover(prices["close"].to_numpy(), fast=fast, slow=slow) * CONTRACTS
        open_, close = prices["open"].to_numpy(), prices["close"].to_numpy()
        roll = prices["roll"].to_numpy()
        slip = CONFIG.slippage_ticks * SPEC.tick_size
        seg = MarginSchedule.constant(n, float(SPEC.initial_margin))  # one segment, as run_backtest passes it

        t_engine, result = timed(lambda: run_backtest(prices, target, SPEC, CONFIG), repeat)
        t_kernel, _ = timed(lambda: backtest_nb(
            target, open_, close, close, close, roll, SPEC.multiplier, SPEC.commission, slip,
            seg.starts, seg.initial, seg.maintenance, CONFIG.initial_capital, int(FillRule.NEXT_OPEN), *NO_ORDERS),
            repeat)
        t_ref, ref_equity = timed(lambda: reference_backtest(target, open_, close, roll, SPEC, CONFIG), ref_repeat)

        # same thing computed: final equity to the cent, and the whole path
        assert abs(ref_equity[-1] - result.final_equity) < CENT, (ref_equity[-1], result.final_equity)
        assert np.max(np.abs(np.asarray(ref_equity) - result.bars["equity"].to_numpy())) < CENT
        trades = result.trades
        n_rolls = int((trades["kind"] == "roll").sum())
        roll_costs = float(trades.loc[trades["kind"] == "roll", ["commission", "slippage"]].to_numpy().sum())
        assert n_rolls > 0 and trades["refused"].sum() == 0

        entry = {"market": name, "bars": n, "trades": int((trades["kind"] == "trade").sum()), "rolls": n_rolls,
                 "final_equity": result.final_equity,
                 "impl": [("engine (run_backtest)", t_engine, repeat), ("kernel only", t_kernel, repeat),
                          ("pure-Python reference", t_ref, ref_repeat)]}
        if have_vbt:
            t_vbt, vbt_pnl = timed(lambda: vectorbt_pnl(prices, target), max(1, repeat // 2))
            # vectorbt has no rolls: add the engine's roll costs back before comparing
            assert abs((vbt_pnl - roll_costs) - result.net_pnl) < CENT, (vbt_pnl, roll_costs, result.net_pnl)
            entry["impl"].append(("vectorbt from_orders", t_vbt, max(1, repeat // 2)))
        rows.append((entry, t_ref))

    print(f"{'market':38s} {'implementation':24s} {'bars':>10s} {'runs':>4s} {'seconds':>9s} "
          f"{'bars/s':>12s} {'x faster than ref':>17s}")
    for entry, t_ref in rows:
        for impl, secs, runs in entry["impl"]:
            print(f"{entry['market']:38s} {impl:24s} {entry['bars']:>10,d} {runs:>4d} {secs:>9.4f} "
                  f"{entry['bars'] / secs:>12,.0f} {t_ref / secs:>17.1f}")
        print(f"{'':38s} trades {entry['trades']:,d}, rolls {entry['rolls']}, final equity "
              f"{entry['final_equity']:,.2f} USD (reference and engine agree to the cent"
              f"{'; vectorbt + roll costs too' if have_vbt else ''})")
    print(f"\ntotal bench time {time.perf_counter() - t_start:.1f} s (vectorbt installed: {have_vbt})")


if __name__ == "__main__":
    main()
