"""Adapters to the services fbt runs on; no Dagster here.

The DuckDB warehouse, Redis (cache, events, requests), MLflow tracking,
backups, alerts and a local Redis. ``resources/`` wraps these for the code
location; the use cases take them as arguments.
"""
