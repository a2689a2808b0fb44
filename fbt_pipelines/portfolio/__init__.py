"""Position sizing in whole contracts and the multi-market portfolio."""
