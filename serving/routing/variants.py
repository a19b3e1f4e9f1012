"""Sticky variant assignment: which variant of an experiment a user (or request key) gets.

Unleash's normalisation: `murmur3_32("{salt}:{key}") % 10_000 + 1` is a point in 1..10,000 (0.01 %
resolution), and the variants own consecutive ranges of it in their listed order, in proportion to
their weights. The same key always lands on the same variant while the experiment is unchanged;
each experiment hashes with its own salt, so experiments are independent of one another.
"""

from __future__ import annotations

import mmh3

from serving.config.experiments import Experiment, Variant

RESOLUTION = 10_000


def point(salt: str, key: str) -> int:
    """The key's point in 1..RESOLUTION for an experiment salted with `salt`."""
    return mmh3.hash(f"{salt}:{key}", signed=False) % RESOLUTION + 1


def assign(experiment: Experiment, key: str) -> Variant:
    """The variant `key` belongs to (weights in percent; a weight-0 variant gets nobody)."""
    spot = point(experiment.hash_salt, key)
    upper = 0.0
    for variant in experiment.variants:
        upper += variant.weight * RESOLUTION / 100.0
        if spot <= round(upper):
            return variant
    return experiment.variants[-1]  # rounding at the top end
