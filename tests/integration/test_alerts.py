"""A failed Dagster run raises an alert on Redis and on a webhook; risk-limit
breaches do too."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

from dagster import AssetSelection, DagsterEventType, DagsterInstance, build_run_status_sensor_context, materialize

from fbt_pipelines.alerts import send_alert
from fbt_pipelines.automation import run_failure_alert
from fbt_pipelines.stores.bus import Bus
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


def test_failed_run_alerts_on_the_bus_and_the_webhook(fbt_home, redis_url, monkeypatch):
    from fbt_pipelines.definitions import ALL_ASSETS, local_resources

    server, url = webhook()
    monkeypatch.setenv("FBT_ALERT_WEBHOOK", url)
    prefix = f"fbttest-{uuid.uuid4().hex[:12]}"
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("markets", ["ES"])
    try:
        # no landing files for ES: raw_bars fails with a Failure naming the folder
        result = materialize(ALL_ASSETS, selection=AssetSelection.assets("raw_bars"), partition_key="ES",
                             resources=local_resources(), instance=instance, raise_on_error=False)
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
