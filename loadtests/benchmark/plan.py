"""What the benchmark runs: the targets (a server and an endpoint each), the parts that group them,
the comparisons the report draws, the goals it judges, and the servers a plan needs.

Pure data and selection: no process is started here (servers.py starts them, measure.py drives
them, report.py writes what they did)."""

from __future__ import annotations

from dataclasses import dataclass

from loadtests.harness.common import ROOT


@dataclass
class Target:
    key: str
    label: str
    server: str
    path: str
    model: str
    header: str = ""


TARGETS = [
    Target(
        "ensemble_batching",
        "ensemble direct (lean path; rows to the service over its socket, coalesced)",
        "bentoml",
        "/api/v2/classify/ensemble",
        "ensemble",
    ),
    Target(
        "ensemble_api",
        "ensemble direct through BentoML's API, adaptive batching (max 64)",
        "bentoml-api",
        "/api/v2/classify/ensemble",
        "ensemble",
    ),
    Target(
        "classic_routed",
        "classic via router (in router process)",
        "bentoml",
        "/api/classify",
        "classic",
        "X-Model-Preference: classic",
    ),
    Target(
        "classic_direct",
        "classic direct (lean path, answered in the router process)",
        "bentoml",
        "/api/v1/classify/classic",
        "classic",
    ),
    Target(
        "ensemble_nobatch",
        "ensemble direct through BentoML's API, batching off (max 1)",
        "bentoml-nobatch",
        "/api/v2/classify/ensemble",
        "ensemble",
    ),
    Target(
        "fastapi_classic",
        "classic, FastAPI + uvicorn baseline",
        "fastapi",
        "/classify/classic",
        "classic",
    ),
    Target(
        "fastapi_ensemble",
        "ensemble, FastAPI + uvicorn baseline",
        "fastapi",
        "/classify/ensemble",
        "ensemble",
    ),
    Target(
        "ensemble_routed",
        "ensemble via router (fast paths, adaptive batching)",
        "bentoml",
        "/api/classify",
        "ensemble",
        "X-Model-Preference: ensemble",
    ),
    Target(
        "ensemble_routed_native",
        "ensemble via router, native member libraries (SERVING_NATIVE_MEMBERS=1)",
        "bentoml-native",
        "/api/classify",
        "ensemble",
        "X-Model-Preference: ensemble",
    ),
    Target(
        "mlserver_ensemble",
        "ensemble, MLServer 1.7.1, adaptive batching (max 64, 20 ms)",
        "mlserver",
        "/classify/ensemble",
        "ensemble",
    ),
    # (f) the frameworks' own batching, each serving the seven native members
    Target(
        "mlserver_native",
        "MLServer 1.7.1, adaptive batching (64, 20 ms), native members",
        "mlserver-native",
        "/classify/ensemble",
        "ensemble",
    ),
    Target(
        "litserve_native",
        "LitServe 0.2.19, max_batch_size 64, batch_timeout 20 ms, native members",
        "litserve-native",
        "/classify/ensemble",
        "ensemble",
    ),
    Target(
        "rayserve_native",
        "Ray Serve 2.60, @serve.batch (64, 20 ms), native members",
        "rayserve-native",
        "/classify/ensemble",
        "ensemble",
    ),
    Target(
        "fastapi_ensemble_native",
        "FastAPI + uvicorn, ensemble in process, native members",
        "fastapi-native",
        "/classify/ensemble",
        "ensemble",
    ),
    # (g) the same endpoints served by the code at --before REF (a git worktree)
    Target(
        "classic_routed_before",
        "before: classic via router",
        "bentoml-before",
        "/api/classify",
        "classic",
        "X-Model-Preference: classic",
    ),
    Target(
        "ensemble_routed_before",
        "before: ensemble via router",
        "bentoml-before",
        "/api/classify",
        "ensemble",
        "X-Model-Preference: ensemble",
    ),
    Target(
        "classic_direct_before",
        "before: classic direct",
        "bentoml-before",
        "/api/v1/classify/classic",
        "classic",
    ),
    Target(
        "ensemble_direct_before",
        "before: ensemble direct",
        "bentoml-before",
        "/api/v2/classify/ensemble",
        "ensemble",
    ),
]
PARTS = {
    "b": {"ensemble_api", "ensemble_nobatch"},
    "c": {"classic_routed", "classic_direct"},
    "d": {
        "fastapi_classic",
        "fastapi_ensemble",
        "classic_routed",
        "classic_direct",
        "ensemble_batching",
    },
    "e": {
        "ensemble_routed",
        "ensemble_routed_native",
        "mlserver_ensemble",
        "fastapi_ensemble",
        "classic_routed",
        "fastapi_classic",
    },
    "f": {
        "ensemble_routed_native",
        "mlserver_native",
        "litserve_native",
        "rayserve_native",
        "fastapi_ensemble_native",
    },
    "g": {
        "classic_routed",
        "ensemble_routed",
        "classic_direct",
        "ensemble_batching",
        "classic_routed_before",
        "ensemble_routed_before",
        "classic_direct_before",
        "ensemble_direct_before",
    },
}
PART_NAMES = ("a", *PARTS)
"""Part (a), in process, has no served target."""
DEFAULT_PARTS = "a,b,c,d,e,f,g"
ROUTED_DIRECT = [  # part (g): (endpoint, model, key now, key before)
    ("routed `/api/classify` + header", "classic", "classic_routed", "classic_routed_before"),
    ("routed `/api/classify` + header", "ensemble", "ensemble_routed", "ensemble_routed_before"),
    ("direct `/api/v1/classify/classic`", "classic", "classic_direct", "classic_direct_before"),
    (
        "direct `/api/v2/classify/ensemble`",
        "ensemble",
        "ensemble_batching",
        "ensemble_direct_before",
    ),
]
CPU_TARGETS = {1: 4.0, 16: 1.5}
"""Part (g)'s goal (issue 16): routed ensemble server CPU per request at most this many times
routed classic's, by users."""
BASELINE_VENVS = {  # server -> (venv, script that creates it)
    "mlserver": (".venv-mlserver", "scripts/mlserver-venv.sh"),
    "mlserver-native": (".venv-mlserver", "scripts/mlserver-venv.sh"),
    "litserve-native": (".venv-litserve", "scripts/litserve-venv.sh"),
    "rayserve-native": (".venv-ray", "scripts/ray-venv.sh"),
}
COMPARISONS = [  # part, what, A, B (ratio = A / B)
    ("b", "ensemble (BentoML API): adaptive batching vs off", "ensemble_api", "ensemble_nobatch"),
    ("c", "classic: routed vs direct", "classic_routed", "classic_direct"),
    ("d", "classic: BentoML routed vs FastAPI baseline", "classic_routed", "fastapi_classic"),
    ("d", "classic: BentoML direct vs FastAPI baseline", "classic_direct", "fastapi_classic"),
    (
        "d",
        "ensemble: BentoML (batching) vs FastAPI baseline",
        "ensemble_batching",
        "fastapi_ensemble",
    ),
    (
        "e",
        "ensemble: routed vs MLServer (adaptive batching)",
        "ensemble_routed",
        "mlserver_ensemble",
    ),
    ("e", "ensemble: routed vs FastAPI baseline", "ensemble_routed", "fastapi_ensemble"),
    (
        "e",
        "ensemble: routed fast paths vs routed native",
        "ensemble_routed",
        "ensemble_routed_native",
    ),
    ("e", "classic: routed vs FastAPI baseline", "classic_routed", "fastapi_classic"),
    ("f", "native: LitServe vs MLServer", "litserve_native", "mlserver_native"),
    ("f", "native: Ray Serve vs MLServer", "rayserve_native", "mlserver_native"),
    ("f", "native: FastAPI vs MLServer", "fastapi_ensemble_native", "mlserver_native"),
    ("f", "native: routed BentoML vs MLServer", "ensemble_routed_native", "mlserver_native"),
    ("g", "routed ensemble: now vs before", "ensemble_routed", "ensemble_routed_before"),
    ("g", "direct ensemble: now vs before", "ensemble_batching", "ensemble_direct_before"),
    ("g", "direct classic: now vs before", "classic_direct", "classic_direct_before"),
    ("g", "routed classic: now vs before", "classic_routed", "classic_routed_before"),
    ("g", "ensemble: direct vs routed", "ensemble_batching", "ensemble_routed"),
]
E_TARGET = {"goodput_ratio": 2.0, "p99_ms": 110.0, "errors": 0}
"""Part (e)'s goal: routed ensemble goodput >= 2x MLServer's at the fixed load, with p99 <= 110 ms
and no errors."""

TARGETS_F = [
    "ensemble_routed_native",
    "mlserver_native",
    "litserve_native",
    "rayserve_native",
    "fastapi_ensemble_native",
]

# --------------------------------------------------------------------------- servers
SERVERS = [
    "bentoml",
    "bentoml-api",
    "bentoml-nobatch",
    "bentoml-native",
    "bentoml-before",
    "fastapi",
    "fastapi-native",
    "mlserver",
    "mlserver-native",
    "litserve-native",
    "rayserve-native",
]
"""Every server a target can name, in start order. `*-native`: SERVING_NATIVE_MEMBERS=1 (the
seven members through their own libraries); every other server runs the fast paths."""


def unknown_parts(parts: set[str]) -> set[str]:
    """The names in `parts` that are no part of the benchmark."""
    return parts - set(PART_NAMES)


def select_targets(parts: set[str], before: str | None) -> tuple[list[Target], dict[str, str]]:
    """The targets of `parts` in TARGETS order, and the ones skipped with why: a baseline whose
    venv is missing (scripts/baseline-venv.sh NAME), the "before" rows without --before."""
    wanted = set().union(*(PARTS[p] for p in parts if p in PARTS))
    targets = [t for t in TARGETS if t.key in wanted]
    skipped: dict[str, str] = {}
    for server_name, (venv, script) in BASELINE_VENVS.items():
        if not (ROOT / venv / "bin" / "python").exists():
            for t in targets:
                if t.server == server_name:
                    skipped[t.key] = f"{venv} missing: bash {script}"
    if not before:
        for t in targets:
            if t.server == "bentoml-before":
                skipped[t.key] = "no --before REF"
    return [t for t in targets if t.key not in skipped], skipped


def servers_for(targets: list[Target]) -> list[str]:
    """The servers the targets need, in start order (SERVERS)."""
    return [s for s in SERVERS if any(t.server == s for t in targets)]
