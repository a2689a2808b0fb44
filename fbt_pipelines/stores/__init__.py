"""Adapters to the outside world (DuckDB, Redis, MLflow). No Dagster here:
``resources/`` wraps these for the code location, the CLI uses them directly."""
