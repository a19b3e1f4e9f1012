"""Side-by-side benchmark, one machine, one run: in-process models, BentoML, FastAPI, MLServer,
LitServe, Ray Serve, and this code against an earlier version of itself.

    python -m loadtests.benchmark [--duration 20s] [--users 16] [--levels 1,4,16,32]
                                  [--bentoml-home DIR | --train-quick] [--only a,b,c,d,e,f,g]
                                  [--before REF]

(a) raw in-process `predict_proba`, batch 1 and batch 64, classic and ensemble (a subprocess);
(b) BentoML's adaptive batching vs batching off on the ensemble's BentoML API
    (SERVING_ENSEMBLE_TRANSPORT=api on both servers; "off" is
    loadtests/baselines/nobatch_service.py, since BentoML 1.4 refuses max_batch_size=1),
    direct endpoint /api/v2/classify/ensemble;
(c) classic through the router (/api/classify + X-Model-Preference: classic) vs classic direct
    (/api/v1/classify/classic); both answered in the router process (SERVING_CLASSIC_LOCAL=true);
(d) a plain FastAPI + uvicorn server calling the same models in process
    (loadtests/baselines/fastapi_app.py);
(e) the routed ensemble (/api/classify + X-Model-Preference: ensemble: router -> ensemble service,
    encoded rows over the rows socket, coalesced, members on their fast paths) against
      - the same graph with the native member libraries (a second `bentoml serve service:Router`
        with SERVING_NATIVE_MEMBERS=1; every server not named *-native runs with the variable
        empty: fast paths),
      - the FastAPI baseline of (d), and
      - MLServer 1.7.1 with adaptive batching (max 64 rows, 20 ms window, parallel_workers 0)
        serving the same stored ensemble through the same model code
        (loadtests/baselines/mlserver/: a custom POST /classify/ensemble handler that validates like
        ours and goes through MLServer's batcher; its own venv
        .venv-mlserver from scripts/mlserver-venv.sh);
    and the routed classic against the FastAPI classic. Goal: routed ensemble goodput >= 2x
    MLServer's at the fixed load with p99 <= 110 ms and no errors (the report says met / not met);
(f) the frameworks with their own batching, every one serving the seven native members (not our
    compiled paths): MLServer (64 rows / 20 ms), LitServe 0.2.19 (`max_batch_size` 64,
    `batch_timeout` 20 ms; loadtests/baselines/litserve/, .venv-litserve), Ray Serve 2.60
    (`@serve.batch` 64 / 20 ms; loadtests/baselines/rayserve/, .venv-ray), FastAPI, and our routed
    graph on native members;
(g) server CPU per request, goodput and p99 of the routed and direct endpoints at every level, this
    checkout against the code at --before REF (served from a git worktree, same models), with the
    routed ensemble / routed classic CPU ratios against issue 16's targets (<= 4x at 1 user,
    <= 1.5x at 16).
A target whose venv is missing (scripts/baseline-venv.sh NAME) or, for (g)'s "before" rows, whose
--before is not given, is skipped with a note.

Every served configuration is driven by closed-loop Locust users (no think time, one distinct row
per request) at each --levels user count, --duration at the fixed load (--users) and half of it at
the other levels. Reported: goodput (successful responses/s) at a p99 budget — the highest goodput
among the levels tried whose p99 is within the budget (classic 100 ms, ensemble 500 ms) and errors
< 1 % — and p50/p95/p99/error % at the fixed load, with ratios; server CPU per request; the
ensemble's mean rows per batch (BentoML's and MLServer's); a latency vs throughput chart. Output:
results/benchmark-<timestamp>/ (report.md, results.json, latency.png, runs/, server logs,
mlserver/ settings). Locust runs on the same cores as the servers: compare ratios, not absolutes.

Modules: plan.py (targets, parts, comparisons, goals), servers.py (starting them), measure.py (one
Locust run, CPU, batch sizes), inprocess.py (part a), report.py (report.md, latency.png),
members.py (`python -m loadtests.benchmark.members`: per-member in-process detail), __main__.py
(the CLI).
"""
