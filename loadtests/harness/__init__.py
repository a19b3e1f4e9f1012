"""The harness: what starts and stops the parts under test, for the load tests, the benchmarks, the
soak test and the test suite (tests/support.py).

common.py (ROOT, free ports, temp dirs, durations, percentiles, Locust's files; stdlib only),
process.py (process trees from /proc), server.py (ServerProcess: `bentoml serve` or any command
with /readyz; the model store; --host/--serve options), nginx.py (nginx in front of replicas),
postgres.py (a throwaway PostgreSQL). Nothing is imported here: loadtests/baselines/mlserver/
imports common.py under another venv.
"""
