"""Crash safety of ``ingest_path``: a process killed at any moment leaves the
warehouse exactly as it was before the ingest or exactly as after it.

A warehouse holds a first file; a second, larger file (minute bars of ES
contracts inside CME Globex sessions, overlapping the first so rows are
replaced, plus a few bad lines so quarantine rows are written) is ingested
by a child process that is SIGKILLed after a seeded random delay. The child
writes phase markers (ready, staged, validated, COMMIT started, COMMIT
returned, connection closed) to a file with unbuffered ``os.write``. An
uninterrupted run measures the phase windows; then two kills are aimed at
each window (a random delay after the marker that opens it, so run-to-run
timing noise cannot leave a window empty) and a few land at random delays
over the whole run. Every kill is classified by the markers written when it
landed:

- no COMMIT started          -> the state must equal 'before';
- COMMIT returned            -> the state must equal 'after';
- killed inside the COMMIT   -> either, nothing else.

Then the ingest is run again in this process and must reach 'after'.
The summary (kills per phase, before/after) is printed; see it with ``-s``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from fbt_pipelines.marketdata.sessions import SESSION_CALENDAR
from fbt_pipelines.ingest.files import ingest_path

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INTERVAL = "1m"
MINUTES = 1000  # minutes from each session's open: inside [open, close) even on early-close days
KILLS_PER_WINDOW = 2  # kills aimed at each phase window (5 windows) ...
UNIFORM_KILLS = 2  # ... plus kills anywhere in [0, 1.1 x total]
SEED = 20240611

# State checksums. Wall-clock columns (started_at, finished_at, updated_at)
# are left out: they differ between two runs of the same ingest. Closes are
# multiples of 0.25 around 2,000, so their sum is exact in a double.
STATE_SQL = {
    "bars": """SELECT count(*), sum(close), sum(volume), count(DISTINCT ingest_id),
                      sum(hash(contract, root, interval, ts, open, high, low, close, volume, open_interest,
                               ingest_id)) FROM bars""",
    "ingests": """SELECT count(*), sum(accepted), sum(hash(ingest_id, path, root, content_hash, rows_read,
                         accepted, quarantined, status, replaced, format, interval, warnings)) FROM ingests""",
    "quarantine": "SELECT count(*), sum(hash(ingest_id, file, line, raw, reason)) FROM quarantine",
    "data_versions": "SELECT count(*), sum(rows), sum(hash(tbl, key, data_version, rows)) FROM data_versions",
}

# The child: ingest argv[2] into warehouse argv[1], writing phase markers to argv[3].
CHILD = r"""
import os, sys, time
from pathlib import Path
fd = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
def mark(name):
    os.write(fd, f"{name} {time.monotonic():.6f}\n".encode())
import duckdb
from fbt_pipelines.ingest import files as ingest

def after(fn, name):
    def wrapped(*a, **k):
        out = fn(*a, **k)
        mark(name)
        return out
    return wrapped

ingest.stage_csv = after(ingest.stage_csv, "staged")
ingest._validate = after(ingest._validate, "validated")
from fbt_pipelines.ingest import bulk_csv  # the bulk path: its insert and checks are the same phases
bulk_csv.insert_rows = after(bulk_csv.insert_rows, "staged")
bulk_csv.check_rows = after(bulk_csv.check_rows, "validated")

class Conn:
    # forwards to the DuckDB connection; marks around COMMIT
    def __init__(self, c):
        self._c = c
    def execute(self, sql, *a, **k):
        if sql.strip().upper() == "COMMIT":
            mark("commit_start")
            out = self._c.execute(sql, *a, **k)
            mark("commit_done")
            return out
        return self._c.execute(sql, *a, **k)
    def __getattr__(self, name):
        return getattr(self._c, name)

# warm what the ingest would load lazily anyway, so 'ready' means "about to ingest"
from fbt_pipelines.marketdata.sessions import _session_arrays
_session_arrays()
mark("ready")
conn = duckdb.connect(sys.argv[1])
results = ingest.ingest_path(Conn(conn), Path(sys.argv[2]), interval=sys.argv[4])
assert results[0].status == "ok", results
mark(f"method_{results[0].method}")
conn.close()
mark("closed")
"""

PHASES = ["ready", "staged", "validated", "commit_start", "commit_done", "closed"]


def minute_bars(contracts: list[tuple[str, int, int]], seed: int, year: int = 2015) -> pd.DataFrame:
    """Random-walk minute bars on the 0.25 tick grid; ``contracts`` holds
    (contract, first session index, sessions) counted from ``year``'s first
    CME Globex session; each session gets ``MINUTES`` bars from its open."""
    rng = np.random.default_rng(seed)
    cal = xcals.get_calendar(SESSION_CALENDAR, start=f"{year}-01-01", end=f"{year + 2}-12-31")
    opens = cal.opens.dt.tz_convert(None).to_numpy().astype("datetime64[m]")
    frames = []
    for contract, first, sessions in contracts:
        o = opens[first:first + sessions]
        ts = (o[:, None] + np.arange(MINUTES).astype("timedelta64[m]")[None, :]).ravel()
        n = len(ts)
        close = 2000.0 + 0.25 * np.cumsum(rng.integers(-4, 5, n))
        open_ = np.r_[2000.0, close[:-1]]
        frames.append(pd.DataFrame({
            "contract": contract, "ts": ts.astype("datetime64[us]"), "open": open_,
            "high": np.maximum(open_, close) + 0.25 * rng.integers(0, 3, n),
            "low": np.minimum(open_, close) - 0.25 * rng.integers(0, 3, n),
            "close": close, "volume": rng.integers(0, 5000, n), "open_interest": rng.integers(1000, 300_000, n),
        }))
    return pd.concat(frames, ignore_index=True)


def write_csv(frame: pd.DataFrame, path: Path, extra_lines: str = "") -> Path:
    con = duckdb.connect()
    try:
        con.register("frame", frame)
        con.execute(
            f"""COPY (SELECT contract, strftime(ts, '%Y-%m-%dT%H:%M:%SZ') AS ts, open, high, low, close, volume,
                             open_interest FROM frame) TO '{path}' (HEADER, DELIMITER ',')""")
    finally:
        con.close()
    if extra_lines:
        with open(path, "a") as fh:
            fh.write(extra_lines)
    return path


def state(db: Path) -> dict[str, tuple]:
    conn = duckdb.connect(str(db))
    try:
        return {t: tuple(conn.execute(sql).fetchone()) for t, sql in STATE_SQL.items()}
    finally:
        conn.close()


def markers(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, t = line.partition(" ")
            out[name] = float(t)
    return out


def run_child(db: Path, csv: Path, marks: Path, kill: tuple[str, float] | None) -> tuple[dict[str, float], bool]:
    """Run the child on ``db``; ``kill=(marker, delay)``: SIGKILL it ``delay`` s
    after it writes ``marker`` (None: let it finish). Returns (markers in s
    after 'ready', killed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(csv), str(marks), INTERVAL],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = False
    try:
        deadline = time.monotonic() + 60
        anchor = kill[0] if kill else "ready"
        while anchor not in (m := markers(marks)):
            if proc.poll() is not None or time.monotonic() > deadline:
                _, err = proc.communicate()
                pytest.fail(f"child exited before {anchor!r} (rc={proc.returncode}): {err.decode()[-2000:]}")
            time.sleep(0.001)
        if kill is not None:
            target = m[anchor] + kill[1]
            while time.monotonic() < target and proc.poll() is None:
                time.sleep(min(0.002, max(0.0, target - time.monotonic())))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not killed:
        assert proc.returncode == 0, err.decode()[-3000:]
    m = markers(marks)
    ready = m["ready"]
    return {k: v - ready for k, v in m.items()}, killed


def phase_at_kill(m: dict[str, float], killed: bool) -> str:
    """The window the kill landed in, from the last marker written."""
    if not killed:
        return "finished"
    last = max(m, key=m.get)
    return {"ready": "staging", "staged": "validating", "validated": "storing (before COMMIT)",
            "commit_start": "inside COMMIT", "commit_done": "after COMMIT (closing)",
            "method_bulk": "after COMMIT (closing)", "method_staged": "after COMMIT (closing)",
            "closed": "after close (exiting)"}[last]


@pytest.mark.parametrize("path", ["general", "bulk"])
def test_killed_ingest_leaves_before_or_after_state(tmp_path, path):
    """``general``: the second file has bad lines (the bulk attempt rolls
    back, then stage, validate, quarantine); ``bulk``: it is clean and goes
    straight into ``bars`` (insert, checks on the stored rows)."""
    t_start = time.monotonic()
    # first file: 4 contracts x 40 sessions; the second covers 30 of those sessions again
    first = minute_bars([(f"ES{m}2015", 5 * i, 40) for i, m in enumerate("HMUZ")], seed=1)
    second = minute_bars([(f"ES{'HMUZ'[i % 4]}{2015 + i // 4}", 5 * i, 30) for i in range(10)], seed=2)
    bad = ("ESZ2015,2015-13-01T00:00:00Z,2000,2001,1999,2000,10,100\n"      # not a timestamp
           "ESZ2015,2015-03-10T14:00:00Z,2000,1990,2010,2000,10,100\n"      # high < low
           "XXZ2015,2015-03-10T14:00:00Z,2000,2001,1999,2000,10,100\n")     # unknown market
    csv1 = write_csv(first, tmp_path / "es_first.csv")
    csv2 = write_csv(second, tmp_path / "es_second.csv", bad if path == "general" else "")

    before_db = tmp_path / "before.duckdb"
    conn = duckdb.connect(str(before_db))
    (r1,) = ingest_path(conn, csv1, interval=INTERVAL)
    conn.close()
    assert (r1.status, r1.accepted, r1.quarantined) == ("ok", len(first), 0)
    assert not Path(f"{before_db}.wal").exists()
    before = state(before_db)

    # 'after': the same child, uninterrupted, on a copy (also measures the phases)
    after_db = tmp_path / "after.duckdb"
    shutil.copyfile(before_db, after_db)
    phases, _ = run_child(after_db, csv2, tmp_path / "after.marks", None)
    after = state(after_db)
    assert before != after
    conn = duckdb.connect(str(after_db))
    replaced, quarantined = conn.execute(
        "SELECT replaced, quarantined FROM ingests WHERE path LIKE '%es_second.csv'").fetchone()
    conn.close()
    # the overlap was replaced, bad lines kept aside
    assert quarantined == (3 if path == "general" else 0) and replaced == 4 * 30 * MINUTES
    assert f"method_{'staged' if path == 'general' else 'bulk'}" in phases
    assert after["bars"][0] == len(first) + len(second) - replaced

    total = phases["closed"]
    edges = [phases[p] for p in PHASES]
    lines = len(second) + (3 if path == "general" else 0)
    print(f"\nsecond file ({path} path): {lines:,} lines; uninterrupted child phases (s after 'ready'): "
          + ", ".join(f"{p}={phases[p]:.3f}" for p in PHASES[1:]))

    # Kills aimed at each phase window (a random delay after the marker that
    # opens it, so timing noise between runs cannot empty a window), plus
    # kills at random delays over the whole run.
    rng = random.Random(SEED)
    kills = []
    for name, lo, hi in zip(PHASES, edges[:-1], edges[1:]):  # staging, validating, storing, COMMIT, closing
        kills += [(name, rng.uniform(0, hi - lo)) for _ in range(KILLS_PER_WINDOW)]
    kills += [("ready", rng.uniform(0, 1.1 * total)) for _ in range(UNIFORM_KILLS)]
    rng.shuffle(kills)

    rows = []
    for i, kill in enumerate(kills):
        db = tmp_path / f"trial{i}.duckdb"
        shutil.copyfile(before_db, db)
        m, killed = run_child(db, csv2, tmp_path / f"trial{i}.marks", kill)
        phase = phase_at_kill(m, killed)
        delay = m[kill[0]] + kill[1]  # after 'ready'
        assert not Path(f"{db}.wal").exists() or killed
        got = state(db)
        outcome = "before" if got == before else "after" if got == after else "OTHER"
        rows.append((i, delay, phase, outcome))
        assert outcome != "OTHER", f"kill {i} at {delay:.3f}s ({phase}) left a mixed state: {got}"
        if "commit_start" not in m:
            assert outcome == "before", f"kill {i} at {delay:.3f}s ({phase}): committed before COMMIT?"
        if "commit_done" in m:
            assert outcome == "after", f"kill {i} at {delay:.3f}s ({phase}): COMMIT returned but lost"
        # recovery: ingesting the same file again reaches 'after' (or is skipped if already there)
        conn = duckdb.connect(str(db))
        (again,) = ingest_path(conn, csv2, interval=INTERVAL)
        conn.close()
        assert again.status == ("ok" if outcome == "before" else "skipped")
        assert state(db) == after, f"re-ingest after kill {i} ({phase}) did not reach 'after'"
        db.unlink()

    print(f"{'kill':>4} {'s after ready':>13}  {'landed in':<26} state")
    for i, delay, phase, outcome in rows:
        print(f"{i:>4} {delay:13.3f}  {phase:<26} {outcome}")
    n_before = sum(r[3] == "before" for r in rows)
    by_phase: dict[tuple[str, str], int] = {}
    for _, _, phase, outcome in rows:
        by_phase[phase, outcome] = by_phase.get((phase, outcome), 0) + 1
    print(f"{len(rows)} kills: {n_before} left 'before', {len(rows) - n_before} left 'after' ("
          + ", ".join(f"{p} -> {o}: {n}" for (p, o), n in by_phase.items())
          + f"); every re-ingest reached 'after'; {time.monotonic() - t_start:.1f} s")
    assert len(rows) >= 10
    assert n_before >= 3 and len(rows) - n_before >= 1  # both sides of the commit were exercised
