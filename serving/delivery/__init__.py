"""Progressive delivery: live windows, evaluation and go/no-go, rollout controller, drift, state
store.
"""
