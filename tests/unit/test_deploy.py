"""The Container Apps definitions `python -m deploy apps` applies: declarative, secrets by
reference, the plan's sizes, probes and an HTTP scale rule; no secret value in a dry run."""

from __future__ import annotations

import json
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


FAKE_AZ = r"""#!/usr/bin/env python3
# A stand-in for the Azure CLI: records each call (and any @file or --yaml file: its mode and
# whether it holds the secret), answers what `deploy` asks, fails like az does (echoing its input).
import json, os, stat, sys
args = sys.argv[1:]
files = [a[1:] for a in args if a.startswith("@")]
if "--yaml" in args:
    files.append(args[args.index("--yaml") + 1])
seen = [{"path": f, "mode": oct(stat.S_IMODE(os.stat(f).st_mode)),
         "dir_mode": oct(stat.S_IMODE(os.stat(os.path.dirname(f)).st_mode)),
         "text": open(f).read()} for f in files]
with open(os.environ["FAKE_AZ_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "files": seen}) + "\n")
if args[:3] == ["containerapp", "env", "show"]:
    print("/subscriptions/s/env")
elif args[:3] == ["acr", "credential", "show"]:
    print("registry-Pa55-from-azure")
elif args[:2] == ["containerapp", "show"]:
    pass
else:
    sys.stderr.write("ERROR: refused: " + " ".join(args) + " " + "".join(s["text"] for s in seen))
    sys.exit(1)
"""
DEPLOY_SECRETS = {
    "POSTGRES_PASSWORD": "pg-Pa55-hunter2",
    "SERVING_STATE_URL": "postgresql+psycopg://serving:db-Pa55-hunter3@db/serving",
    "SERVING_ADMIN_TOKEN": "admin-Pa55-hunter4",
    "SERVING_USER_TOKEN_SECRET": "user-Pa55-hunter5-0123456789",
}


def run_deploy_with_fake_az(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "az").write_text(FAKE_AZ)
    (bin_dir / "az").chmod(0o755)
    log = tmp_path / "az.log"
    env = {
        **os.environ,
        **DEPLOY_SECRETS,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_AZ_LOG": str(log),
        "ACR_NAME": "myacr",
        "AZURE_RESOURCE_GROUP": "rg",
        "CONTAINERAPPS_ENVIRONMENT": "env",
        "POSTGRES_SERVER": "pg",
    }
    result = subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def secrets_in(text: str) -> list[str]:
    values = [*DEPLOY_SECRETS.values(), "db-Pa55-hunter3", "registry-Pa55-from-azure"]
    return [v for v in values if v in text]


def test_database_passes_the_password_by_a_private_file_and_never_prints_it(tmp_path):
    """`--admin-password <value>` was printed (and again when az failed) and visible in `ps`:
    now az reads it from a 0600 file in a 0700 temp dir, deleted afterwards; the failure output
    names the command without the secret."""
    result, calls = run_deploy_with_fake_az(tmp_path, "database")
    assert result.returncode == 1 and "command failed" in result.stderr
    assert secrets_in(result.stdout + result.stderr) == []
    (create,) = [c for c in calls if c["args"][:3] == ["postgres", "flexible-server", "create"]]
    assert secrets_in(" ".join(create["args"])) == []  # what `ps` would have shown
    (file,) = create["files"]
    assert file["text"] == DEPLOY_SECRETS["POSTGRES_PASSWORD"]
    assert (file["mode"], file["dir_mode"]) == ("0o600", "0o700")
    assert not os.path.exists(file["path"]) and not os.path.exists(os.path.dirname(file["path"]))
    dry = run_deploy_with_fake_az(tmp_path / "dry", "database", "--dry-run")[0]
    assert dry.returncode == 0 and "--admin-password" in dry.stdout
    assert secrets_in(dry.stdout + dry.stderr) == []


def test_apps_writes_definitions_0600_in_a_private_dir_and_deletes_them(tmp_path):
    result, calls = run_deploy_with_fake_az(
        tmp_path, "apps", "--mode", "update", "--app", "tabular-router"
    )
    assert result.returncode == 1, result.stderr
    assert secrets_in(result.stdout + result.stderr) == []  # az echoed them: redacted
    (update,) = [c for c in calls if c["args"][:2] == ["containerapp", "update"]]
    (file,) = update["files"]
    assert DEPLOY_SECRETS["SERVING_ADMIN_TOKEN"] in file["text"]  # the definition carries it ...
    assert (file["mode"], file["dir_mode"]) == ("0o600", "0o700")  # ... readable by us only
    assert not os.path.exists(file["path"]) and not os.path.exists(os.path.dirname(file["path"]))


def test_blank_required_secrets_refuse_to_deploy(tmp_path, monkeypatch):
    monkeypatch.setitem(DEPLOY_SECRETS, "SERVING_ADMIN_TOKEN", " \t ")
    result, calls = run_deploy_with_fake_az(tmp_path, "apps")
    assert result.returncode == 2 and "SERVING_ADMIN_TOKEN" in result.stderr
    assert not any(c["args"][:2] == ["containerapp", "update"] for c in calls)
