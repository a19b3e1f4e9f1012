"""Load tests, benchmarks and the harness that starts what they measure (see loadtests/README.md):
harness/, locust/ (`python -m loadtests`), benchmark/, replicas/, soak/, baselines/."""
