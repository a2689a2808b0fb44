"""Real browser checks (headless Debian chromium driven by Python Playwright).

What a trader sees, rendered by a real browser, no browser download at test
time (``executable_path=/usr/bin/chromium``; CI installs the OS packages
``chromium chromium-driver``):

(a) the Dagster webserver, started here over this module's DAGSTER_HOME in
    which part of the graph was materialized, draws the asset graph with
    every asset's name, and its launchpad schema lists the user strategy of
    ``$FBT_HOME/strategies`` (which the ``backtests`` asset ran from its run
    config);
(b) the tear sheet of a ``fbt backtest`` run (``fbt report``) and a
    multi-strategy page (correlation heat map, attribution) render every
    chart (a ``.main-svg`` per plotly figure) with the network cut off and no
    JavaScript error;
(c) the MLflow UI (``mlflow server`` over this module's store) lists the
    backtest runs at ``/#/experiments/<id>/runs``.

Screenshots are test artefacts: ``$FBT_HOME/tmp/screenshots/`` of the
FBT_HOME the test session started with (``<repo>/.fbt`` by default), or
``$FBT_SCREENSHOTS`` when set; the path is printed (``pytest -s``).
The browser is ``$FBT_CHROMIUM`` (default ``/usr/bin/chromium``). Without it
each browser test fails with the fix (the ``chromium`` fixture, before any
server starts), unless the process cannot install it (not root), in which
case each is skipped with the reason. Collection never fails: the rest of
the suite runs either way.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import use_private_home

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("FBT_CHROMIUM") or "/usr/bin/chromium")
SHOTS = Path(os.environ.get("FBT_SCREENSHOTS")
             or Path(os.environ.get("FBT_HOME") or REPO / ".fbt") / "tmp" / "screenshots")
GROUPS = {"catalog": ["market_catalog"], "ingest": ["raw_bars"], "futures": ["roll_schedule", "continuous_prices"],
          "ml": ["features", "model", "predictions"], "backtest": ["backtests", "parameter_sweep"],
          "intraday": ["intraday_raw_bars", "intraday_roll_schedule", "intraday_continuous_prices", "intraday_backtests", "intraday_tear_sheet"],
          "portfolio": ["strategy_comparison", "portfolio", "risk_report", "tear_sheet"]}
ASSETS = [a for names in GROUPS.values() for a in names]
STRATEGIES = {"sma_crossover": ["--param", "fast=10", "--param", "slow=40"], "buy_and_hold": []}
MOMENTUM = (Path(__file__).parents[1] / "user_strategies" / "momentum.py").read_text(encoding="utf-8")


@pytest.fixture(scope="module", autouse=True)
def chromium() -> Path:
    """The browser binary. Module-scoped and autouse, so it is set up before ``site`` (no servers
    are started for nothing); when missing, every test of this module fails (root: it could be
    installed) or is skipped (it cannot), each with the fix -- never the collection of the suite."""
    if not CHROMIUM.is_file():
        fix = "apt-get install -y chromium chromium-driver (.ci/run does), or point FBT_CHROMIUM at a chromium"
        if os.geteuid() == 0:
            pytest.fail(f"BROWSER MISSING: {CHROMIUM} does not exist: {fix}", pytrace=False)
        pytest.skip(f"BROWSER TESTS SKIPPED: {CHROMIUM} does not exist and this user cannot install it: {fix}")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}: {proc.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def wait_code_location(dagster_url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Until the webserver has LOADED the ``fbt`` code location (its own subprocess imports the
    whole location, which takes tens of seconds on a busy machine). ``/server_info`` answers long
    before; a lineage page opened while the location loads never draws its assets."""
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus " \
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dagster-webserver exited with {proc.returncode}: {proc.stderr.read()[-3000:]}")
        request = urllib.request.Request(f"{dagster_url}/graphql", data=json.dumps({"query": query}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                entries = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
        except (OSError, KeyError, TypeError):
            entries = []
        last = entries
        fbt = [e for e in entries if e["name"] == "fbt"]
        if fbt and fbt[0]["loadStatus"] == "LOADED":
            loaded = fbt[0]["locationOrLoadError"] or {}
            assert loaded.get("__typename") == "RepositoryLocation", f"the code location failed to load: {loaded}"
            return
        time.sleep(0.5)
    raise AssertionError(f"the fbt code location did not load within {timeout:.0f} s: {last}")


def cli(*args: str):
    result = CliRunner().invoke(__import__("fbt_pipelines.cli", fromlist=["main"]).main, list(args))
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def site(tmp_path_factory, redis_url):
    """Servers up and data in place: yields dict(home, dagster_url, mlflow_url, experiment, runs, pages)."""
    home = tmp_path_factory.mktemp("fbt_home")
    mp = pytest.MonkeyPatch()
    use_private_home(mp, home, redis_url)
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    from fbt_pipelines.config import paths
    from fbt_pipelines.location.instance import ensure_instance_storage

    ensure_instance_storage()  # before the webserver starts: both would create the SQLite tables
    paths().mlflow_dir.mkdir(parents=True, exist_ok=True)
    (home / "strategies").mkdir()
    (home / "strategies" / "momentum.py").write_text(MOMENTUM, encoding="utf-8")  # a user strategy
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    dagster_port, mlflow_port = free_port(), free_port()
    procs = []
    t0 = time.time()
    try:
        # both servers boot (~5 s and ~15 s) while the data is prepared
        procs.append(subprocess.Popen(
            [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(dagster_port),
             "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        from mlflow.tracking import MlflowClient

        from fbt_pipelines.services.tracking import BACKTEST_EXPERIMENT

        MlflowClient(paths().mlflow_tracking_uri).search_experiments()  # creates the store's schema first
        procs.append(subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--backend-store-uri", paths().mlflow_tracking_uri,
             "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"], cwd=home, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))

        # a small materialized graph: catalog + one market's ingest and continuous series (2019 of ES)
        from dagster import AssetSelection, DagsterInstance, materialize

        from fbt_pipelines.catalog import market_spec
        from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources
        from fbt_pipelines.marketdata.sample_data import write_sample_data

        write_sample_data(paths().landing, [market_spec("ES")], dt.date(2019, 1, 2), dt.date(2019, 12, 31))
        instance = DagsterInstance.get()
        instance.add_dynamic_partitions("markets", ["ES"])
        resources = local_resources()
        for keys, partition in [(["market_catalog"], None),
                                (["raw_bars", "roll_schedule", "continuous_prices"], "ES")]:
            assert materialize(ALL_ASSETS, selection=AssetSelection.assets(*keys), partition_key=partition,
                               resources=resources, instance=instance).success
        # the user strategy runs from the asset's run config, as from the launchpad
        assert materialize(ALL_ASSETS, selection=AssetSelection.assets("backtests"), partition_key="ES",
                           resources=resources, instance=instance,
                           run_config={"ops": {"backtests": {"config": {"strategies": [{"name": "momentum", "params": {"lookback": 20}}]}}}}
                           ).success
        instance.dispose()
        print(f"\nmaterialized: {time.time() - t0:.1f} s")

        runs = {}
        for strategy, params in STRATEGIES.items():
            out = json.loads(cli("backtest", "--strategy", strategy, "--market", "ES", *params, "--json").stdout)
            runs[strategy] = out
        report_page = paths().reports / f"{runs['sma_crossover']['run_id']}.html"
        cli("report", runs["sma_crossover"]["run_id"])
        pages = {"report": report_page, "portfolio": _multi_strategy_page(paths().reports, runs)}

        experiment = MlflowClient(paths().mlflow_tracking_uri).get_experiment_by_name(BACKTEST_EXPERIMENT)
        wait_http(f"http://127.0.0.1:{dagster_port}/server_info", procs[0], 90)
        wait_code_location(f"http://127.0.0.1:{dagster_port}", procs[0], 180)
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", procs[1], 90)
        SHOTS.mkdir(parents=True, exist_ok=True)
        print(f"\nservers up, data ready: {time.time() - t0:.1f} s; screenshots: {SHOTS}")
        yield {"home": home, "dagster_url": f"http://127.0.0.1:{dagster_port}",
               "mlflow_url": f"http://127.0.0.1:{mlflow_port}", "experiment": experiment.experiment_id,
               "runs": runs, "pages": pages}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        mp.undo()


def _multi_strategy_page(folder: Path, runs: dict) -> Path:
    """A page with the correlation heat map and the per-strategy attribution of the two runs."""
    import duckdb
    import pandas as pd

    from fbt_pipelines.config import paths
    from fbt_pipelines.reports.tear_sheet import write_tear_sheet

    with duckdb.connect(str(paths().warehouse), read_only=True) as conn:
        eq = conn.execute("SELECT run_id, ts, equity FROM adhoc_backtest_equity ORDER BY ts").df()
    by_strategy = {s: eq[eq["run_id"] == r["run_id"]].set_index("ts")["equity"] for s, r in runs.items()}
    pnl = pd.DataFrame({s: e.diff() for s, e in by_strategy.items()})
    total = pd.DataFrame({"ts": pnl.index, "equity": 2e6 + pnl.fillna(0).sum(axis=1).cumsum().to_numpy()})
    return write_tear_sheet(folder / "strategies.html", "two strategies on ES", total, {"strategies": len(runs)},
                            pd.Series({"ES": float(pnl.sum().sum())}), {"source": "fbt backtest"},
                            correlation=pnl.corr(),
                            strategy_pnl=pd.DataFrame({s: [r["total_pnl"]] for s, r in runs.items()}, index=["ES"]))


@pytest.fixture(scope="module")
def browser(chromium: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_dagster_ui_draws_every_asset_of_the_graph(site, browser):
    # the global lineage page collapses groups into boxes; each group's lineage page draws its assets
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.add_init_script("localStorage.setItem('communityNux', '\"1\"')")  # no newsletter dialog
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    drawn: dict[str, list[str]] = {}
    for group, names in GROUPS.items():
        page.goto(f"{site['dagster_url']}/locations/fbt/asset-groups/{group}/lineage", wait_until="domcontentloaded")
        # a node is an SVG foreignObject whose text starts with the asset name (then "Latest event", checks, ...)
        try:
            page.wait_for_function(
                "names => names.every(n => [...document.querySelectorAll('svg foreignObject')]"
                "                         .some(e => (e.textContent || '').startsWith(n + 'Latest event')))",
                arg=names, timeout=90_000)
        except Exception as exc:  # noqa: BLE001 - say what the page showed instead of a bare timeout
            shot = SHOTS / f"dagster_{group}_lineage_FAILED.png"
            page.screenshot(path=str(shot))
            text = page.evaluate("() => document.body.innerText.slice(0, 600)")
            raise AssertionError(f"group {group}: {names} not all drawn within 90 s ({exc.__class__.__name__}); "
                                 f"screenshot {shot}; page text: {text!r}") from exc
        drawn[group] = page.evaluate(
            "names => names.filter(n => [...document.querySelectorAll('svg foreignObject')]"
            "                          .some(e => (e.textContent || '').startsWith(n + 'Latest event')))", names)
        if group in ("futures", "portfolio"):
            page.screenshot(path=str(SHOTS / f"dagster_{group}_lineage.png"))
    context.close()
    assert drawn == GROUPS
    assert not errors, errors
    # the launchpad's config schema of backtests lists the user strategy from $FBT_HOME/strategies
    query = "{ assetNodes { assetKey { path } configField { configType { ... on CompositeConfigType { fields { name description } } } } } }"
    request = urllib.request.Request(f"{site['dagster_url']}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        nodes = json.loads(resp.read())["data"]["assetNodes"]
    fields = next(n["configField"]["configType"]["fields"] for n in nodes if n["assetKey"]["path"] == ["backtests"])
    description = next(f["description"] for f in fields if f["name"] == "strategies")
    assert "momentum(lookback=60) [yours]" in description and "sma_crossover(fast=20, slow=100)" in description


@pytest.mark.parametrize("which", ["report", "portfolio"])
def test_tear_sheet_renders_every_chart_offline_without_js_errors(site, browser, which):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    # belt and braces: any request that is not a local file is refused
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(site["pages"][which].resolve().as_uri(), wait_until="load")
    n_charts = page.locator(".plotly-graph-div").count()
    page.wait_for_function(
        "n => [...document.querySelectorAll('.plotly-graph-div')].filter(d => d.querySelector('.main-svg')).length === n",
        arg=n_charts, timeout=30_000)
    titles = page.locator(".gtitle").all_text_contents()
    page.screenshot(path=str(SHOTS / f"tear_sheet_{which}.png"), full_page=which == "report")
    context.close()
    assert not errors, errors
    if which == "report":
        # equity/drawdown, Monte Carlo, monthly, rolling, market P&L, 3 trade charts
        assert n_charts == 8, titles
        assert any(t.startswith("Monte Carlo") for t in titles) and "Round-trip net P&L (USD)" in titles
    else:
        assert "Correlation of daily P&L" in titles and any("by strategy" in t for t in titles), titles


def test_mlflow_ui_lists_the_backtest_runs(site, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(f"{site['mlflow_url']}/#/experiments/{site['experiment']}/runs", wait_until="domcontentloaded")
    # two `fbt backtest` runs and the backtests asset's run of the user strategy
    # run names say market, strategy and parameters (usecases/backtest.py run_name)
    for name in ["ES sma_crossover fast=10 slow=40", "ES buy_and_hold", "ES momentum lookback=20"]:
        page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=str(SHOTS / "mlflow_runs.png"))


def _dagster_page(browser, viewport=(1600, 1000)):
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.add_init_script("localStorage.setItem('communityNux', '\"1\"')")  # no newsletter dialog
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page, errors


def test_the_launchpad_scaffolds_every_default_strategy(site, browser):
    """The backtest_market launchpad's scaffolded config lists all five default strategies
    (Dagster drops ``{}`` values of a mapping when it scaffolds: strategies are a list)."""
    context, page, errors = _dagster_page(browser)
    page.goto(f"{site['dagster_url']}/locations/fbt/jobs/backtest_market/playground", wait_until="domcontentloaded")
    names = ["sma_crossover", "ml_signal", "ewmac_multi", "carry", "buy_and_hold"]
    try:
        page.wait_for_function(
            "names => { const t = [...document.querySelectorAll('.CodeMirror, .cm-editor')]"
            "                     .map(e => e.innerText || '').join('\\n');"
            "           return names.every(n => t.includes('name: ' + n)); }", arg=names, timeout=90_000)
    except Exception as exc:  # noqa: BLE001 - say what the page showed instead of a bare timeout
        shot = SHOTS / "dagster_launchpad_FAILED.png"
        page.screenshot(path=str(shot))
        text = page.evaluate("() => document.body.innerText.slice(0, 1500)")
        raise AssertionError(f"launchpad: not every default strategy in the editor ({exc.__class__.__name__}); "
                             f"screenshot {shot}; page text: {text!r}") from exc
    page.screenshot(path=str(SHOTS / "dagster_launchpad.png"))
    context.close()
    assert not errors, errors


def test_the_backtests_asset_page_shows_its_dated_equity_chart(site, browser):
    """The backtests asset's ES materialization carries an equity chart that renders as an image
    (Dagster shows Markdown over 1,000 characters behind 'Show Markdown': opened here)."""
    context, page, errors = _dagster_page(browser)
    page.goto(f"{site['dagster_url']}/assets/backtests?view=events&partition=ES", wait_until="domcontentloaded")
    button = page.get_by_text("[Show Markdown]").first
    try:
        page.get_by_text("equity_chart").first.wait_for(timeout=90_000)
        button.wait_for(timeout=30_000)
    except Exception as exc:  # noqa: BLE001
        shot = SHOTS / "dagster_backtests_asset_FAILED.png"
        page.screenshot(path=str(shot))
        text = page.evaluate("() => document.body.innerText.slice(0, 1500)")
        raise AssertionError(f"backtests asset page: no equity_chart entry ({exc.__class__.__name__}); "
                             f"screenshot {shot}; page text: {text!r}") from exc
    row = page.locator("tr", has=page.get_by_text("equity_chart", exact=True)).first
    row.get_by_text("[Show Markdown]").click()
    image = page.locator("img[src^='data:image/svg+xml']").first
    image.wait_for(timeout=30_000)
    width = page.evaluate("img => img.naturalWidth", image.element_handle())
    page.screenshot(path=str(SHOTS / "dagster_backtests_equity_chart.png"))
    context.close()
    assert width >= 600, width  # the chart (~720 px wide), not a broken image
    assert not errors, errors
