"""Stage 0: the contract catalogue as warehouse reference tables."""

from dagster import MaterializeResult, asset

from assets._support import WRITER_POOL
from fbt_pipelines.usecases.market_data import write_catalogue
from resources import FilesResource, WarehouseResource


@asset(group_name="catalog", kinds={"duckdb"}, pool=WRITER_POOL)
def market_catalog(warehouse: WarehouseResource, files: FilesResource) -> MaterializeResult:
    """Market specs (multiplier, tick, cycle, margins) and every listed contract with its last trade and first notice dates."""
    with warehouse.connect() as conn:
        markets, contracts = write_catalogue(conn, files.workspace())
    return MaterializeResult(metadata={"markets": len(markets), "contracts": len(contracts),
                                       "roots": ", ".join(markets["root"])})
