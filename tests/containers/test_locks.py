"""The image locks (requirements/lock/, deploy/containers/lock.sh) agree with the pinned
requirements, the slim lock stays slim, and every bentofile installs a lock. No Docker needed."""

from __future__ import annotations

import re

import yaml

from tests.support import ROOT

REQ = ROOT / "requirements"
HEAVY = {"tensorflow-cpu", "xgboost", "xgboost-cpu", "lightgbm", "catboost", "ai-edge-litert"}
HEAVY |= {"onnxruntime"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.lower().split("[")[0])


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].split(";")[0].strip()
        if line and not line.startswith("-"):
            name, version = line.split("==")
            out[normalize(name)] = version.strip()
    return out


def test_locks_hold_every_pin_at_its_version():
    for top, lock in (("serving.txt", "serving.txt"), ("classic.txt", "classic.txt")):
        locked = pins(REQ / "lock" / lock)
        for name, version in pins(REQ / top).items():
            assert locked.get(name) == version, (
                f"lock/{lock}: {name} {locked.get(name)} != {version}"
            )


def test_classic_lock_is_a_slim_subset_of_the_serving_lock():
    classic, serving = pins(REQ / "lock" / "classic.txt"), pins(REQ / "lock" / "serving.txt")
    assert {n: serving.get(n) for n in classic} == classic  # same versions in every image
    assert not set(classic) & HEAVY
    assert not {n for n in serving if n.startswith("nvidia-nccl") or n in ("plotly", "matplotlib")}
    assert "xgboost" not in serving and "xgboost-cpu" in serving  # no CUDA build


def test_every_bentofile_installs_a_lock_through_the_template():
    for path in [ROOT / "bentofile.yaml", *sorted((ROOT / "deploy").glob("bentofile.*.yaml"))]:
        config = yaml.safe_load(path.read_text())
        assert config["python"]["requirements_txt"].startswith("requirements/lock/"), path
        assert config["python"]["lock_packages"] is False, path
        template = config["docker"]["dockerfile_template"]
        assert (ROOT / template).exists(), path
        assert "requirements/lock/*.txt" in config["include"], path
        assert "deploy/containers/warm.py" in config["include"], path
    router = yaml.safe_load((ROOT / "deploy" / "bentofile.router.yaml").read_text())
    assert {"name": "SERVING_ROLE", "value": "router"} in router["envs"]
