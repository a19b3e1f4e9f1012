"""Controllers that act on evidence: the live evaluation loop, the rollout controller, the
challenger controller, the retraining scheduler and the notifier."""
