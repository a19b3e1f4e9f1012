"""HostedModel against the real model store: load, describe, predict with CPU accounting,
swap versions, refuse a corrupt or foreign version while the current one keeps serving."""

from __future__ import annotations

import numpy as np
import pytest

from serving.host import HostedModel, InvalidCodes, ModelUnavailable, VersionRefused
from tests.support import clone_version


@pytest.fixture
def classic(trained_store):
    import bentoml

    tag = str(bentoml.models.get("classic:latest").tag)
    loaded = []
    return HostedModel("classic", "classic:latest", tag, on_load=loaded.append), loaded


def codes_for(host: HostedModel, rows: int = 3) -> np.ndarray:
    schema = host.model.schema
    return schema.encode_rows([schema.example()] * rows)


def test_loads_describes_and_counts_cpu_per_row(classic):
    host, loaded = classic
    assert host.ready and loaded == [host.model]
    assert host.description()["cpu_seconds_per_row"] is None  # nothing served yet
    probabilities = host.predict_proba(host.check(codes_for(host, 4)))
    assert probabilities.shape == (4, len(host.model.schema.classes))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    description = host.description()
    assert description["ready"] and description["tag"] == str(host.stored.tag)
    assert host.rows_served == 4 and description["cpu_seconds_per_row"] >= 0


def test_codes_of_the_wrong_shape_are_refused(classic):
    host, _ = classic
    with pytest.raises(InvalidCodes, match="shape"):
        host.check(np.zeros((2, 3)))


@pytest.fixture
def clones():
    """Versions cloned into the shared test store, deleted afterwards so "latest" is unchanged."""
    import bentoml

    made: list[str] = []
    yield made
    for tag in made:
        bentoml.models.delete(tag)


def test_swap_to_another_version_and_refuse_bad_ones(classic, clones):
    host, loaded = classic
    original = str(host.stored.tag)
    corrupt = f"classic:{clone_version(original, corrupt=True)}"
    newer = f"classic:{clone_version(original)}"
    clones += [corrupt, newer]
    assert host.swap(newer) == {"name": "classic", "from": original, "to": newer}
    assert len(loaded) == 2
    with pytest.raises(VersionRefused, match="failed to load"):
        host.swap(corrupt)
    with pytest.raises(VersionRefused, match="not a version of"):
        host.swap(f"ensemble:{newer.split(':')[1]}")
    assert str(host.stored.tag) == newer and host.ready and len(loaded) == 2  # still serving


def test_a_model_missing_from_the_store_is_not_ready_and_says_why():
    host = HostedModel("classic", "classic:nope", None)
    assert not host.ready and host.description() == {
        "name": "classic",
        "tag": "classic:nope",
        "ready": False,
        "error": "model classic:nope is not in the model store",
    }
    with pytest.raises(ModelUnavailable, match="not in the model store"):
        host.check(np.zeros((1, 24)))


def test_replicas_follow_the_pinned_version_and_refuse_a_bad_pin_once(classic, clones, tmp_path):
    from serving.store import StateStore
    from serving.store.pins import VersionPins

    host, loaded = classic
    other = HostedModel("classic", "classic:latest", str(host.stored.tag))  # another replica
    original = str(host.stored.tag)
    newer = f"classic:{clone_version(original)}"
    corrupt = f"classic:{clone_version(original, corrupt=True)}"
    clones += [newer, corrupt]
    pins = VersionPins(StateStore(f"sqlite:///{tmp_path}/state.db"))
    assert host.follow(pins) is None  # nothing pinned: keep serving
    pins.pin("classic", newer)
    assert host.follow(pins)["to"] == newer and other.follow(pins)["to"] == newer
    assert host.follow(pins) is None  # already there
    pins.pin("classic", corrupt)
    assert other.follow(pins) is None and str(other.stored.tag) == newer  # refused, still serving
    assert other.follow(pins) is None  # refused once, not retried every poll
