"""Benchmarks for charrnn_ext (run from the repository root: python -m benchmarks.step)."""
