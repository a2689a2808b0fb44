"""Benchmark of the Databento DBN import (a script, not a test).

    .venv/bin/python bench/ingest_dbn.py [--rows 2000000] [--runs 3] [--zstd] [--general] [--profile] [--keep]

Writes an ohlcv-1m DBN file with the ``databento-dbn`` library's own
encoding: the metadata by ``Metadata.encode()``, the records as a NumPy
structured array of the library's record layout (``OHLCVMsg._dtypes``,
``length`` 14 words, ``rtype`` OHLCV_1M); the first records are checked
byte-for-byte against ``bytes(OHLCVMsg(...))`` and decoded back by
``DBNDecoder``. Bars: ES contracts ESH2015 .. (20 of them), each 250 CME
Globex sessions x N minutes from the session's open (the year before its
expiry: the contracts overlap), on the 0.25 tick grid, so nothing is
quarantined; records in time order across instruments, as Databento writes
them; their definitions are in a ``*definition*.dbn`` file beside it
(library records).

Times ``ingest_path(conn, file)`` into a fresh DuckDB warehouse file per run
(decode, exact price conversion, the bulk path from arrays with the row
rules and the checks on the stored rows, one transaction, content hash) and
prints rows/s of each run and the best, with the goal (2M rows/s) as a
ratio; ``--general`` times the general path (staging from arrays, SQL
validation with line numbers) on the same file too. Wall and CPU seconds
and the load average are printed: on a shared machine the wall time
follows the load. ``--profile`` runs one more ingest under cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import databento_dbn as dbn
import duckdb
import exchange_calendars as xcals
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fbt_pipelines.catalog.specs import MONTH_CODES, load_catalog  # noqa: E402
from fbt_pipelines.ingest import bulk_arrays  # noqa: E402
from fbt_pipelines.ingest.files import ingest_path  # noqa: E402
from fbt_pipelines.marketdata.sessions import SESSION_CALENDAR  # noqa: E402

GOAL = 2_000_000  # rows/s
CONTRACTS = 20
SESSIONS = 250


def write_files(folder: Path, rows: int, zstd: bool) -> tuple[Path, int]:
    """(the bar file, its rows): ``rows`` rounded to whole sessions."""
    minutes = max(1, rows // (CONTRACTS * SESSIONS))
    cal = xcals.get_calendar(SESSION_CALENDAR, start="2015-01-01", end="2020-12-31")
    opens = cal.opens.dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    dtype = np.dtype([tuple(f) for f in dbn.OHLCVMsg._dtypes])
    n = CONTRACTS * SESSIONS * minutes
    recs = np.zeros(n, dtype=dtype)
    recs["length"] = dtype.itemsize // 4
    recs["rtype"] = int(dbn.RType.OHLCV_1M.value)
    recs["publisher_id"] = 1
    rng = np.random.default_rng(7)
    definitions = []
    per = SESSIONS * minutes
    for k in range(CONTRACTS):
        year, month = 2015 + k // 4, 3 * (k % 4 + 1)
        iid = 1000 + k
        expiry = np.datetime64(f"{year}-{month:02d}-15T13:30", "ns").astype(np.int64)
        definitions.append(dbn.InstrumentDefMsg(
            1, iid, int(opens[0]), int(opens[0]), 250_000_000, 1_000_000_000, f"ES{MONTH_CODES[month - 1]}{year % 10}",
            "ES", "FUT", dbn.InstrumentClass.FUTURE, dbn.SecurityUpdateAction.ADD, expiration=int(expiry)))
        first = max(0, np.searchsorted(opens, expiry) - SESSIONS - 5)
        ts = (opens[first:first + SESSIONS, None] + np.arange(minutes, dtype=np.int64)[None, :] * 60_000_000_000)
        ticks = 8000 + np.cumsum(rng.integers(-3, 4, per))  # quarter points: 2000.00 +-
        block = recs[k * per:(k + 1) * per]
        block["instrument_id"] = iid
        block["ts_event"] = ts.ravel()
        close = ticks * 250_000_000
        block["open"], block["close"] = close, close
        block["high"], block["low"] = close + 500_000_000, close - 250_000_000
        block["volume"] = rng.integers(0, 900, per)
    recs = recs[np.argsort(recs["ts_event"], kind="stable")]  # time order across instruments, as Databento's
    # the layout is the library's: the first records as its own encoder writes them
    for r in recs[:3]:
        msg = dbn.OHLCVMsg(int(r["rtype"]), int(r["publisher_id"]), int(r["instrument_id"]), int(r["ts_event"]),
                           int(r["open"]), int(r["high"]), int(r["low"]), int(r["close"]), int(r["volume"]))
        assert bytes(msg) == r.tobytes(), "record layout differs from the library's encoder"
    meta = dbn.Metadata("GLBX.MDP3", int(recs["ts_event"].min()), dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID,
                        dbn.Schema.OHLCV_1M, end=int(recs["ts_event"].max()) + 60_000_000_000)
    raw = meta.encode() + recs.tobytes()
    decoder = dbn.DBNDecoder()
    decoder.write(raw[:len(meta.encode()) + 3 * dtype.itemsize])
    assert [r.close for r in decoder.decode()[1:]] == recs["close"][:3].tolist()
    def_meta = dbn.Metadata("GLBX.MDP3", int(opens[0]), dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID,
                            dbn.Schema.DEFINITION)
    (folder / "glbx-mdp3.definition.dbn").write_bytes(def_meta.encode() + b"".join(map(bytes, definitions)))
    path = folder / ("glbx-mdp3.ohlcv-1m.dbn" + (".zst" if zstd else ""))
    if zstd:
        with open(path, "wb") as fh:
            transcoder = dbn.Transcoder(fh, dbn.Encoding.DBN, dbn.Compression.ZSTD)
            transcoder.write(raw)
            transcoder.finish()
    else:
        path.write_bytes(raw)
    return path, n


def one_ingest(folder: Path, path: Path, run: int, general: bool = False) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, accepted rows) of one ingest into a fresh
    warehouse; ``general``: with the bulk path switched off."""
    db = folder / f"warehouse-{run}.duckdb"
    specs = load_catalog()
    conn = duckdb.connect(str(db))
    old = bulk_arrays.BULK_MIN_ROWS
    bulk_arrays.BULK_MIN_ROWS = 1 << 62 if general else old
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        (result,) = ingest_path(conn, path, specs=specs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        bulk_arrays.BULK_MIN_ROWS = old
        conn.close()
        db.unlink(missing_ok=True)
    assert result.quarantined == 0 and result.status == "ok", result
    assert result.method == ("staged" if general else "bulk"), result.method
    return wall, cpu, result.accepted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000, help="bars in the file (rounded to whole sessions)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--zstd", action="store_true", help="zstd-compress the file (.dbn.zst)")
    ap.add_argument("--general", action="store_true", help="also time the general (staged) path")
    ap.add_argument("--profile", action="store_true", help="one more ingest under cProfile")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    base = Path(os.environ.get("FBT_HOME", tempfile.gettempdir())) / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-dbn-", dir=base))
    try:
        t0 = time.perf_counter()
        path, rows = write_files(folder, args.rows, args.zstd)
        print(f"file: {path.name}, {rows:,} ohlcv-1m records, {path.stat().st_size / 2**20:,.1f} MiB, "
              f"written in {time.perf_counter() - t0:.2f} s (duckdb {duckdb.__version__}, "
              f"databento-dbn {getattr(dbn, '__version__', '?')}, load {os.getloadavg()[0]:.2f})")
        rates, general = [], []
        for run in range(1, args.runs + 1):
            wall, cpu, accepted = one_ingest(folder, path, run)
            assert accepted == rows
            rates.append(rows / wall)
            print(f"run {run}: ingest_path (bulk) {wall:.3f} s wall, {cpu:.3f} s CPU, {rates[-1]:,.0f} rows/s, "
                  f"{rows / cpu:,.0f} rows per CPU s (load {os.getloadavg()[0]:.2f})")
            if args.general:
                wall, cpu, _ = one_ingest(folder, path, run, general=True)
                general.append(rows / wall)
                print(f"run {run}: ingest_path (general) {wall:.3f} s wall, {cpu:.3f} s CPU, "
                      f"{general[-1]:,.0f} rows/s (load {os.getloadavg()[0]:.2f})")
        best = max(rates)
        print(f"best {best:,.0f} rows/s, median {float(np.median(rates)):,.0f} rows/s; "
              f"goal {GOAL:,} rows/s: ratio best/goal = {best / GOAL:.2f}")
        if general:
            print(f"general path: best {max(general):,.0f} rows/s, median {float(np.median(general)):,.0f} rows/s")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            one_ingest(folder, path, 0)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
