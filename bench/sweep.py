"""Speed of fbt's sweep engine against vectorbt's broadcast sweep and a bare loop.

    .venv/bin/python bench/sweep.py            # full, ~2-4 min on 2 cores
    .venv/bin/python bench/sweep.py --quick    # ~30 s: 200 sets, 5 years
    .venv/bin/python bench/sweep.py --json out.json

Prints ONE table (stdout; progress on stderr). Two workloads, each swept
three ways with the same ``sma_crossover`` grid on the same data:

(a) 1,000 sets (fast 5..100 step 5 x slow 110..600 step 10) on the six demo
    markets (``fbt sample-data`` defaults: ES NQ CL GC ZN 6E, 2012-2024, seed
    0), their Panama series built in memory (catalogue roll rule); 1 M USD,
    fbt's default sizing (20 % volatility target), catalogue margins and
    commission, 1 tick slippage.
(b) 1,000 sets (the same grid) x 20 synthetic daily markets (the first 20
    catalogue roots, 2,520 sessions = 10 years each, seeded random walks at
    each market's sample price and volatility: ``bench/engine.py``'s
    ``make_daily_market``); 10 M USD, IDM 1.5 (as bench/engine.py).

The three ways, each timed end to end per market and summed over markets:

- fbt: ``run_sweep(workers=2)`` (the sweep engine: each distinct moving
  average once, then signal, sizing, engine pass and summary compiled per set
  on 2 threads); result: the table (net P&L, Sharpe, drawdown, trades, rolls,
  roll costs, margin calls) and the per-bar P&L of every set.
- vectorbt: its broadcast sweep: ``vbt.MA.run`` on the distinct windows, the
  (bars x sets) signal, the same volatility-target contracts
  (``round(sign x budget / cash vol)``, cash vol from fbt's sizing), one
  ``Portfolio.from_orders`` over all sets (target amount = contracts x
  multiplier at the next open, 1 tick slippage as a fraction of the open,
  commission x contracts traded as fixed fees), then total profit, Sharpe,
  max drawdown and order count per set. vectorbt has no rolls and no margin:
  its P&L minus fbt's roll costs equals fbt's (asserted to the cent on a few
  sets per market, the targets fed from fbt's signal).
- bare: the same distinct means and sizing in a Numba loop over sets on 2
  threads (:func:`bare_sweep_nb`): P&L arithmetic only (no margin, no trade
  records, no price checks), the same per-bar P&L and headline numbers out;
  its equity equals fbt's to the cent (asserted on every set whose initial
  margin never came within 10 % of its equity at a fill or close: the bare
  loop has no margin).

Each timing is the median of ``--repeat`` runs after an untimed warm-up run
(Numba compile and vectorbt's first call are not counted); wall time and the
process's CPU time (all threads) are shown. The machine's
load average (``os.getloadavg``) is printed before and after, and how many
cores two threads actually got (a nogil Numba probe, :func:`thread_scaling`):
other processes share the 2 cores.

Goals (issue 21): (a) fbt <= 1/5 of vectorbt's time; (b) < 2 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fbt_pipelines.catalog import load_catalog, market_spec  # noqa: E402
from fbt_pipelines.catalog.contracts import listed_contracts  # noqa: E402
from fbt_pipelines.engine.strategies import STRATEGIES  # noqa: E402
from fbt_pipelines.engine.sweep_kernel import equity_stats_nb, targets_nb, window_means  # noqa: E402
from fbt_pipelines.futures.continuous import build_continuous  # noqa: E402
from fbt_pipelines.futures.roll_rules import RollRule  # noqa: E402
from fbt_pipelines.marketdata import sample_data as sd  # noqa: E402
from fbt_pipelines.marketdata.sessions import trading_sessions  # noqa: E402
from fbt_pipelines.usecases.backtest import MarketData, Sizer  # noqa: E402
from fbt_pipelines.usecases.spec import BacktestSpec  # noqa: E402
from fbt_pipelines.usecases.sweep import parameter_sets, run_sweep  # noqa: E402

CENT = 0.005
WORKERS = 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def demo_markets(years: int | None = None) -> list[MarketData]:
    """The demo sample markets' Panama series (catalogue roll rule), in memory."""
    end = sd.DEFAULT_END
    start = sd.DEFAULT_START if years is None else end.replace(year=end.year - years)
    sessions = trading_sessions(start, end)
    out = []
    for root in sd.DEFAULT_MARKETS:
        spec = market_spec(root)
        bars = sd.simulate_market(spec, sessions, seed=0)
        long = pd.concat(bars.values(), ignore_index=True)
        long["ts"] = pd.to_datetime(long["ts"], utc=True)
        long["root"] = root
        contracts = [c for c in listed_contracts(spec, sessions[0].year, sessions[-1].year + 2)
                     if c.contract_id in bars]
        prices = build_continuous(root, contracts, long, RollRule.parse(spec.roll_rule, spec)).prices
        out.append(MarketData(root, spec, prices))
    return out


def synthetic_markets(count: int, sessions: int) -> list[MarketData]:
    """``count`` catalogue markets, ``sessions`` daily bars each (bench/engine.py's)."""
    loader = importlib.util.spec_from_file_location("fbt_bench_engine", REPO / "bench" / "engine.py")
    engine_bench = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(engine_bench)
    catalog = load_catalog()
    roots = list(catalog)[:count]
    return [MarketData(r, catalog[r], engine_bench.make_daily_market(catalog[r], sessions, seed=100 + i))
            for i, r in enumerate(roots)]


# --------------------------------------------------------------------------- bare loop


@njit(nogil=True)  # not cached: a script's cache breaks when the file is also imported (module name)
def bare_sweep_nb(lo, hi, means, fast_row, slow_row, cash_vol, budget, open_, close, roll, multiplier, commission,
                  slippage, capital, margin, pnl_out, stats_out):
    """The bare loop over sets lo..hi-1: fbt's signal and sizing, P&L arithmetic only.

    Signal and volatility-target sizing as fbt's, then P&L
    arithmetic only (fill at the next open; commission + slippage per contract
    per side; a round trip per contract held at a roll close); per-bar P&L
    (USD) and net P&L, Sharpe, max drawdown, trades, rolls per set, and a flag
    (1.0) when the initial ``margin`` (USD per contract) of what is held or
    wanted came within 10 % of the equity at some fill or close (fbt's margin
    rules may then act)."""
    n = len(close)
    signal = np.empty(n)
    target = np.empty(n, dtype=np.int64)
    equity = np.empty(n)
    side_cost = commission + slippage * multiplier
    for s in range(lo, hi):
        f = means[fast_row[s]]
        w = means[slow_row[s]]
        for i in range(n):
            d = f[i] - w[i]
            signal[i] = 1.0 if d > 0.0 else (-1.0 if d < 0.0 else 0.0)
        targets_nb(signal, 0, cash_vol, budget, cash_vol, False, target)
        pos = 0
        eq = capital
        prev_close = 0.0
        trades = 0
        rolls = 0
        near = 0.0
        row = pnl_out[s]
        for i in range(n):
            c = close[i]
            if i > 0:
                want = target[i - 1]
                o = open_[i]
                if abs(want) * margin > 0.9 * (eq + pos * (o - prev_close) * multiplier):  # at the fill
                    near = 1.0
                eq += pos * (o - prev_close) * multiplier + want * (c - o) * multiplier - abs(want - pos) * side_cost
                trades += want != pos
                pos = want
            if roll[i] and pos != 0:
                eq -= 2 * abs(pos) * side_cost
                rolls += 1
            if abs(target[i]) * margin > 0.9 * eq or abs(pos) * margin > 0.9 * eq:
                near = 1.0
            row[i] = eq - (equity[i - 1] if i > 0 else capital)
            equity[i] = eq
            prev_close = c
        st = stats_out[s]
        equity_stats_nb(equity, capital, st)
        st[3] = trades
        st[4] = rolls
        st[5] = near


def bare_sweep(data: MarketData, base: BacktestSpec, sets: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The bare loop on one market: (pnl[sets, bars], stats[sets, 6])."""
    frame = data.frame
    spec = data.spec
    sizer = Sizer(data, base)
    windows = sorted({p["fast"] for p in sets} | {p["slow"] for p in sets})
    row_of = {w: j for j, w in enumerate(windows)}
    close = frame["close"].to_numpy(float)
    means = window_means(close, windows)
    fast_row = np.array([row_of[p["fast"]] for p in sets], dtype=np.int64)
    slow_row = np.array([row_of[p["slow"]] for p in sets], dtype=np.int64)
    m, n = len(sets), len(frame)
    pnl, stats = np.empty((m, n)), np.empty((m, 6))
    args = (means, fast_row, slow_row, np.ascontiguousarray(sizer.cash_vol), float(sizer.budget),
            frame["open"].to_numpy(float), close, frame["roll"].to_numpy(bool), float(spec.multiplier),
            float(spec.commission), float(base.slippage_ticks * spec.tick_size), float(base.capital),
            float(spec.initial_margin), pnl, stats)
    bounds = np.linspace(0, m, 4 * WORKERS + 1).astype(int)
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda k: bare_sweep_nb(bounds[k], bounds[k + 1], *args), range(len(bounds) - 1)))
    return pnl, stats


# --------------------------------------------------------------------------- vectorbt


def vectorbt_sweep(data: MarketData, base: BacktestSpec, sets: list[dict], targets: np.ndarray | None = None):
    """vectorbt's broadcast sweep of ``sets`` on one market.

    Returns (net P&L, Sharpe, max drawdown, orders) per set. ``targets`` (bars x sets, contracts
    decided at each close): use these instead of vectorbt's own signal."""
    import vectorbt as vbt

    frame = data.frame
    spec = data.spec
    close = frame["close"].to_numpy(float)
    open_ = frame["open"].to_numpy(float)
    mult = float(spec.multiplier)
    if targets is None:
        sizer = Sizer(data, base)
        windows = sorted({p["fast"] for p in sets} | {p["slow"] for p in sets})
        row_of = {w: j for j, w in enumerate(windows)}
        ma = vbt.MA.run(close, window=windows).ma.to_numpy()
        diff = ma[:, [row_of[p["fast"]] for p in sets]] - ma[:, [row_of[p["slow"]] for p in sets]]
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = np.sign(np.nan_to_num(diff)) * (sizer.budget / sizer.cash_vol)[:, None]
        targets = np.round(np.where(np.isfinite(raw), raw, 0.0))
    held = np.vstack([np.zeros((1, targets.shape[1])), targets[:-1]])  # filled at the next open
    traded = np.abs(np.diff(held, axis=0, prepend=0.0))
    pf = vbt.Portfolio.from_orders(
        close[:, None], size=held * mult, size_type="targetamount", price=open_[:, None], direction="both",
        fixed_fees=traded * float(spec.commission), slippage=(base.slippage_ticks * spec.tick_size / open_)[:, None],
        init_cash=1e9, freq="1D")
    pnl = pf.total_profit().to_numpy()
    return pnl, pf.sharpe_ratio().to_numpy(), pf.max_drawdown().to_numpy(), pf.orders.count().to_numpy()


# --------------------------------------------------------------------------- timing


@njit(nogil=True)
def _spin_nb(n):
    s = 0.0
    for i in range(n):
        s += np.sqrt(i * 1.0)
    return s


def thread_scaling() -> float:
    """How many cores two threads got here and now (~2.0 on two idle cores).

    2 x (time of half the work on one thread) / (time of all of it on two threads).
    """
    work = 60_000_000
    _spin_nb(10)
    t0 = time.perf_counter()
    _spin_nb(work // 2)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_spin_nb, [work // 2, work // 2]))
    two = time.perf_counter() - t0
    return 2 * one / two


def median_time(fn, repeat: int) -> tuple[float, list[float], float]:
    """Median wall seconds, all runs' wall seconds and median process CPU seconds.

    Of ``repeat`` runs after one untimed warm-up run (CPU: all the process's threads).
    """
    fn()  # warm-up: Numba compile / cache load, vectorbt's first call
    times, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), times, statistics.median(cpu)


def workload(name: str, markets: list[MarketData], base: BacktestSpec, sets: list[dict], repeat: int) -> dict:
    """Time the three sweeps over ``markets`` and check them against each other."""
    bars = sum(len(d.frame) for d in markets)
    log(f"{name}: {len(markets)} markets, {bars:,} bars, {len(sets)} sets")
    for d in markets:  # the strategy frames and sizing inputs, as a caller holding MarketData has them
        d.frame  # noqa: B018

    fbt_out: list = []

    def fbt() -> None:
        fbt_out[:] = [run_sweep(base, d, sets, workers=WORKERS) for d in markets]

    bare_out: list = []

    def bare() -> None:
        bare_out[:] = [bare_sweep(d, base, sets) for d in markets]

    def vbt() -> None:
        for d in markets:
            vectorbt_sweep(d, base, sets)

    t_fbt, ts_fbt, c_fbt = median_time(fbt, repeat)
    log(f"  fbt {t_fbt:.3f} s (CPU {c_fbt:.3f} s)")
    t_bare, ts_bare, c_bare = median_time(bare, repeat)
    log(f"  bare {t_bare:.3f} s (CPU {c_bare:.3f} s)")
    t_vbt, ts_vbt, c_vbt = median_time(vbt, max(1, repeat - 1))
    log(f"  vectorbt {t_vbt:.3f} s (CPU {c_vbt:.3f} s)")

    # checks: bare loop = fbt for every set (no margin refusals or calls here), vectorbt = fbt - roll costs
    worst_bare = worst_vbt = 0.0
    compared = 0
    for d, sweep, (pnl, stats) in zip(markets, fbt_out, bare_out):
        table = sweep.table
        # the bare loop has no margin: compare the sets whose margin never came near the equity
        plain = (table["margin_calls"] == 0).to_numpy() & (stats[:, 5] == 0)
        compared += int(plain.sum())
        diff = np.abs(np.cumsum(pnl[plain], axis=1) - np.cumsum(sweep.pnl.to_numpy().T[plain], axis=1))
        diff = float(diff.max()) if plain.any() else 0.0
        assert diff < CENT, (d.root, diff)
        worst_bare = max(worst_bare, diff)
        assert np.array_equal(stats[plain, 4], table["rolls"].to_numpy()[plain])
        if not plain.any():
            continue
        pick = np.flatnonzero(plain)[np.linspace(0, plain.sum() - 1, 4).astype(int)]
        frame = d.frame
        means = window_means(frame["close"].to_numpy(float), sorted({sets[k]["fast"] for k in pick}
                                                                    | {sets[k]["slow"] for k in pick}))
        windows = sorted({sets[k]["fast"] for k in pick} | {sets[k]["slow"] for k in pick})
        sizer = Sizer(d, base)
        targets = np.empty((len(frame), len(pick)))
        for j, k in enumerate(pick):
            sig = means[windows.index(sets[k]["fast"])] - means[windows.index(sets[k]["slow"])]
            sig = np.where(np.isnan(sig), 0, np.sign(sig))
            targets[:, j] = sizer.contracts(sig)
        v_pnl, _, _, _ = vectorbt_sweep(d, base, [sets[k] for k in pick], targets)
        gap = np.abs(v_pnl - table["roll_costs"].to_numpy()[pick] - table["net_pnl"].to_numpy()[pick]).max()
        assert gap < CENT, (d.root, gap)
        worst_vbt = max(worst_vbt, float(gap))
    backtests = len(markets) * len(sets)
    return {"workload": name, "markets": len(markets), "bars": bars, "sets": len(sets), "backtests": backtests,
            "fbt_s": t_fbt, "vectorbt_s": t_vbt, "bare_s": t_bare,
            "fbt_cpu_s": c_fbt, "vectorbt_cpu_s": c_vbt, "bare_cpu_s": c_bare, "fbt_runs": ts_fbt, "vectorbt_runs": ts_vbt,
            "bare_runs": ts_bare, "vectorbt_over_fbt": t_vbt / t_fbt, "fbt_over_bare": t_fbt / t_bare,
            "bar_steps_per_s": bars * len(sets) / t_fbt, "check_bare_usd": worst_bare,
            "check_vectorbt_usd": worst_vbt,
            "margin_bound": backtests - compared}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 sets, 5 years of demo data, 20 x 1,260 bars")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per sweep (median; default 3, quick 2)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = ap.parse_args()
    quick = args.quick
    repeat = args.repeat or (2 if quick else 3)
    load_before = os.getloadavg()
    scaling_before = thread_scaling()
    grid = {"fast": list(range(5, 105, 5)), "slow": list(range(110, 610, 10))}
    sets = parameter_sets("sma_crossover", grid)
    assert len(sets) == 1000
    if quick:
        sets = parameter_sets("sma_crossover", grid, mode="random", n=200, seed=1)

    import vectorbt  # noqa: F401  (import time not counted)

    log("building the demo markets")
    demo = demo_markets(5 if quick else None)
    base_a = BacktestSpec.create("sma_crossover", {}, library=STRATEGIES, capital=1_000_000.0)
    a = workload("(a) demo", demo, base_a, sets, repeat)
    log("building the synthetic markets")
    synth = synthetic_markets(20, 1_260 if quick else 2_520)
    base_b = BacktestSpec.create("sma_crossover", {}, library=STRATEGIES, capital=10_000_000.0, idm=1.5)
    b = workload("(b) synthetic", synth, base_b, sets, repeat)
    load_after = os.getloadavg()
    scaling_after = thread_scaling()

    rows = []
    for w, goal in ((a, ("vectorbt / fbt >= 5", a["vectorbt_over_fbt"] >= 5)),
                    (b, ("fbt < 2 s" if not quick else "fbt < 2 s (full run only)", b["fbt_s"] < 2))):
        head = f"{w['workload']}: {w['sets']} sets x {w['markets']} markets ({w['bars']:,} bars)"
        rows += [(head, "fbt run_sweep (sweep engine, 2 threads)", f"{w['fbt_s']:.3f} s (CPU {w['fbt_cpu_s']:.3f} s)  "
                  f"({w['backtests'] / w['fbt_s']:,.0f} backtests/s, {w['bar_steps_per_s'] / 1e6:,.0f} M bar-steps/s)"),
                 (head, "vectorbt broadcast sweep (MA.run + from_orders + stats)",
                  f"{w['vectorbt_s']:.3f} s (CPU {w['vectorbt_cpu_s']:.3f} s)"),
                 (head, "bare Numba loop (2 threads)", f"{w['bare_s']:.3f} s (CPU {w['bare_cpu_s']:.3f} s)"),
                 (head, "ratio vectorbt / fbt", f"{w['vectorbt_over_fbt']:.1f}x"),
                 (head, "ratio fbt / bare loop", f"{w['fbt_over_bare']:.2f}x"),
                 (head, "ratio vectorbt / fbt on CPU time", f"{w['vectorbt_cpu_s'] / w['fbt_cpu_s']:.1f}x"),
                 (head, f"goal: {goal[0]}", "MET" if goal[1] else "NOT MET"),
                 (head, "check: |bare - fbt| equity, |vectorbt - roll costs - fbt| P&L",
                  f"{w['check_bare_usd']:.1e} / {w['check_vectorbt_usd']:.1e} USD (on {w['backtests'] - w['margin_bound']:,} "
                  f"backtests; {w['margin_bound']:,} had margin near the equity or calls)")]
    width = max(len(r[1]) for r in rows)
    print(f"fbt sweep bench{' (--quick)' if quick else ''}: median of {repeat} runs after a warm-up; "
          f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} ({os.cpu_count()} cores); "
          f"cores 2 threads got (nogil probe): {scaling_before:.2f} before, {scaling_after:.2f} after")
    section = None
    for head, what, figure in rows:
        if head != section:
            print(f"\n{head}")
            section = head
        print(f"  {what:<{width}}  {figure}")
    if args.json:
        Path(args.json).write_text(json.dumps({"quick": quick, "repeat": repeat, "load_before": load_before,
                                               "load_after": load_after,
                                               "thread_scaling": [scaling_before, scaling_after], "a": a, "b": b}, indent=2))


if __name__ == "__main__":
    main()
