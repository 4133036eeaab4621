"""Benchmarks: `python -m bench.<name>`. Figures go in the README, never into timed tests."""
