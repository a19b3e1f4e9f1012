"""Prometheus metrics and the GC-pause probe."""
