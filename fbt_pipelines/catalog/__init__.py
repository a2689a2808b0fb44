"""Contract catalogue: market specs, contract months, expiry and first-notice dates."""

from fbt_pipelines.catalog.contracts import Contract, contract_id, listed_contracts, parse_contract_id
from fbt_pipelines.catalog.specs import ContractSpec, load_catalog, market_spec

__all__ = [
    "Contract",
    "ContractSpec",
    "contract_id",
    "listed_contracts",
    "load_catalog",
    "market_spec",
    "parse_contract_id",
]
