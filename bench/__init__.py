"""Benchmarks: `python -m bench.<name>`. Figures go in docs/benchmarks.md, never into timed tests."""
