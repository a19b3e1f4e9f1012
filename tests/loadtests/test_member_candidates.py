"""loadtests.benchmark.member_candidates: the one-pass candidate (the stored ONNX tree members
merged into one graph per opset) gives exactly the separate sessions' outputs, and the members
benchmark's CLI refuses a candidate it does not know."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from loadtests.benchmark import members as bench  # noqa: E402
from loadtests.benchmark.member_candidates import merged_sessions  # noqa: E402
from models.fastpath import _session  # noqa: E402
from models.members import save_member  # noqa: E402


def test_merged_sessions_equal_the_separate_ones(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    boosted = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y)
    names = ("random_forest", "hist_gradient_boosting")  # ai.onnx.ml opsets 3 and 5
    for name, model in zip(names, (forest, boosted), strict=True):
        save_member(tmp_path, name, model)
    run = merged_sessions(tmp_path, names)
    rows = np.vstack([X[:64], np.full((1, 5), np.nan, np.float32)]).astype(np.float64)
    separate = [
        _session(tmp_path / "members" / f"{n}.onnx").run(None, {"X": rows})[0] for n in names
    ]
    merged = run(rows)
    assert len(merged) == 2
    for a, b in zip(separate, merged, strict=True):
        np.testing.assert_array_equal(a, b)


def test_members_cli_knows_its_candidates():
    args = bench.build_parser().parse_args(["--candidates", "merged,tl2cgen", "--clock", "cpu"])
    assert args.candidates == "merged,tl2cgen"
    with pytest.raises(SystemExit, match="unknown candidates"):
        bench.main(["--candidates", "lleaves", "--model", "no-such-model:latest"])
