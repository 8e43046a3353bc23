"""Command-line drivers: benchmarks and helpers (run as `python -m scripts.NAME`)."""
