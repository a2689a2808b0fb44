"""Partitions: one per market root in the catalogue."""

from dagster import StaticPartitionsDefinition

from fbt_pipelines.catalog import load_catalog

market_partitions = StaticPartitionsDefinition(list(load_catalog()))
