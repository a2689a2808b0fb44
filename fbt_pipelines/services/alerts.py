"""Alerts: an ``alert`` event on the Redis bus and, optionally, a webhook POST.

The webhook gets a JSON POST (Slack-style incoming hooks, PagerDuty events,
...). Sending never raises: a broken alert path must not fail the run that
reports a failure; what went wrong is logged and returned.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from fbt_pipelines.services.bus import Bus

log = logging.getLogger("fbt.alerts")


def send_alert(bus: Bus, alert: dict[str, Any], webhook_url: str | None = None, timeout_s: float = 5.0) -> dict[str, bool]:
    """Publish ``alert`` (type ``alert``) and POST it to ``webhook_url`` if given.

    Returns which channels succeeded: ``{"bus": bool, "webhook": bool}``.
    """
    sent = {"bus": bus.publish("alert", alert), "webhook": False}
    if webhook_url:
        if not webhook_url.startswith(("http://", "https://")):
            log.error("alert webhook %r is not an http(s) URL; not sent", webhook_url)
            return sent
        request = urllib.request.Request(webhook_url, data=json.dumps(alert, default=str).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (http(s) only)
                sent["webhook"] = 200 <= response.status < 300
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            log.error("alert webhook %s failed: %s", webhook_url, exc)
    return sent
