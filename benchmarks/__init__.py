"""Benchmarks of cmp-deploy (latency harness: benchmarks/latency.py)."""
