"""Benchmarks: measurements reported against targets, never asserted (run them as `python -m benchmarks.NAME`)."""
