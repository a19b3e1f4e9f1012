"""`python -m training --from-feedback --quick` end to end: labelled requests from the shifted
generator in a SQLite state store -> an accepted version with lineage that recovers accuracy on
the recent holdout; shuffled labels -> exit 3 and no new version.

Each run gets a private BentoML home holding only the parent (the session's quick-trained
ensemble), so the versions it adds never become `ensemble:latest` for other tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support import HOME, run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _private_home(tmp_path: Path, tag: str) -> Path:
    name, version = tag.split(":")
    home = tmp_path / "bentoml"
    target = home / "models" / name
    target.mkdir(parents=True)
    shutil.copytree(HOME / "models" / name / version, target / version)
    (target / "latest").write_text(version)
    return home


def _versions(home: Path) -> set[str]:
    return {p.name for p in (home / "models" / "ensemble").iterdir() if p.is_dir()}


def _state_with_feedback(tmp_path: Path, shuffle: bool) -> str:
    from serving.store import StateStore
    from training.simulate import write_labelled_requests

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    write_labelled_requests(store, 1000, seed=7, shift=1.0, shuffle_labels=shuffle)
    store.close()
    return url


def _retrain(home: Path, url: str, parent: str, report: Path):
    return run_training(
        "--from-feedback",
        "--quick",
        "--state-url",
        url,
        "--parent",
        parent,
        "--min-labelled",
        "500",
        "--report",
        str(report),
        home=home,
        timeout=300,
    )


def test_retraining_on_shifted_feedback_is_accepted_with_lineage(trained_store, tmp_path):
    parent = trained_store["ensemble"]["tag"]
    home = _private_home(tmp_path, parent)
    url = _state_with_feedback(tmp_path, shuffle=False)
    result = _retrain(home, url, parent, tmp_path / "report.json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "accepted" and report["tag"] in result.stdout
    child_version = report["tag"].split(":")[1]
    assert _versions(home) == {parent.split(":")[1], child_version}

    import yaml

    info = yaml.safe_load((home / "models" / "ensemble" / child_version / "model.yaml").read_text())
    assert info["labels"]["origin"] == "retrained"
    lineage = info["metadata"]["lineage"]
    assert lineage["parent"] == parent
    assert lineage["rows"]["feedback_holdout"] == 300
    assert lineage["rows"]["feedback_train"] + lineage["rows"]["feedback_validation"] == 700
    assert lineage["data_window"]["since"] < lineage["data_window"]["until"]
    assert all(check["passed"] for check in lineage["checks"])
    holdout, original = lineage["metrics"]["holdout"], lineage["metrics"]["original_test"]
    # The parent lost accuracy on the shifted data; the child wins much of it back ...
    assert holdout["child"]["accuracy"] >= holdout["parent"]["accuracy"] + 0.04, holdout
    # ... without losing more than the tolerance on the original test split.
    assert original["child"]["accuracy"] >= original["parent"]["accuracy"] - 0.03, original
    importance = info["metadata"]["feature_importance"]
    assert abs(sum(importance.values()) - 1.0) < 1e-3 and len(importance) == 24


def test_retraining_on_shuffled_labels_is_refused_and_saves_nothing(trained_store, tmp_path):
    parent = trained_store["ensemble"]["tag"]
    home = _private_home(tmp_path, parent)
    url = _state_with_feedback(tmp_path, shuffle=True)
    result = _retrain(home, url, parent, tmp_path / "report.json")
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["outcome"] == "refused" and report["tag"] is None
    assert any("no signal" in reason for reason in report["reasons"]), report["reasons"]
    assert "refused" in result.stdout
    assert _versions(home) == {parent.split(":")[1]}
