"""Stage 0: the contract catalogue as warehouse reference tables."""

from dagster import MaterializeResult, asset

from assets._support import WRITER_POOL
from fbt_pipelines.catalog import load_catalog
from fbt_pipelines.catalog.tables import catalog_tables
from fbt_pipelines.stores import warehouse as wh
from resources import WarehouseResource

FIRST_DELIVERY_YEAR = 2000
LAST_DELIVERY_YEAR = 2035


@asset(group_name="catalog", kinds={"duckdb"}, pool=WRITER_POOL)
def market_catalog(warehouse: WarehouseResource) -> MaterializeResult:
    """Market specs (multiplier, tick, cycle, margins) and every listed contract with its last trade and first notice dates."""
    markets, contracts = catalog_tables(list(load_catalog().values()), FIRST_DELIVERY_YEAR, LAST_DELIVERY_YEAR)
    with warehouse.connect() as conn:
        wh.write_markets(conn, markets, contracts)
    return MaterializeResult(metadata={"markets": len(markets), "contracts": len(contracts),
                                       "roots": ", ".join(markets["root"])})
