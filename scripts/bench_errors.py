"""The error of `python -m scripts.bench` and its bench_* modules."""


class BenchError(RuntimeError):
    """The benchmark cannot run (missing tool, registrar not starting...)."""
