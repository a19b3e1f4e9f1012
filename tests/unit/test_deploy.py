"""The Container Apps definitions `python -m deploy apps` applies: declarative, secrets by
reference, the plan's sizes, probes and an HTTP scale rule; no secret value in a dry run."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from deploy.__main__ import APPS, PROBES, Target, secret_name
from serving.config.delivery import CLASSIC_SIZE, ENSEMBLE_SIZE, ROUTER_SIZE
from tests.support import ROOT

TARGET = Target(environment_id="/subscriptions/s/env", location="westeurope", registry="myacr")
SECRETS = {
    "SERVING_STATE_URL": "postgresql+psycopg://serving:pw@db/serving",
    "SERVING_ADMIN_TOKEN": "admin-secret",
    "SERVING_VIEWER_TOKEN": None,  # optional and unset: left out
    "SERVING_USER_TOKEN_SECRET": "user-secret-0123456789",
    "SERVING_REQUEST_ID_SECRET": None,
    "SERVING_WEBHOOK_URL": None,
    "ACR_PASSWORD": "registry-secret",
}


def manifest(name: str) -> dict:
    return APPS[name].manifest(name, f"myacr.azurecr.io/{name}:1", TARGET, SECRETS)


def test_every_app_reads_the_shared_store_by_secret_reference():
    for name in APPS:
        properties = manifest(name)["properties"]
        secrets = {s["name"]: s["value"] for s in properties["configuration"]["secrets"]}
        (container,) = properties["template"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["SERVING_STATE_URL"] == {"name": "SERVING_STATE_URL", "secretRef": "state-url"}
        assert secrets["state-url"] == SECRETS["SERVING_STATE_URL"]
        assert all("value" not in e for k, e in env.items() if k in SECRETS)  # never in clear
        registry = properties["configuration"]["registries"][0]
        assert registry["passwordSecretRef"] in secrets and registry["server"] == "myacr.azurecr.io"
        assert container["probes"] == PROBES
        assert {p["httpGet"]["path"] for p in PROBES} == {"/livez", "/readyz"}


def test_the_router_carries_its_tokens_and_only_the_router_is_public():
    router = manifest("tabular-router")["properties"]
    names = {s["name"] for s in router["configuration"]["secrets"]}
    assert {secret_name(v) for v in ("SERVING_ADMIN_TOKEN", "SERVING_USER_TOKEN_SECRET")} <= names
    assert "viewer-token" not in names  # unset optional secrets are left out
    for name in APPS:
        ingress = manifest(name)["properties"]["configuration"]["ingress"]
        assert ingress["external"] == (name == "tabular-router") and ingress["targetPort"] == 3000


def test_the_plans_sizes_replica_ranges_and_an_http_scale_rule():
    for name, size in (
        ("tabular-classic", CLASSIC_SIZE),
        ("tabular-ensemble", ENSEMBLE_SIZE),
        ("tabular-router", ROUTER_SIZE),
    ):
        template = manifest(name)["properties"]["template"]
        container = template["containers"][0]
        assert container["resources"] == {"cpu": size.cpu, "memory": size.memory}
        scale = template["scale"]
        assert (scale["minReplicas"], scale["maxReplicas"]) == (
            size.min_replicas,
            size.max_replicas,
        )
        (rule,) = scale["rules"]
        assert int(rule["http"]["metadata"]["concurrentRequests"]) > 0
    assert (CLASSIC_SIZE.cpu, CLASSIC_SIZE.memory, CLASSIC_SIZE.max_replicas) == (0.25, "0.5Gi", 10)
    assert (ENSEMBLE_SIZE.cpu, ENSEMBLE_SIZE.memory, ENSEMBLE_SIZE.max_replicas) == (0.5, "1Gi", 2)


def test_a_dry_run_prints_valid_yaml_and_no_secret():
    env = {
        **os.environ,
        "ACR_NAME": "myacr",
        "AZURE_RESOURCE_GROUP": "rg",
        "CONTAINERAPPS_ENVIRONMENT": "env",
        "SERVING_STATE_URL": "postgresql+psycopg://serving:hunter2@db/serving",
        "SERVING_ADMIN_TOKEN": "admin-hunter2",
    }
    result = subprocess.run(
        [sys.executable, "-m", "deploy", "apps", "--version", "1", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    documents = result.stdout.split("az containerapp update")[1:]
    assert len(documents) == len(APPS)
    for document in documents:
        text = "\n".join(line[4:] for line in document.splitlines() if line.startswith("#   "))
        parsed = yaml.safe_load(text)
        assert parsed["type"] == "Microsoft.App/containerApps"
        assert parsed["properties"]["template"]["scale"]["rules"]
