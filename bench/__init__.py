"""Benchmarks for Gridbot (issue 8). Run each as ``python3 -m bench.<name>``."""
