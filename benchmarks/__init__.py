"""Kernel microbenchmarks for lpcore (``python -m benchmarks --help``)."""
