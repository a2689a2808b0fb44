"""Bar files into the warehouse: read, validate, quarantine, store (one DuckDB transaction per file)."""
