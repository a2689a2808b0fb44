"""``bus``: Redis cache, events and request queue (optional at run time)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from fbt_pipelines.services.bus import Bus


class BusResource(ConfigurableResource):
    """Redis at ``url`` (password/TLS go in the URL: ``rediss://:pw@host:port/0``)."""

    url: str
    prefix: str = "fbt"
    _bus: Bus | None = PrivateAttr(default=None)

    def get(self) -> Bus:
        if self._bus is None:
            self._bus = Bus(self.url, self.prefix)
        return self._bus
