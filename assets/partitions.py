"""Partitions: one per market root, added when a market's data first lands.

Markets come from the catalogue; a market's partition is added (dynamic
partitions) by the landing-files sensor or by `fbt demo` when bar files for it
appear, so the UI lists only markets that have data.
"""

from dagster import DynamicPartitionsDefinition

MARKETS = "markets"
market_partitions = DynamicPartitionsDefinition(name=MARKETS)
