"""Part (a): raw in-process `predict_proba`, batch 1 and batch 64, classic and ensemble, plus the
router's validation + encoding of one request row. Run in a subprocess of its own (a clean import,
the models loaded once and dropped after):

    python -m loadtests.benchmark.inprocess OUT.json
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtests.harness.common import ROOT


def inprocess(repeat_b1: int = 300, repeat_b64: int = 60, rows: int = 4096) -> dict[str, Any]:
    """Median and p99 ms per predict_proba call at batch 1 and 64, each call on rows not seen
    before."""
    import random

    import numpy as np

    from loadtests.locust.payloads import RowGenerator
    from models import store

    out: dict[str, Any] = {"models": {}, "timings": []}
    for name in ("classic", "ensemble"):
        t = time.perf_counter()
        model, stored = store.load(f"{name}:latest")
        out["models"][name] = {
            "tag": str(stored.tag),
            "labels": dict(stored.info.labels),
            "load_s": round(time.perf_counter() - t, 2),
        }
        generator = RowGenerator(model.schema.model_dump(), random.Random(7))
        raw = generator.rows(rows)
        codes = model.schema.encode_rows(raw)
        encode = []
        for i in range(200):  # the router's validation + encoding of one request row
            t = time.perf_counter()
            model.schema.encode_rows(raw[i : i + 1], prefix="features")
            encode.append(time.perf_counter() - t)
        for batch, repeat in ((1, repeat_b1), (64, repeat_b64)):
            model.predict_proba(codes[:batch])  # warm-up
            samples = []
            for i in range(repeat):
                start = (i * batch) % (rows - batch)
                chunk = codes[start : start + batch]
                t = time.perf_counter()
                model.predict_proba(chunk)
                samples.append(time.perf_counter() - t)
            median = statistics.median(samples) * 1e3
            out["timings"].append(
                {
                    "model": name,
                    "batch": batch,
                    "calls": repeat,
                    "median_ms": round(median, 3),
                    "p99_ms": round(float(np.percentile(samples, 99)) * 1e3, 3),
                    "rows_per_s": round(batch / (median / 1e3), 1),
                }
            )
        out["timings"].append(
            {
                "model": name,
                "batch": "encode 1 row",
                "calls": 200,
                "median_ms": round(statistics.median(encode) * 1e3, 3),
                "p99_ms": round(float(np.percentile(encode, 99)) * 1e3, 3),
                "rows_per_s": None,
            }
        )
        del model
    return out


def run_inprocess(env: dict[str, str], out: Path) -> dict[str, Any]:
    """inprocess() in a subprocess with `env` (the model store), its JSON kept in out/."""
    path = out / "inprocess.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.benchmark.inprocess", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"in-process benchmark failed:\n{result.stderr[-3000:]}")
    return json.loads(path.read_text())


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(inprocess(), indent=2))
