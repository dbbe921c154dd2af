"""Benchmarks: run each as `python -m bench.NAME` from the repository root; JSON results sit beside them."""
