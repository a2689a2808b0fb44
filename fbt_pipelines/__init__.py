"""fbt: futures backtesting on Dagster.

Packages, top to bottom (each imports only the ones below it; ``docs/guide.md`` section 5):
``cli`` and ``location`` (Dagster wiring) -> ``assets`` / ``resources`` -> ``config`` ->
``usecases`` -> ``ingest`` -> ``services`` -> ``reports`` -> ``risk`` -> ``portfolio`` ->
``engine`` | ``ml`` -> ``futures`` -> ``marketdata`` -> ``catalog`` -> ``primitives`` -> ``errors``.
Importing the package does nothing else.
"""
