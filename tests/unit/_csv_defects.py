"""Generated canonical CSV files with random defects, for the property tests
of the ingest's validation paths (tests/unit/test_sql_rules.py,
tests/unit/test_bulk_csv.py).

Every defect the validator knows is in the menu: unparseable and missing
fields, NaN/inf, non-positive prices, high < low, open/close outside the
range, negative/fractional/too large volume and open interest, wrong field
counts, malformed codes, unknown roots, two spellings of one contract,
in-file duplicates, bars outside the sessions, implausible prices (a bar at
1e308, one below a tick, one 20x above or below its neighbours), off-grid
prices and spikes; rows in contract runs (vendor order) or shuffled.
"""

from __future__ import annotations

from collections import defaultdict

import exchange_calendars as xcals
import numpy as np
from hypothesis import strategies as st

from fbt_pipelines.marketdata.sessions import SESSION_CALENDAR

HEADER = "contract,ts,open,high,low,close,volume,open_interest"
_CAL = xcals.get_calendar(SESSION_CALENDAR, start="2015-01-01", end="2015-12-31")
OPENS = _CAL.opens.dt.tz_convert(None).to_numpy().astype("datetime64[m]")
SESSIONS = _CAL.sessions.tz_localize(None).to_numpy().astype("datetime64[D]") if _CAL.sessions.tz else \
    _CAL.sessions.to_numpy().astype("datetime64[D]")

CODES = ["ESH2015", "ESH2015", "ESH2015", "ESM2015", "NQM2015", "ESH15", "XXH2015", "ES2015", ""]
PRICE_DEFECTS = ["", "nan", "inf", "-inf", "abc", "0", "-2000"]
VOLUME_DEFECTS = ["", "nan", "inf", "x", "-5", "2.5", "1e19"]
OI_DEFECTS = ["nan", "inf", "y", "-1", "0.5", "1e20"]

row_spec = st.fixed_dictionaries({
    "code": st.sampled_from(CODES),
    "t": st.integers(0, 14),  # index into the file's clock (repeats make duplicates)
    "ts_defect": st.sampled_from([None] * 8 + ["bad", "empty", "outside"]),
    "move": st.integers(-3, 3),
    "price_defect": st.sampled_from([None] * 12 + ["open", "high", "low", "close", "hl", "open_out", "close_out",
                                                   "off_tick", "huge", "tiny", "jump", "drop"]),
    "price_value": st.sampled_from(PRICE_DEFECTS),
    "volume": st.sampled_from([None] * 6 + VOLUME_DEFECTS),
    "oi": st.sampled_from([None] * 5 + [""] * 2 + OI_DEFECTS),
    "fields": st.sampled_from([0] * 12 + [-1, 1]),
})


def _fmt(x: float) -> str:
    return repr(float(x))


def make_csv(rows: list[dict], interval: str, shuffle_seed: int | None, spikes: list[int],
             order: str = "vendor", start: dict[str, float] | None = None) -> str:
    """The CSV text of ``rows`` (``row_spec`` dicts; ``spikes``: row indexes
    whose close is multiplied by 8). Row order: shuffled with
    ``shuffle_seed`` if given, else by ``order``: ``vendor`` (contract runs,
    time rising), ``time`` (time rising, contracts interleaved),
    ``descending`` (contract runs, time falling) or ``given`` (as listed).
    ``start``: a code's first price level (default 2000 points)."""
    lines = [HEADER]
    level: dict[str, float] = defaultdict(lambda: 2000.0, start or {})
    body = []
    for i, r in enumerate(rows):
        code = r["code"]
        if interval == "1d":
            day = SESSIONS[10 + r["t"]]
            ts = str(day) if r["ts_defect"] != "outside" else str(np.datetime64("2015-01-03"))  # a Saturday
        else:
            when = OPENS[5] + np.timedelta64(r["t"], "m")
            if r["ts_defect"] == "outside":
                when = np.datetime64("2015-01-10T12:00") + np.timedelta64(r["t"], "m")  # a Saturday
            ts = f"{when}Z"
        ts = {"bad": "2015-13-01T00:00:00Z", "empty": ""}.get(r["ts_defect"], ts)
        level[code] = level[code] + 0.25 * r["move"]
        close = level[code] * (8.0 if i in spikes else 1.0)
        o, h, lo, c = close, close + 0.5, close - 0.5, close
        values = [_fmt(o), _fmt(h), _fmt(lo), _fmt(c)]
        d = r["price_defect"]
        if d in ("open", "high", "low", "close"):
            values[["open", "high", "low", "close"].index(d)] = r["price_value"]
        elif d == "hl":
            values[1], values[2] = _fmt(lo), _fmt(h)
        elif d == "open_out":
            values[0] = _fmt(h + 1.0)
        elif d == "close_out":
            values[3] = _fmt(lo - 1.0)
        elif d == "off_tick":
            values = [_fmt(v + 0.1) for v in (o, h, lo, c)]
        elif d in ("huge", "tiny"):  # a flat bar beyond ES's bounds: 1e308 (finite), below one tick (0.25)
            values = [_fmt(1e308 if d == "huge" else 0.1)] * 4
        elif d in ("jump", "drop"):  # a bar 20x above / below the level: outside the 10x band
            values = [_fmt(v * 20.0 if d == "jump" else v / 20.0) for v in (o, h, lo, c)]
        volume = r["volume"] if r["volume"] is not None else str(100 + i)
        oi = r["oi"] if r["oi"] is not None else str(5000 + i)
        fields = [code, ts, *values, volume, oi]
        if r["fields"] < 0:
            fields = fields[:-1]
        elif r["fields"] > 0:
            fields = fields + ["extra"]
        body.append(",".join(fields))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(body))
    else:  # vendor order: contract runs, time rising (the SQL path's one-pass case)
        key = {"vendor": lambda k: (rows[k]["code"], rows[k]["t"], k),
               "time": lambda k: (rows[k]["t"], rows[k]["code"], k),
               "descending": lambda k: (rows[k]["code"], -rows[k]["t"], k),
               "given": lambda k: k}[order]
        order = sorted(range(len(body)), key=key)
    body = [body[k] for k in order]
    return "\n".join(lines + body) + "\n"

# Rows without a defect (off-grid prices only warn), codes already fbt ids of one market:
# files of mostly these are the bulk path's business.
clean_row_spec = st.fixed_dictionaries({
    "code": st.sampled_from(["ESH2015", "ESM2015"]),
    "t": st.integers(0, 60),
    "ts_defect": st.none(),
    "move": st.integers(-3, 3),
    "price_defect": st.sampled_from([None] * 9 + ["off_tick"]),
    "price_value": st.just(""),
    "volume": st.none(),
    "oi": st.sampled_from([None] * 4 + [""]),
    "fields": st.just(0),
})
