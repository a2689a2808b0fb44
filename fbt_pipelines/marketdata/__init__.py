"""Market data: sample-data generator, bar-file readers and validation."""
