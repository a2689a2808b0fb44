"""Validate a staged file inside DuckDB with the SQL form of the row rules.

Same contract as :func:`fbt_pipelines.marketdata.validation.validate_staged`
(which stays the specification and the path for small files): which lines to
quarantine, the reason of each (the first failing rule), and the warning
counts (off the tick grid, single-bar spikes) over the accepted rows. Only
the rejected lines travel to Python; the accepted rows never leave the
database, and the ingest inserts them with one ``INSERT ... SELECT``.

Two rules need more than one row: in-file duplicates and spikes (per
contract in time order). When the file is already in contract runs with
rising timestamps (what vendors write), one ordered pass (``lag() OVER ()``
over the staged rows in line order) proves there are no duplicates and gives
each bar's previous close; otherwise the general window query runs
(``PARTITION BY contract ORDER BY ts``).

The band rule (``implausible_price``: a close too far from the previous
accepted close of its contract) is sequential; it runs last, in NumPy
(:func:`fbt_pipelines.marketdata.validation.band_outliers`), and only on the
contracts that may break it: SQL gives per contract the largest ratio of
consecutive accepted closes and the first five closes, and a contract whose
ratios all stay inside its band and whose first close is near its anchor
has nothing to reject (exactly: with no rejection the previous accepted
close is the previous close).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import duckdb
import numpy as np
import pandas as pd

from fbt_pipelines.catalog.specs import ContractSpec
from fbt_pipelines.marketdata.sql_rules import (DUPLICATE, OUTSIDE_SESSION, day_number_sql, in_session_sql,
                                                off_tick_sql, row_reason_sql, session_days)
from fbt_pipelines.marketdata.validation import (WARNING_NAMES, PreviousClose, band_outliers, band_reason,
                                                 bound_reason, first_anchor, outside_band)

_JOIN = "staged s JOIN v_map m ON s.contract_raw IS NOT DISTINCT FROM m.contract_raw"
_ACCEPTED = "s.line NOT IN (SELECT line FROM v_rejects)"  # the rows no rule has rejected (yet)
# the band rule's SQL: per contract of the accepted rows, the largest ratio of consecutive closes, the
# first time stamp and the first five closes; then the accepted rows of the contracts that need NumPy
_BAND_STATS_SQL = f"""
    SELECT c AS contract, max(greatest(close / pclose, pclose / close)) AS ratio,
           min(ts) AS first_ts, arg_min(close, ts, 5) AS first5
    FROM (SELECT m.contract AS c, s.ts, s.close,
                 lag(s.close) OVER (PARTITION BY m.contract ORDER BY s.ts) AS pclose
          FROM {_JOIN} WHERE {_ACCEPTED})
    GROUP BY c"""
_BAND_ROWS_SQL = f"""
    SELECT s.line, m.contract, s.close FROM {_JOIN}
    WHERE {_ACCEPTED} AND m.contract IN (SELECT unnest($suspects)) ORDER BY m.contract, s.ts"""


@dataclass(frozen=True)
class SqlValidation:
    """``reasons``: rejected lines (``line``, ``reason``) in line order;
    ``warnings``: rule -> accepted rows flagged; ``roots``: market roots of the
    accepted rows (sorted)."""

    reasons: pd.DataFrame
    warnings: dict[str, int]
    roots: tuple[str, ...]


def _count(conn: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(conn.execute(sql).fetchall()[0][0] or 0)


def stored_closes_before(conn: duckdb.DuckDBPyConnection, interval: str, firsts: Mapping[str, pd.Timestamp],
                         exclude_ingest: str | None = None) -> dict[str, float]:
    """contract -> close (points) of its last stored bar of ``interval``
    before ``firsts[contract]`` (UTC), for the contracts that have one;
    ``exclude_ingest``: bars of this ingest id are not looked at."""
    if not firsts:
        return {}
    conn.register("v_firsts", pd.DataFrame({"contract": list(firsts),
                                            "first_ts": pd.to_datetime(list(firsts.values()), utc=True)}))
    try:
        rows = conn.execute(
            """SELECT f.contract, arg_max(b.close, b.ts)
               FROM bars b JOIN v_firsts f ON b.contract = f.contract AND b.ts < f.first_ts
               WHERE b.interval = $interval AND b.ingest_id IS DISTINCT FROM $exclude
               GROUP BY f.contract""", {"interval": interval, "exclude": exclude_ingest}).fetchall()
    finally:
        conn.unregister("v_firsts")
    return {c: float(v) for c, v in rows}


def _in_file_order(conn: duckdb.DuckDBPyConnection, cmap: pd.DataFrame) -> tuple[bool, pd.DataFrame]:
    """One pass over the staged rows in file order: (ordered, per-code stats).

    ``ordered``: every row has a timestamp, each code comes in one run with
    strictly rising timestamps, and distinct codes name distinct contracts:
    then no (contract, ts) repeats in the file. The stats (``c``, ``n``
    returns, ``med`` median |log return| within the run; for the band rule
    ``ratio``, the largest of close/previous and previous/close, ``first_ts``
    and ``first5``, the first five closes in time order) are what the spike
    and band rules need when, in addition, no row is rejected."""
    stats = conn.execute(
        """SELECT contract_raw AS c,
                  count(*) FILTER (WHERE ts IS NULL) AS no_ts,
                  count(*) FILTER (WHERE NOT same) AS runs,
                  count(*) FILTER (WHERE same AND ts <= pt) AS not_rising,
                  count(d) AS n, median(d) AS med,
                  max(ratio) AS ratio, min(ts) AS first_ts, arg_min(close, ts, 5) AS first5
           FROM (SELECT contract_raw, ts, pt, same, close,
                        CASE WHEN same AND close > 0 AND pclose > 0 THEN abs(ln(close) - ln(pclose)) END AS d,
                        CASE WHEN same AND close > 0 AND pclose > 0
                             THEN greatest(close / pclose, pclose / close) END AS ratio
                 FROM (SELECT contract_raw, ts, close, lag(ts) OVER () AS pt, lag(close) OVER () AS pclose,
                              coalesce(lag(true) OVER (), false)
                                  AND lag(contract_raw) OVER () IS NOT DISTINCT FROM contract_raw AS same
                       FROM staged_values))
           GROUP BY contract_raw"""
    ).df()
    good = cmap.dropna(subset=["contract"])
    ordered = bool(not good["contract"].duplicated().any()  # not ESZ13 and ESZ2013 in one file
                   and stats["no_ts"].sum() == 0 and (stats["runs"] == 1).all() and stats["not_rising"].sum() == 0)
    return ordered, stats


def _spike_count(conn: duckdb.DuckDBPyConnection, stats: pd.DataFrame | None, ok: str, spike_z: float) -> int:
    """Closes whose |log return| exceeds spike_z x 1.4826 x the contract's
    median |log return| (contracts with >= 9 returns and a median > 0): the
    rule of :func:`fbt_pipelines.marketdata.quality.large_move_count`.

    ``stats``: per-code medians from :func:`_in_file_order` when every row
    is accepted and the file is in order (one more streaming pass counts);
    None: the general window query over the accepted rows."""
    if stats is not None:
        limits = stats[(stats["n"] >= 9) & (stats["med"] > 0)]
        limits = pd.DataFrame({"c": limits["c"], "lim": (limits["med"] * 1.4826) * float(spike_z)})
        d = """SELECT contract_raw AS c, abs(ln(close) - ln(pclose)) AS d
               FROM (SELECT contract_raw, close, lag(close) OVER () AS pclose,
                            lag(contract_raw) OVER () AS pc FROM staged_values)
               WHERE pclose IS NOT NULL AND pc IS NOT DISTINCT FROM contract_raw"""
    else:
        d = f"""SELECT c, abs(ln(close) - ln(pclose)) AS d
                FROM (SELECT m.contract AS c, s.close,
                             lag(s.close) OVER (PARTITION BY m.contract ORDER BY s.ts) AS pclose
                      FROM {_JOIN} WHERE {ok})
                WHERE pclose IS NOT NULL"""
        limits = conn.execute(
            f"""SELECT c, (median(d) * 1.4826) * {float(spike_z)!r} AS lim FROM ({d}) GROUP BY c
                HAVING count(*) >= 9 AND median(d) > 0""").df()
    if limits.empty:
        return 0
    conn.register("v_limits", limits)
    try:
        return _count(conn, f"SELECT count(*) FROM ({d}) x JOIN v_limits l "
                            "ON x.c IS NOT DISTINCT FROM l.c WHERE x.d > l.lim")
    finally:
        conn.unregister("v_limits")


def _band_rejects(conn: duckdb.DuckDBPyConnection, cmap: pd.DataFrame, specs: Mapping[str, ContractSpec],
                  stats: pd.DataFrame | None, previous_close: PreviousClose | None) -> pd.DataFrame:
    """(``line``, ``reason``) of the accepted rows (not in ``v_rejects``) the band rule rejects.

    ``stats``: :func:`_in_file_order`'s when the file is in order and no row
    is rejected yet (no further pass); None: one window query over the
    accepted rows. Only contracts whose largest ratio of consecutive closes
    or whose first close breaks the band go to NumPy."""
    if stats is not None:
        per = stats.merge(cmap[["contract_raw", "contract"]], left_on="c", right_on="contract_raw")
        per = per.dropna(subset=["contract"])[["contract", "ratio", "first_ts", "first5"]]
    else:
        per = conn.execute(_BAND_STATS_SQL).df()
    if per.empty:
        return pd.DataFrame({"line": [], "reason": []})
    firsts = dict(zip(per["contract"], pd.to_datetime(per["first_ts"], utc=True)))
    stored = previous_close(firsts) if previous_close else {}
    suspects = []
    for contract, ratio, first5 in zip(per["contract"], per["ratio"], per["first5"]):
        band = specs[contract[:-5]].price_band
        first5 = np.asarray(first5, dtype=float)
        anchor = first_anchor(first5, stored.get(contract, np.nan))
        if (pd.notna(ratio) and ratio > band) or outside_band(first5[0], anchor, band):
            suspects.append(contract)
    if not suspects:
        return pd.DataFrame({"line": [], "reason": []})
    rows = conn.execute(_BAND_ROWS_SQL, {"suspects": suspects}).df()
    contract = rows["contract"].to_numpy(dtype=object)
    starts = np.flatnonzero(np.r_[True, contract[1:] != contract[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    names = [str(c) for c in contract[starts]]
    bands = np.array([specs[c[:-5]].price_band for c in names], dtype=float)
    out = band_outliers(rows["close"].to_numpy(float), sizes,
                        np.array([stored.get(c, np.nan) for c in names], dtype=float), bands)
    reasons = np.repeat(np.array([band_reason(b) for b in bands], dtype=object), sizes)
    return pd.DataFrame({"line": rows["line"].to_numpy()[out], "reason": reasons[out]})


def validate_in_db(conn: duckdb.DuckDBPyConnection, cmap: pd.DataFrame, interval: str,
                   specs: Mapping[str, ContractSpec], spike_z: float = 10.0,
                   previous_close: PreviousClose | None = None) -> SqlValidation:
    """Reasons and warnings for the rows of temp relation ``staged``.

    ``cmap``: the contract map of :func:`fbt_pipelines.ingest.staging.contract_map`
    (``contract_raw`` -> ``contract``, ``root``, ``contract_error``);
    ``previous_close``: the stored closes the band rule starts from (None:
    nothing stored; see :func:`stored_closes_before`).
    """
    known = [specs[r] if isinstance(r, str) else None for r in cmap["root"]]
    vmap = cmap.assign(tick=pd.array([s.tick_size if s else None for s in known], dtype="Float64"),
                       min_price=pd.array([s.price_bounds[0] if s else None for s in known], dtype="Float64"),
                       max_price=pd.array([s.price_bounds[1] if s else None for s in known], dtype="Float64"),
                       bound_reason=pd.array([bound_reason(s) if s else None for s in known], dtype="string"))
    conn.register("v_map", vmap)
    conn.register("v_calendar", session_days())
    try:
        ordered, stats = _in_file_order(conn, cmap)
        warnings = dict.fromkeys(WARNING_NAMES, 0)
        ok = _ACCEPTED
        if ordered:
            # no in-file duplicates: every rule but the spikes in one pass, first counting in parallel
            # (no line numbers); the rejected lines come back as a list only if there are any
            rules = f"""coalesce({row_reason_sql()},
                                  CASE WHEN NOT ({in_session_sql('s.ts', 'c', interval)}) THEN ? END) AS reason,
                         {off_tick_sql('s', 'm.tick')} AS off_tick"""
            joins = (f"v_map m ON s.contract_raw IS NOT DISTINCT FROM m.contract_raw "
                     f"LEFT JOIN v_calendar c ON c.day = {day_number_sql('s.ts')}")
            rejected, off_tick = conn.execute(
                f"""SELECT count(*) FILTER (WHERE reason IS NOT NULL),
                           count(*) FILTER (WHERE reason IS NULL AND off_tick)
                    FROM (SELECT {rules} FROM staged_values s JOIN {joins})""", [OUTSIDE_SESSION]).fetchall()[0]
            bad = []
            if rejected:
                bad = conn.execute(
                    f"""SELECT list({{'line': line, 'reason': reason}} ORDER BY line) FILTER (WHERE reason IS NOT NULL)
                        FROM (SELECT s.line, {rules} FROM staged s JOIN {joins})""",
                    [OUTSIDE_SESSION]).fetchall()[0][0] or []
            reasons = pd.DataFrame({"line": [b["line"] for b in bad], "reason": [b["reason"] for b in bad]})
            conn.register("v_bad", reasons)
            conn.execute("CREATE OR REPLACE TEMP TABLE v_rejects AS "
                         "SELECT CAST(line AS BIGINT) AS line, CAST(reason AS VARCHAR) AS reason FROM v_bad")
            conn.unregister("v_bad")
            rejected = len(reasons)
            warnings["off_tick_grid"] = int(off_tick or 0)
        else:
            conn.execute(
                f"""CREATE OR REPLACE TEMP TABLE v_rejects AS
                    SELECT line, reason FROM (SELECT s.line, {row_reason_sql()} AS reason FROM {_JOIN})
                    WHERE reason IS NOT NULL"""
            )
            conn.execute(
                f"""INSERT INTO v_rejects
                    SELECT line, ? FROM (
                        SELECT s.line, row_number() OVER (PARTITION BY m.contract, s.ts ORDER BY s.line) AS k
                        FROM {_JOIN} WHERE {ok})
                    WHERE k > 1""",
                [DUPLICATE],
            )
            conn.execute(
                f"""INSERT INTO v_rejects
                    SELECT s.line, ? FROM staged s
                    LEFT JOIN v_calendar c ON c.day = {day_number_sql('s.ts')}
                    WHERE NOT ({in_session_sql('s.ts', 'c', interval)}) AND {ok}""",
                [OUTSIDE_SESSION],
            )
            reasons = conn.execute("SELECT line, reason FROM v_rejects ORDER BY line").df()
            rejected = len(reasons)
        # the band rule, last: over the rows every other rule accepts
        band = _band_rejects(conn, cmap, specs, stats if ordered and not rejected else None, previous_close)
        if len(band):
            conn.register("v_band", band)
            conn.execute("INSERT INTO v_rejects SELECT CAST(line AS BIGINT), CAST(reason AS VARCHAR) FROM v_band")
            conn.unregister("v_band")
            reasons = conn.execute("SELECT line, reason FROM v_rejects ORDER BY line").df()
        if not ordered or len(band):
            keep = "true" if not len(reasons) else ok
            warnings["off_tick_grid"] = _count(conn, f"SELECT count(*) FROM {_JOIN} WHERE {keep} AND "
                                                     f"({off_tick_sql('s', 'm.tick')})")
        rejected = len(reasons)
        warnings["spikes"] = _spike_count(conn, stats if ordered and not rejected else None, ok, spike_z)
        if rejected:
            roots = [r[0] for r in conn.execute(
                f"SELECT DISTINCT m.root FROM {_JOIN} WHERE {ok} ORDER BY 1").fetchall()]
        else:
            roots = sorted(cmap["root"].dropna().unique())
        return SqlValidation(reasons, warnings, tuple(roots))
    finally:
        conn.execute("DROP TABLE IF EXISTS temp.v_rejects")
        conn.unregister("v_map")
        conn.unregister("v_calendar")
