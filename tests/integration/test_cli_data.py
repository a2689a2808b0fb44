"""`fbt ingest`, `fbt contracts`, `fbt catalog` through the real CLI (Click runner,
real DuckDB file under a private FBT_HOME)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import duckdb
from click.testing import CliRunner

from fbt_pipelines.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_ingest_lean_zips_as_json(fbt_home):
    result = run("ingest", str(FIXTURES / "lean" / "es_trade.zip"), "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.strip().splitlines()]
    assert {x["status"] for x in lines} == {"ok"} and sum(x["quarantined"] for x in lines) == 0
    accepted = sum(x["accepted"] for x in lines)
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone()[0] == accepted > 0
    again = [json.loads(x) for x in run("ingest", str(FIXTURES / "lean" / "es_trade.zip"), "--json").output.splitlines()]
    assert {x["status"] for x in again} == {"skipped"}


def lean_folder(root: Path) -> Path:
    """A LEAN data folder (Data/future/cme/...) from the fixtures: daily and
    minute trade zips with their open interest, a quote zip, an hour zip, a
    margin history, a map file and a factor file (the last four written
    here in LEAN's formats: fbt never reads them)."""
    cme = root / "future" / "cme"
    for rel in ("daily", "minute/es", "hour", "margins", "map_files", "factor_files"):
        (cme / rel).mkdir(parents=True)
    lean = FIXTURES / "lean"
    for src, dst in ((lean / "es_trade.zip", "daily/es_trade.zip"),
                     (lean / "es_openinterest.zip", "daily/es_openinterest.zip"),
                     (lean / "minute/es/20131218_trade.zip", "minute/es/20131218_trade.zip"),
                     (lean / "minute/es/20131218_openinterest.zip", "minute/es/20131218_openinterest.zip"),
                     (lean / "es_trade.zip", "hour/es_trade.zip"),
                     (lean / "margins/ES.csv", "margins/ES.csv")):
        shutil.copyfile(src, cme / dst)
    with zipfile.ZipFile(cme / "daily/es_quote.zip", "w") as zf:
        zf.writestr("es_quote_201312.csv", "20131007 00:00,1669,1670,1668,1669.5,120,1669.25,1670.25,1668.25,1669.75,95\n")
    (cme / "map_files/es.csv").write_text("18991230,es,CME\n20131215,es vmklfzih2mtd,CME,2\n")
    (cme / "factor_files/es.csv").write_text('{"Date":"2013-12-19T00:00:00","BackwardsRatioScale":[0.99],'
                                             '"BackwardsPanamaCanalScale":[-5.5],"ForwardPanamaCanalScale":[0.0],'
                                             '"DataMappingMode":0}\n')
    return root


def zip_lines(path: Path) -> dict[str, list[list[str]]]:
    """inner CSV name -> its non-empty lines split at commas (read here with zipfile)."""
    with zipfile.ZipFile(path) as zf:
        return {n: [ln.split(",") for ln in zf.read(n).decode().splitlines() if ln.strip()] for n in zf.namelist()}


def test_a_lean_data_folder_ingests_with_its_companions_skipped_and_noted(fbt_home, tmp_path):
    folder = lean_folder(tmp_path / "Data")
    cme = folder / "future" / "cme"
    result = run("ingest", str(folder), "--format", "lean", "--json")
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in result.output.strip().splitlines()]
    assert "failed" not in {x["status"] for x in out}
    skipped = {Path(x["source"]).relative_to(cme).as_posix(): x["note"] for x in out if x["status"] == "skipped"}
    assert skipped == {
        "daily/es_openinterest.zip": "open interest: used with es_trade.zip",
        "minute/es/20131218_openinterest.zip": "open interest: used with 20131218_trade.zip",
        "daily/es_quote.zip": "quote bars (bid/ask): not used; fbt stores trade bars",
        "hour/es_trade.zip": "hour trade bars: not read (fbt reads LEAN daily and minute bars)",
        "margins/ES.csv": "margin history: not bars; fbt reads it from $FBT_HOME/margins/ES.csv "
                          "(date,initial,maintenance)",
        "map_files/es.csv": "LEAN map file (continuous-contract mapping): not used; fbt builds its own roll schedule",
        "factor_files/es.csv": "LEAN factor file (continuous-price scaling): not used; fbt back-adjusts from the "
                               "contract bars",
    }
    # every line of both trade zips is a stored bar; the inner files are the "ok" sources
    daily, minute = zip_lines(cme / "daily/es_trade.zip"), zip_lines(cme / "minute/es/20131218_trade.zip")
    ok = {x["source"].split("!")[1]: x for x in out if x["status"] == "ok"}
    assert set(ok) == set(daily) | set(minute)
    assert all(ok[n]["accepted"] == len(rows) and ok[n]["quarantined"] == 0
               for n, rows in {**daily, **minute}.items())
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        stored = dict(conn.execute("SELECT interval, count(*) FROM bars GROUP BY interval").fetchall())
        oi = dict(((c, ts.strftime("%Y%m%d %H:%M")), v) for c, ts, v in conn.execute(
            "SELECT contract, ts, open_interest FROM bars WHERE interval = '1d' AND open_interest IS NOT NULL"
        ).fetchall())
    assert stored == {"1d": sum(map(len, daily.values())), "1m": sum(map(len, minute.values()))}
    # the open interest of the daily bars is the companion zip's, to the contract (read here with zipfile)
    months = dict(zip(range(1, 13), "FGHJKMNQUVXZ"))
    want = {(f"ES{months[int(name[-6:-4])]}{name[-10:-6]}", t): int(v)
            for name, rows in zip_lines(cme / "daily/es_openinterest.zip").items() for t, v in rows}
    assert oi and set(oi.items()) <= set(want.items())
    bar_keys = {(f"ES{months[int(n[-6:-4])]}{n[-10:-6]}", r[0]) for n, rows in daily.items() for r in rows}
    assert set(oi) == bar_keys & set(want)  # every bar with a snapshot of its day carries it

    # the table form says the same, without a failed line
    table = run("ingest", str(folder), "--format", "lean")
    assert table.exit_code == 0 and "failed" not in table.output and "quote bars (bid/ask)" in table.output

    # an unreadable file still fails, named, exit 1; the rest is unchanged (same bytes: skipped)
    (cme / "minute/es/20131219_trade.zip").write_bytes(b"PK\x03\x04 not really a zip")
    again = run("ingest", str(folder), "--format", "lean", "--json")
    lines = [json.loads(x) for x in again.output.strip().splitlines()]
    failed = [x for x in lines if x["status"] == "failed"]
    assert again.exit_code == 1 and len(failed) == 1
    assert failed[0]["source"].endswith("20131219_trade.zip") and "20131219_trade.zip" in failed[0]["error"]
    assert "corrupt zip" in failed[0]["error"]
    assert {x["status"] for x in lines if x["source"].split("!")[1:] and "20131219" not in x["source"]} == {"skipped"}
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        assert dict(conn.execute("SELECT interval, count(*) FROM bars GROUP BY interval").fetchall()) == stored


def test_bad_files_fail_with_a_message_and_exit_code(fbt_home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("contract,ts,open,high,low,close,volume\nESZ2013,2013-12-02,1,0.5,0.4,0.45,10\n")
    strict = run("ingest", str(bad), "--strict")
    assert strict.exit_code == 1 and "bad.csv: line 2: open outside [low, high]" in strict.output
    header = tmp_path / "header.csv"
    header.write_text("when,price\n2013-12-02,1\n")
    result = run("ingest", str(header), str(bad))
    assert result.exit_code == 1
    assert "header.csv: line 1: header" in result.output and "quarantine" in result.output
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM bars").fetchone()[0] == 0
        assert conn.execute("SELECT line, reason FROM quarantine").fetchall() == [(2, "open outside [low, high]")]


def test_contracts_json_lists_last_trade_and_first_notice():
    result = run("contracts", "CL", "--from", "2014", "--to", "2014", "--json")
    rows = json.loads(result.output)
    assert len(rows) == 12 and set(rows[0]) == {"contract", "last_trade", "first_notice"}
    # CLF2014: 25 Dec 2013 is a holiday -> 4 business days before: 2013-12-19 (NYMEX published)
    assert rows[0] == {"contract": "CLF2014", "last_trade": "2013-12-19", "first_notice": "2013-12-20"}
    unknown = run("contracts", "EZ", "--from", "2014", "--to", "2014")
    assert unknown.exit_code == 2 and "unknown market 'EZ'" in unknown.output  # bad usage, README: exit 2
    assert "did you mean 'ES'" in unknown.output, unknown.output


def test_contracts_default_to_this_and_next_year_and_markets_lists_the_catalogue():
    import datetime as dt

    this = dt.datetime.now(dt.UTC).year
    rows = json.loads(run("contracts", "ES", "--json").output)
    # ES lists H, M, U, Z: four deliveries a year, this year's and next year's
    assert [r["contract"] for r in rows] == [f"ES{m}{y}" for y in (this, this + 1) for m in "HMUZ"]
    one = json.loads(run("contracts", "ES", "--from", "2020", "--json").output)
    assert [r["contract"][-4:] for r in one] == ["2020"] * 4 + ["2021"] * 4
    backwards = run("contracts", "ES", "--from", "2020", "--to", "2019")
    assert backwards.exit_code == 2 and "--to 2019 is before --from 2020" in backwards.output
    markets = json.loads(run("markets", "--json").output)
    assert markets == json.loads(run("catalog", "list", "--json").output) and "ES" in {m["root"] for m in markets}
    typo = run("backtest", "--strategy", "sma_crossover", "--market", "ess")
    assert typo.exit_code == 2 and "unknown market 'ESS': did you mean 'ES'" in typo.output, typo.output


def test_catalog_import_pysystemtrade_extends_the_catalogue(fbt_home, tmp_path):
    def without_comment(name: str) -> Path:
        lines = (FIXTURES / name).read_text().splitlines()
        out = tmp_path / name
        out.write_text("\n".join(line for line in lines if not line.startswith("#")) + "\n")
        return out

    result = run("catalog", "import-pysystemtrade", str(without_comment("pysystemtrade_instrumentconfig_subset.csv")),
                 str(without_comment("pysystemtrade_rollconfig_subset.csv")), "--symbol", "GOLD=XGC")
    assert result.exit_code == 0, result.output
    listed = {m["root"]: m for m in json.loads(run("catalog", "list", "--json").output)}
    assert listed["XGC"]["multiplier"] == 100.0 and listed["XGC"]["cycle"] == "GJMQVZ"
    assert listed["XGC"]["expiry_rule"] == "day_of_month:26"  # pysystemtrade GOLD expiry_offset 26
    assert "ES" in listed and len(listed) == 25


def test_backtest_command_logs_a_run_and_refuses_bad_parameters(fbt_home):
    import datetime as dt

    from fbt_pipelines.catalog import market_spec
    from fbt_pipelines.config import paths
    from fbt_pipelines.marketdata.sample_data import write_sample_data

    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2016, 1, 4), dt.date(2018, 12, 31))
    assert run("ingest", str(paths().landing / "ES"), "--json").exit_code == 0
    assert run("continuous", "ES", "--json").exit_code == 0
    out = json.loads(run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "fast=10",
                         "--param", "slow=40", "--json").stdout)
    assert set(out) >= {"total_pnl", "sharpe", "max_drawdown", "n_trades", "run_id"} and out["rolls"] > 0
    free = json.loads(run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "fast=10",
                          "--param", "slow=40", "--no-costs", "--json").stdout)
    assert free["roll_costs"] == 0 and free["total_pnl"] > out["total_pnl"]  # costs only ever cost
    with duckdb.connect(str(fbt_home / "warehouse.duckdb"), read_only=True) as conn:
        stored = conn.execute("SELECT net_pnl FROM adhoc_backtest_runs WHERE run_id = ?", [out["run_id"]]).fetchall()
    assert round(stored[0][0], 2) == out["total_pnl"]
    bad = run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "speed=3")
    assert bad.exit_code == 2 and "unknown parameter(s) ['speed']" in bad.output  # bad usage (README: 2)
    assert "'speed': no close match (known: ['fast', 'slow'])" in bad.output, bad.output
    swapped = run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--param", "slwo=3")
    assert swapped.exit_code == 2 and "'slwo': did you mean 'slow'?" in swapped.output, swapped.output
    typo = run("backtest", "--strategy", "sma_crosover", "--market", "ES")
    assert typo.exit_code == 2 and "did you mean 'sma_crossover'?" in typo.output, typo.output
    # 2018-10-01 .. 2018-12-31: 23 weekdays in October, 22 - Thanksgiving in November, 21 - Christmas in
    # December (2018-12-05 traded on CME): 64 sessions, not more than slow=100: a warning on stderr, exit 0
    late = run("backtest", "--strategy", "sma_crossover", "--market", "ES", "--start", "2018-10-01")
    assert late.exit_code == 0, late.output
    assert "warning: the window has 64 bars, not more than sma_crossover's warm-up (slow=100 bars)" in late.stderr
    assert "fbt report " in late.stdout and "--open" in late.stdout  # the next step is suggested
    suggested = late.stdout.split("fbt report ")[1].split()[0]
    assert run("report", suggested).exit_code == 0
    assert "warning" not in json.dumps(out) and out["n_trades"] > 0
    assert "bollinger_reversion" in run("strategies").output


def test_status_reports_health_assets_and_failed_checks(fbt_home, monkeypatch):
    from dagster import AssetSelection, DagsterInstance, materialize

    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
    from fbt_pipelines.location.instance import ensure_dagster_home

    missing = json.loads(run("status", "--json").stdout)
    assert missing["warehouse"]["ok"] is False and run("status").exit_code == 1
    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        assert materialize(ALL_ASSETS, selection=AssetSelection.assets("market_catalog"),
                           resources=local_resources(), instance=instance).success
    info = json.loads(run("status", "--json").stdout)
    assets = {a["asset"]: a["last_materialized_utc"] for a in info["assets"]}
    assert assets["market_catalog"] is not None and assets["backtests"] is None
    assert info["warehouse"]["ok"] and info["redis"]["ok"] and info["queue"] == {"length": 0, "pending": 0}
    # every partition of a partitioned asset gets its own row, not only the last one materialized
    from assets.partitions import market_partitions

    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(market_partitions.name, ["ES", "CL"])
    rows = [a for a in json.loads(run("status", "--json").stdout)["assets"] if a["asset"] == "backtests"]
    assert sorted((a["partition"], a["last_materialized_utc"]) for a in rows) == [("CL", None), ("ES", None)]
