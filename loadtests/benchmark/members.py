"""In-process latency of the ensemble's members, native libraries vs fast paths, side by side.

    python -m loadtests.benchmark.members [--model ensemble:latest] [--classic classic:latest]
                                          [--repeat 200] [--rows 4096] [--threads 2] [--clock wall]

Loads the stored ensemble twice, once with every member on its native library
(SERVING_NATIVE_MEMBERS=1) and once as served by default (fast paths where the store has them),
then times `predict_proba` per member (on the design matrix) and for the whole ensemble (on
schema codes, preprocessing included) at batches of 1, 6 and 64 rows. Each call gets rows it has
not seen in the previous calls (consecutive slices of --rows generated rows), so the figures
include the cache misses of real traffic rather than a hot loop over one row; native and fast
calls alternate so background load affects both alike. Prints a markdown table of medians (ms)
and ratios, the largest probability difference per member over all generated rows, and load times
and memory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.benchmark.member_candidates import CANDIDATES, candidate_rows
from models import fastpath

BATCHES = (1, 6, 64)
"""Batch sizes timed: one row, the ~6-row batches the router's coalescing makes at 16 users, 64."""


@contextlib.contextmanager
def native_members(on: bool) -> Iterator[None]:
    old = os.environ.get(fastpath.NATIVE_ENV)
    if on:
        os.environ[fastpath.NATIVE_ENV] = "1"
    else:
        os.environ.pop(fastpath.NATIVE_ENV, None)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(fastpath.NATIVE_ENV, None)
        else:
            os.environ[fastpath.NATIVE_ENV] = old


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return int(f.read().split("VmRSS:")[1].split()[0]) / 1024
    except OSError:
        return float("nan")


def make_codes(stored, schema, rows: int, seed: int = 12345) -> np.ndarray:
    """Fresh rows from the default generator (the distribution served), as schema codes."""
    try:
        from training import data as data_mod

        frame = data_mod.make_default_dataset(rows, seed)
        target = stored.info.metadata.get("target", data_mod.DEFAULT_TARGET)
        X, _, _ = data_mod.prepare(frame, target)
        return schema.encode_frame(X)
    except Exception as exc:  # a model trained on other data: its example row, repeated
        print(f"(default data does not fit this schema: {exc}; timing the schema example)")
        return np.repeat(schema.encode_rows([schema.example()]), rows, axis=0)


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCKS["wall"]


BLOCK = 10
"""Consecutive calls per variant before switching to the next one."""


def timed(
    fns: dict[str, Callable[[np.ndarray], object]], data: np.ndarray, batch: int, repeat: int
) -> dict[str, float]:
    """Median ms per call for each function, each call on the next unseen slice.

    The variants alternate in blocks of BLOCK calls, so a busy moment of a shared machine hits
    them all; not call by call, because then each call would find the caches filled by the other
    variant's models (the native forests are ~200 MB) instead of its own, as in serving, where one
    path runs call after call: interleaving single calls made the fast ensemble 30-40 % slower
    at 64 rows (members evicting each other from the 2 MB L2 is real and stays in the figures).
    """
    slots = max(1, (len(data) - batch) // batch)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up: first-call allocations, lazy initialisation
        f(data[:batch])
    for first in range(0, repeat, BLOCK):
        for key, f in fns.items():
            for i in range(first, min(first + BLOCK, repeat)):
                start = (i % slots) * batch
                rows = data[start : start + batch]
                t = clock()
                f(rows)
                samples[key].append(clock() - t)
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.benchmark.members", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default="ensemble:latest")
    parser.add_argument("--classic", default="classic:latest", help="'' to skip")
    parser.add_argument("--repeat", type=int, default=200, help="calls per measurement")
    parser.add_argument("--rows", type=int, default=4096, help="distinct rows to cycle through")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="member threads for the parallel-members row (1: skip it)",
    )
    parser.add_argument(
        "--candidates",
        default="",
        help="comma-separated candidate paths for the tree members, timed against the served "
        f"ones in a second table: {', '.join(CANDIDATES)} (see member_candidates.py)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="cpu: the calling thread's CPU time, which other processes on a busy "
        "machine do not inflate (every member runs on the calling thread; "
        "the parallel-members row is then skipped)",
    )
    return parser


class Table:
    """The markdown table: per row, median ms native and fast at each batch, their ratio, and the
    largest probability difference."""

    batches = BATCHES

    def __init__(self, before: str = "native", after: str = "fast") -> None:
        header = (
            "| | path | "
            + " | ".join(f"{before} b{b} | {after} b{b} | ×b{b}" for b in BATCHES)
            + " | max \\|Δp\\| |"
        )
        self.lines = [header, "|" + "---|" * (3 * len(BATCHES) + 3)]

    def row(self, label: str, path: str, pair: dict[int, dict[str, float]], diff: str) -> None:
        cells = []
        for b in BATCHES:
            n, f = pair[b].get("native"), pair[b].get("fast")
            cells += [
                f"{n:.3f}" if n is not None else "–",
                f"{f:.3f}" if f is not None else "–",
                f"{n / f:.1f}" if n is not None and f is not None else "–",
            ]
        self.lines.append(f"| {label} | {path} | " + " | ".join(cells) + f" | {diff} |")


def load_both(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The stored ensemble loaded native and fast, and each load's time and memory."""
    from models.ensemble import EnsembleModel

    loaded: dict[str, Any] = {}
    load_info: dict[str, str] = {}
    for label, native in (("native", True), ("fast", False)):
        before, t = rss_mb(), time.perf_counter()
        with native_members(native):
            loaded[label] = EnsembleModel.load(path)
        load_info[label] = f"load {time.perf_counter() - t:.1f} s, RSS +{rss_mb() - before:.0f} MB"
    return loaded, load_info


def member_rows(table: Table, native_model, fast_model, X: np.ndarray, repeat: int) -> None:
    for name, fast_member in fast_model.members.items():
        native_member = native_model.members[name]
        fns = {"native": native_member.predict_proba, "fast": fast_member.predict_proba}
        pair = {b: timed(fns, X, b, repeat) for b in BATCHES}
        # A member that hands large batches to its native library: check its fast path itself.
        checked = getattr(fast_member, "fast", fast_member)
        diff = float(np.abs(checked.predict_proba(X) - native_member.predict_proba(X)).max())
        table.row(name, fast_member.path_kind, pair, f"{diff:.1e}")


def ensemble_rows(
    table: Table, native_model, fast_model, codes: np.ndarray, repeat: int, threads: int
) -> None:
    """The whole ensemble, on parallel member threads, and what it adds around its members
    (preprocessing and the combiner: vote / stacker)."""
    fns = {"native": native_model.predict_proba, "fast": fast_model.predict_proba}
    pair = {b: timed(fns, codes, b, repeat) for b in BATCHES}
    diff = float(np.abs(fast_model.predict_proba(codes) - native_model.predict_proba(codes)).max())
    table.row(f"**ensemble** ({len(fast_model.members)} members)", "", pair, f"{diff:.1e}")
    if threads > 1:
        for m in (native_model, fast_model):
            m.enable_member_parallelism(threads)
        pair = {b: timed(fns, codes, b, repeat) for b in BATCHES if b >= 32}
        pair.update({b: {} for b in BATCHES if b < 32})  # the pool is only used from 32 rows
        table.row(f"ensemble, {threads} member threads", "", pair, "")
        for m in (native_model, fast_model):
            m.enable_member_parallelism(1)
    outputs = {b: fast_model.member_probas(codes[:b]) for b in BATCHES}
    pair = {
        b: timed(
            {
                "fast": lambda c, b=b: (
                    fast_model.preprocessor.transform(c),
                    fast_model.combine(outputs[b]),
                )
            },
            codes,
            b,
            repeat,
        )
        for b in BATCHES
    }
    table.row(f"ensemble without members ({fast_model.combiner})", "", pair, "")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    which = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = sorted(set(which) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; choose from {list(CANDIDATES)}")
    global clock
    clock = CLOCKS[args.clock]
    if args.clock == "cpu":
        args.threads = 1

    import bentoml

    stored = bentoml.models.get(args.model)
    loaded, load_info = load_both(stored.path)
    native_model, fast_model = loaded["native"], loaded["fast"]
    codes = make_codes(stored, native_model.schema, args.rows)
    X = native_model.preprocessor.transform(codes)
    table = Table()
    member_rows(table, native_model, fast_model, X, args.repeat)
    ensemble_rows(table, native_model, fast_model, codes, args.repeat, args.threads)
    if args.classic:
        from models.classic import ClassicModel

        classic = ClassicModel.load(bentoml.models.get(args.classic).path)
        fns = {"native": classic.predict_proba}
        pair = {b: timed(fns, codes, b, args.repeat) for b in BATCHES}
        table.row("classic (logistic regression)", "numpy", pair, "")
    print(
        f"model {stored.tag}; {len(codes)} distinct rows; median of {args.repeat} calls; "
        f"ms of {'CPU time' if args.clock == 'cpu' else 'wall time'}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("\n".join(table.lines))
    print()
    print(f"native: {load_info['native']}; fast: {load_info['fast']}")
    if which:
        candidates = Table("served", "candidate")
        models, data = (native_model, fast_model), (X, codes)

        def timer(fns, rows, batch):
            return timed(fns, rows, batch, args.repeat)

        candidate_rows(candidates, which, Path(stored.path), models, data, timer)
        print()
        print("Candidates (max |Δp| against the native member):")
        print()
        print("\n".join(candidates.lines))
    if fast_model.unavailable or native_model.unavailable:
        print(f"unavailable: native {native_model.unavailable}, fast {fast_model.unavailable}")


if __name__ == "__main__":
    main()
