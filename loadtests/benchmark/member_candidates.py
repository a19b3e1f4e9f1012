"""Candidate paths for the tree members, timed against the served ones (issue 25, item 1).

    python -m loadtests.benchmark.members --candidates merged,tl2cgen --clock cpu

- `merged`: the five ONNX tree members as one graph per ai.onnx.ml opset (the forests' opset-3
  `TreeEnsembleRegressor` nodes cannot share a graph with the opset-5 `TreeEnsemble` nodes), so
  two `session.run` calls instead of five: what evaluating the tree members in one pass saves.
- `tl2cgen`: each tree member compiled to native code by treelite + tl2cgen and gcc, as it would
  be at training time, served by tl2cgen's `Predictor` on one thread. Needs `treelite` and
  `tl2cgen` importable (not in the project's requirements: they lost, see the figures in
  models/fastpath.py) and gcc; compiling a forest takes minutes.

Each candidate is checked against the native member over every generated row (max |Δp|) and
timed in the same alternating blocks as the rest of the benchmark.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.fastpath import FAST_MEMBERS, _session

Timer = Callable[[dict[str, Callable[[np.ndarray], object]], np.ndarray, int], dict[str, float]]
CANDIDATES = ("merged", "tl2cgen")


def merged_sessions(directory: Path, names: tuple[str, ...]) -> Callable[[np.ndarray], list]:
    """One onnxruntime session per opset over the members' stored ONNX nodes; raw outputs."""
    import onnx
    from onnx import helper

    groups: dict[int, list[Any]] = {}
    for i, name in enumerate(names):
        model = onnx.load(str(directory / "members" / f"{name}.onnx"))
        ml = next(o.version for o in model.opset_import if o.domain == "ai.onnx.ml")
        groups.setdefault(ml, []).append((i, model))
    sessions = []
    tmp = Path(tempfile.mkdtemp(prefix="merged-members-"))
    for ml, models in groups.items():
        nodes, outputs = [], []
        for i, model in models:
            for node in model.graph.node:
                node.output[0] = f"Y{i}"
                nodes.append(node)
            out = model.graph.output[0]
            out.name = f"Y{i}"
            outputs.append(out)
        first = models[0][1]
        graph = helper.make_graph(nodes, "members", [first.graph.input[0]], outputs)
        merged = helper.make_model(graph, opset_imports=list(first.opset_import))
        merged.ir_version = first.ir_version
        onnx.save(merged, str(tmp / f"ml{ml}.onnx"))
        sessions.append(_session(tmp / f"ml{ml}.onnx"))

    def run(X: np.ndarray) -> list:
        X = np.ascontiguousarray(X, dtype=np.float64)
        return [y for s in sessions for y in s.run(None, {"X": X})]

    return run


class Tl2cgenMember:
    """A tree member compiled by treelite + tl2cgen (gcc) into a shared library."""

    path_kind = "tl2cgen"

    def __init__(self, name: str, native: Any, workdir: Path):
        import tl2cgen
        import treelite

        if name == "xgboost":
            model = treelite.frontend.from_xgboost(native.booster)
        elif name == "lightgbm":
            model = treelite.frontend.from_lightgbm(native.booster)
        else:
            model = treelite.sklearn.import_model(native.estimator)
        lib = workdir / f"{name}.so"
        tl2cgen.export_lib(model, toolchain="gcc", libpath=str(lib), params={}, nthread=1)
        self.name = name
        self._tl2cgen = tl2cgen
        self._predictor = tl2cgen.Predictor(str(lib), nthread=1)
        # tl2cgen 1.0.0's DMatrix copies with np.array(copy=False), which numpy 2 refuses:
        # hand it a contiguous array of the model's threshold type so that no copy is needed.
        self._dtype = np.float64 if self._predictor.threshold_type == "float64" else np.float32

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        rows = self._tl2cgen.DMatrix(np.ascontiguousarray(X, dtype=self._dtype))
        p = np.asarray(self._predictor.predict(rows), dtype=np.float64).reshape(len(X), -1)
        return np.column_stack([1.0 - p[:, 0], p[:, 0]]) if p.shape[1] == 1 else p


def candidate_rows(
    table: Any,
    which: list[str],
    directory: Path,
    models: tuple[Any, Any],
    data: tuple[np.ndarray, np.ndarray],
    timed: Timer,
) -> None:
    """Rows of `table` per candidate: key "native" is today's served path, "fast" the candidate.

    `models`: the ensemble loaded native and as served; `data`: (design matrix, schema codes).
    """
    from models.ensemble import EnsembleModel

    native_model, fast_model = models
    X, codes = data
    names = tuple(n for n in FAST_MEMBERS if n in fast_model.members)
    if "merged" in which:
        run = merged_sessions(directory, names)
        separate = [fast_model.members[n] for n in names]
        raw_separate = [getattr(m, "fast", m)._session for m in separate]

        def five(rows: np.ndarray) -> list:
            rows = np.ascontiguousarray(rows, dtype=np.float64)
            return [y for s in raw_separate for y in s.run(None, {"X": rows})]

        pair = {b: timed({"native": five, "fast": run}, X, b) for b in table.batches}
        same = all(np.array_equal(a, b) for a, b in zip(five(X), run(X), strict=True))
        table.row(f"{len(names)} tree members, raw", "onnx → merged", pair, "0" if same else "≠")
    if "tl2cgen" in which:
        workdir = Path(tempfile.mkdtemp(prefix="tl2cgen-members-"))
        swapped = EnsembleModel.load(directory)
        for name in names:
            candidate = Tl2cgenMember(name, native_model.members[name], workdir)
            served = fast_model.members[name]
            fns = {"native": served.predict_proba, "fast": candidate.predict_proba}
            pair = {b: timed(fns, X, b) for b in table.batches}
            diff = np.abs(candidate.predict_proba(X) - native_model.members[name].predict_proba(X))
            table.row(name, f"{served.path_kind} → tl2cgen", pair, f"{diff.max():.1e}")
            swapped.members[name] = candidate
        fns = {"native": fast_model.predict_proba, "fast": swapped.predict_proba}
        pair = {b: timed(fns, codes, b) for b in table.batches}
        diff = np.abs(swapped.predict_proba(codes) - native_model.predict_proba(codes)).max()
        table.row("**ensemble**", "tree members → tl2cgen", pair, f"{diff:.1e}")
