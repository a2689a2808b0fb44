"""A failed Dagster run raises an alert on Redis and on a webhook; risk-limit
breaches do too."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

from dagster import AssetSelection, DagsterEventType, DagsterInstance, build_run_status_sensor_context, materialize

from fbt_pipelines.services.alerts import send_alert
from fbt_pipelines.location.automation import run_failure_alert
from fbt_pipelines.services.bus import Bus
from resources import BusResource
from tests.conftest import delete_prefix


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def webhook():
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/hook"


def materialize_es_raw_bars(instance: DagsterInstance):
    """raw_bars for market ES from $FBT_HOME/landing/ES, in process, without raising on failure."""
    from fbt_pipelines.location.definitions import ALL_ASSETS, local_resources

    return materialize(ALL_ASSETS, selection=AssetSelection.assets("raw_bars"), partition_key="ES",
                       resources=local_resources(), instance=instance, raise_on_error=False)


def test_failed_run_alerts_on_the_bus_and_the_webhook(fbt_home, redis_url, monkeypatch):
    server, url = webhook()
    monkeypatch.setenv("FBT_ALERT_WEBHOOK", url)
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    try:
        result = materialize_es_raw_bars(instance)  # no landing files for ES: a Failure naming the folder
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
        context = build_run_status_sensor_context(
            sensor_name="run_failure_alert", dagster_event=failure, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            resources={"bus": BusResource(url=redis_url, prefix=prefix)}).for_run_failure()
        run_failure_alert(context)
        (event,) = [e for e in Bus(redis_url, prefix).recent_events(10) if e["type"] == "alert"]
        assert event["kind"] == "run_failure" and event["run_id"] == result.run_id and event["partition"] == "ES"
        assert Receiver.received[-1]["run_id"] == result.run_id
    finally:
        server.shutdown()
        delete_prefix(redis_url, prefix)


def test_alert_paths_never_raise(redis_url):
    down = Bus("redis://127.0.0.1:1/9")
    assert send_alert(down, {"kind": "x"}, "http://127.0.0.1:1/nothing", timeout_s=0.5) == {"bus": False, "webhook": False}
    assert send_alert(down, {"kind": "x"}, "file:///etc/passwd") == {"bus": False, "webhook": False}


def test_failed_check_alerts_once_on_the_bus(fbt_home, redis_url):
    """A quarantined row fails raw_bars' `no_quarantined_rows` check (warn): the
    check-failure sensor publishes one alert naming the asset, check, severity
    and partition, and nothing again on its next tick."""
    from dagster import build_sensor_context

    from fbt_pipelines.location.automation import check_failure_alert
    from fbt_pipelines.location.definitions import defs

    landing = fbt_home / "landing" / "ES"
    landing.mkdir(parents=True)
    (landing / "ESH2024.csv").write_text(
        "contract,ts,open,high,low,close,volume\n"
        "ESH2024,2024-01-02,4780.00,4795.25,4755.50,4768.75,1520000\n"
        "ESH2024,2024-01-03,4765.00,4700.00,4720.25,4731.50,1710000\n"  # high < low: quarantined
        "ESH2024,2024-01-04,4732.00,4740.75,4715.00,4722.25,1480000\n")
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    try:
        assert materialize_es_raw_bars(instance).success
        resources = {"bus": BusResource(url=redis_url, prefix=prefix)}
        repo = defs.get_repository_def()
        ctx = build_sensor_context(instance=instance, resources=resources, repository_def=repo)
        check_failure_alert(ctx)
        alerts = [e for e in Bus(redis_url, prefix).recent_events(20) if e["type"] == "alert"]
        assert [(a["asset"], a["check"], a["severity"], a["partition"]) for a in alerts] == [
            ("raw_bars", "no_quarantined_rows", "WARN", "ES")]
        again = build_sensor_context(instance=instance, resources=resources, repository_def=repo, cursor=ctx.cursor)
        check_failure_alert(again)
        assert len([e for e in Bus(redis_url, prefix).recent_events(20) if e["type"] == "alert"]) == 1
    finally:
        delete_prefix(redis_url, prefix)
