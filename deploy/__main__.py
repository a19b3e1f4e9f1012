"""`python -m deploy`: build the Bentos, containerize and push them to Azure Container Registry,
create or update the Azure Container Apps, split traffic between revisions, roll back.

Every command takes --dry-run, which prints the exact `bentoml` / `docker` / `az` commands
instead of running them. Without --dry-run it refuses to start, with a clear message, when a
tool is not installed or a required variable is missing.

    python -m deploy build --dry-run
    python -m deploy images --version 1.0.0 --no-buildkit --builder-opt network=host
    ACR_NAME=myacr python -m deploy push --version 1.0.0 --dry-run
    ACR_NAME=myacr python -m deploy push --version 1.0.0 --acr-build   # build in the registry
    ACR_NAME=myacr AZURE_RESOURCE_GROUP=rg CONTAINERAPPS_ENVIRONMENT=env \\
        python -m deploy apps --version 1.0.0
    AZURE_RESOURCE_GROUP=rg python -m deploy traffic --app tabular-ensemble \\
        --weights rev-a=90,rev-b=10
    AZURE_RESOURCE_GROUP=rg python -m deploy rollback --app tabular-ensemble
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel

from serving.config.delivery import CLASSIC_SIZE, ENSEMBLE_SIZE, ROUTER_SIZE, AppSize
from serving.config.secrets import clean_secret, redact, url_password

PORT = 3000
STATE_URL = "SERVING_STATE_URL"
REGISTRY_PASSWORD = "ACR_PASSWORD"
ROUTER_SECRETS = (
    STATE_URL,
    "SERVING_ADMIN_TOKEN",
    "SERVING_VIEWER_TOKEN",
    "SERVING_USER_TOKEN_SECRET",
    "SERVING_REQUEST_ID_SECRET",
    "SERVING_WEBHOOK_URL",
)
"""What the router reads from secrets; the state URL and the admin token are required."""
REQUIRED_SECRETS = (STATE_URL, "SERVING_ADMIN_TOKEN")


def secret_name(variable: str) -> str:
    """A Container Apps secret name (lower case, dashes) for an environment variable."""
    return variable.removeprefix("SERVING_").lower().replace("_", "-")


class Target(BaseModel):
    """Where the apps go: the Container Apps environment, its region and the registry."""

    environment_id: str
    location: str
    registry: str

    @property
    def registry_server(self) -> str:
        return f"{self.registry}.azurecr.io"


class App(BaseModel):
    """One container image and the Azure Container App that runs it."""

    bentofile: str
    bento: str
    cpu: float
    memory: str
    min_replicas: int
    max_replicas: int
    ingress: str  # "external" for the entry point, "internal" for services only the router calls
    env: dict[str, str] = {}
    """Set on the container app (the router's arm URLs: Container Apps' internal app names)."""
    build_env: dict[str, str] = {}
    """Set for `bentoml build` (the router role keeps the ensemble model out of its Bento)."""
    secrets: tuple[str, ...] = (STATE_URL,)
    """Environment variables this app reads from Container Apps secrets (`secretRef`): every app
    reads the shared state store (version pins; the router everything else)."""
    concurrency: int = 50
    """The HTTP scale rule: concurrent requests per replica before Container Apps adds one."""

    def manifest(self, name: str, image: str, target: Target, secret_values: dict) -> dict:
        """The whole container app, declaratively, as `az containerapp create --yaml` takes it:
        ingress, registry, secrets (values from `secret_values`: variable -> value; unset optional
        ones are left out), the container with its size, environment (secrets by `secretRef`) and
        probes, and the replica range with an HTTP scale rule."""
        present = [v for v in self.secrets if secret_values.get(v) is not None]
        secrets = [{"name": secret_name(v), "value": secret_values[v]} for v in present]
        secrets.append({"name": "registry-password", "value": secret_values[REGISTRY_PASSWORD]})
        env = [{"name": k, "value": v} for k, v in self.env.items()]
        env += [{"name": v, "secretRef": secret_name(v)} for v in present]
        return {
            "name": name,
            "type": "Microsoft.App/containerApps",
            "location": target.location,
            "properties": {
                "managedEnvironmentId": target.environment_id,
                "configuration": {
                    "activeRevisionsMode": "Multiple",
                    "ingress": {
                        "external": self.ingress == "external",
                        "targetPort": PORT,
                        "transport": "auto",
                        "allowInsecure": self.ingress != "external",
                    },
                    "registries": [
                        {
                            "server": target.registry_server,
                            "username": target.registry,
                            "passwordSecretRef": "registry-password",
                        }
                    ],
                    "secrets": secrets,
                },
                "template": {
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "resources": {"cpu": self.cpu, "memory": self.memory},
                            "env": env,
                            "probes": PROBES,
                        }
                    ],
                    "scale": {
                        "minReplicas": self.min_replicas,
                        "maxReplicas": self.max_replicas,
                        "rules": [
                            {
                                "name": "http-concurrency",
                                "http": {"metadata": {"concurrentRequests": str(self.concurrency)}},
                            }
                        ],
                    },
                },
            },
        }

    def definition(self, name: str, image: str) -> dict:
        """The container app's template as `az containerapp update --yaml` takes it: the image,
        its size, environment, probes and replica range (what tests/containers runs)."""
        return {
            "properties": {
                "template": {
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "resources": {"cpu": self.cpu, "memory": self.memory},
                            "env": [{"name": k, "value": v} for k, v in self.env.items()],
                            "probes": PROBES,
                        }
                    ],
                    "scale": {"minReplicas": self.min_replicas, "maxReplicas": self.max_replicas},
                }
            }
        }


# Live = the process runs; ready = classic can answer (a router image without its arms' URLs never
# is). The startup probe gives a cold start (scale from zero) 60 s before liveness counts.
PROBES = [
    {
        "type": "Startup",
        "httpGet": {"path": "/livez", "port": PORT},
        "periodSeconds": 1,
        "failureThreshold": 60,
    },
    {
        "type": "Liveness",
        "httpGet": {"path": "/livez", "port": PORT},
        "periodSeconds": 10,
        "failureThreshold": 3,
    },
    {
        "type": "Readiness",
        "httpGet": {"path": "/readyz", "port": PORT},
        "periodSeconds": 2,
        "failureThreshold": 2,
    },
]


def sized(size: AppSize) -> dict[str, object]:
    """An app's size and replica range from the one source the cost model also prices
    (serving/config/delivery.py; the flags' `cost.apps` defaults to the same)."""
    return {
        "cpu": size.cpu,
        "memory": size.memory,
        "min_replicas": size.min_replicas,
        "max_replicas": size.max_replicas,
    }


APPS: dict[str, App] = {
    "tabular-classic": App(
        bentofile="deploy/bentofile.classic.yaml",
        bento="tabular-classic",
        **sized(CLASSIC_SIZE),
        ingress="internal",
    ),
    "tabular-ensemble": App(
        bentofile="deploy/bentofile.ensemble.yaml",
        bento="tabular-ensemble",
        **sized(ENSEMBLE_SIZE),
        ingress="internal",
        concurrency=32,  # rows coalesce into batches: fewer, busier replicas
    ),
    "tabular-router": App(
        bentofile="deploy/bentofile.router.yaml",
        bento="tabular-router",
        **sized(ROUTER_SIZE),
        ingress="external",
        env={
            "SERVING_CLASSIC_URL": "http://tabular-classic",
            "SERVING_ENSEMBLE_URL": "http://tabular-ensemble",
        },
        build_env={"SERVING_ROLE": "router"},
        secrets=ROUTER_SECRETS,
        concurrency=100,
    ),
}
FULL_BENTOFILE = "bentofile.yaml"  # the whole graph in one image (tabular-serving)
FULL_BENTO = "tabular-serving"


class DeployError(RuntimeError):
    """A precondition is missing; the message says which and how to provide it."""


def secret_env(name: str) -> str | None:
    """A secret from the environment: None when unset, empty or only spaces (never "")."""
    value = clean_secret(os.environ.get(name))
    return value if isinstance(value, str) else None


def known_secrets() -> list[str]:
    """Every secret value this run may hold, to keep out of what it prints."""
    names = (*ROUTER_SECRETS, REGISTRY_PASSWORD, "POSTGRES_PASSWORD")
    values = [v for v in (secret_env(n) for n in names) if v]
    return values + [p for p in [url_password(secret_env(STATE_URL))] if p]


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    """A directory only this user can read (mkdtemp: 0700, unpredictable name), deleted after."""
    path = Path(tempfile.mkdtemp(prefix="deploy-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_secret_file(directory: Path, name: str, text: str) -> Path:
    """A file created 0600 (mkstemp: never a moment readable by others, no predictable name)."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=f"{name}-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return Path(path)


class Runner:
    """Runs commands, or only prints them with --dry-run; a known secret is never printed."""

    def __init__(self, dry_run: bool, secrets: Iterable[str] = ()):
        self.dry_run = dry_run
        self.secrets = list(secrets)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    @staticmethod
    def which(tool: str) -> str | None:
        """PATH first; then next to this interpreter (bentoml in an unactivated .venv)."""
        beside = Path(sys.executable).parent / tool
        return shutil.which(tool) or (str(beside) if beside.exists() else None)

    def require_tools(self, *tools: str) -> None:
        if self.dry_run:
            return
        missing = [t for t in tools if self.which(t) is None]
        if missing:
            raise DeployError(
                f"missing tool(s): {', '.join(missing)} — install them or use --dry-run"
            )

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stream: bool = False,
    ) -> str:
        """Run a command (stream=True: its output goes to ours, e.g. a build log); its stdout."""
        line = " ".join(shlex.quote(a) for a in args)
        if env:
            line = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + line
        if cwd:
            line = f"(cd {shlex.quote(cwd)} && {line})"
        if self.dry_run:
            print(self.redact(line))
            return ""
        print(f"+ {self.redact(line)}", file=sys.stderr, flush=True)
        result = subprocess.run(
            [self.which(args[0]) or args[0], *args[1:]],
            check=True,
            capture_output=not stream,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        return (result.stdout or "").strip()


def require_env(*names: str) -> dict[str, str]:
    missing = [n for n in names if not (os.environ.get(n) or "").strip(" \t")]
    if missing:
        raise DeployError(
            f"set the environment variable(s) {', '.join(missing)} (see deploy/README.md)"
        )
    return {n: os.environ[n] for n in names}


def image_ref(registry: str, app: str, version: str) -> str:
    return f"{registry}.azurecr.io/{app}:{version}"


def cmd_build(args, runner: Runner) -> None:
    runner.require_tools("bentoml")
    runner.run("bentoml", "build", "-f", FULL_BENTOFILE, "--version", args.version, ".")
    for app in APPS.values():
        # The router image calls classic and ensemble by URL, so its Bento carries only the
        # classic model (built in the router role).
        env = app.build_env or None
        runner.run("bentoml", "build", "-f", app.bentofile, "--version", args.version, ".", env=env)


def containerize(runner: Runner, bento: str, tags: Sequence[str], args) -> None:
    """`bentoml containerize` as documented (README): builder options pass through (`--opt`), and
    --no-buildkit selects Docker's classic builder (BentoML asks for BuildKit, i.e. `docker
    buildx`, otherwise). It runs from the temporary directory: BentoML 1.4.39 re-renders the
    Dockerfile template there and refuses a template outside the working directory."""
    command = ["bentoml", "containerize", bento]
    for tag in tags:
        command += ["-t", tag]
    for opt in args.builder_opt or ():
        command += ["--opt", opt]
    env = {"DOCKER_BUILDKIT": "0"} if args.no_buildkit else None
    runner.run(*command, env=env, cwd=tempfile.gettempdir(), stream=True)


def cmd_images(args, runner: Runner) -> None:
    """Containerize the four Bentos into local images tagged like the Bentos (what the container
    tests run and what `push` sends)."""
    runner.require_tools("bentoml", "docker")
    bentos = [FULL_BENTO, *(app.bento for app in APPS.values())]
    for bento in [args.app] if args.app else bentos:
        containerize(runner, f"{bento}:{args.version}", [f"{bento}:{args.version}"], args)


def cmd_push(args, runner: Runner) -> None:
    registry = require_env("ACR_NAME")["ACR_NAME"]
    if args.acr_build:
        runner.require_tools("bentoml", "az", "tar")
        for name, app in _selected(args).items():
            acr_build(runner, registry, name, f"{app.bento}:{args.version}", args.version)
        return
    runner.require_tools("bentoml", "docker", "az")
    runner.run("az", "acr", "login", "--name", registry)
    for name, app in _selected(args).items():
        ref = image_ref(registry, name, args.version)
        containerize(
            runner, f"{app.bento}:{args.version}", [f"{app.bento}:{args.version}", ref], args
        )
        runner.run("docker", "push", ref)


def acr_build(runner: Runner, registry: str, name: str, bento: str, version: str) -> None:
    """Build in the registry (no local engine): the exported Bento, models included, is the
    context, and the Dockerfile rendered into it at `bentoml build` is the one containerize uses."""
    context = os.path.join(tempfile.gettempdir(), f"{name}-{version}")
    runner.run("rm", "-rf", context)
    runner.run("mkdir", "-p", context)
    runner.run("bentoml", "export", bento, f"{context}.bento")
    runner.run("tar", "-xf", f"{context}.bento", "-C", context)
    runner.run(
        "az",
        "acr",
        "build",
        "--registry",
        registry,
        "--image",
        f"{name}:{version}",
        "--file",
        f"{context}/env/docker/Dockerfile",
        context,
    )


def cmd_apps(args, runner: Runner) -> None:
    """Create or update each app from its declarative definition (`--yaml`), secrets included."""
    env = require_env("ACR_NAME", "AZURE_RESOURCE_GROUP", "CONTAINERAPPS_ENVIRONMENT")
    runner.require_tools("az")
    registry, group = env["ACR_NAME"], env["AZURE_RESOURCE_GROUP"]
    missing = [v for v in REQUIRED_SECRETS if secret_env(v) is None]
    if missing and not runner.dry_run:
        raise DeployError(
            f"set {', '.join(missing)}: the apps read them as Container Apps secrets "
            "(`python -m deploy database` prints the state store's URL)"
        )
    environment_id = runner.run(
        "az", "containerapp", "env", "show", "--name", env["CONTAINERAPPS_ENVIRONMENT"],
        "--resource-group", group, "--query", "id", "--output", "tsv",
    ) or f"<id of {env['CONTAINERAPPS_ENVIRONMENT']}>"  # fmt: skip
    password = runner.run(
        "az", "acr", "credential", "show", "--name", registry,
        "--query", "passwords[0].value", "--output", "tsv",
    ) or secret_env(REGISTRY_PASSWORD) or ""  # fmt: skip
    runner.secrets.append(password)
    target = Target(
        environment_id=environment_id,
        location=os.environ.get("AZURE_LOCATION", "westeurope"),
        registry=registry,
    )
    values: dict[str, str | None] = {v: secret_env(v) for v in ROUTER_SECRETS}
    values[REGISTRY_PASSWORD] = password
    if runner.dry_run:  # the commands and definitions, never a secret's value
        values = {k: (f"<${k}>" if v is not None or k in REQUIRED_SECRETS else None)
                  for k, v in values.items()}  # fmt: skip
        values[REGISTRY_PASSWORD] = "<the registry's password>"
    with private_dir() as directory:  # the definitions hold the secrets' values
        for name, app in _selected(args).items():
            if args.mode == "auto":
                exists = True if runner.dry_run else _app_exists(runner, name, group)
            else:
                exists = args.mode == "update"
            manifest = app.manifest(name, image_ref(registry, name, args.version), target, values)
            definition = yaml.safe_dump(manifest, sort_keys=False)
            path = (
                f"<private temp dir>/containerapp-{name}.yaml"
                if runner.dry_run
                else str(write_secret_file(directory, f"containerapp-{name}", definition))
            )
            verb = "update" if exists else "create"
            runner.run("az", "containerapp", verb, "--name", name, "--resource-group", group,
                       "--yaml", path)  # fmt: skip
            if runner.dry_run:
                print("".join(f"#   {line}\n" for line in definition.splitlines()), end="")


def cmd_database(args, runner: Runner) -> None:
    """Azure Database for PostgreSQL (flexible server): the state store every replica shares."""
    env = require_env("AZURE_RESOURCE_GROUP", "POSTGRES_SERVER")
    runner.require_tools("az")
    password = secret_env("POSTGRES_PASSWORD")
    if not password and not runner.dry_run:
        raise DeployError("set POSTGRES_PASSWORD: the server's administrator password")
    server, group = env["POSTGRES_SERVER"], env["AZURE_RESOURCE_GROUP"]
    # The password goes by file (az reads `@path`), never on the command line (`ps`) or the screen.
    with private_dir() as directory:
        password_arg = (
            "@<private file holding $POSTGRES_PASSWORD>"
            if runner.dry_run
            else f"@{write_secret_file(directory, 'postgres-password', password or '')}"
        )
        runner.run(
            "az", "postgres", "flexible-server", "create", "--resource-group", group,
            "--name", server, "--location", os.environ.get("AZURE_LOCATION", "westeurope"),
            "--version", "16", "--tier", "Burstable", "--sku-name", "Standard_B1ms",
            "--storage-size", "32", "--admin-user", "serving",
            "--admin-password", password_arg,
            "--public-access", "0.0.0.0", "--yes",
        )  # fmt: skip
    runner.run(
        "az", "postgres", "flexible-server", "db", "create", "--resource-group", group,
        "--server-name", server, "--database-name", "serving",
    )  # fmt: skip
    print(
        f"# then: export {STATE_URL}='postgresql+psycopg://serving:<password>@"
        f"{server}.postgres.database.azure.com:5432/serving?sslmode=require'"
    )


def cmd_traffic(args, runner: Runner) -> None:
    group = require_env("AZURE_RESOURCE_GROUP")["AZURE_RESOURCE_GROUP"]
    runner.require_tools("az")
    weights = [w.strip() for w in args.weights.split(",") if w.strip()]
    total = sum(int(w.split("=", 1)[1]) for w in weights)
    if total != 100:
        raise DeployError(f"revision weights must add up to 100, got {total}")
    set_traffic(runner, args.app, group, weights)


def set_traffic(runner: Runner, app: str, group: str, weights: Sequence[str]) -> None:
    """Split an app's traffic between revisions ("revision=percent" each)."""
    runner.run(
        "az", "containerapp", "ingress", "traffic", "set", "--name", app,
        "--resource-group", group, "--revision-weight", *weights,
    )  # fmt: skip


def cmd_rollback(args, runner: Runner) -> None:
    """Send all traffic back to the revision before the newest one."""
    group = require_env("AZURE_RESOURCE_GROUP")["AZURE_RESOURCE_GROUP"]
    runner.require_tools("az")
    listing = runner.run(
        "az",
        "containerapp",
        "revision",
        "list",
        "--name",
        args.app,
        "--resource-group",
        group,
        "--query",
        "sort_by([], &properties.createdTime)[].name",
        "-o",
        "tsv",
    )
    revisions = listing.split()
    if runner.dry_run:
        previous = "<previous-revision>"
    elif len(revisions) < 2:
        raise DeployError(f"{args.app} has {len(revisions)} revision(s): nothing to roll back to")
    else:
        previous = revisions[-2]
    set_traffic(runner, args.app, group, [f"{previous}=100"])


def _app_exists(runner: Runner, name: str, group: str) -> bool:
    try:
        runner.run(
            "az", "containerapp", "show", "--name", name, "--resource-group", group, "-o", "none"
        )
    except subprocess.CalledProcessError:
        return False
    return True


def _selected(args) -> dict[str, App]:
    if not args.app:
        return APPS
    if args.app not in APPS:
        raise DeployError(f"unknown app {args.app!r}; choose from {', '.join(APPS)}")
    return {args.app: APPS[args.app]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [
        ("build", "bentoml build the full, classic, ensemble and router Bentos"),
        ("images", "containerize the Bentos into local images (<bento>:<version>)"),
        ("push", "containerize each Bento and push it to ACR ($ACR_NAME)"),
        ("apps", "create or update the container apps (classic, ensemble, router)"),
        ("database", "create the PostgreSQL flexible server the replicas share"),
        ("traffic", "split an app's traffic between revisions"),
        ("rollback", "send all of an app's traffic to its previous revision"),
    ]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--dry-run", action="store_true", help="print the commands instead of running them"
        )
        if name in ("build", "images", "push", "apps"):
            p.add_argument("--version", default="latest-build", help="Bento version / image tag")
        if name in ("push", "apps"):
            p.add_argument("--app", choices=list(APPS), help="only this app (default: all)")
        if name == "images":
            p.add_argument("--app", choices=[FULL_BENTO, *APPS], help="only this image")
        if name in ("images", "push"):
            p.add_argument(
                "--builder-opt",
                action="append",
                metavar="KEY=VALUE",
                help="passed to the image builder (bentoml containerize --opt), e.g. network=host",
            )
            p.add_argument(
                "--no-buildkit",
                action="store_true",
                help="Docker's classic builder (DOCKER_BUILDKIT=0), where docker buildx is missing",
            )
        if name == "push":
            p.add_argument(
                "--acr-build",
                action="store_true",
                help="build in the registry with `az acr build` (no local Docker engine)",
            )
        if name == "apps":
            p.add_argument(
                "--mode",
                choices=["auto", "create", "update"],
                default="auto",
                help="auto asks Azure whether the app exists (dry-run: update)",
            )
        if name in ("traffic", "rollback"):
            p.add_argument("--app", required=True, choices=list(APPS))
        if name == "traffic":
            p.add_argument("--weights", required=True, help="revision=percent,... adding up to 100")
    args = parser.parse_args(argv)
    runner = Runner(args.dry_run, known_secrets())
    handler = {
        "build": cmd_build,
        "images": cmd_images,
        "push": cmd_push,
        "apps": cmd_apps,
        "database": cmd_database,
        "traffic": cmd_traffic,
        "rollback": cmd_rollback,
    }
    try:
        handler[args.command](args, runner)
    except DeployError as exc:
        print(f"deploy: {runner.redact(str(exc))}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        command = " ".join(shlex.quote(str(a)) for a in exc.cmd)
        failure = f"deploy: command failed ({exc.returncode}): {command}\n{exc.stderr or ''}"
        print(runner.redact(failure), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
