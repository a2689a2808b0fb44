"""The bulk CSV path (fbt_pipelines/ingest/bulk_csv.py) against the general
path (stage, validate, quarantine), on real DuckDB warehouse files.

The bulk path may decline a file (then the general path runs), but what
lands must be the same either way: the same bars, quarantine, ``ingests``
row and data versions. And it must not decline what it is made for: a file
the general path accepts whole, in vendor order, with fbt contract codes.
Its pieces are checked against their specifications: the row-rule predicate
against the CASE of the SQL rules, the NumPy session test against
``session_filter``, the spike count against ``quality.spike_count``.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import duckdb
import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from blake3 import blake3
from hypothesis import strategies as st

from fbt_pipelines.catalog.specs import load_catalog
from fbt_pipelines.marketdata.quality import large_move_count
from fbt_pipelines.marketdata.sessions import SESSION_CALENDAR, session_filter
from fbt_pipelines.marketdata.sql_rules import outside_session_count, row_reason_sql, row_rules_ok_sql
from fbt_pipelines.marketdata.validation import band_outliers, band_reason, bound_reason
from fbt_pipelines.ingest import bulk_csv
from fbt_pipelines.ingest import files as ingest_files
from fbt_pipelines.ingest.bulk_csv import spike_count_in_blocks
from fbt_pipelines.ingest.file_hash import content_hash
from fbt_pipelines.ingest.files import ingest_path
from fbt_pipelines.ingest.staging import scan_file
from tests.unit._csv_defects import clean_row_spec, make_csv, row_spec

SPECS = load_catalog()
HEADER = "contract,ts,open,high,low,close,volume,open_interest"
_CAL = xcals.get_calendar(SESSION_CALENDAR, start="2015-01-01", end="2015-12-31")
OPENS = _CAL.opens.dt.tz_convert(None).to_numpy().astype("datetime64[s]")

# what a warehouse holds after an ingest, without the wall-clock columns
STATE_SQL = {
    "bars": "SELECT * FROM bars ORDER BY contract, interval, ts",
    "quarantine": "SELECT * FROM quarantine ORDER BY file, line",
    "ingests": "SELECT * EXCLUDE (started_at, finished_at) FROM ingests ORDER BY ingest_id",
    "data_versions": "SELECT * EXCLUDE (updated_at) FROM data_versions ORDER BY tbl, key",
}


@contextmanager
def bulk_min_bytes(n: int):
    old = bulk_csv.BULK_MIN_BYTES
    bulk_csv.BULK_MIN_BYTES = n
    try:
        yield
    finally:
        bulk_csv.BULK_MIN_BYTES = old


@contextmanager
def sql_rules_min_rows(n: int):
    old = ingest_files.SQL_RULES_MIN_ROWS
    ingest_files.SQL_RULES_MIN_ROWS = n
    try:
        yield
    finally:
        ingest_files.SQL_RULES_MIN_ROWS = old


def ingest_into(db: Path, paths: list[Path], interval: str, bulk: bool, sql_rules: bool = False):
    """Ingest ``paths`` in order into a fresh warehouse file; (results, state).
    ``bulk``: any file may take the bulk path; False: none may. ``sql_rules``:
    the general path validates with the SQL rules (else pandera, for files
    this small)."""
    conn = duckdb.connect(str(db))
    try:
        with bulk_min_bytes(0 if bulk else 1 << 62), sql_rules_min_rows(0 if sql_rules else 1 << 62):
            results = [r for p in paths for r in ingest_path(conn, p, interval=interval, specs=SPECS)]
        state = {k: conn.execute(sql).fetchall() for k, sql in STATE_SQL.items()}
        setting = conn.execute("SELECT current_setting('disabled_compression_methods')").fetchall()[0][0]
    finally:
        conn.close()
    assert setting == "", "the bulk path left its compression setting behind"
    return results, state


def both(tmp: Path, paths: list[Path], interval: str):
    bulk, bulk_state = ingest_into(tmp / "bulk.duckdb", paths, interval, bulk=True)
    general, general_state = ingest_into(tmp / "general.duckdb", paths, interval, bulk=False)
    assert all(r.method == "staged" for r in general)
    for b, g in zip(bulk, general, strict=True):
        assert b.__dict__ | {"method": None} == g.__dict__ | {"method": None}
    for key in STATE_SQL:
        assert bulk_state[key] == general_state[key], key
    return bulk, general


@st.composite
def mostly_clean_rows(draw) -> list[dict]:
    """Clean rows with up to two defective ones in between."""
    rows = draw(st.lists(clean_row_spec, min_size=1, max_size=40))
    for at, bad in draw(st.lists(st.tuples(st.integers(0, 40), row_spec), max_size=2)):
        rows.insert(at, bad)
    return rows


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.one_of(st.lists(row_spec, min_size=1, max_size=40), mostly_clean_rows()),
       interval=st.sampled_from(["1m", "1d"]),
       order=st.one_of(st.integers(0, 10_000), st.sampled_from(["vendor", "vendor", "time", "descending"])),
       spikes=st.lists(st.integers(0, 39), max_size=2))
def test_bulk_and_general_paths_store_the_same_and_bulk_takes_every_clean_vendor_file(tmp_path_factory, rows,
                                                                                      interval, order, spikes):
    tmp = tmp_path_factory.mktemp("bulk")
    path = tmp / "bars.csv"
    shuffle = order if isinstance(order, int) else None
    path.write_text(make_csv(rows, interval, shuffle, spikes, order=order if shuffle is None else "vendor"))
    (bulk,), (general,) = both(tmp, [path], interval)
    if bulk.method == "bulk":
        assert general.quarantined == 0  # it never stores a file with a bad row
    # what it is made for: accepted whole, contract runs in time order, codes already fbt ids of one market
    if general.quarantined == 0 and order == "vendor" and {r["code"][:2] for r in rows} == {"ES"} \
            and all(r["code"] != "ESH15" for r in rows):
        assert bulk.method == "bulk"


def three_ways(tmp: Path, paths: list[Path], interval: str):
    """The bulk path (where it takes a file), the general path with pandera
    and with the SQL rules: the same results and warehouse, file after file."""
    runs = [ingest_into(tmp / f"{name}.duckdb", paths, interval, bulk=bulk, sql_rules=sql)
            for name, bulk, sql in (("bulk", True, False), ("pandera", False, False), ("sql", False, True))]
    (bulk, bulk_state), *general = runs
    for results, state in general:
        assert all(r.method == "staged" for r in results)
        for b, g in zip(bulk, results, strict=True):
            assert b.__dict__ | {"method": None} == g.__dict__ | {"method": None}
        for key in STATE_SQL:
            assert bulk_state[key] == state[key], key
    return bulk, bulk_state


@pytest.mark.parametrize("level", [2000.0, 15_000.0, 300.0, 25_000.0, 150.0, 1e308])
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(clean_row_spec, min_size=1, max_size=30), second=mostly_clean_rows(),
       interval=st.sampled_from(["1m", "1d"]))
def test_a_second_file_starts_from_the_stored_closes_on_every_path(tmp_path_factory, first, second, interval, level):
    """File two after file one (overlapping in time): its first bar of a
    contract is judged against the last stored close before it, on the bulk
    path and both general ones alike. ``level``: where ESM2015 starts in file
    two; file one has it at 2000 +- 30 (15,000 and 300 stay inside the 10x
    band, 25,000 and 150 do not; 1e308 is outside ES's bounds)."""
    tmp = tmp_path_factory.mktemp("two")
    a, b = tmp / "a.csv", tmp / "b.csv"
    first = [dict(CLEAN, code="ESM2015", t=0)] + first  # file one has ESM2015 from its first bar time
    second = [dict(CLEAN, code="ESM2015", t=30)] + [dict(r, t=r["t"] + 20) for r in second]  # later, overlapping
    a.write_text(make_csv(first, interval, None, []))
    b.write_text(make_csv(second, interval, None, [], start={"ESM2015": level}))
    (_, result), state = three_ways(tmp, [a, b], interval)
    esm = [r for r in second if r["code"] == "ESM2015"]
    band = {raw.split(",")[0] for _, _, _, raw, reason in state["quarantine"] if reason == band_reason(10.0)}
    if esm and all(r["price_defect"] in (None, "off_tick") for r in esm) \
            and any(r["code"] == "ESM2015" and r["t"] < min(e["t"] for e in esm) for r in first):
        # a stored close before file two's ESM2015 bars, and no 20x print of their own
        event(f"ESM2015 after a stored close, level {level:g}")
        assert ("ESM2015" in band) == (level in (25_000.0, 150.0)), (level, band)
    if esm and level == 1e308:
        assert result.quarantined >= len(esm) and result.method == "staged"


def reference_band(close: np.ndarray, sizes: list[int], anchors: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """The band rule as its definition reads, one close at a time: rejected
    if more than band x (or under 1/band of) the previous accepted close; the
    first compared with the anchor, or without one with the lower median of
    the first five closes."""
    out, start = [], 0
    for n, anchor, band in zip(sizes, anchors, bands):
        block = [float(x) for x in close[start:start + n]]
        start += n
        if not block:
            continue
        first = sorted(block[:5])
        ref = anchor if not np.isnan(anchor) else first[(len(first) - 1) // 2]
        for x in block:
            if x / ref > band or ref / x > band:
                out.append(True)
            else:
                out.append(False)
                ref = x
    return np.array(out, dtype=bool)


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 1500), min_size=1, max_size=4), seed=st.integers(0, 1 << 30),
       anchored=st.lists(st.booleans(), min_size=4, max_size=4), band=st.sampled_from([10.0, 2.0, 1.5]),
       bad=st.floats(0.0, 0.2))
def test_band_outliers_is_the_one_at_a_time_rule(sizes, seed, anchored, band, bad):
    """Blocks of random walks with a share ``bad`` of bars multiplied by one
    of 1, band (exactly on the edge: accepted), band x 1.000001, 1/band,
    (1/band) / 1.000001, 20, 1/20, and runs of them (blocks up to 1,500 bars:
    the search goes past its first chunks)."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    close = 2000.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    factors = np.array([1.0, band, band * 1.000001, 1 / band, (1 / band) / 1.000001, 20.0, 0.05])
    hit = rng.random(n) < bad
    close[hit] *= factors[rng.integers(0, len(factors), int(hit.sum()))]
    runs = rng.integers(0, max(n, 1), 3)
    for r in runs:  # runs of bad bars
        close[r:r + 40] *= 30.0
    close = close[:n]
    anchors = np.array([close[0] * f if a and n else np.nan
                        for a, f in zip(anchored, rng.choice(factors, 4))])[:len(sizes)]
    bands = np.full(len(sizes), band)
    want = reference_band(close, sizes, anchors, bands)
    assert (band_outliers(close, sizes, anchors, bands) == want).all()


def test_band_outliers_by_hand():
    """Hand-worked: 100, 1001 (10.01x: out), 99 (vs 100: in), 990 (exactly
    10x 99: in), 98 (vs 990: 10.1x, out), 1000 (vs 990: in); a second block
    with no anchor starting on a bad print, 5000 among 400s: the lower median
    of (5000, 410, 405, 400, 395) is 405, so 5000 is out."""
    close = np.array([100.0, 1001.0, 99.0, 990.0, 98.0, 1000.0, 5000.0, 410.0, 405.0, 400.0, 395.0])
    got = band_outliers(close, [6, 5], np.array([100.0, np.nan]), np.array([10.0, 10.0]))
    assert got.tolist() == [False, True, False, False, True, False, True, False, False, False, False]


@pytest.mark.parametrize("case", ["20x print", "1e308 bar", "bar below a tick", "contract at 2.5e8", "all of them"])
def test_an_implausible_bar_sends_a_large_file_to_the_general_path(tmp_path, case):
    """In a file the bulk path would take: a 20x print (only the band check
    sees it), a 1e308 bar (finite; its tick-grid quotient overflows) and a
    bar below one tick (the INSERT's bound refuses them, the band would too),
    a whole contract at 2.5e8 points (above ES's 2e8; consistent, so only the
    bound sees it), or all of them. The bulk path declines; the general path
    quarantines exactly those lines with their reasons and keeps the bar
    after the print (it is near the last accepted close). The file ingested
    before stays as it was."""
    before = minute_file(tmp_path / "before.csv", [("ESH2015", 5)], sessions=4, seed=3)
    lines = minute_file(tmp_path / "es.csv", [("ESH2015", 9), ("ESM2015", 9)], sessions=14).read_text().splitlines()
    es = SPECS["ES"]
    bad: dict[int, str] = {}  # line number -> reason
    edits = {"20x print": [(2000, "jump")], "1e308 bar": [(4000, "1e308")], "bar below a tick": [(6000, "0.1")],
             "contract at 2.5e8": [(k, "level") for k in range(8401, 16801)]}
    edits["all of them"] = [e for key in ("20x print", "1e308 bar", "bar below a tick") for e in edits[key]]
    for at, kind in edits[case]:  # lines 2001, 4001, 6001: ESH2015 bars; 8402.. : ESM2015
        f = lines[at].split(",")
        if kind in ("jump", "level"):
            f[2:6] = [repr(float(x) * (20 if kind == "jump" else 125_000)) for x in f[2:6]]
        else:
            f[2:6] = [kind] * 4
        lines[at] = ",".join(f)
        bad[at + 1] = band_reason(10.0) if kind == "jump" else bound_reason(es)
    path = tmp_path / "es_bad.csv"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > bulk_csv.BULK_MIN_BYTES
    (_, result), state = three_ways(tmp_path, [before, path], "1m")
    assert bound_reason(es) == ("implausible_price: a price outside [0.25, 200000000] "
                                "(the market's min_price, max_price)")
    assert (result.method, result.quarantined, result.accepted) == ("staged", len(bad), 2 * 14 * 600 - len(bad))
    assert [(line, raw, reason) for _, _, line, raw, reason in state["quarantine"]] == [
        (line, lines[line - 1], reason) for line, reason in sorted(bad.items())]
    stored = {(c, ts.isoformat()): close for c, _root, _i, ts, _o, _h, _l, close, *_ in state["bars"]}
    assert len(stored) == 4 * 600 + 2 * 14 * 600 - len(bad)
    assert 1000 < min(stored.values()) and max(stored.values()) < 3000  # nothing implausible landed
    after = lines[2001].split(",")  # the bar after the print: kept, as written
    assert stored[(after[0], after[1].replace("Z", "+00:00"))] == float(after[5])


def test_a_contract_far_from_its_stored_level_is_quarantined_whole(tmp_path):
    """The vendor's prices of ESH2015 are 12x too high in the second file:
    its first bar is compared with the last stored close before it, and so is
    every later one (no bar of it is accepted): all quarantined, the first
    file's bars untouched; ESM2015 in the same file lands. Into an empty
    warehouse the same file lands whole (its own first closes are the
    reference): the stored close is what tells."""
    first = minute_file(tmp_path / "a.csv", [("ESH2015", 5)], sessions=6, seed=1)
    text = minute_file(tmp_path / "b0.csv", [("ESH2015", 11), ("ESM2015", 11)], sessions=6, seed=2).read_text()
    out = [HEADER]
    for line in text.splitlines()[1:]:
        f = line.split(",")
        if f[0] == "ESH2015":
            f[2:6] = [repr(float(x) * 12) for x in f[2:6]]
        out.append(",".join(f))
    second = tmp_path / "b.csv"
    second.write_text("\n".join(out) + "\n")
    (one, two), state = three_ways(tmp_path, [first, second], "1m")
    assert one.method == "bulk" and (two.method, two.accepted, two.quarantined) == ("staged", 3600, 3600)
    assert {r[-1] for r in state["quarantine"]} == {band_reason(10.0)}
    kept = [(c, ts) for c, _root, _i, ts, *_ in state["bars"]]
    assert sum(c == "ESH2015" for c, _ in kept) == 3600 and sum(c == "ESM2015" for c, _ in kept) == 3600
    (tmp_path / "alone").mkdir()
    (alone,), _ = three_ways(tmp_path / "alone", [second], "1m")
    assert (alone.method, alone.accepted, alone.quarantined) == ("bulk", 7200, 0)


CLEAN = dict(ts_defect=None, move=1, price_defect=None, price_value="", volume=None, oi=None, fields=0)


@pytest.mark.parametrize("layout, rows, order, method, quarantined", [
    ("one contract, time rising", [("ESH2015", t) for t in range(12)], "vendor", "bulk", 0),
    ("two contracts, time rising", [(c, t) for c in ("ESH2015", "ESM2015") for t in range(12)], "vendor", "bulk", 0),
    ("contracts interleaved by time", [(c, t) for c in ("ESH2015", "ESM2015") for t in range(12)], "time",
     "staged", 0),
    ("time falling", [(c, t) for c in ("ESH2015", "ESM2015") for t in range(12)], "descending", "staged", 0),
    ("a contract in two runs, a key repeated across them",
     [("ESH2015", t) for t in range(6)] + [("ESM2015", t) for t in range(6)] + [("ESH2015", t) for t in (5, 6, 7)],
     "given", "staged", 1),
    ("a contract in two runs that each rise, a key repeated", [("ESH2015", 0), ("ESM2015", 1), ("ESH2015", 0)],
     "given", "staged", 1),
    ("two-digit-year codes", [("ESH15", t) for t in range(12)], "vendor", "staged", 0),
    ("two markets", [(c, t) for c in ("ESH2015", "NQM2015") for t in range(12)], "vendor", "staged", 0),
    ("a two-digit-year code after the first contract",
     [("ESH2015", t) for t in range(6)] + [("ESM15", t) for t in range(6)], "given", "staged", 0),
    ("a repeated key inside a run", [("ESH2015", t) for t in (0, 1, 2, 2, 3)], "vendor", "staged", 1),
])
def test_the_bulk_path_takes_contract_runs_in_time_order_only(tmp_path, layout, rows, order, method,
                                                               quarantined):
    """Every other layout goes to the general path, which finds the repeats;
    what lands is the same either way."""
    rows = [dict(CLEAN, code=c, t=t) for c, t in rows]
    path = tmp_path / "layout.csv"
    path.write_text(make_csv(rows, "1m", None, [], order=order))
    (bulk,), (general,) = both(tmp_path, [path], "1m")
    assert (bulk.method, general.quarantined) == (method, quarantined), layout


def minute_file(path: Path, contracts: list[tuple[str, int]], sessions: int = 3, minutes: int = 600,
                extra: str = "", seed: int = 1) -> Path:
    """Clean 1-minute bars, contract after contract (from session index
    ``first``), on the 0.25 tick grid; ``extra`` lines appended."""
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    for contract, first in contracts:
        ts = (OPENS[first:first + sessions, None] + np.arange(minutes).astype("timedelta64[m]")[None, :]).ravel()
        close = 2000.0 + 0.25 * np.cumsum(rng.integers(-3, 4, len(ts)))
        for t, c in zip(ts, close):
            lines.append(f"{contract},{t}Z,{c},{c + 0.5},{c - 0.25},{c},{int(rng.integers(0, 900))},"
                         f"{int(rng.integers(1000, 9000))}")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_a_large_clean_file_goes_in_bulk_with_the_same_warnings(tmp_path):
    path = minute_file(tmp_path / "es.csv", [("ESH2015", 5), ("ESM2015", 9)], sessions=20)
    with open(path, "a") as fh:  # an off-grid bar and a spike at the end of the second contract: warnings
        fh.write("ESM2015,2015-02-24T23:00:00Z,2000.1,2000.6,1999.9,2000.1,5,5000\n"
                 "ESM2015,2015-02-24T23:01:00Z,2600.0,2600.5,2599.75,2600.0,5,5000\n")
    assert path.stat().st_size > bulk_csv.BULK_MIN_BYTES
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        (result,) = ingest_path(conn, path, interval="1m", specs=SPECS)
        (again,) = ingest_path(conn, path, interval="1m", specs=SPECS)
        stored = conn.execute("SELECT count(*) FROM bars").fetchall()[0][0]
    finally:
        conn.close()
    assert (result.method, result.accepted, result.quarantined) == ("bulk", 24_002, 0)
    assert result.warnings == {"off_tick_grid": 1, "spikes": 2}
    assert again.status == "skipped" and stored == 24_002
    general, state = ingest_into(tmp_path / "g.duckdb", [path], "1m", bulk=False)
    assert general[0].warnings == result.warnings and len(state["bars"]) == 24_002


def test_a_bad_line_sends_the_file_to_the_general_path_and_nothing_of_the_attempt_stays(tmp_path):
    clean = minute_file(tmp_path / "es.csv", [("ESH2015", 5)], sessions=12)
    lines = clean.read_text().splitlines()
    lines.insert(5000, "ESH2015,2015-01-09T23:00:00Z,2000,1990,2010,2000,10,100")  # high < low, line 5001
    bad = tmp_path / "es_bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    (bulk,), (general,) = both(tmp_path, [bad], "1m")
    assert bulk.method == "staged" and bulk.quarantined == 1 and bulk.accepted == 7_200
    conn = duckdb.connect(str(tmp_path / "bulk.duckdb"))
    try:
        q = conn.execute("SELECT line, raw, reason FROM quarantine").fetchall()
    finally:
        conn.close()
    assert q == [(5001, "ESH2015,2015-01-09T23:00:00Z,2000,1990,2010,2000,10,100", "high < low")]


def test_a_bar_outside_the_sessions_at_the_end_of_a_block_sends_the_file_to_the_general_path(tmp_path):
    """Time still rises (the bar is the block's last): only the session check can see it."""
    path = minute_file(tmp_path / "es.csv", [("ESH2015", 5), ("ESM2015", 9)], sessions=6,
                       extra="ESM2015,2015-01-31T12:00:00Z,2000,2000.5,1999.75,2000,1,1000\n")  # a Saturday
    (bulk,), _ = both(tmp_path, [path], "1m")
    assert (bulk.method, bulk.quarantined) == ("staged", 1)


def test_a_file_named_after_its_contract_without_a_contract_column(tmp_path):
    """``ESH2015.csv`` with ``ts,open,...``: the contract comes from the name, on both paths."""
    path = minute_file(tmp_path / "full.csv", [("ESH2015", 5)], sessions=30)
    named = tmp_path / "ESH2015.csv"
    named.write_text("\n".join(line.split(",", 1)[1] for line in path.read_text().splitlines()) + "\n")
    assert named.read_text().startswith("ts,open,") and named.stat().st_size > bulk_csv.BULK_MIN_BYTES
    (bulk,), _ = both(tmp_path, [named], "1m")
    assert (bulk.method, bulk.accepted, bulk.roots) == ("bulk", 18_000, ("ES",))


def test_overlapping_files_replace_the_same_rows_on_both_paths(tmp_path):
    first = minute_file(tmp_path / "a.csv", [("ESH2015", 5), ("ESM2015", 9)], sessions=10, seed=1)
    second = minute_file(tmp_path / "b.csv", [("ESM2015", 14), ("ESU2015", 20)], sessions=10, seed=2)
    (_, newer), (_, general) = both(tmp_path, [first, second], "1m")
    assert newer.method == "bulk" and newer.replaced == general.replaced == 5 * 600  # sessions 14-18 again


@pytest.mark.parametrize("column, text", [
    ("close", " 2000.25"), ("close", "2000.25 "), ("close", "+2000.25"), ("close", "2.00025e3"),
    ("close", "2_000.25"), ("close", "2000.250"), ("close", "0x7D0"), ("close", "NaN"), ("close", "inf"),
    ("close", "1e309"), ("close", ""), ("close", " "), ("close", '"2000.25"'),
    ("volume", "10.0"), ("volume", "1e1"), ("volume", "+10"), ("volume", " 10"), ("volume", "1_0"),
    ("volume", "-0"), ("volume", "0x0A"), ("volume", "9223372036854775807"), ("volume", "10.5"),
    ("open_interest", ""), ("open_interest", "5e3"), ("open_interest", "nan"), ("open_interest", "-0.0"),
    ("ts", "2015-01-08 23:06:00"), ("ts", "2015-01-08T23:06:00+00:00"), ("ts", "2015-01-09T00:06:00+01:00"),
    ("ts", "2015-01-08T18:06:00-05"), ("ts", "2015-01-08T23:06:00.5Z"), ("ts", "2015-01-08T23:06Z"),
    ("ts", " 2015-01-08T23:06:00Z"), ("ts", "2015-01-08T23:06:00 UTC"), ("ts", "2015-1-8T23:06:00Z"),
    ("ts", "20150108T230600Z"), ("ts", "2015-01-08T23:06:00z"), ("ts", "2015-01-08T23:06:00+0000"),
    ("ts", "2015-01-08T23:06:00Z "), ("ts", "2015-01-08"),
    ("contract", "ESH15"), ("contract", " ESH2015"), ("contract", "esh2015"), ("contract", ""),
])
def test_the_typed_reader_reads_every_field_as_the_general_path_does(tmp_path, column, text):
    """One field of one row in an odd spelling: the bulk path reads it as
    the general path does, or declines the file; both store the same."""
    path = minute_file(tmp_path / "odd.csv", [("ESH2015", 5)], sessions=1, minutes=12)
    lines = path.read_text().splitlines()
    fields = lines[7].split(",")  # the 7th bar: 23:06 UTC on 2015-01-08 (OPENS[5])
    assert fields[1] == "2015-01-08T23:06:00Z"
    fields[HEADER.split(",").index(column)] = text
    if column == "close":  # a close inside [low, high] when read as 2000.25
        fields[2:5] = ["2000.25", "2000.75", "1999.75"]
    lines[7] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    both(tmp_path, [path], "1m")


def test_row_rules_ok_sql_is_exactly_the_absence_of_a_reason():
    """The AND chain the bulk INSERT evaluates accepts exactly the rows to
    which the SQL rules' CASE gives no reason (right field count, good code):
    every combination of 11 values (NULL, NaN, +-inf, negative, zero,
    fractional, whole, 2**63 and just below) in the six numeric columns, with
    and without a timestamp: 3.5M rows. The market's price bounds are [1, 2]
    (parameters, as in the bulk INSERT; columns of the contract map in the
    CASE): 0.5 is positive but below, 2**63 finite but above, 1 and 2 on
    them."""
    values = ", ".join(f"({v})" for v in ["NULL::DOUBLE", "'NaN'::DOUBLE", "'inf'::DOUBLE", "'-inf'::DOUBLE",
                                           "-1.0", "0.0", "0.5", "1.0", "2.0", "9223372036854775808.0",
                                           "9223372036854774784.0"])
    conn = duckdb.connect()
    try:
        mismatched, accepted, rows, bound = conn.execute(
            f"""WITH v(x) AS (VALUES {values}),
                     s AS (SELECT o.x AS open, h.x AS high, l.x AS low, c.x AS close, q.x AS volume,
                                  i.x AS open_interest, t.ts, 8 AS nf, 8 AS expected_nf
                           FROM v o, v h, v l, v c, v q, v i,
                                (VALUES (NULL::TIMESTAMPTZ), (TIMESTAMPTZ '2015-01-08 23:00:00+00')) t(ts)),
                     checked AS (SELECT coalesce({row_rules_ok_sql('s', min_price='$lo', max_price='$hi')}, false)
                                            AS ok,
                                        ({row_reason_sql('s', 'm')}) AS reason
                                 FROM s, (SELECT NULL AS contract_error, 1.0::DOUBLE AS min_price,
                                                 2.0::DOUBLE AS max_price, 'outside the bound' AS bound_reason) m)
                SELECT count(*) FILTER (WHERE ok <> (reason IS NULL)), count(*) FILTER (WHERE ok), count(*),
                       count(*) FILTER (WHERE reason = 'outside the bound')
                FROM checked""", {"lo": 1.0, "hi": 2.0}).fetchall()[0]
    finally:
        conn.close()
    # accepted, counted by hand: prices in {1, 2} with low <= open, close <= high (6 bars), volume in
    # {0, 1, 2, 2**63 - 1024} (4), open interest NULL or one of those (5), a timestamp
    assert rows == 11 ** 6 * 2 and accepted == 6 * 4 * 5 and bound > 1000
    assert mismatched == 0


def test_outside_session_count_matches_the_session_filter():
    """Every minute of three weeks around Christmas 2015 and a DST change,
    the exact opens and closes, daily stamps over two years."""
    rng = np.random.default_rng(3)
    minutes = pd.date_range("2015-12-14", "2016-01-05", freq="min", tz="UTC")
    edges = pd.DatetimeIndex(np.concatenate([_CAL.opens.to_numpy(), _CAL.closes.to_numpy()]), tz="UTC")
    around = edges.repeat(3) + pd.to_timedelta(np.tile([-1, 0, 1], len(edges)), unit="us")
    dst = pd.date_range("2015-03-06", "2015-03-10", freq="7s", tz="UTC")
    odd = pd.DatetimeIndex(rng.integers(0, 2_200_000_000_000_000, 20_000).astype("datetime64[us]"), tz="UTC")
    for stamps in (minutes, around, dst, odd):
        us = stamps.as_unit("us").asi8
        want = int((~session_filter(pd.Series(stamps), "1m")).sum())
        assert outside_session_count(us, "1m") == want
        assert outside_session_count(us, "1m", chunk=1000) == want
    days = pd.date_range("2014-01-01", "2015-12-31", freq="D", tz="UTC")
    assert outside_session_count(days.as_unit("us").asi8, "1d") == int((~session_filter(pd.Series(days), "1d")).sum())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 10_000))
def test_spike_count_in_blocks_is_the_quality_rule(sizes, seed):
    """Equal to ``quality.large_move_count`` at thresholds that sit just above and
    just below one block's returns (a relative 1e-9 away), where a slip in
    the scale or the median would change the count."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    contract = np.repeat([f"ES{'HMUZ'[i % 4]}{2015 + i}" for i in range(len(sizes))], sizes)
    ts = np.concatenate([np.arange(k) for k in sizes]).astype("datetime64[m]")
    bars = pd.DataFrame({"contract": contract, "ts": pd.to_datetime(ts).tz_localize("UTC"), "close": close})
    block = close[:sizes[0]]
    d = np.abs(np.diff(np.log(block)))
    thresholds = [3.0]
    if len(d) >= 9 and np.median(d) > 0:
        z = np.sort(d)[-3:] / (np.median(d) * 1.4826)  # the thresholds at which the top returns flip
        thresholds += [*(z * (1 + 1e-9)), *(z * (1 - 1e-9))]
    for threshold in thresholds:
        assert spike_count_in_blocks(close, sizes, threshold) == large_move_count(bars, threshold=threshold)


def test_scan_file_hashes_and_counts_like_hashlib_and_bytes(tmp_path):
    """The one pass that feeds the row limit and the content hash, with
    chunk edges everywhere (CRLF split across chunks included)."""
    rng = np.random.default_rng(5)
    cases = [b"", b"a", b"a\n", b"a\r\nb\r\n", b"a\rb\n", b"a\nb", b"\r", b"\r\n", b"x" * 10 + b"\r\n" + b"y\r"]
    cases += [bytes(rng.choice(list(b"ab\r\n,"), size=int(rng.integers(0, 60)))) for _ in range(150)]
    path = tmp_path / "f.csv"
    for data in cases:
        path.write_bytes(data)
        want = ("blake3:" + blake3(data).hexdigest(),
                data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0),
                data.count(b"\r") == data.count(b"\r\n"))
        assert content_hash(path) == want[0]
        for chunk in (1, 2, 3, 7, 1 << 24):
            got = scan_file(path, chunk=chunk)
            assert (got.content_hash, got.lines, got.plain_line_ends) == want, (data, chunk)


LEAN_ZIP = Path(__file__).resolve().parents[1] / "fixtures" / "lean" / "es_trade.zip"


@pytest.mark.parametrize("kind", ["small csv", "bulk csv", "lean zip"])
def test_a_file_ingested_by_an_older_fbt_is_still_the_same_bytes(tmp_path, kind):
    """Older fbt keyed ingests by SHA-256 (ingest id = hash of name, interval
    and the hex digest). A warehouse written so is rewritten here to exactly
    that form; ingesting the same file again with BLAKE3 keys is skipped and
    changes nothing."""
    if kind == "lean zip":
        path, interval = LEAN_ZIP, "1d"
    else:
        path = minute_file(tmp_path / "es.csv", [("ESH2015", 5)], sessions=1 if kind == "small csv" else 30)
        interval = "1m"
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        first = ingest_path(conn, path, interval=interval, specs=SPECS)
        assert kind != "bulk csv" or first[0].method == "bulk"
        zip_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        for r in first:  # what the older fbt stored for this file
            old_hash = (hashlib.sha256(f"{zip_sha}:{r.source}".encode()).hexdigest() if kind == "lean zip"
                        else zip_sha)
            row_interval = conn.execute("SELECT interval FROM ingests WHERE ingest_id = ?",
                                        [r.ingest_id]).fetchall()[0][0]
            old_id = hashlib.sha256(f"{r.source.rsplit('/', 1)[-1]}:{row_interval}:{old_hash}".encode()
                                    ).hexdigest()[:24]
            for table in ("bars", "quarantine"):
                conn.execute(f"UPDATE {table} SET ingest_id = ? WHERE ingest_id = ?", [old_id, r.ingest_id])
            conn.execute("UPDATE ingests SET ingest_id = ?, content_hash = ? WHERE ingest_id = ?",
                         [old_id, old_hash, r.ingest_id])
        before = {k: conn.execute(sql).fetchall() for k, sql in STATE_SQL.items()}
        again = ingest_path(conn, path, interval=interval, specs=SPECS)
        after = {k: conn.execute(sql).fetchall() for k, sql in STATE_SQL.items()}
    finally:
        conn.close()
    assert [r.status for r in again] == ["skipped"] * len(first)
    assert after == before
