"""End to end: nothing before a date D may move when only data on or after D changes.

The whole asset graph runs twice, each time in its own FBT_HOME through the
in-process runner (:func:`fbt_pipelines.location.pipeline_runner.run_pipeline`),
on the same sample data for ES and CL (2012-2021):

- ``base``: the landing CSV files as written;
- ``moved``: the same files with every bar dated on or after D (2020-01-02)
  raised by a whole number of ticks, the same number on open, high, low and
  close of a row (so every bar stays consistent and on the tick grid), a
  different number per row (20 to 60 ticks, seeded by the contract), volume
  and open interest untouched (so the volume and calendar roll dates stay).

The perturbation is applied to the raw per-contract bars *before* ingest, so
it reaches everything downstream the way new data does: the roll gaps of every
roll after D change, hence the Panama (back-adjusted) level of every bar
before D shifts by the change of their sum. (The unit leak tests perturb the
continuous series after back-adjustment and cannot see that.) The test checks
the shift really reaches the earlier Panama levels, then that every row
before D of what a trader acts on is unchanged: features (all but the label),
the model's out-of-sample probabilities, every strategy's positions, equity
and trades (contracts and raw prices), the portfolio's positions, equity and
trades, and the sweep's walk-forward equity.

D is after the first walk-forward fold's training end (2018-12-31, the
model's default) and its embargo: predictions before D come from folds whose
training rows (labels purged at their training end) all end before D.

Equality: integers (positions, contracts, trade kinds and contracts) and
dates exactly; floats to ``rtol = 1e-9`` (with ``atol = 1e-9`` for values
near zero). Exact float equality is impossible here: the Panama level of a
bar before D is ``raw + shift`` with a different ``shift`` in each run, and
the float rounding of that sum differs in the last bits. Measured on this
data: every compared column is bit-identical except ``ewmac_16_64`` (3,557 of
4,124 rows, at most 1.8e-13) and six trade raw prices (at most 1.4e-14
points). A ratio of Panama levels (the old
``dist_high_60 = close / close.rolling(60).max() - 1``) moved 3,642 of 4,124
earlier feature rows by up to 0.014, all 502 earlier predictions, and the CL
``ml_signal`` backtest's positions, equity and trades: four tests fail.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.config import paths
from fbt_pipelines.marketdata.sample_data import tick_decimals, write_sample_data
from fbt_pipelines.ml.features import CROSS_MARKET_COLUMNS, FEATURE_COLUMNS
from tests.conftest import use_private_home

pytestmark = pytest.mark.slow

MARKETS = ["ES", "CL"]
START, END = dt.date(2012, 1, 3), dt.date(2021, 12, 31)
D = pd.Timestamp("2020-01-02", tz="UTC")
"""First session whose bars are moved (UTC). After the first fold's training end (2018-12-31) + embargo."""
TICKS = (20, 60)
"""Each moved row is raised by this many ticks (inclusive range, drawn per row)."""
RTOL = ATOL = 1e-9

# What is compared, per warehouse table: (key columns, exact columns, float columns).
# Left out on purpose, and checked to differ below: Panama price levels (close,
# open, high, low; a trade's adjusted ``price``), which move by construction;
# run identities (MLflow run ids, model versions, data versions), which are new per run.
COMPARED: dict[str, tuple[list[str], list[str], list[str]]] = {
    "features": (["root", "ts"], ["horizon"],
                 [*FEATURE_COLUMNS, "dead_zone"]),
    "predictions": (["root", "ts"], ["fold", "train_end"], ["prob_up"]),
    "backtest_equity": (["root", "strategy", "ts"], ["position"], ["pnl", "equity", "margin", "costs"]),
    "backtest_trades": (["root", "strategy", "ts"], ["contract", "kind", "reason", "contracts", "refused"],
                        ["raw_price", "to_raw_price", "commission", "slippage"]),
    "portfolio_positions": (["root", "ts"], ["position", "trade"],
                            ["raw_close", "notional_usd", "margin_usd", "pnl", "costs_usd"]),
    "portfolio_equity": (["ts"], ["gross_positions"],
                         ["pnl", "equity", "margin", "costs", "cash", "free_cash", "gross_exposure",
                          "net_exposure", "leverage", "margin_to_equity"]),
    "portfolio_trades": (["root", "ts"], ["contract", "kind", "contracts"],
                         ["raw_price", "notional_usd", "commission_usd", "slippage_usd"]),
    "walk_forward_equity": (["root", "ts"], ["set", "window"], ["pnl", "equity", "in_sample_sharpe"]),
}


def move_landing_files(landing: Path, roots: list[str], first: pd.Timestamp) -> int:
    """Raise every bar dated on or after ``first`` in the landing CSVs of ``roots``.

    Per row the same whole number of ticks (drawn from :data:`TICKS`, seeded by
    the contract) is added to open, high, low and close; the file is rewritten
    with the tick grid's decimals; volume and open interest are untouched.
    Returns the number of rows moved.
    """
    moved = 0
    for root in roots:
        spec = market_spec(root)
        decimals = tick_decimals(spec.tick_size)
        for path in sorted((landing / root).glob("*.csv")):
            frame = pd.read_csv(path, dtype={"contract": str, "ts": str})
            later = (pd.to_datetime(frame["ts"], utc=True) >= first).to_numpy()
            if not later.any():
                continue
            rng = np.random.default_rng(zlib.crc32(path.stem.encode()))
            ticks = np.zeros(len(frame), dtype=np.int64)
            ticks[later] = rng.integers(TICKS[0], TICKS[1] + 1, size=int(later.sum()))
            for col in ("open", "high", "low", "close"):
                frame[col] = np.round(frame[col].to_numpy(float) + ticks * spec.tick_size, decimals)
            frame.to_csv(path, index=False, float_format=f"%.{decimals}f")
            moved += int(later.sum())
    return moved


@dataclass(frozen=True)
class Run:
    home: Path
    tables: dict[str, pd.DataFrame]


def read_tables(home: Path, names: list[str]) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        # table names come from the constant list above, never from input
        return {name: conn.execute(f"SELECT * FROM {name}").df() for name in names}


def run_graph(home: Path, redis_url: str, move: bool) -> Run:
    """Sample data in a fresh FBT_HOME (moved on or after D if ``move``), the whole graph, its tables."""
    from dagster import DagsterInstance

    from fbt_pipelines.location.instance import ensure_dagster_home
    from fbt_pipelines.location.pipeline_runner import run_pipeline

    mp = pytest.MonkeyPatch()
    try:
        use_private_home(mp, home, redis_url)
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))  # undone with the rest (ensure_dagster_home sets it)
        write_sample_data(paths().landing, [market_spec(m) for m in MARKETS], START, END)
        if move:
            assert move_landing_files(paths().landing, MARKETS, D) > 1000
        ensure_dagster_home()
        instance = DagsterInstance.get()
        try:
            run_pipeline(instance, MARKETS)
        finally:
            instance.dispose()
        names = sorted({*COMPARED, "continuous_prices", "bars"})
        return Run(home, read_tables(home, names))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, redis_url) -> tuple[Run, Run]:
    base = run_graph(tmp_path_factory.mktemp("causality_base"), redis_url, move=False)
    moved = run_graph(tmp_path_factory.mktemp("causality_moved"), redis_url, move=True)
    return base, moved


def before_d(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    ts = pd.to_datetime(frame["ts"], utc=True)
    return frame[ts < D].sort_values(keys, kind="stable").reset_index(drop=True)


def assert_same_before_d(name: str, base: pd.DataFrame, moved: pd.DataFrame) -> None:
    keys, exact, floats = COMPARED[name]
    missing = sorted(set(keys + exact + floats) - set(base.columns))
    assert not missing, f"{name}: columns {missing} not in the table (columns: {list(base.columns)})"
    a, b = before_d(base, keys + exact), before_d(moved, keys + exact)
    assert len(a) > 0, f"{name}: no row before {D.date()} to compare"
    assert len(a) == len(b), f"{name}: {len(a)} rows before {D.date()} in the base run, {len(b)} with later data moved"
    for col in keys + exact:
        same = (a[col] == b[col]) | (a[col].isna() & b[col].isna())
        if not same.all():
            i = int(np.flatnonzero(~same.to_numpy())[0])
            raise AssertionError(f"{name}.{col}: {int((~same).sum())} rows before {D.date()} changed when only data "
                                 f"on or after it moved; first: {a.loc[i, keys].to_dict()}: "
                                 f"{a.loc[i, col]!r} -> {b.loc[i, col]!r}")
    for col in floats:
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        close = np.isclose(x, y, rtol=RTOL, atol=ATOL) | (np.isnan(x) & np.isnan(y))
        if not close.all():
            i = int(np.flatnonzero(~close)[0])
            raise AssertionError(f"{name}.{col}: {int((~close).sum())} of {len(x)} rows before {D.date()} changed "
                                 f"when only data on or after it moved; first: {a.loc[i, keys].to_dict()}: "
                                 f"{x[i]!r} -> {y[i]!r}")


def test_the_move_reaches_the_panama_levels_before_d_but_not_the_raw_bars(runs):
    """Guards: the perturbation is the one described (else the test could not fail)."""
    base, moved = runs
    bars_a = before_d(base.tables["bars"], ["contract", "ts"])
    bars_b = before_d(moved.tables["bars"], ["contract", "ts"])
    cols = ["contract", "ts", "open", "high", "low", "close", "volume", "open_interest"]
    pd.testing.assert_frame_equal(bars_a[cols], bars_b[cols])  # raw bars before D: identical
    after = lambda f: f[pd.to_datetime(f["ts"], utc=True) >= D].sort_values(["contract", "ts"])  # noqa: E731
    la, lb = after(base.tables["bars"]), after(moved.tables["bars"])
    np.testing.assert_array_equal(la["volume"], lb["volume"])
    assert (lb["close"].to_numpy() > la["close"].to_numpy()).all()  # every later bar moved up
    for root in MARKETS:
        ca = before_d(base.tables["continuous_prices"].query("root == @root"), ["ts"])
        cb = before_d(moved.tables["continuous_prices"].query("root == @root"), ["ts"])
        assert ca["contract"].tolist() == cb["contract"].tolist()  # same roll dates
        np.testing.assert_array_equal(ca["raw_close"], cb["raw_close"])
        # every bar before D shifted by the same change of the later roll gaps' sum (float rounding aside)
        shift = (cb["close"] - ca["close"]).to_numpy()
        tick = market_spec(root).tick_size
        assert abs(shift[0]) >= tick, f"{root}: the later roll gaps did not move the Panama levels before D"
        np.testing.assert_allclose(shift, shift[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(COMPARED))
def test_nothing_before_d_moves(runs, name):
    base, moved = runs
    assert_same_before_d(name, base.tables[name], moved.tables[name])


def test_features_compared_are_every_feature_but_the_label(runs):
    base, _ = runs
    columns = set(base.tables["features"].columns)
    _, exact, floats = COMPARED["features"]
    assert columns - {"root", "ts"} - set(exact) - set(floats) == {"label"}
    # cross-market features are joined at training time from these columns: their
    # sources (ES ret_5, ret_20) are compared here; CL's rows get them from ES.
    assert set(CROSS_MARKET_COLUMNS).isdisjoint(columns)


@pytest.mark.parametrize("name", ["features", "predictions", "backtest_equity", "portfolio_equity"])
def test_data_after_d_did_move(runs, name):
    """The comparison is live: after D the same tables differ."""
    base, moved = runs
    keys, exact, floats = COMPARED[name]
    ts = lambda f: pd.to_datetime(f["ts"], utc=True)  # noqa: E731
    a = base.tables[name][ts(base.tables[name]) >= D].sort_values(keys, kind="stable")
    b = moved.tables[name][ts(moved.tables[name]) >= D].sort_values(keys, kind="stable")
    assert len(a) == len(b) > 0
    assert any(not np.allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=RTOL, atol=ATOL, equal_nan=True)
               for c in floats), f"{name}: nothing moved after D"


ORDER_CONFIGS = {
    "pct_stop_target": {"stop_loss": "2%", "take_profit": "4%"},
    "pct_trailing": {"trailing_stop": "3%"},
    "pct_limit": {"limit_offset": "0.5%", "stop_loss": "2%"},
    "points_atr": {"stop_loss": "2atr", "trailing_stop": "40", "take_profit": "3atr"},
}


def order_backtest(prices: pd.DataFrame, root: str, orders: dict[str, str], *, panama_percent: bool = False):
    """A 20-bar point-difference signal with ``orders`` on one run's continuous series.

    ``panama_percent``: the old rule, % distances of the Panama level (``raw_close``
    replaced by the adjusted close), to show this test sees that leak.
    """
    from fbt_pipelines.engine.futures_engine import EngineConfig, run_backtest

    p = prices.query("root == @root").sort_values("ts", kind="stable").reset_index(drop=True)
    if panama_percent:
        p = p.assign(raw_close=p["close"])
    target = np.sign(p["close"].diff(20).fillna(0.0)).astype(np.int64).to_numpy()
    return run_backtest(p, target, market_spec(root), EngineConfig(initial_capital=1e6, **orders),
                        maintenance_margins=market_spec(root).maintenance_margin)


@pytest.mark.parametrize("config", list(ORDER_CONFIGS))
def test_orders_before_d_do_not_move(runs, config):
    """Stops, targets, trailing stops and limits in %, points and ATR act on nothing after t."""
    base, moved = runs
    for root in MARKETS:
        a = order_backtest(base.tables["continuous_prices"], root, ORDER_CONFIGS[config])
        b = order_backtest(moved.tables["continuous_prices"], root, ORDER_CONFIGS[config])
        assert len(a.trades) > 10, f"{root} {config}: too few trades to test"
        ea, eb = (before_d(r.bars, ["ts"]) for r in (a, b))
        np.testing.assert_allclose(eb["equity"], ea["equity"], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{root} {config}: equity before D moved")
        ta, tb = (before_d(r.trades, ["ts"]) for r in (a, b))
        assert ta["reason"].tolist() == tb["reason"].tolist() and ta["contracts"].tolist() == tb["contracts"].tolist()
        np.testing.assert_allclose(tb["raw_price"], ta["raw_price"], rtol=RTOL, atol=ATOL)


def test_percent_of_panama_levels_would_leak(runs):
    """Guard: the same % orders on Panama levels change earlier trades (the test above can fail)."""
    base, moved = runs
    moved_any = False
    for root in MARKETS:
        for config in ("pct_stop_target", "pct_trailing", "pct_limit"):
            a, b = (order_backtest(r.tables["continuous_prices"], root, ORDER_CONFIGS[config], panama_percent=True)
                    for r in (base, moved))
            ea, eb = (before_d(r.bars, ["ts"])["equity"].to_numpy() for r in (a, b))
            moved_any |= not np.allclose(ea, eb, rtol=RTOL, atol=ATOL)
    assert moved_any
