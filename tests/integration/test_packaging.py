"""Bentos (full and split), their Dockerfiles and requirements, the split deployment over three
servers, and the deploy scripts' dry runs. The images themselves are built and run by
tests/containers (with a Docker engine); here, what containerize builds from: the Bento, its
locked requirements and its generated Dockerfile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import ROOT, Server

pytestmark = pytest.mark.integration
VERSION = "citest"
HEAVY = ("tensorflow", "xgboost", "xgboost-cpu", "lightgbm", "catboost", "ai-edge-litert")
HEAVY += ("onnxruntime",)
SLIM_BLOCKED = ("tensorflow", "xgboost", "lightgbm", "catboost", "ai_edge_litert", "onnxruntime")


def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def bentos(trained_store) -> dict[str, Path]:
    """`python -m deploy build` into the isolated store: the full, classic, ensemble and router
    Bentos."""
    run(sys.executable, "-m", "deploy", "build", "--version", VERSION)
    import bentoml

    return {
        name: Path(bentoml.bentos.get(f"{name}:{VERSION}").path)
        for name in ("tabular-serving", "tabular-classic", "tabular-ensemble", "tabular-router")
    }


def requirements(bento: Path) -> set[str]:
    lines = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    return {
        line.split("==")[0].split("[")[0].strip().lower()
        for line in lines
        if line and not line.startswith("#")
    }


def service_models(bento: Path) -> dict[str, list[str]]:
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    return {
        s["name"]: [m["tag"].split(":")[0] for m in s.get("models", [])]
        for s in manifest["services"]
    }


def test_every_bento_has_a_dockerfile_and_the_intended_requirements(bentos):
    for name, bento in bentos.items():
        dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
        assert "requirements.txt" in dockerfile and "python:3.11" in dockerfile, name
        assert "build-essential" not in dockerfile, name  # wheels only: no compilers in images
        reqs = requirements(bento)
        assert "tensorflow" not in reqs and "tensorflow-cpu" not in reqs, name
        assert "bentoml" in reqs
    for slim in ("tabular-classic", "tabular-router"):
        assert not requirements(bentos[slim]) & set(HEAVY), slim
    assert {"ai-edge-litert", "xgboost-cpu", "lightgbm", "catboost"} <= requirements(
        bentos["tabular-ensemble"]
    )


def test_bentos_carry_their_models(bentos):
    full = service_models(bentos["tabular-serving"])
    assert full == {"router": ["classic"], "classic": ["classic"], "ensemble": ["ensemble"]}
    assert service_models(bentos["tabular-classic"]) == {"classic": ["classic"]}
    assert service_models(bentos["tabular-ensemble"]) == {"ensemble": ["ensemble"]}
    router_models = {
        m for models in service_models(bentos["tabular-router"]).values() for m in models
    }
    assert router_models == {"classic"}  # the ensemble is reached by URL: its model stays out
    export = bentos["tabular-serving"].parent.parent.parent / f"export-{VERSION}.bento"
    run(sys.executable, "-m", "bentoml", "export", f"tabular-serving:{VERSION}", str(export))
    names = subprocess.run(["tar", "tf", str(export)], capture_output=True, text=True).stdout
    assert "models/ensemble/" in names and "models/classic/" in names  # what containerize copies in


def test_full_bento_serves_classify(bentos, example_row):
    srv = Server({}, target=f"tabular-serving:{VERSION}").start()
    try:
        response = httpx.post(
            f"{srv.url}/api/classify",
            json={"features": example_row},
            headers={"X-Model-Preference": "ensemble"},
        )
        assert response.status_code == 200 and response.json()["model"] == "ensemble"
    finally:
        srv.stop()


def test_split_deployment_three_servers_and_ensemble_down(trained_store, example_row, tmp_path):
    """Classic, ensemble and router as three servers on three ports; then the ensemble goes away."""
    blocked = tmp_path / "no_heavy"
    blocked.mkdir()
    # The classic server runs with the heavy libraries made unimportable, as in its slim image.
    (blocked / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {SLIM_BLOCKED!r}:\n"
        "            raise ImportError(f'{name} is not in the slim classic image')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    classic = Server({"PYTHONPATH": f"{blocked}:{ROOT}"}, target="service:Classic").start()
    ensemble = Server({}, target="service:Ensemble").start()
    router = Server(
        {"SERVING_CLASSIC_URL": classic.url, "SERVING_ENSEMBLE_URL": ensemble.url}
    ).start()
    try:
        routed = httpx.post(
            f"{router.url}/api/classify",
            json={"features": example_row},
            headers={"X-Model-Preference": "ensemble"},
        ).json()
        assert (routed["model"], routed["fallback"]) == ("ensemble", False)
        direct = httpx.post(
            f"{router.url}/api/v1/classify/classic", json={"features": example_row}
        ).json()
        assert direct["model"] == "classic"
        ensemble.stop()
        answers = [
            httpx.post(
                f"{router.url}/api/classify",
                json={"features": {**example_row, "age": float(20 + i)}},
                headers={"X-Model-Preference": "ensemble"},
                timeout=10,
            )
            for i in range(5)
        ]
        assert [a.status_code for a in answers] == [200] * 5
        assert all(a.json()["model"] == "classic" and a.json()["fallback"] for a in answers)
    finally:
        for srv in (router, ensemble, classic):
            srv.stop()


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (
            ["build"],
            {},
            [
                "bentoml build -f bentofile.yaml",
                "bentoml build -f deploy/bentofile.classic.yaml",
                "SERVING_ROLE=router bentoml build -f deploy/bentofile.router.yaml",
            ],
        ),
        (
            ["images", "--version", "1.2.3", "--no-buildkit", "--builder-opt", "network=host"],
            {},
            [
                "DOCKER_BUILDKIT=0 bentoml containerize tabular-serving:1.2.3 -t "
                "tabular-serving:1.2.3 --opt network=host",
                "DOCKER_BUILDKIT=0 bentoml containerize tabular-router:1.2.3 -t "
                "tabular-router:1.2.3 --opt network=host",
            ],
        ),
        (
            ["push", "--version", "1.2.3"],
            {"ACR_NAME": "myacr"},
            [
                "az acr login --name myacr",
                "bentoml containerize tabular-ensemble:1.2.3 -t tabular-ensemble:1.2.3 "
                "-t myacr.azurecr.io/tabular-ensemble:1.2.3",
                "docker push myacr.azurecr.io/tabular-classic:1.2.3",
            ],
        ),
        (
            ["push", "--version", "1.2.3", "--acr-build", "--app", "tabular-classic"],
            {"ACR_NAME": "myacr"},
            [
                "bentoml export tabular-classic:1.2.3 ",
                "az acr build --registry myacr --image tabular-classic:1.2.3 --file ",
            ],
        ),
        (
            ["apps", "--version", "1.2.3", "--mode", "create"],
            {"ACR_NAME": "myacr", "AZURE_RESOURCE_GROUP": "rg", "CONTAINERAPPS_ENVIRONMENT": "env"},
            [
                "az containerapp create --name tabular-classic --resource-group rg --yaml ",
                "#         image: myacr.azurecr.io/tabular-ensemble:1.2.3",
                "az containerapp create --name tabular-router --resource-group rg --yaml ",
                "#             path: /readyz",
                "- name: SERVING_ENSEMBLE_URL\n#           value: http://tabular-ensemble",
                "- name: SERVING_STATE_URL\n#           secretRef: state-url",
            ],
        ),
        (
            ["traffic", "--app", "tabular-ensemble", "--weights", "a=90,b=10"],
            {"AZURE_RESOURCE_GROUP": "rg"},
            [
                "az containerapp ingress traffic set --name tabular-ensemble --resource-group rg "
                "--revision-weight a=90 b=10"
            ],
        ),
        (
            ["rollback", "--app", "tabular-ensemble"],
            {"AZURE_RESOURCE_GROUP": "rg"},
            [
                "az containerapp revision list --name tabular-ensemble",
                "--revision-weight '<previous-revision>=100'",
            ],
        ),
    ],
)
def test_deploy_dry_run_prints_the_exact_commands(argv, env, expected):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ACR_NAME", "AZURE_RESOURCE_GROUP", "CONTAINERAPPS_ENVIRONMENT")
    }
    result = subprocess.run(
        [sys.executable, "-m", "deploy", *argv, "--dry-run"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for fragment in expected:
        assert fragment in result.stdout, f"{fragment!r} not in:\n{result.stdout}"


def test_deploy_refuses_without_variables_or_tools():
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ACR_NAME", "AZURE_RESOURCE_GROUP", "CONTAINERAPPS_ENVIRONMENT")
    }
    missing_var = subprocess.run(
        [sys.executable, "-m", "deploy", "push", "--dry-run"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
    )
    assert missing_var.returncode == 2 and "ACR_NAME" in missing_var.stderr
    no_tools = subprocess.run(
        [sys.executable, "-m", "deploy", "push"],
        cwd=ROOT,
        env={**clean, "ACR_NAME": "x", "PATH": "/nonexistent"},
        capture_output=True,
        text=True,
    )
    assert no_tools.returncode == 2 and "missing tool" in no_tools.stderr
