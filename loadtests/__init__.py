"""Load tests and in-process benchmarks."""
