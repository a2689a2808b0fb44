"""Back up, destroy, restore: row counts and checksums come back identical."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import pytest
from click.testing import CliRunner

from fbt_pipelines.catalog import market_spec
from fbt_pipelines.cli import main
from fbt_pipelines.config import paths
from fbt_pipelines.marketdata.sample_data import write_sample_data
from fbt_pipelines.services.backup import BackupError, restore, table_fingerprints
from fbt_pipelines.services.tracking import Tracking


def test_backup_destroy_restore(fbt_home, tmp_path):
    write_sample_data(paths().landing, [market_spec("ES")], dt.date(2019, 1, 2), dt.date(2019, 12, 31))
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(paths().landing / "ES")]).exit_code == 0
    assert runner.invoke(main, ["continuous", "ES"]).exit_code == 0
    run_id = Tracking(paths().mlflow_tracking_uri, paths().mlflow_artifacts).log_backtest(
        "b", {"a": 1}, {"sharpe": 0.5}, {"strategy": "s"})
    (fbt_home / "markets.toml").write_text("")
    with duckdb.connect(str(paths().warehouse), read_only=True) as conn:
        before = table_fingerprints(conn)
    assert before["bars"]["rows"] > 800 and before["continuous_prices"]["rows"] > 200

    dest = tmp_path / "backup"
    result = runner.invoke(main, ["backup", str(dest)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(main, ["backup", str(dest)]).exit_code == 1  # never into a non-empty folder

    shutil.rmtree(fbt_home)  # destroy
    fbt_home.mkdir()
    result = runner.invoke(main, ["restore", str(dest)])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(paths().warehouse), read_only=True) as conn:
        assert table_fingerprints(conn) == before
        assert conn.execute("SELECT count(*) FROM bars WHERE root = 'ES'").fetchone()[0] == before["bars"]["rows"]
    client = Tracking(paths().mlflow_tracking_uri, paths().mlflow_artifacts)
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    assert mlflow.get_run(run_id).data.metrics == {"sharpe": 0.5}
    assert (fbt_home / "markets.toml").exists()
    assert runner.invoke(main, ["restore", str(dest)]).exit_code == 1  # refuses to overwrite
    with pytest.raises(BackupError, match="no manifest.json"):
        restore(tmp_path, paths(), force=True)


def test_paths_with_quotes_are_literals_not_sql(fbt_home, tmp_path):
    from fbt_pipelines.services.backup import backup

    with duckdb.connect(str(paths().warehouse)) as conn:
        conn.execute("CREATE TABLE bars AS SELECT 1 AS x")
    dest = tmp_path / "o'neil'); DROP TABLE bars; --"
    manifest = backup(paths(), dest)
    assert manifest["warehouse"]["bars"]["rows"] == 1
    paths().warehouse.unlink()
    assert restore(dest, paths())["bars"]["rows"] == 1
