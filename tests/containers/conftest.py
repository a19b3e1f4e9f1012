"""The container tests' session: a Docker engine, the base image, and the four images built from
the tests' quick-trained models exactly as `python -m deploy build` + `images` build them.

Without an engine they skip, saying why, except in CI (CI=true), where .ci/run provides one and a
missing engine fails. Timings and sizes are printed at the end of the run and written to
results/containers.json.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.containers.support import (
    IMAGES,
    REPORT,
    VERSION,
    Engine,
    deploy,
    docker,
    ensure_base_image,
    image_size,
)
from tests.support import ROOT, require_infrastructure


@pytest.fixture(scope="session")
def engine():
    started = time.perf_counter()
    engine = Engine()
    if not engine.connect():
        require_infrastructure(engine.problem or "no Docker engine")
    REPORT["steps_s"]["engine"] = round(time.perf_counter() - started, 1)
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def images(engine, trained_store) -> dict[str, str]:
    """Image tag per Bento name: `python -m deploy build`, then one `deploy images` per image."""
    started = time.perf_counter()
    REPORT["base_image"] = ensure_base_image()
    REPORT["steps_s"]["base_image"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    deploy("build", "--version", VERSION)
    REPORT["steps_s"]["bentos"] = round(time.perf_counter() - started, 1)
    tags = {}
    for name in IMAGES:
        started = time.perf_counter()
        deploy(
            "images", "--app", name, "--version", VERSION, "--no-buildkit",
            "--builder-opt", "network=host",
        )  # fmt: skip
        tags[name] = f"{name}:{VERSION}"
        REPORT["build_s"][name] = round(time.perf_counter() - started, 1)
        REPORT["size_mb"][name] = round(image_size(tags[name]) / 1e6)
    # The images these replaced (untagged now): their own layers only; the shared, cached
    # dependency layers stay, as parents of the new ones. Keeps a persistent data root small.
    docker("image", "prune", "--force", check=False)
    return tags


def pytest_terminal_summary(terminalreporter):
    if not REPORT["build_s"]:
        return
    write = terminalreporter.write_line
    write("")
    write(f"containers (base image: {REPORT.get('base_image')}):")
    for step, seconds in REPORT["steps_s"].items():
        write(f"  {step:>18}: {seconds} s")
    for name in IMAGES:
        write(
            f"  {name:>18}: {REPORT['size_mb'].get(name)} MB, built in "
            f"{REPORT['build_s'].get(name)} s, cold start {REPORT['cold_start_s'].get(name)} s "
            f"({REPORT['cold_start_cpu_s'].get(name)} CPU-s, load average "
            f"{REPORT['load_average'].get(name)})"
        )
    if "tabular-classic (code change)" in REPORT["build_s"]:
        write(f"  code change rebuild: {REPORT['build_s']['tabular-classic (code change)']} s")
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    (results / "containers.json").write_text(json.dumps(REPORT, indent=2))
