"""Live evaluation: rolling metrics per arm, A/B statistics, and the go/no-go score for a rollout.

Arms: "classic", "ensemble" and "cascade" (dynamic selection, served by the ensemble service) are
the arms that answered requests; "shadow" holds the ensemble's predictions made in shadow mode for
requests classic answered (they get labels, not latency: a shadow call never delays an answer). The
go/no-go and the rollout compare the ensemble with classic; the cascade has its own window and
its own comparison with classic (`EvaluationWindows.compare(candidate="cascade")`).

- `windows`: `ArmWindow`, a bounded rolling window (at most `max_events` events no older than
  `max_age_s`) of requests (latency, error, fallback, cache hit, CPU seconds) and labels (correct,
  rating); `EvaluationWindows`, one window per arm.
- `comparison`: `compare_accuracy`, difference of two proportions with a Newcombe hybrid-score
  interval (Wilson intervals combined, Newcombe 1998 method 10) and a pooled two-proportion
  z-test; `compare_latency`, p95 difference and a two-sided Mann-Whitney U test.
- `score`: `go_no_go`, a weighted 0..1 score from accuracy, satisfaction, cost and stability
  (weights and gates in `serving.config.delivery.ScoreConfig`), and the gates that must all pass
  before the rollout proceeds. The cost term reads the deployment's bill (`serving.evidence.cost`)
  from the snapshot's `COST_KEY` entry.
"""

from serving.evidence.evaluation.comparison import (
    compare_accuracy,
    compare_latency,
    wilson_interval,
)
from serving.evidence.evaluation.score import (
    COST_KEY,
    SCORE_TERMS,
    ScoreTerm,
    accuracy_evidence,
    candidate_accuracy,
    cost_evidence,
    go_no_go,
    normalise,
)
from serving.evidence.evaluation.windows import ARMS, ArmWindow, EvaluationWindows

__all__ = [
    "ARMS",
    "COST_KEY",
    "SCORE_TERMS",
    "ArmWindow",
    "EvaluationWindows",
    "ScoreTerm",
    "accuracy_evidence",
    "candidate_accuracy",
    "compare_accuracy",
    "compare_latency",
    "cost_evidence",
    "go_no_go",
    "normalise",
    "wilson_interval",
]
