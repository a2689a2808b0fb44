"""The malformed-file corpus (tests/fixtures/malformed): each file through
``ingest_path`` into a fresh DuckDB file must do exactly what expected.json says.

File-level problems stop the file with a DataError naming it, nothing stored.
Row-level problems quarantine exactly the listed lines (raw text = the line of
the file) and the rest lands; under strict=True the same file fails whole at
its first bad line. Every reason the validator can give has a case here.
Row cases run through both validators: pandera (small files) and the SQL
rules (bulk files; forced here by setting the row threshold to 0).
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fbt_pipelines.errors import DataError
from fbt_pipelines.marketdata import validation
from fbt_pipelines.ingest import files as ingest_mod
from fbt_pipelines.ingest.files import ingest_path
from fbt_pipelines.services.warehouse import ensure_schema

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "malformed"
EXPECTED: dict[str, dict] = json.loads((CORPUS / "expected.json").read_text())
NOT_CASES = {"expected.json", "README.md", "make_binaries.py", ".gitattributes"}
TABLES = ("bars", "ingests", "quarantine", "data_versions")

ERROR_CASES = sorted(k for k, v in EXPECTED.items() if "error" in v)
ROW_CASES = sorted(k for k, v in EXPECTED.items() if "accepted" in v)
STRICT_CASES = sorted(k for k in ROW_CASES if EXPECTED[k]["quarantined"])


def case_path(key: str) -> Path:
    return CORPUS / key.split("#")[0]


def counts(conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def ingest(conn, key: str, strict: bool = False):
    case = EXPECTED[key]
    return ingest_path(conn, case_path(key), strict=strict, mapping=case.get("mapping"),
                       interval=case.get("interval", "1d"))


@pytest.fixture
def conn(tmp_path):
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    ensure_schema(c)
    yield c
    c.close()


@pytest.fixture(params=["pandera", "sql"])
def rules(request, monkeypatch):
    """Which validator the ingest uses: pandera, or the SQL rules in DuckDB."""
    if request.param == "sql":
        monkeypatch.setattr(ingest_mod, "SQL_RULES_MIN_ROWS", 0)
    return request.param


def _lines(text: str) -> list[str]:
    return [line.removesuffix("\r") for line in text.split("\n")]


def source_lines(path: Path) -> tuple[str, list[str]]:
    """(the ``file`` quarantine records, the text lines of that source)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            (inner,) = zf.namelist()
            return f"{path}!{inner}", _lines(zf.read(inner).decode("utf-8-sig"))
    return str(path.resolve()), _lines(path.read_bytes().decode("utf-8-sig"))


def check_parquet_raw(path: Path, line: int, raw: str) -> None:
    """Quarantined Parquet rows are kept as JSON of the row (``line`` = row number)."""
    row = pq.read_table(path).to_pylist()[line - 1]
    got = json.loads(raw)
    assert set(got) == set(row)
    for name, value in row.items():
        if name == "ts":
            assert pd.Timestamp(got[name]) == pd.Timestamp(value)
        elif value is None:
            assert got[name] is None
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[name])
        else:
            assert got[name] == value


def test_every_corpus_file_has_an_expected_outcome():
    files = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file()} - NOT_CASES
    assert files == {k.split("#")[0] for k in EXPECTED}
    assert len(files) >= 25
    for key, case in EXPECTED.items():
        assert ("error" in case) != ("accepted" in case), key
        if "error" in case:  # the message must name the file
            assert re.escape(case_path(key).name) in case["error"], key


@pytest.mark.parametrize("key", ERROR_CASES)
def test_a_file_level_problem_stops_the_file_and_stores_nothing(conn, key):
    path = case_path(key)
    for strict in (False, True):
        with pytest.raises(DataError) as err:
            ingest(conn, key, strict=strict)
        message = str(err.value)
        assert path.name in message
        assert re.search(EXPECTED[key]["error"], message), message
        assert "Traceback" not in message and "\n" not in message
        assert counts(conn) == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize("key", ROW_CASES)
def test_bad_rows_are_quarantined_and_the_rest_lands(conn, key, rules):
    case, path = EXPECTED[key], case_path(key)
    expected_q = case["quarantined"]
    (result,) = ingest(conn, key)
    assert result.status == "ok"
    assert (result.accepted, result.quarantined, result.rows_read) == (
        case["accepted"], len(expected_q), case["accepted"] + len(expected_q))
    assert result.warnings == case["warnings"]
    row = conn.execute("SELECT accepted, quarantined, warnings, status FROM ingests").fetchall()
    assert row == [(case["accepted"], len(expected_q), json.dumps(case["warnings"], sort_keys=True), "ok")]
    assert counts(conn)["bars"] == case["accepted"]

    got = conn.execute("SELECT file, line, raw, reason FROM quarantine ORDER BY line").fetchall()
    assert [line for _, line, _, _ in got] == [line for line, _ in expected_q]
    for (file, line, raw, reason), (_, want) in zip(got, expected_q):
        assert want in reason, (line, reason)
        if path.suffix == ".parquet":
            assert file == str(path.resolve())
            check_parquet_raw(path, line, raw)
        else:
            source, lines = source_lines(path)
            assert file == source
            assert raw == lines[line - 1]

    bars = conn.execute("SELECT contract, interval, ts, open_interest FROM bars ORDER BY contract, ts").fetchall()
    if "bars" in case:
        assert [[c, i, ts.isoformat(), oi] for c, i, ts, oi in bars] == case["bars"]
    if bars and path.suffix != ".zip":
        assert {i for _, i, _, _ in bars} == {case.get("interval", "1d")}


@pytest.mark.parametrize("key", STRICT_CASES)
def test_strict_fails_the_whole_file_at_its_first_bad_line(conn, key, rules):
    case, path = EXPECTED[key], case_path(key)
    line, reason = case["quarantined"][0]
    pattern = (rf"{re.escape(path.name)}(![^:]+)?: line {line}: {re.escape(reason)}.*"
               rf"\(--strict: {len(case['quarantined'])} bad row\(s\), nothing stored\)")
    with pytest.raises(DataError, match=pattern):
        ingest(conn, key, strict=True)
    assert counts(conn) == dict.fromkeys(TABLES, 0)


# --- every reason has a case -------------------------------------------------------------------

def reason_templates() -> set[str]:
    """Every quarantine reason fbt can write (validation.REASON_PATTERNS; the
    validator refuses to write any other)."""
    return set(validation.REASON_PATTERNS)


def test_every_validation_reason_and_warning_has_a_corpus_case():
    templates = reason_templates()
    assert len(templates) >= 20, sorted(templates)
    reasons = [r for case in EXPECTED.values() for _, r in case.get("quarantined", [])]
    missing = sorted(rx for rx in templates if not any(re.fullmatch(rx, r) for r in reasons))
    assert not missing, f"no corpus file (with the full reason in expected.json) for: {missing}"

    for key in validation.WARNING_NAMES:
        assert any(case.get("warnings", {}).get(key, 0) > 0 for case in EXPECTED.values()), key
