"""Goodput at 1 vs 2 router workers, and through nginx with 3 replicas vs 1, side by side.

One run on one machine (not in CI; about 6 minutes on 2 cores with the defaults):

    python -m loadtests.replicas [--users 16] [--duration 10s] [--rounds 2] [--only a,b,c,d]
                                 [--model classic|ensemble] [--bentoml-home DIR | --train-quick]

Configurations (every one a `bentoml serve service:Router` graph: router + classic + ensemble):

(a) 1 replica, 1 router worker, direct; state in its own SQLite file;
(b) 1 replica, 2 router workers (SERVING_ROUTER_WORKERS=2: each worker is a replica of its own),
    direct; both workers share one SQLite file;
(c) 1 replica behind nginx (loadtests/harness/nginx.py: round robin, retries), state in PostgreSQL;
(d) 3 replicas behind nginx, each a full graph, sharing one PostgreSQL database.

(c) and (d) get a throwaway PostgreSQL cluster each (Debian's package, on loopback; as the postgres
user when we are root), so that d/c changes only the number of replicas, and each cluster's CPU is
charged to its own configuration. c/a is therefore the cost of the multi-replica deployment shape
for one replica: the nginx hop plus PostgreSQL instead of SQLite (off the hot path but for the
preference reads, once per user per SERVING_PREFERENCE_TTL_S).

Load: the benchmark's closed-loop Locust user (loadtests/locust/bench_locustfile.py: no think
time, one distinct row per request, so no cache hits, and a user id from the 10,000-user
population) on
`POST /api/classify` with `X-Model-Preference: classic` (answered in the router process: the router
is what workers and replicas multiply; `--model ensemble` for the ensemble arm), `--users` users for
`--duration` per configuration and round. Every deployment is up at once and the rounds alternate
the order (a b c d, then d c b a, ...), so a busy moment of a shared machine does not land on one
configuration only; a deployment found dead is restarted and measured again (noted).

Reported per configuration (the median over rounds): goodput (successful responses/s), p50/p95/p99,
error %, server CPU per request (every process of the deployment: graphs, nginx, PostgreSQL; as the
benchmark measures it, /proc CPU time over the Locust run divided by the requests counted) with the
nginx and PostgreSQL shares, Locust's CPU; and the ratios b/a, c/a, d/c. Output:
results/replicas-<timestamp>/ (report.md, results.json, runs/, server and nginx logs). Locust runs
on the same cores as the servers: compare ratios, not absolutes.

Modules: deployment.py (the configurations; a Deployment of graphs, nginx and PostgreSQL),
report.py (summary over rounds, report.md), __main__.py (the CLI).
"""
