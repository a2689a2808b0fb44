"""Dagster assets, one module per stage of the lineage graph. Each asset body
reads through a resource, calls one domain function, writes, returns metadata."""
