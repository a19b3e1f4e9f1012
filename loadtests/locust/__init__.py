"""The Locust suite: user classes (locustfile.py), load shapes (shapes.py), request rows and answer
checks (payloads.py), the scenario runner behind `python -m loadtests run` (runner.py) and the SLO
gate behind `python -m loadtests check` (slo.py, slo.yaml, slo-ci.yaml). bench_locustfile.py is the
benchmarks' closed-loop user.

Nothing is imported here: runner.py is imported by CLIs that must not load Locust (it
monkey-patches the process)."""
