"""Benchmark of fbt's bar ingest and of the Redis frame cache (a script, not a test).

    .venv/bin/python bench/ingest.py [--rows 5000000] [--runs 1] [--floor] [--general]
                                     [--profile auto|always|never] [--keep]

Writes a canonical CSV (``contract,ts,open,high,low,close,volume,open_interest``)
of 1-minute ES bars: 20 contracts (ESH2015 .. ESZ2019), each 250 CME Globex
sessions x 1,000 minutes from the session's open, so every bar lies inside a
session and nothing is quarantined. The files live in a temp folder under
``$FBT_HOME/tmp`` (or ``$TMPDIR``) that is deleted afterwards unless ``--keep``.

In one run it times:

(a) fbt: ``ingest_path(conn, csv, interval="1m")`` into a fresh DuckDB file:
    full validation, one transaction, content hash. The file is large and
    clean, so it takes the bulk path (fbt_pipelines/ingest/bulk_csv.py:
    DuckDB's typed CSV reader straight into ``bars`` with the row rules in
    the INSERT, then the checks on the stored rows); ``--general`` also
    times the general path on it (stage, validate with the SQL form of the
    row rules, insert; what a file with bad rows takes). A phase breakdown
    (scan = SHA-256 + line count, insert, checks, ...) is taken by wrapping
    the ingest's internal functions from here, and the SQL statements by a
    timing proxy of the connection;
(b) the original plan, as a normal user of those tools would write it:
    ``pandas.read_csv(csv, parse_dates=["ts"])`` then ``DataFrame.to_sql("bars",
    sqlite_connection, if_exists="append", index=False)`` (method None,
    chunksize the pandas default unless ``--chunksize``) inside one
    transaction (``with connection:``), into a fresh SQLite file; to_sql
    creates the table (no key). It validates nothing;
(floor, with ``--floor``) a bare ``INSERT INTO bars SELECT ... FROM read_csv``
    with typed columns: no line numbers, no checks, no hash -- not a usable
    ingest, the cost of DuckDB's CSV parse and storage alone;
(c) the Redis cache: a continuous-prices-shaped frame (1M rows, the 13
    columns ``back_adjust`` produces) written with ``replace_partition``, then
    ``read_partition_cached`` (hit) vs plain ``read_partition`` from DuckDB,
    median of several.

``--runs N`` repeats (a) and (b) N times on the same CSV (alternating) and
prints every run, then the best and the median of each and of the ratio
(both paths of the same run). Wall time and process CPU time are printed
with the load average: other processes on a shared machine skew wall times.
If fbt ingests fewer than 1M rows/s (``--profile auto``), a last ingest runs
under pyinstrument (cProfile if pyinstrument is not installed).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import duckdb
import exchange_calendars as xcals
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fbt_pipelines.catalog.specs import load_catalog  # noqa: E402
from fbt_pipelines.config import DEFAULT_REDIS_URL  # noqa: E402
from fbt_pipelines.marketdata import sessions as sessions_mod  # noqa: E402
from fbt_pipelines.ingest import bulk_csv  # noqa: E402
from fbt_pipelines.ingest import files as ingest  # noqa: E402  (the module whose phases are timed)
from fbt_pipelines.services import warehouse as wh  # noqa: E402

CONTRACTS = [f"ES{m}{y}" for y in range(2015, 2020) for m in "HMUZ"]  # 20 contracts
MINUTES = 1000  # bars per session from its open: inside [open, close) even on early-close days
SESSION_STRIDE = 63  # a new contract's bars start one quarter after the previous one's


# -- data -------------------------------------------------------------------

def write_minute_csv(path: Path, rows: int, seed: int = 7) -> int:
    """Write ~``rows`` valid 1-minute bars of ``CONTRACTS``; returns the row count."""
    sessions_per_contract = max(1, round(rows / (len(CONTRACTS) * MINUTES)))
    cal = xcals.get_calendar(sessions_mod.SESSION_CALENDAR, start="2015-01-01", end="2025-12-31")
    opens = cal.opens.dt.tz_convert(None).to_numpy().astype("datetime64[m]")
    rng = np.random.default_rng(seed)
    con = duckdb.connect()
    parts = []
    try:
        for i, contract in enumerate(CONTRACTS):
            o = opens[i * SESSION_STRIDE:i * SESSION_STRIDE + sessions_per_contract]
            ts = (o[:, None] + np.arange(MINUTES).astype("timedelta64[m]")[None, :]).ravel()
            n = len(ts)
            close = 2000.0 + 0.25 * np.cumsum(rng.integers(-4, 5, n))
            open_ = np.r_[2000.0, close[:-1]]
            frame = pd.DataFrame({
                "contract": contract, "ts": ts.astype("datetime64[us]"), "open": open_,
                "high": np.maximum(open_, close) + 0.25 * rng.integers(0, 3, n),
                "low": np.minimum(open_, close) - 0.25 * rng.integers(0, 3, n),
                "close": close, "volume": rng.integers(0, 5000, n), "open_interest": rng.integers(1000, 300_000, n),
            })
            part = path.with_name(f"{path.stem}.part{i:02d}.csv")
            con.register("frame", frame)
            con.execute(f"""COPY (SELECT contract, strftime(ts, '%Y-%m-%dT%H:%M:%SZ') AS ts, open, high, low, close,
                                         volume, open_interest FROM frame)
                            TO '{part}' (HEADER {str(i == 0).lower()}, DELIMITER ',')""")
            con.unregister("frame")
            parts.append(part)
    finally:
        con.close()
    with open(path, "wb") as out:  # concatenate (the first part carries the header)
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 24)
            part.unlink()
    return len(CONTRACTS) * sessions_per_contract * MINUTES


# -- timing helpers -----------------------------------------------------------

class Timers:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, name: str, seconds: float) -> None:
        self.total[name] += seconds
        self.calls[name] += 1


def timed(timers: Timers, name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers.add(name, time.perf_counter() - t)
    return wrapper


class TimedConnection:
    """Forwards to a DuckDB connection, timing each ``execute`` by statement."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, timers: Timers) -> None:
        self._conn, self._timers = conn, timers

    def execute(self, sql: str, *args, **kwargs):
        label = re.sub(r"\s+", " ", sql).strip()[:72]
        t = time.perf_counter()
        try:
            return self._conn.execute(sql, *args, **kwargs)
        finally:
            self._timers.add(label, time.perf_counter() - t)

    def __getattr__(self, name):
        return getattr(self._conn, name)


PHASES = {  # (module, function) -> phase
    (ingest, "scan_file"): "scan (hash + lines)", (ingest, "ensure_schema"): "schema",
    (bulk_csv, "insert_rows"): "bulk: insert", (bulk_csv, "check_rows"): "bulk: checks",
    (ingest, "_replace_older"): "replace older rows", (ingest, "_record_ingest"): "ingests row + versions",
    (ingest, "stage_csv"): "general: stage", (ingest, "contract_map"): "general: map",
    (ingest, "_validate"): "general: validate", (ingest, "_store"): "general: store",
}


def patch_ingest(phase: Timers) -> list[tuple[object, str, object]]:
    """Wrap the ingest's internals with timers; returns what to restore."""
    saved = []
    for (module, name), label in PHASES.items():
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, timed(phase, label, getattr(module, name)))
    return saved


def unpatch(saved) -> None:
    for obj, name, original in reversed(saved):
        if original is None:
            object.__delattr__(obj, name)
        else:
            setattr(obj, name, original)


def fresh(path: Path) -> Path:
    for p in (path, Path(f"{path}.wal")):
        if p.exists():
            p.unlink()
    return path


# -- (a) fbt ------------------------------------------------------------------

def bench_fbt(csv: Path, db: Path, rows: int, general: bool = False) -> dict:
    """``general``: keep the file off the bulk path (the general path's cost)."""
    specs = load_catalog()
    t = time.perf_counter()
    sessions_mod._session_arrays()  # the CME calendar 1990-2040, loaded once per process
    calendar_s = time.perf_counter() - t
    phase, sql = Timers(), Timers()
    saved = patch_ingest(phase)
    threshold = bulk_csv.BULK_MIN_BYTES
    bulk_csv.BULK_MIN_BYTES = 1 << 62 if general else threshold
    conn = duckdb.connect(str(fresh(db)))
    load = os.getloadavg()[0]
    try:
        t, cpu = time.perf_counter(), time.process_time()
        (result,) = ingest.ingest_path(TimedConnection(conn, sql), csv, interval="1m", specs=specs)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        bulk_csv.BULK_MIN_BYTES = threshold
        unpatch(saved)
        t = time.perf_counter()
        conn.close()
        close_s = time.perf_counter() - t
    assert result.status == "ok" and result.accepted == rows and result.quarantined == 0, result
    assert result.method == ("staged" if general else "bulk"), result
    return {"seconds": seconds, "cpu_s": cpu, "close_s": close_s, "calendar_s": calendar_s, "phase": phase,
            "sql": sql, "result": result, "load": load}


def bench_floor(csv: Path, db: Path, rows: int) -> dict:
    """What the DuckDB storage work alone costs: the same CSV straight into a
    ``bars``-shaped table by one ``INSERT ... SELECT FROM read_csv`` with
    typed columns -- no line numbers, no validation, no quarantine, no hash.
    Not a usable ingest; the lower bound fbt's ingest stands on."""
    conn = duckdb.connect(str(fresh(db)))
    try:
        wh.ensure_schema(conn)
        load = os.getloadavg()[0]
        t, cpu = time.perf_counter(), time.process_time()
        conn.execute(
            """INSERT INTO bars SELECT contract, 'ES', '1m', ts, open, high, low, close, volume, open_interest,
                                       'ffffffffffffffffffffffff'
               FROM read_csv(?, header = true, auto_detect = false,
                             columns = {'contract': 'VARCHAR', 'ts': 'TIMESTAMPTZ', 'open': 'DOUBLE',
                                        'high': 'DOUBLE', 'low': 'DOUBLE', 'close': 'DOUBLE',
                                        'volume': 'BIGINT', 'open_interest': 'BIGINT'})""", [str(csv)])
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        stored = conn.execute("SELECT count(*) FROM bars").fetchall()[0][0]
    finally:
        conn.close()
    assert stored == rows, stored
    return {"seconds": seconds, "cpu_s": cpu, "load": load}


# -- (b) pandas + SQLite --------------------------------------------------------

def bench_sqlite(csv: Path, db: Path, rows: int, chunksize: int | None) -> dict:
    fresh(db)
    load = os.getloadavg()[0]
    cpu = time.process_time()
    t0 = time.perf_counter()
    frame = pd.read_csv(csv, parse_dates=["ts"])
    t1 = time.perf_counter()
    con = sqlite3.connect(db)
    try:
        with con:  # one transaction
            frame.to_sql("bars", con, if_exists="append", index=False, chunksize=chunksize)
        t2 = time.perf_counter()
        cpu = time.process_time() - cpu
        stored = con.execute("SELECT count(*) FROM bars").fetchone()[0]
    finally:
        con.close()
    del frame
    assert stored == rows, stored
    return {"seconds": t2 - t0, "cpu_s": cpu, "read_csv_s": t1 - t0, "to_sql_s": t2 - t1, "load": load}


# -- (c) Redis cache ------------------------------------------------------------

def continuous_frame(n: int, seed: int = 3) -> pd.DataFrame:
    """Shaped like ``back_adjust``'s output for one market (13 columns)."""
    rng = np.random.default_rng(seed)
    close = 2000.0 + 0.25 * np.cumsum(rng.integers(-4, 5, n))
    contract = np.array(CONTRACTS)[np.minimum(np.arange(n) * len(CONTRACTS) // n, len(CONTRACTS) - 1)]
    return pd.DataFrame({
        "root": "ES", "method": "panama",
        "ts": pd.date_range("2010-01-01", periods=n, freq="min", tz="UTC"),
        "contract": contract, "open": close - 0.25, "high": close + 0.5, "low": close - 0.5, "close": close,
        "raw_close": close + 12.5, "volume": rng.integers(0, 5000, n), "open_interest": rng.integers(0, 10**6, n),
        "days_to_expiry": rng.integers(0, 90, n), "roll": rng.random(n) < 0.0001,
    })


def bench_cache(db: Path, n: int, repeats: int) -> dict | None:
    from fbt_pipelines.services.local import redis_reachable
    from fbt_pipelines.services.bus import Bus
    from fbt_pipelines.services.cached_reads import read_partition_cached

    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not redis_reachable(url):
        print(f"(c) skipped: Redis at {url} does not answer")
        return None
    frame = continuous_frame(n)
    conn = duckdb.connect(str(fresh(db)))
    bus = Bus(url, prefix=f"fbtbench-{uuid.uuid4().hex[:12]}")
    try:
        wh.replace_partition(conn, "continuous_prices", "ES", frame)
        t = time.perf_counter()
        miss, from_cache = read_partition_cached(conn, bus, "continuous_prices", "ES", order_by=["ts"])
        miss_s = time.perf_counter() - t
        assert not from_cache and len(miss) == n
        plain, hit = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            a = wh.read_partition(conn, "continuous_prices", "ES", order_by=["ts"])
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            b, from_cache = read_partition_cached(conn, bus, "continuous_prices", "ES", order_by=["ts"])
            hit.append(time.perf_counter() - t)
            assert from_cache
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
        key = bus.cache_key("continuous_prices:ES", wh.partition_version(conn, "continuous_prices", "ES"))
        gets = []
        for _ in range(repeats):
            t = time.perf_counter()
            size = len(bus._client.get(key))
            gets.append(time.perf_counter() - t)
        return {"rows": n, "cols": frame.shape[1], "plain_s": statistics.median(plain),
                "hit_s": statistics.median(hit), "miss_s": miss_s, "bytes": size, "repeats": repeats,
                "get_s": statistics.median(gets)}
    finally:
        conn.close()
        client = bus._client
        if client is not None:
            keys = list(client.scan_iter(match=f"{bus.prefix}:*", count=500))
            if keys:
                client.delete(*keys)
        bus.close()


# -- profile ----------------------------------------------------------------------

def profile_fbt(csv: Path, db: Path) -> None:
    specs = load_catalog()
    conn = duckdb.connect(str(fresh(db)))
    try:
        try:
            from pyinstrument import Profiler
        except ImportError:
            Profiler = None
        if Profiler is not None:
            profiler = Profiler(interval=0.005)
            profiler.start()
            ingest.ingest_path(conn, csv, interval="1m", specs=specs)
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False))
        else:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            ingest.ingest_path(conn, csv, interval="1m", specs=specs)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    finally:
        conn.close()


# -- main ---------------------------------------------------------------------------

def _stats(values: list[float]) -> str:
    return f"best {max(values):,.0f}, median {statistics.median(values):,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="bars in the CSV (rounded to whole sessions)")
    ap.add_argument("--runs", type=int, default=1, help="repeat (a) and (b) on the same CSV")
    ap.add_argument("--chunksize", type=int, default=None, help="DataFrame.to_sql chunksize (default: pandas')")
    ap.add_argument("--cache-rows", type=int, default=1_000_000, help="rows of the cached frame in (c)")
    ap.add_argument("--repeats", type=int, default=7, help="timed reads per side in (c); the median is shown")
    ap.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                    help="profile fbt's ingest (auto: if below 1M rows/s)")
    ap.add_argument("--floor", action="store_true",
                    help="also time a bare DuckDB INSERT ... FROM read_csv (no validation): the storage floor")
    ap.add_argument("--general", action="store_true",
                    help="also time fbt's general path (stage, validate, insert) on the same file")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (CSV and databases)")
    args = ap.parse_args()

    base = None
    if os.environ.get("FBT_HOME"):
        base = Path(os.environ["FBT_HOME"]) / "tmp"
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fbt-bench-ingest-", dir=base))
    print(f"work folder: {work}  (duckdb {duckdb.__version__}, pandas {pd.__version__}, "
          f"sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f})")
    try:
        csv = work / "es_minutes.csv"
        t = time.perf_counter()
        rows = write_minute_csv(csv, args.rows)
        print(f"CSV: {rows:,} rows, {csv.stat().st_size / 2**20:,.0f} MiB, 1 file, "
              f"written in {time.perf_counter() - t:.1f} s")

        print("\n(a)/(b) ingest of the same CSV (load = 1-minute load average when the path started)")
        print(f"{'run':<4} {'path':<44} {'rows':>10} {'seconds':>8} {'CPU s':>7} {'rows/s':>11} {'load':>6}")
        fbt_rates, sq_rates, ratios, fbt = [], [], [], None
        for run in range(1, args.runs + 1):
            fbt = bench_fbt(csv, work / "fbt.duckdb", rows)
            fbt_rates.append(rows / fbt["seconds"])
            print(f"{run:<4} {'fbt ingest_path -> DuckDB (validated)':<44} {rows:>10,} {fbt['seconds']:>8.2f} "
                  f"{fbt['cpu_s']:>7.2f} {fbt_rates[-1]:>11,.0f} {fbt['load']:>6.2f}", flush=True)
            if args.floor:
                fl = bench_floor(csv, work / "floor.duckdb", rows)
                print(f"{run:<4} {'  floor: INSERT FROM read_csv, no checks':<44} {rows:>10,} {fl['seconds']:>8.2f} "
                      f"{fl['cpu_s']:>7.2f} {rows / fl['seconds']:>11,.0f} {fl['load']:>6.2f}", flush=True)
            if args.general:
                gp = bench_fbt(csv, work / "general.duckdb", rows, general=True)
                print(f"{run:<4} {'  fbt general path (what bad files take)':<44} {rows:>10,} "
                      f"{gp['seconds']:>8.2f} {gp['cpu_s']:>7.2f} {rows / gp['seconds']:>11,.0f} {gp['load']:>6.2f}",
                      flush=True)
            if args.skip_sqlite:
                continue
            sq = bench_sqlite(csv, work / "plan.sqlite", rows, args.chunksize)
            sq_rates.append(rows / sq["seconds"])
            ratios.append(sq["seconds"] / fbt["seconds"])
            print(f"{run:<4} {'pandas read_csv + to_sql -> SQLite':<44} {rows:>10,} {sq['seconds']:>8.2f} "
                  f"{sq['cpu_s']:>7.2f} {sq_rates[-1]:>11,.0f} {sq['load']:>6.2f}"
                  f"   (read_csv {sq['read_csv_s']:.1f} s, to_sql {sq['to_sql_s']:.1f} s)")
            print(f"{run:<4} ratio: fbt is {ratios[-1]:.1f}x the rows/s of pandas + SQLite "
                  f"(CPU-time ratio {sq['cpu_s'] / fbt['cpu_s']:.1f}x)", flush=True)
        print(f"\nfbt rows/s over {args.runs} run(s): {_stats(fbt_rates)}")
        if ratios:
            print(f"pandas + SQLite rows/s: {_stats(sq_rates)}")
            print(f"ratio: best {max(ratios):.1f}x, median {statistics.median(ratios):.1f}x "
                  f"(to_sql chunksize {args.chunksize or 'pandas default (all rows)'})")
        print(f"(outside the timing: CME calendar load {fbt['calendar_s']:.2f} s once per process; "
              f"closing the DuckDB connection (checkpoint) {fbt['close_s']:.2f} s)")

        print("\nfbt ingest_path phases (last run)")
        phase = fbt["phase"]
        for name in PHASES.values():
            s = phase.total.get(name, 0.0)
            if s:
                print(f"  {name:<24} {s:7.2f} s  {100 * s / fbt['seconds']:5.1f} %")
        print("  SQL statements >= 0.05 s:")
        for label, s in sorted(fbt["sql"].total.items(), key=lambda kv: -kv[1]):
            if s >= 0.05:
                print(f"    {s:7.2f} s  {label}")

        if not args.skip_cache:
            c = bench_cache(work / "cache.duckdb", args.cache_rows, args.repeats)
            if c:
                print(f"\n(c) continuous_prices partition, {c['rows']:,} rows x {c['cols']} columns "
                      f"({c['bytes'] / 2**20:.0f} MiB Arrow IPC in Redis), median of {c['repeats']}")
                print(f"  DuckDB read_partition          {c['plain_s'] * 1000:8.1f} ms")
                print(f"  read_partition_cached (hit)    {c['hit_s'] * 1000:8.1f} ms"
                      f"  (of which the Redis GET alone {c['get_s'] * 1000:.1f} ms)")
                print(f"  read_partition_cached (miss, first call: read + put) {c['miss_s'] * 1000:.1f} ms")
                print(f"  ratio: the cache hit is {c['plain_s'] / c['hit_s']:.2f}x the speed of the DuckDB read")

        rate = max(fbt_rates)
        if args.profile == "always" or (args.profile == "auto" and rate < 1_000_000):
            print(f"\nprofile of another ingest (best {rate:,.0f} rows/s < 1,000,000):")
            profile_fbt(csv, work / "profile.duckdb")
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (other processes on this machine skew wall times)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
