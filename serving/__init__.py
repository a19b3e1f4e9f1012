"""The serving product behind service.py: routing, transport, shared state, evidence, delivery.

`config/` settings and flags; `http/` the FastAPI routes; `routing/` the router core (policy,
arms, cache, coalescer, breaker, shadow); `transport/` calls to the model services; `store/` the
shared state every replica reads; `evidence/` pure statistics; `delivery/` the controllers that
act on it (rollout, challenger, retraining, notifier); `control.py` the control plane the admin
routes delegate to; `wiring.py` the composition root (core + control + background loops).
"""
