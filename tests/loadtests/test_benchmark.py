"""loadtests.benchmark without servers: the CPU-per-request rows of part (g) (routed and direct
endpoints at 1 and 16 users, now and before, with the ratios against issue 16's targets), the
frameworks' table of part (f), how each server is started, and the baselines' shared helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from loadtests.baselines.common import BatchStats, Invalid, answer, encode_body
from loadtests.benchmark import measure, plan, report, servers


def m(
    key: str, users: int, goodput: float, p99: float, cpu: float, batch=None
) -> measure.Measurement:
    return measure.Measurement(
        key,
        users,
        10,
        int(goodput * 10),
        0,
        goodput,
        goodput,
        p99 / 2,
        p99,
        p99,
        cpu,
        1.0,
        [],
        batch,
    )


CANNED = {
    "classic_routed": [
        m("classic_routed", 1, 300, 10, 0.50),
        m("classic_routed", 16, 1900, 13, 0.55),
    ],
    "ensemble_routed": [
        m("ensemble_routed", 1, 150, 20, 1.80),
        m("ensemble_routed", 16, 1200, 25, 0.90),
    ],
    "classic_direct": [
        m("classic_direct", 1, 320, 9, 0.45),
        m("classic_direct", 16, 2000, 12, 0.5),
    ],
    "ensemble_batching": [
        m("ensemble_batching", 1, 160, 18, 1.7),
        m("ensemble_batching", 16, 1250, 24, 0.85),
    ],
    "classic_routed_before": [
        m("classic_routed_before", 1, 290, 10, 0.50),
        m("classic_routed_before", 16, 1850, 14, 0.55),
    ],
    "ensemble_routed_before": [
        m("ensemble_routed_before", 1, 60, 40, 5.0),
        m("ensemble_routed_before", 16, 1000, 30, 1.18),
    ],
}


def test_part_g_reads_the_cpu_ratios_against_the_targets():
    lines = "\n".join(report.section_g(CANNED, {"before": "a1b2c3", "before_commit": "a1b2c3"}))
    assert "1 user: now" in lines and "16 users: before" in lines
    assert "now 3.60× (1.80 / 0.50 ms) (target ≤ 4×: **met**)" in lines
    assert "now 1.64× (0.90 / 0.55 ms) (target ≤ 1.5×: **not met**)" in lines
    assert "before 10.00× (5.00 / 0.50 ms)" in lines and "before 2.15×" in lines
    assert "| direct `/api/v1/classify/classic` | classic | 320/s, p99 9 ms, 0.45 ms CPU | – |" in (
        lines
    )


def test_part_g_without_a_before_run_says_so():
    now_only = {k: v for k, v in CANNED.items() if not k.endswith("_before")}
    lines = "\n".join(report.section_g(now_only, {}))
    assert "Before: not run (no --before REF)." in lines and "before" not in lines.split("\n")[-3]


def test_part_f_lists_the_frameworks_by_goodput():
    summary = {
        key: {"fixed": m(key, 16, goodput, 100, 3.0, 20.0), "best": None}
        for key, goodput in (
            ("litserve_native", 220),
            ("mlserver_native", 199),
            ("rayserve_native", 61),
            ("fastapi_ensemble_native", 24),
        )
    }
    lines = report.section_f(summary, 16)
    rows = [line for line in lines if line.startswith("| ") and "/s" in line]
    assert [r.split(" | ")[1] for r in rows] == ["220/s", "199/s", "61/s", "24/s"]
    assert rows[0].startswith("| LitServe")
    assert "220/s" in rows[0] and "20.0" in rows[0]


def test_every_part_names_known_targets_and_every_target_a_known_server():
    keys = {t.key for t in plan.TARGETS}
    for part, wanted in plan.PARTS.items():
        assert wanted <= keys, part
    assert {t.server for t in plan.TARGETS} <= set(plan.SERVERS)
    for _, _, now, before in plan.ROUTED_DIRECT:
        assert now in plan.PARTS["g"] and before in plan.PARTS["g"]
    for _, _, x, y in plan.COMPARISONS:
        assert x in keys and y in keys


def test_servers_start_from_the_right_venv_checkout_and_member_paths(tmp_path):
    env = {"BENTOML_HOME": "/store", "PATH": "/usr/bin"}
    lit = servers.make_server("litserve-native", tmp_path, env)
    assert lit.command[0].endswith(".venv-litserve/bin/python")
    assert lit.command[1:3] == ["-m", "loadtests.baselines.litserve.app"]
    assert lit.env[servers.NATIVE_ENV] == "1" and lit.models == ("ensemble",)
    ray = servers.make_server("rayserve-native", tmp_path, env)
    assert ray.command[0].endswith(".venv-ray/bin/python") and ray.env["RAY_USAGE_STATS_ENABLED"]
    fast = servers.make_server("fastapi", tmp_path, env)
    assert fast.command[0] == sys.executable and fast.env[servers.NATIVE_ENV] == ""
    api = servers.make_server("bentoml-api", tmp_path, env)
    assert api.env["SERVING_ENSEMBLE_TRANSPORT"] == "api"
    tree = tmp_path / "tree"
    (tree / "config").mkdir(parents=True)
    (tree / "config" / "flags.yaml").write_text("# the flags the old code knows\n")
    before = servers.make_server("bentoml-before", tmp_path, env, before_tree=tree)
    assert before.cwd == tree and "PYTHONPATH" not in before.env
    flags = Path(before.env["SERVING_FLAGS_PATH"]).read_text()
    assert flags == "# the flags the old code knows\n"  # its own flag file, not this checkout's
    assert servers.make_server("bentoml", tmp_path, env).cwd == servers.ROOT


class _Schema:
    def encode_rows(self, rows, prefix):
        from models.schema import SchemaValidationError

        if not isinstance(rows[0].get("x"), (int, float)):
            raise SchemaValidationError([])
        return np.array([[float(rows[0]["x"])]])


class _Model:
    schema = _Schema()


def test_the_baselines_validate_and_answer_like_our_api(tmp_path):
    assert encode_body(_Model(), {"features": {"x": 2}}).tolist() == [[2.0]]
    for bad in ({"features": 1}, {"features": {"x": 1}, "extra": 1}, {"features": {"x": "a"}}):
        with pytest.raises(Invalid) as exc:
            encode_body(_Model(), bad)
        assert exc.value.error["code"] == "invalid_input"
    out = answer(np.array([0.2, 0.8]), ["no", "yes"], "v1")
    assert (out["label"], out["model"], out["model_version"], out["reason"]) == (
        "yes",
        "ensemble",
        "v1",
        "direct",
    )
    stats = BatchStats(tmp_path / "stats")
    stats.add(3)
    stats.add(5)
    reader = BatchStats(Path(tmp_path / "stats"))  # another process reads the file
    assert "tabular_ensemble_batch_rows_sum 8.0" in reader.text()
    assert "tabular_ensemble_batch_rows_count 2.0" in reader.text()


def test_rounds_collapse_to_each_figures_median():
    runs = [
        m("ensemble_routed", 1, g, p, c)
        for g, p, c in ((100, 30, 3.0), (180, 10, 2.0), (90, 50, 9.0))
    ]
    one = measure.median_run(runs)
    assert (one.goodput, one.p99_ms, one.server_cpu_ms_per_req) == (100, 30, 3.0)
    assert one.requests == sum(r.requests for r in runs) and "median of 3 rounds" in one.notes
    assert measure.median_run(runs[:1]) is runs[0]


def test_the_cli_checks_its_options_and_adds_the_fixed_load_to_the_levels(capsys):
    from loadtests.benchmark import __main__ as cli

    args = cli.parse_args(["--levels", "1,4", "--users", "8", "--duration", "30s", "--only", "c,g"])
    assert args.level_list == [1, 4, 8] and args.parts == {"c", "g"}
    assert (args.duration_s, args.ladder_s) == (30.0, 15.0)
    assert args.budgets == {"classic": 100.0, "ensemble": 500.0}
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(["--only", "a,z"])
    assert exit_.value.code == 2 and "unknown part(s) ['z']" in capsys.readouterr().err


def test_the_plan_skips_the_before_rows_without_a_ref_and_starts_each_server_once():
    targets, skipped = plan.select_targets({"c", "g"}, before=None)
    keys = [t.key for t in targets]
    assert keys == [t.key for t in plan.TARGETS if t.key in keys]  # TARGETS order
    assert set(keys) == {"classic_routed", "classic_direct", "ensemble_routed", "ensemble_batching"}
    assert skipped == dict.fromkeys(
        ["classic_routed_before", "ensemble_routed_before", "classic_direct_before",
         "ensemble_direct_before"], "no --before REF")  # fmt: skip
    assert plan.servers_for(targets) == ["bentoml"]
    with_ref, none_skipped = plan.select_targets({"g"}, before="HEAD~1")
    assert not none_skipped and plan.servers_for(with_ref) == ["bentoml", "bentoml-before"]


def test_the_outputs_are_the_report_the_results_and_the_chart(tmp_path):
    from loadtests.benchmark import __main__ as cli

    args = cli.parse_args(["--levels", "1,16", "--users", "16", "--only", "g"])
    meta = {
        "started": "2026-12-08T02:00:00",
        "command": "python -m loadtests.benchmark --only g",
        "machine": "2 CPUs",
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [2.0, 1.0, 1.0],
        "models": "classic:x, ensemble:y",
        "levels": [1, 16],
        "duration_s": 20.0,
        "ladder_s": 10.0,
        "elapsed_s": 99,
    }
    text = cli.write_outputs(tmp_path, meta, None, CANNED, CANNED, args)
    assert text == (tmp_path / "report.md").read_text() and "Elapsed 99 s" in text
    assert "### Ratios (A / B)" in text and "| (g) | routed ensemble: now vs before |" in text
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["served"]["classic_routed"][1]["users"] == 16 and saved["inprocess"] is None
    assert (tmp_path / "latency.png").stat().st_size > 1000
