"""Dagster resources: thin wrappers over the services adapters and the workspace.

The adapters of ``fbt_pipelines.services`` and the trader's workspace.
"""

from resources.bus import BusResource
from resources.files import FilesResource
from resources.tracking import TrackingResource
from resources.warehouse import WarehouseResource

__all__ = ["BusResource", "FilesResource", "TrackingResource", "WarehouseResource"]
