"""Security: Redis password and TLS, hostile payloads, input limits, static
checks for pickle/eval/dynamic SQL, UIs on 127.0.0.1. See docs/security.md."""

from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import os
import pickle
import subprocess
import uuid
import zipfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import redis
from click.testing import CliRunner

from fbt_pipelines.services import limits
from fbt_pipelines.services.bus import Bus, BusUnavailable, redact_url
from tests.conftest import delete_prefix
from tests.integration.private_redis import PrivateRedis

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str):
    from fbt_pipelines.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


class MemoryBomb:
    """A pickle that allocates 100 GB when unpickled."""

    def __reduce__(self):
        return (bytearray, (100 * 10**9,))


class Boom:
    """A pickle that runs a shell command when unpickled."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def round_trip(bus: Bus) -> None:
    frame = pd.DataFrame({"ts": pd.date_range("2024-01-02", periods=3, tz="UTC"), "close": [1.5, 2.25, 3.0]})
    assert bus.cache_put("bars:ES", "v1", frame)
    pd.testing.assert_frame_equal(bus.cache_get("bars:ES", "v1"), frame)
    assert bus.publish("materialized", {"asset": "raw_bars"})
    assert bus.recent_events(1)[0]["asset"] == "raw_bars"
    rid = bus.submit_request({"market": "ES", "strategy": "sma_crossover", "params": {"fast": 10}})
    ((entry, request),) = bus.read_requests("sensor", count=5)
    assert request["request_id"] == rid
    bus.ack(entry)


# -- Redis password and TLS ---------------------------------------------------------------------
def test_redis_password_works_and_a_wrong_one_fails_clearly(tmp_path, monkeypatch, caplog):
    password = f"pw-{uuid.uuid4().hex[:8]}"
    server = PrivateRedis(tmp_path / "redis", password=password).start()
    try:
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        round_trip(Bus(url, prefix="sec"))
        with pytest.raises(redis.AuthenticationError):  # the server really requires it
            redis.Redis(port=server.port).ping()

        caplog.set_level(logging.WARNING, logger="fbt.bus")
        wrong = f"redis://:not-{password}@127.0.0.1:{server.port}/0"
        bad = Bus(wrong, prefix="sec")
        assert bad.cache_get("bars:ES", "v1") is None  # cache degrades to a miss
        with pytest.raises(BusUnavailable, match="refused the credentials"):
            bad.submit_request({"market": "ES"})
        logged = " ".join(r.getMessage() for r in caplog.records if r.name == "fbt.bus")
        assert "refused the credentials" in logged and password not in logged and ":***@" in logged

        monkeypatch.setenv("REDIS_URL", wrong)
        monkeypatch.setenv("FBT_HOME", str(tmp_path / "home"))
        result = cli("submit", "--market", "ES", "--param", "fast=10")
        assert result.exit_code == 1
        assert "refused the credentials" in result.output and "check the password in REDIS_URL" in result.output
        assert password not in result.output
    finally:
        server.stop()


def _make_certs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=fbt-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"cert": folder / "server.pem", "key": folder / "server.key", "ca": folder / "ca.pem"}


def test_redis_over_tls_with_password(tmp_path):
    server = PrivateRedis(tmp_path / "redis", password="tls-pw", tls=_make_certs(tmp_path / "certs")).start()
    try:
        assert server.url.startswith("rediss://:tls-pw@")  # rediss:// + ?ssl_ca_certs=<the CA> in REDIS_URL
        round_trip(Bus(server.url, prefix="tls"))
        untrusted = Bus(f"rediss://:tls-pw@127.0.0.1:{server.port}/0", prefix="tls")  # CA not given
        with pytest.raises(BusUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.queue_depth()
        plain = Bus(f"redis://:tls-pw@127.0.0.1:{server.port}/0", prefix="tls", socket_timeout=1.0)
        assert not plain.available  # no plain-text port
    finally:
        server.stop()


def test_urls_are_redacted():
    assert redact_url("redis://:s3cret@10.0.0.5:6380/2") == "redis://:***@10.0.0.5:6380/2"
    assert redact_url("rediss://fbt:s3cret@host/0?ssl_ca_certs=/ca.pem") == "rediss://fbt:***@host/0?ssl_ca_certs=/ca.pem"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# -- hostile payloads ---------------------------------------------------------------------------
def test_hostile_cache_values_are_misses_and_never_executed(bus, tmp_path, caplog):
    from fbt_pipelines.services import warehouse as wh
    from fbt_pipelines.services.cached_reads import read_partition_cached

    canary = tmp_path / "canary"
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    frame = pd.DataFrame({"root": "ES", "ts": pd.date_range("2024-01-02", periods=4, tz="UTC"),
                          "close": [4700.25, 4710.5, 4695.0, 4720.75]})
    version = wh.replace_partition(conn, "features", "ES", frame)
    key = bus.cache_key("features:ES", version)
    client = redis.Redis.from_url(bus.url)

    # a field whose Arrow extension metadata is a pickle (the pyarrow CVE-2023-47248 vector)
    evil_field = pa.field("x", pa.int64(), metadata={b"ARROW:extension:name": b"arrow.py_extension_type",
                                                      b"ARROW:extension:metadata": pickle.dumps(Boom(canary))})
    sink = pa.BufferOutputStream()
    table = pa.table({"x": [1, 2]}, schema=pa.schema([evil_field]))
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    valid = sink.getvalue().to_pybytes()
    caplog.set_level(logging.WARNING, logger="fbt.bus")
    payloads = {
        "os.system pickle": pickle.dumps(Boom(canary)),
        "pickle memory bomb": pickle.dumps(MemoryBomb()),
        "garbage": os.urandom(4096),
        "truncated Arrow stream": valid[: len(valid) // 2],
    }
    for label, payload in payloads.items():
        client.set(key, payload)
        got, from_cache = read_partition_cached(conn, bus, "features", "ES", order_by=["ts"])
        assert not from_cache, label  # a miss: read from DuckDB ...
        pd.testing.assert_frame_equal(got, frame, check_dtype=False)
        assert bus.cache_get("features:ES", version) is not None, label  # ... and the cache rewritten with Arrow
        assert not canary.exists(), label
    misses = [r.getMessage() for r in caplog.records if "not a readable Arrow IPC stream" in r.getMessage()]
    assert len(misses) == len(payloads)
    # a well-formed stream carrying a pickled extension type is read as plain data, never unpickled
    client.set(key, valid)
    assert bus.cache_get("features:ES", version)["x"].tolist() == [1, 2]
    assert not canary.exists()
    client.close()
    conn.close()


def test_hostile_requests_are_rejected_with_reasons_and_never_run(redis_url, tmp_path, monkeypatch):
    from dagster import DagsterInstance, build_sensor_context

    from fbt_pipelines.location.automation import backtest_request_sensor
    from resources import BusResource, FilesResource

    canary = tmp_path / "canary"
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    bus = Bus(redis_url, prefix)
    try:
        bus.queue_depth()  # creates the stream and the consumer group
        raw = redis.Redis.from_url(redis_url)
        hostile = {
            "pickle": pickle.dumps(Boom(canary)),
            "binary": b"\xff\xfe\x00garbage",
            "json list": b"[1, 2, 3]",
            "oversized": json.dumps({"request_id": "big", "market": "ES", "pad": "x" * 20_000}).encode(),
            "eval in a param": json.dumps({"request_id": "r1", "market": "ES", "strategy": "sma_crossover",
                                           "params": {"fast": f"__import__('os').system('touch {canary}')"}}),
            "SQL in market": json.dumps({"request_id": "r2", "market": "ES'; DROP TABLE bars;--"}),
            "code as strategy": json.dumps({"request_id": "r3", "market": "ES",
                                            "strategy": "__import__('os').system('id')"}),
            "too many params": json.dumps({"request_id": "r4", "market": "ES", "strategy": "sma_crossover",
                                           "params": {f"p{i}": 1 for i in range(100)}}),
            "shell in request id": json.dumps({"request_id": f"r5$(touch {canary})", "market": "ES"}),
            "unknown strategy": json.dumps({"request_id": "r6", "market": "ES", "strategy": "no_such"}),
            "unknown param": json.dumps({"request_id": "r7", "market": "ES", "strategy": "sma_crossover",
                                         "params": {"__class__": 1}}),
        }
        for body in hostile.values():
            raw.xadd(f"{prefix}:requests", {"body": body})
        good = bus.submit_request({"market": "ES", "strategy": "sma_crossover", "params": {"fast": 10}})

        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("markets", ["ES"])
        ctx = build_sensor_context(instance=instance, resources={"bus": BusResource(url=redis_url, prefix=prefix),
                                                            "files": FilesResource(landing_dir="/nonexistent/landing", reports_dir="/nonexistent/reports")})
        (run,) = backtest_request_sensor(ctx)  # only the good one becomes a run
        (body,) = run.run_config["ops"]["backtest_requests"]["config"]["requests"]
        assert json.loads(body)["request_id"] == good and run.tags["fbt/requests"] == "1"
        # nothing jams the queue: every hostile entry acknowledged and gone; only the good one stays
        # pending, unacknowledged until its run exists
        assert bus.queue_depth() == {"length": 1, "pending": 1}
        assert [body["request_id"] for _, body in bus.pending_requests("dagster-sensor")] == [good]
        rejected = [e for e in bus.recent_events(50) if e["type"] == "request_rejected"]
        reasons = " | ".join(e["reason"] for e in rejected)
        assert len(rejected) == len(hostile), reasons
        for phrase in ["not valid JSON", "must be a JSON object", "exceeds the limit of 16,384 bytes",
                       "parameter fast must be a number", "must be an upper-case root", "is not a strategy name",
                       "100 params exceed the limit of 32", "must be 1-64 characters", "unknown strategy 'no_such'",
                       "unknown parameter(s) ['__class__']"]:
            assert phrase in reasons, phrase
        assert {e["request_id"] for e in rejected} >= {"r1", "r2", "r3", "r4", "r6", "r7"}
        assert not canary.exists()
        raw.close()
    finally:
        bus.close()
        delete_prefix(redis_url, prefix)


def test_hostile_cli_inputs_are_refused_or_stored_as_data(fbt_home, tmp_path):
    canary = tmp_path / "canary"
    code = f"__import__('os').system('touch {canary}')"
    for args in (["backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", f"fast={code}"],
                 ["submit", "--market", "ES", "--param", f"fast={code}"]):
        result = cli(*args)
        assert result.exit_code == 2 and "the value must be a number" in result.output, args
    injection = "ES'; DROP TABLE bars;--"
    result = cli("backtest", "--strategy", "sma_crossover", "--market", injection)
    assert result.exit_code == 2 and "unknown market" in result.output.lower()  # bad usage
    assert cli("contracts", "ES' OR '1'='1", "--from", "2020", "--to", "2020").exit_code == 2

    # a file whose name and contract codes are SQL: ingested as data, the bad code quarantined
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "ES'); DROP TABLE bars; --.csv"
    path.write_text("contract,ts,open,high,low,close,volume\n"
                    "ESZ2019,2019-06-03T00:00:00Z,2750.25,2760.00,2745.50,2755.75,1000\n"
                    "ESZ2019'); DROP TABLE bars;--,2019-06-04T00:00:00Z,2755.75,2770.00,2750.00,2765.25,900\n")
    result = cli("ingest", str(path), "--json")
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert (line["accepted"], line["quarantined"]) == (1, 1)
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT contract, close FROM bars").fetchall() == [("ESZ2019", 2755.75)]
        raw_text = conn.execute("SELECT raw FROM quarantine").fetchall()
    assert any("DROP TABLE bars" in r[0] for r in raw_text)  # kept verbatim, as text
    assert not canary.exists()


# -- input size limits --------------------------------------------------------------------------
def _bars_csv(path: Path, rows: int) -> Path:
    ts = pd.bdate_range("2019-06-03", periods=rows, tz="UTC")
    px = 2750.0 + (pd.Series(range(rows)) % 8) * 0.25
    pd.DataFrame({"contract": "ESZ2019", "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": px, "high": px + 1,
                  "low": px - 1, "close": px, "volume": 100}).to_csv(path, index=False)
    return path


def test_ingest_limits_refuse_big_files_before_anything_is_stored(fbt_home, tmp_path, monkeypatch):
    monkeypatch.setenv("FBT_MAX_INGEST_ROWS", "10")
    ok = _bars_csv(tmp_path / "ESZ2019.csv", 10)
    (tmp_path / "more").mkdir()
    too_many = _bars_csv(tmp_path / "more" / "ESZ2019.csv", 11)
    assert cli("ingest", str(ok), "--json").exit_code == 0  # exactly at the limit: accepted
    result = cli("ingest", str(too_many))
    assert result.exit_code == 1
    assert "more than 10 rows exceeds the ingest limit (FBT_MAX_INGEST_ROWS)" in " ".join(result.output.split())

    monkeypatch.setenv("FBT_MAX_INGEST_ROWS", "100000")
    monkeypatch.setenv("FBT_MAX_INGEST_FILE_MB", "1")
    big = tmp_path / "huge" / "ESZ2019.csv"
    big.parent.mkdir()
    _bars_csv(big, 20_000)
    assert big.stat().st_size > 1024 * 1024
    result = cli("ingest", str(big))
    assert result.exit_code == 1 and "(FBT_MAX_INGEST_FILE_MB)" in " ".join(result.output.split())

    bomb = tmp_path / "es_trade.zip"  # 2 MiB of newlines compress to ~2 KB
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("es.csv", b"\n" * (2 * 1024 * 1024))
    assert bomb.stat().st_size < 10_000
    result = cli("ingest", str(bomb), "--format", "lean")
    assert result.exit_code == 1 and "bytes uncompressed exceeds the ingest limit" in " ".join(result.output.split())

    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone()[0] == 10  # only the accepted file
        assert conn.execute("SELECT count(*) FROM ingests").fetchone()[0] == 1

    monkeypatch.setenv("FBT_MAX_INGEST_ROWS", "ten")
    with pytest.raises(limits.LimitExceeded, match="not a whole number"):
        limits.current()


def test_request_limits(bus, monkeypatch):
    with pytest.raises(limits.LimitExceeded, match="exceeds the limit of 16,384 bytes"):
        bus.submit_request({"market": "ES", "note": "x" * 17_000})
    assert bus.queue_depth()["length"] == 0  # refused before XADD
    monkeypatch.setenv("FBT_MAX_REQUEST_PARAMS", "2")
    base = {"request_id": "a1", "market": "ES", "strategy": "sma_crossover"}
    limits.check_backtest_request({**base, "params": {"fast": 10, "slow": 50}})  # at the limit
    with pytest.raises(limits.LimitExceeded, match="3 params exceed the limit of 2"):
        limits.check_backtest_request({**base, "params": {"fast": 10, "slow": 50, "x": 1}})
    monkeypatch.setenv("FBT_MAX_REQUEST_BYTES", "64")
    with pytest.raises(limits.LimitExceeded, match="exceeds the limit of 64 bytes"):
        limits.check_request_body(json.dumps({**base, "params": {"fast": 10, "slow": 50}}))


# -- static checks ------------------------------------------------------------------------------
SOURCE_ROOTS = ["fbt_pipelines", "assets", "resources"]
UNSAFE_CALLS = {  # (module or object name, attribute) -> why it is refused
    ("pickle", "loads"): "unpickling runs code", ("pickle", "load"): "unpickling runs code",
    ("cloudpickle", "loads"): "unpickling runs code", ("dill", "loads"): "unpickling runs code",
    ("marshal", "loads"): "unmarshalling code objects", ("pd", "read_pickle"): "unpickling runs code",
    ("pandas", "read_pickle"): "unpickling runs code", ("joblib", "load"): "joblib files are pickles",
    ("yaml", "load"): "yaml.load can build objects; use safe_load", ("yaml", "unsafe_load"): "builds objects",
    ("torch", "load"): "pickle underneath",
}
UNSAFE_NAMES = {"eval", "exec", "compile", "__import__"}
SQL_METHODS = {"execute", "executemany", "sql", "query"}
# Reviewed: each function builds SQL text from identifiers fixed in code (table names checked
# against RESULT_TABLES or information_schema, canonical column names, SQL fragments made by
# code, path literals escaped by _path_literal); every value from data or users is a `?` parameter.
REVIEWED_DYNAMIC_SQL = {
    ("fbt_pipelines/services/warehouse.py", "ensure_schema"): "ALTER TABLE from the MIGRATIONS constant",
    ("fbt_pipelines/services/warehouse.py", "replace_partition"): "table checked against RESULT_TABLES; key is ?",
    ("fbt_pipelines/usecases/intraday.py", "read_intraday_prices"): "column list is the module's constant "
                                                                     "_PRICE_COLUMNS; the series key is ?",
    ("fbt_pipelines/services/warehouse.py", "replace_partitions"): "tables checked against RESULT_TABLES, key "
                                                                   "columns from it; frames registered as views",
    ("fbt_pipelines/services/warehouse.py", "_migrate_columns"): "called by replace_partition (table in RESULT_TABLES); "
                                                                "column names quoted as identifiers; key is ?",
    ("fbt_pipelines/services/warehouse.py", "read_partition"): "table in RESULT_TABLES; ORDER BY columns checked "
                                                             "against information_schema; key is ?",
    ("fbt_pipelines/services/warehouse.py", "read_table"): "table in RESULT_TABLES; ORDER BY identifiers only",
    ("fbt_pipelines/services/summary.py", "market_summary"): "optional column chosen by code",
    ("fbt_pipelines/services/summary.py", "table_counts"): "table names checked against a fixed list",
    ("fbt_pipelines/services/backup.py", "table_fingerprints"): "table names from information_schema, quoted",
    ("fbt_pipelines/services/backup.py", "backup"): "EXPORT DATABASE takes no parameters: path via _path_literal",
    ("fbt_pipelines/services/backup.py", "restore"): "IMPORT DATABASE takes no parameters: path via _path_literal",
    ("fbt_pipelines/ingest/staging.py", "drop_staging"): "temp table names from a fixed tuple",
    ("fbt_pipelines/ingest/staging.py", "_stage_csv_fast"): "canonical column names; the path is ?",
    ("fbt_pipelines/ingest/staging.py", "stage_csv"): "canonical column names; the path is ?",
    ("fbt_pipelines/ingest/staging.py", "stage_parquet"): "canonical column names; the path is ?",
    ("fbt_pipelines/ingest/files.py", "_store"): "placeholder lists ('?' * n) and fixed fragments",
    ("fbt_pipelines/ingest/files.py", "_replace_older"): "placeholder lists ('?' * n); new_keys is a SELECT written "
                                                          "by the two callers in ingest.py; values are ?",
    ("fbt_pipelines/ingest/bulk_csv.py", "insert_rows"): "column positions c0..cN and types from the _TYPES "
                                                         "constant; rule SQL from sql_rules; path and values are $parameters",
    ("fbt_pipelines/ingest/bulk_csv.py", "insert_if_clean"): "restores DuckDB's own setting value, checked "
                                                             "against [a-z_,]* first",
    ("fbt_pipelines/ingest/bulk_csv.py", "check_rows"): "off-tick SQL from sql_rules; the ingest id is ?",
    ("fbt_pipelines/ingest/bulk_arrays.py", "ingest_bulk_arrays"): "rule SQL from sql_rules, values are "
                                                                   "$parameters; restores DuckDB's own setting "
                                                                   "value, checked against [a-z_,]* first",
    ("fbt_pipelines/ingest/staging.py", "stage_arrays"): "raw-text format: a constant of the DBN caller, quotes "
                                                         "doubled; column names from the caller's constant keys",
    ("fbt_pipelines/ingest/sql_validation.py", "validate_in_db"): "SQL fragments built by code; values are ?",
    ("fbt_pipelines/ingest/sql_validation.py", "_spike_count"): "SQL fragments built by code; spike_z as "
                                                                "repr(float(...))",
}


def _is_dynamic(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def _functions(tree: ast.AST):
    """(name, node) of every function, innermost attribution: a nested def is its own entry."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node


def _own_nodes(fn: ast.AST):
    """Nodes of ``fn`` not inside a nested function."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _sql_wrappers(trees) -> set[str]:
    """Names of functions that pass one of their own parameters to ``execute``/``sql``/``query``
    (e.g. ``_count(conn, sql)``): SQL built by their callers is checked like a direct call."""
    out = set()
    for tree in trees:
        for name, fn in _functions(tree):
            params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
            for n in _own_nodes(fn):
                if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in SQL_METHODS
                        and n.args and isinstance(n.args[0], ast.Name) and n.args[0].id in params):
                    out.add(name)
    return out


def _call_name(call: ast.Call) -> str | None:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def scan_source(repo: Path = REPO) -> tuple[list[str], set[tuple[str, str]]]:
    unsafe, dynamic_sql = [], set()
    files = [p for root in SOURCE_ROOTS for p in sorted((repo / root).rglob("*.py"))]
    trees = {p: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in files}
    wrappers = _sql_wrappers(trees.values())
    for path, tree in trees.items():
        rel = path.relative_to(repo).as_posix()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Name) and f.id in UNSAFE_NAMES:
                unsafe.append(f"{rel}:{node.lineno} {f.id}()")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in UNSAFE_CALLS:
                unsafe.append(f"{rel}:{node.lineno} {f.value.id}.{f.attr}(): {UNSAFE_CALLS[(f.value.id, f.attr)]}")
        for name, fn in _functions(tree):
            own = list(_own_nodes(fn))
            built = {t.id for n in own if isinstance(n, ast.Assign) and _is_dynamic(n.value)
                     for t in n.targets if isinstance(t, ast.Name)}
            for n in own:
                if not isinstance(n, ast.Call) or not n.args:
                    continue
                called = _call_name(n)
                if isinstance(n.func, ast.Attribute) and called in SQL_METHODS:
                    sql_args = n.args[:1]
                elif called in wrappers:
                    sql_args = n.args
                else:
                    continue
                if any(_is_dynamic(a) or (isinstance(a, ast.Name) and a.id in built) for a in sql_args):
                    dynamic_sql.add((rel, name))
    return unsafe, dynamic_sql


def test_source_has_no_pickle_eval_or_unreviewed_dynamic_sql():
    unsafe, dynamic_sql = scan_source()
    assert unsafe == [], "unsafe deserialisation or code execution:\n" + "\n".join(unsafe)
    unreviewed = sorted(dynamic_sql - set(REVIEWED_DYNAMIC_SQL))
    assert unreviewed == [], ("SQL text built with f-strings/concatenation outside the reviewed list (use ? "
                              f"parameters, or review and add with a reason): {unreviewed}")
    assert ("fbt_pipelines/services/warehouse.py", "replace_partition") in dynamic_sql  # the scanner sees f-strings


def test_scanner_catches_what_it_is_meant_to(tmp_path):
    """The static check is not vacuous: planted violations are found."""
    fake = tmp_path / "fbt_pipelines"
    fake.mkdir()
    (fake / "bad.py").write_text(
        "import pickle\n"
        "def load(raw, conn, root):\n"
        "    conn.execute(f\"SELECT * FROM bars WHERE root = '{root}'\")\n"
        "    sql = 'SELECT * FROM bars WHERE root = ' + root\n"
        "    conn.execute(sql)\n"
        "    eval(raw)\n"
        "    return pickle.loads(raw)\n"
        "def _run(conn, sql):\n"
        "    return conn.execute(sql).fetchall()\n"
        "def via_wrapper(conn, root):\n"
        "    return _run(conn, f\"SELECT * FROM bars WHERE root = '{root}'\")\n")
    unsafe, dynamic_sql = scan_source(tmp_path)
    assert any("pickle.loads" in u for u in unsafe) and any("eval()" in u for u in unsafe)
    assert dynamic_sql == {("fbt_pipelines/bad.py", "load"), ("fbt_pipelines/bad.py", "via_wrapper")}


# -- UIs bind to localhost ----------------------------------------------------------------------
def test_fbt_ui_binds_dagster_and_mlflow_to_localhost(fbt_home):
    from fbt_pipelines.cli.app import ui_commands

    dagster_cmd, mlflow_cmd = ui_commands(3000, 5000)
    assert Path(dagster_cmd[0]).name == "dagster-webserver" and Path(mlflow_cmd[0]).name == "mlflow"
    assert dagster_cmd[dagster_cmd.index("-h") + 1] == "127.0.0.1"
    assert mlflow_cmd[mlflow_cmd.index("--host") + 1] == "127.0.0.1"
    assert not any(a in ("0.0.0.0", "::") for a in dagster_cmd + mlflow_cmd)
    assert "fbt ui" in (REPO / "Makefile").read_text()  # `make ui` goes through the same command
