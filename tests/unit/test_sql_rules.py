"""The SQL rules (bulk files, evaluated in DuckDB) against the pandera rules
(the specification, small files): on generated CSV files with random defects
both accept the same lines and give the same reason for every rejected line,
and count the same warnings. Also: the CSV reader's fast staging gives the
same staged rows as the general (split-on-commas) staging.

Every defect the validator knows is in the generator's menu: unparseable and
missing fields, NaN/inf, non-positive prices, high < low, open/close outside
the range, negative/fractional/too large volume and open interest, wrong
field counts, malformed codes, unknown roots, two spellings of one contract,
in-file duplicates, bars outside the sessions, implausible prices (outside
the market's bounds, or outside the band around the previous accepted
close), off-grid prices and spikes;
rows in contract runs (the SQL fast path) or shuffled (the general path).
The generator is tests/unit/_csv_defects.py.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fbt_pipelines.catalog.specs import load_catalog
from fbt_pipelines.marketdata.sessions import session_filter
from fbt_pipelines.marketdata.sql_rules import session_days
from fbt_pipelines.marketdata.validation import validate_staged
from fbt_pipelines.ingest.sql_validation import _in_file_order, validate_in_db
from fbt_pipelines.ingest.staging import contract_map, drop_staging, scan_file, stage_csv, staged_frame
from tests.unit._csv_defects import OI_DEFECTS, PRICE_DEFECTS, VOLUME_DEFECTS, make_csv, row_spec

SPECS = load_catalog()


def both_paths(conn: duckdb.DuckDBPyConnection, path: Path, interval: str):
    stage_csv(conn, path, {}, scan=scan_file(path))
    cmap = contract_map(conn, None, SPECS)
    staged = staged_frame(conn, cmap)
    ref = validate_staged(staged, interval, SPECS)
    ref_reasons = {int(line): reason for line, reason, ok in zip(staged["line"], ref.reasons, ref.accepted)
                   if not ok}
    sql = validate_in_db(conn, cmap, interval, SPECS)
    sql_reasons = dict(zip(sql.reasons["line"].astype(int), sql.reasons["reason"]))
    ref_roots = tuple(sorted({c[:-5] for c in staged["contract"][ref.accepted].dropna().unique()}))
    return ref_reasons, ref.warnings, ref_roots, sql_reasons, sql.warnings, sql.roots, len(staged)


@pytest.fixture(scope="module")
def conn():
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    yield c
    c.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row_spec, min_size=1, max_size=40), interval=st.sampled_from(["1m", "1d"]),
       shuffle=st.one_of(st.none(), st.integers(0, 10_000)),
       spikes=st.lists(st.integers(0, 39), max_size=2))
def test_sql_rules_give_the_same_rows_and_reasons_as_pandera(conn, tmp_path_factory, rows, interval, shuffle,
                                                             spikes):
    path = tmp_path_factory.mktemp("csv") / "bars.csv"
    path.write_text(make_csv(rows, interval, shuffle, spikes))
    try:
        ref, ref_warn, ref_roots, sql, sql_warn, sql_roots, n = both_paths(conn, path, interval)
    finally:
        drop_staging(conn)
    assert sql == ref
    assert sql_warn == ref_warn
    assert sql_roots == ref_roots


def test_the_generator_reaches_every_branch(conn, tmp_path):
    """The property above is only as good as its inputs: a fixed file with one
    of each defect, plus spikes and both orders, produces every reason."""
    rows = []
    base = dict(code="ESH2015", ts_defect=None, move=1, price_defect=None, price_value="",
                volume=None, oi=None, fields=0)
    for t in range(14):
        rows.append(dict(base, t=t))
    variants = ([dict(code=c) for c in ("XXH2015", "ES2015", "")] + [dict(ts_defect=d) for d in
                ("bad", "empty", "outside")]
                + [dict(price_defect=p, price_value=v) for p in ("open", "close") for v in PRICE_DEFECTS]
                + [dict(price_defect=p) for p in ("hl", "open_out", "close_out", "off_tick", "huge", "tiny", "jump",
                                                   "drop")]
                + [dict(volume=v) for v in VOLUME_DEFECTS] + [dict(oi=v) for v in OI_DEFECTS]
                + [dict(fields=-1), dict(fields=1), dict(t=3)])
    for k, v in enumerate(variants):
        rows.append(dict(base, t=20 + k, **v) if "t" not in v else dict(base, **v))
    for t in range(14):  # a second contract, written in two spellings, with a spike
        rows.append(dict(base, code="ESM2015" if t % 2 else "ESM15", t=t))
    path = tmp_path / "all.csv"
    for shuffle in (None, 5):
        spike_at = [len(rows) - 4]
        path.write_text(make_csv(rows, "1m", shuffle, spike_at))
        try:
            ref, ref_warn, _, sql, sql_warn, _, n = both_paths(conn, path, "1m")
        finally:
            drop_staging(conn)
        assert sql == ref
        assert sql_warn == ref_warn
        texts = set(ref.values())
        for want in ("malformed contract code", "unknown market root", "ts is not a timestamp",
                     "open is not a number", "open is not finite", "non-positive price", "high < low",
                     "open outside [low, high]", "close outside [low, high]", "negative volume",
                     "volume is not a whole number", "volume too large to store", "negative open interest",
                     "open interest is not a whole number", "open interest too large to store",
                     "open_interest is not a number", "open_interest is not finite", "expected 8 fields, found 7",
                     "expected 8 fields, found 9", "duplicate (contract, ts) in this file (first kept)",
                     "ts outside the market's trading sessions", "volume is not a number",
                     "implausible_price: a price outside [0.25, 200000000]",
                     "implausible_price: close more than 10x away"):
            assert any(t.startswith(want) for t in texts), want
        assert ref_warn["off_tick_grid"] >= 1 and ref_warn["spikes"] >= 1, ref_warn


def test_fast_and_general_staging_give_the_same_rows(conn, tmp_path):
    """A plain file staged by the CSV reader equals the same file staged line
    by line (split on commas), row for row."""
    rows = [dict(code=c, t=t, ts_defect=None, move=(t % 5) - 2, price_defect=d, price_value=v,
                 volume=vol, oi=oi, fields=0)
            for t, (c, d, v, vol, oi) in enumerate([("ESH2015", None, "", None, None), ("ESH15", "open", "abc", "", ""),
                                                     ("", "close", "nan", "2.5", "nan"),
                                                     ("XXH2015", "high", "inf", "x", "-1"),
                                                     ("ESM2015", "low", "", "1e19", "y")])]
    path = tmp_path / "plain.csv"
    path.write_text(make_csv(rows, "1m", None, []))
    frames = []
    for scan in (scan_file(path), None):  # None: no scan, so the general path
        stage_csv(conn, path, {}, scan=scan)
        kind = conn.execute("SELECT table_type FROM information_schema.tables WHERE table_catalog = 'temp' "
                            "AND table_name = 'staged'").fetchall()[0][0]
        frames.append((kind, conn.execute("SELECT * FROM staged ORDER BY line").df(),
                       conn.execute("SELECT * FROM staged_raw ORDER BY line").df()))
        drop_staging(conn)
    (k1, fast, fast_raw), (k2, general, general_raw) = frames
    assert (k1, k2) == ("VIEW", "LOCAL TEMPORARY")  # the two paths really ran
    pd.testing.assert_frame_equal(fast, general, check_dtype=False)
    pd.testing.assert_frame_equal(fast_raw, general_raw, check_dtype=False)


def test_session_days_match_the_session_filter():
    """The per-day table behind the SQL session rule agrees with
    ``session_filter`` on every minute of two weeks around a holiday and on
    daily stamps across a year."""
    cal = session_days()
    minutes = pd.date_range("2015-12-20", "2016-01-05", freq="min", tz="UTC")
    us = minutes.as_unit("us").asi8
    day = us // 86_400_000_000
    row = cal.set_index("day").reindex(day)
    o, c, p = (row[k].to_numpy(dtype="float64") for k in ("open_us", "close_us", "prev_close_us"))
    got = np.where(~np.isnan(o) & (us >= o), us < c, us < p)
    assert (got == session_filter(pd.Series(minutes), "1m")).all()
    days = pd.date_range("2015-01-01", "2015-12-31", freq="D", tz="UTC")
    ok = cal.set_index("day").reindex(days.as_unit("us").asi8 // 86_400_000_000)["daily_ok"].to_numpy(bool)
    assert (ok == session_filter(pd.Series(days), "1d")).all()


def test_a_file_in_vendor_order_takes_the_one_pass_path_with_the_same_result(conn, tmp_path):
    """Contract runs with rising time and no repeated key: the one-pass SQL
    path runs (no duplicate search) and still matches pandera, bad rows,
    sessions, tick grid and spikes included."""
    base = dict(ts_defect=None, move=1, price_defect=None, price_value="", volume=None, oi=None, fields=0)
    rows = [dict(base, code=c, t=t) for c in ("ESH2015", "NQM2015") for t in range(14)]
    rows[2].update(price_defect="hl")
    rows[13].update(ts_defect="outside")  # the run's last bar: time still rises
    rows[7].update(volume="-5")
    rows[9].update(price_defect="off_tick")
    rows[16].update(code="XXH2015")
    path = tmp_path / "vendor.csv"
    path.write_text(make_csv(rows, "1m", None, [20]))
    try:
        stage_csv(conn, path, {}, scan=scan_file(path))
        assert _in_file_order(conn, contract_map(conn, None, SPECS))[0]
        drop_staging(conn)
        ref, ref_warn, ref_roots, sql, sql_warn, sql_roots, n = both_paths(conn, path, "1m")
    finally:
        drop_staging(conn)
    assert n == 28 and len(ref) == 4  # off-grid prices only warn
    assert (sql, sql_warn, sql_roots) == (ref, ref_warn, ref_roots)
    assert ref_warn == {"off_tick_grid": 1, "spikes": 2}  # a one-bar spike: the jump and the return
