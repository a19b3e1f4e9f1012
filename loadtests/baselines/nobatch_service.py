"""The product's service graph with the ensemble's adaptive batching turned off, for the benchmark.

    bentoml serve loadtests.baselines.nobatch_service:Router

BentoML 1.4 rejects `max_batch_size=1` ("'max_batch_size' must be > 1"), so
SERVING_ENSEMBLE_MAX_BATCH_SIZE=1 cannot express "no batching" while service.py declares the
ensemble's predict API `batchable=True`. This module imports service.py unchanged and marks that
API not batchable before BentoML builds its dispatchers: each request is then one predict call.
Every worker imports this module (BentoML passes the same import string to its workers).
"""

from service import Classic, Ensemble, Router  # noqa: F401  (the graph BentoML serves)

Ensemble.apis["predict"].batchable = False
