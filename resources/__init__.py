"""Dagster resources: thin wrappers over fbt_pipelines.stores adapters."""

from resources.bus import BusResource
from resources.files import FilesResource
from resources.tracking import TrackingResource
from resources.warehouse import WarehouseResource

__all__ = ["BusResource", "FilesResource", "TrackingResource", "WarehouseResource"]
