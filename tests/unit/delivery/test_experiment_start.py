"""An experiment's evidence starts when its variant table first came into force on any replica."""

from __future__ import annotations

from serving.config.experiments import Experiment
from serving.delivery.live import experiment_started_at
from serving.store import StateStore


def table(weight: float) -> Experiment:
    return Experiment(
        name="plan-b",
        variants=[
            {"name": "control", "model": "classic", "weight": 100 - weight, "control": True},
            {"name": "ensemble", "model": "ensemble", "weight": weight},
        ],
    )


def test_the_first_replica_records_the_start_and_a_new_table_starts_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    replica_a, replica_b = StateStore(url), StateStore(url)
    assert experiment_started_at(replica_a, table(50), now=100.0) == 100.0
    assert experiment_started_at(replica_b, table(50), now=250.0) == 100.0  # same experiment
    assert experiment_started_at(replica_b, table(30), now=300.0) == 300.0  # weights changed
    assert experiment_started_at(replica_a, table(30), now=400.0) == 300.0
    replica_a.close()
    replica_b.close()
