"""The MLflow UI as a trader sees it, in real chromium: a run page and a sweep parent.

A real MLflow UI server on a private SQLite store written by fbt's Tracking; the
links fbt makes (``run_page_url``) must open the model-training view (not the
GenAI overview MLflow 3.17 opens by default) and show the run's metrics.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_site(tmp_path_factory):
    from fbt_pipelines.services.tracking import Tracking

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    home = tmp_path_factory.mktemp("mlflow_ui")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    tracking = Tracking(uri, home / "artifacts")
    table = pd.DataFrame({"set": [0, 1], "params": ['{"fast": 10, "slow": 50}', '{"fast": 20, "slow": 100}'],
                          "sharpe": [0.41, 0.73], "net_pnl": [1_000.0, 3_000.0]})
    report = home / "sweep_ES_sma_crossover.html"
    report.write_text("<html><body>sweep report</body></html>", encoding="utf-8")
    parent = tracking.log_sweep("ES sma_crossover sweep", {"strategy": "sma_crossover"}, table,
                                tags={"strategy": "sma_crossover", "market": "ES"},
                                metrics={"pbo": 0.375, "deflated_sharpe": 0.217, "walk_forward_oos_sharpe": 0.318},
                                artifacts={"report": report})
    experiment = tracking.experiment_id("fbt-sweeps")
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("the MLflow UI did not answer /health within 90 s")
                time.sleep(1)
        yield {"base": base, "experiment": experiment, "parent": parent}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser.new_page(viewport={"width": 1400, "height": 900})
        browser.close()


def test_the_runs_link_opens_the_model_training_view_with_named_runs(mlflow_site, page):
    from fbt_pipelines.services.tracking import runs_page_url

    page.goto(runs_page_url(mlflow_site["base"], mlflow_site["experiment"]))
    page.get_by_text("ES sma_crossover sweep").first.wait_for(timeout=30_000)
    assert "/runs" in page.url and "workflowType=machine_learning" in page.url
    assert "overview/usage" not in page.url  # the GenAI overview is where the bare URL lands
    body = page.inner_text("body")
    assert "Model training" in body and "Runs" in body


def test_the_sweep_parent_page_shows_its_overfitting_numbers(mlflow_site, page):
    from fbt_pipelines.services.tracking import run_page_url

    page.goto(run_page_url(mlflow_site["base"], mlflow_site["experiment"], mlflow_site["parent"]))
    page.get_by_text("walk_forward_oos_sharpe").first.wait_for(timeout=30_000)
    body = page.inner_text("body")
    for name, value in [("pbo", "0.375"), ("deflated_sharpe", "0.217"), ("walk_forward_oos_sharpe", "0.318"),
                        ("best_sharpe", "0.73"), ("sets", "2")]:
        assert name in body and value in body, (name, value)
    assert "ES sma_crossover sweep" in body
