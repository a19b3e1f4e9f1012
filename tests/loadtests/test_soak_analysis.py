"""The soak test's analysis on synthetic data, without a server or Locust: windows and
percentiles, p99 drift, memory growth and slope, and the verdict (flat passes; a leak, an error,
a drift fail); the process labels, the report and --reanalyze."""

from __future__ import annotations

import json
import random

import pytest

import loadtests.soak.__main__ as cli
from loadtests.soak import analysis, report, sampling

MINUTE = 60.0


def traffic(
    minutes: int = 10,
    rps: float = 20,
    p99_ms=lambda t: 100.0,
    seed: int = 1,
    failures_at: tuple[float, ...] = (),
) -> list[analysis.RequestRecord]:
    """Requests at a fixed rate; latency uniform in [10, p99(t) / 0.99 ms], so the p99 is about
    p99(t)."""
    rng = random.Random(seed)
    out = []
    n = int(minutes * MINUTE * rps)
    for i in range(n):
        t = i / rps
        out.append((t, rng.uniform(10, p99_ms(t) / 0.99), True))
    for t in failures_at:
        out.append((t, 5.0, False))
    return sorted(out)


def memory(
    minutes: int = 10, leak_mb_per_min: float = 0.0, every_s: float = 5, seed: int = 2
) -> list[dict]:
    """Samples of a router/classic/ensemble tree (plus one idle sample before the load), with
    noise."""
    rng = random.Random(seed)
    base = {"arbiter#": 60.0, "router#1": 300.0, "classic#1": 250.0, "ensemble#1": 700.0}
    pids = {"arbiter#": 10, "router#1": 11, "classic#1": 12, "ensemble#1": 13}
    samples = []
    t = -5.0
    while t <= minutes * MINUTE:
        warm = 40.0 if t >= 0 else 0.0  # RSS jumps during warm-up: not a leak
        procs = {}
        for label, mb in base.items():
            leak = leak_mb_per_min * max(t, 0) / MINUTE if label == "router#1" else 0.0
            procs[label] = {
                "pid": pids[label],
                "rss_mb": mb + warm + leak + rng.uniform(-1.5, 1.5),
                "fds": 30,
                "threads": 8,
                "cpu_s": t / 10,
            }
        samples.append(
            {"t_s": t, "processes": procs, "total_rss_mb": sum(p["rss_mb"] for p in procs.values())}
        )
        t += every_s
    return samples


def judge(requests, samples, **kw):
    options = {
        "window_s": 60.0,
        "duration_s": 600.0,
        "max_p99_drift": 0.10,
        "max_rss_growth_mb": 50.0,
        "target_rps": 20,
    }
    return analysis.analyze(requests, samples, **{**options, **kw})


# --------------------------------------------------------------------------- verdicts
def test_flat_run_passes():
    result = judge(traffic(), memory())
    assert result["verdict"]["passed"], result["verdict"]
    assert len(result["windows"]) == 10 and all(w["full"] for w in result["windows"])
    assert abs(result["p99_drift"]["drift"]) < 0.05
    assert result["p99_drift"]["early_windows"] == [1, 2, 3] and result["p99_drift"][
        "late_windows"
    ] == [7, 8, 9]
    total = result["rss_mb"]["total"]
    assert abs(total["growth"]) < 10 and abs(total["slope_per_min"]) < 1
    assert result["warnings"] == []


def test_leak_fails_with_its_slope():
    result = judge(traffic(), memory(leak_mb_per_min=10))
    assert not result["verdict"]["passed"]
    failed = [c["check"] for c in result["verdict"]["checks"] if not c["passed"]]
    assert failed == ["RSS growth, total (MB)"]
    router = result["rss_mb"]["router#1"]
    assert router["slope_per_min"] == pytest.approx(10, abs=0.5)
    assert router["growth"] == pytest.approx(
        90, abs=5
    )  # baseline at the end of window 0 (t=60), last at t=600
    assert result["rss_mb"]["classic#1"]["growth"] == pytest.approx(0, abs=4)


def test_one_failed_request_fails():
    result = judge(traffic(failures_at=(301.5,)), memory())
    assert not result["verdict"]["passed"]
    assert result["failures"] == 1
    assert [w["failures"] for w in result["windows"]][5] == 1


def test_locust_counted_failures_fail_even_if_the_log_missed_them():
    result = judge(traffic(), memory(), locust_failures=2)
    assert not result["verdict"]["passed"] and result["failures"] == 2
    assert any("Locust" in w for w in result["warnings"])


def test_p99_drift_fails():
    slow_later = traffic(p99_ms=lambda t: 100.0 if t < 300 else 130.0)
    result = judge(slow_later, memory())
    assert result["p99_drift"]["drift"] == pytest.approx(0.30, abs=0.05)
    assert [c["check"] for c in result["verdict"]["checks"] if not c["passed"]] == ["p99 drift"]


def test_a_p99_that_falls_is_reported_but_passes():
    faster_later = traffic(p99_ms=lambda t: 130.0 if t < 300 else 100.0)
    result = judge(faster_later, memory())
    assert result["p99_drift"]["drift"] == pytest.approx(-0.23, abs=0.05)
    assert result["verdict"]["passed"], result["verdict"]


def test_a_slow_warmup_window_is_not_drift():
    result = judge(traffic(p99_ms=lambda t: 900.0 if t < 60 else 100.0), memory())
    assert result["windows"][0]["p99_ms"] > 800
    assert result["verdict"]["passed"]


def test_a_single_noisy_window_does_not_fail_the_median():
    result = judge(
        traffic(p99_ms=lambda t: 200.0 if 480 <= t < 540 else 100.0), memory()
    )  # window 8 only
    assert result["windows"][8]["p99_ms"] > 180
    assert result["verdict"]["passed"]


def test_rate_shortfall_and_restart_are_warnings():
    samples = memory()
    for sample in samples[60:]:
        sample["processes"]["classic#1"]["pid"] = 99
    result = judge(traffic(rps=15), samples, target_rps=20)
    assert result["verdict"]["passed"]
    assert any("achieved 15.0 req/s" in w for w in result["warnings"])
    assert any("classic#1 restarted" in w for w in result["warnings"])


def test_unmeasured_figures_fail():
    result = judge(traffic(minutes=1), [])  # one window: no drift; no samples: no RSS
    checks = {c["check"]: c for c in result["verdict"]["checks"]}
    assert not checks["p99 drift"]["passed"] and not checks["RSS growth, total (MB)"]["passed"]
    assert not judge([], memory())["verdict"]["passed"]


def test_problems_fail():
    result = judge(traffic(), memory(), problems=["the server exited during the run"])
    assert not result["verdict"]["passed"]


# --------------------------------------------------------------------------- pieces
def test_window_stats_counts_and_nearest_rank_percentiles():
    requests = [
        (0.5 + i * 0.1, float(i + 1), True) for i in range(100)
    ]  # 1..100 ms within [0, 10.5)
    requests += [(25.0, 7.0, False)]
    windows = analysis.window_stats(requests, window_s=10, duration_s=25)
    assert [w["requests"] for w in windows] == [95, 5, 1]
    first = windows[0]
    assert (first["p50_ms"], first["p95_ms"], first["p99_ms"], first["max_ms"]) == (
        48.0,
        91.0,
        95.0,
        95.0,
    )
    assert first["rps"] == 9.5 and first["failures"] == 0
    assert windows[2]["failures"] == 1 and windows[2]["seconds"] == 5 and not windows[2]["full"]


def test_short_last_window_is_kept_out_of_drift():
    requests = [(t * 0.05, 100.0 if t * 0.05 < 80 else 500.0, True) for t in range(int(90 / 0.05))]
    windows = analysis.window_stats(requests, window_s=20, duration_s=90)
    drift = analysis.p99_drift(windows)
    assert [w["full"] for w in windows] == [True, True, True, True, False]
    assert drift["k"] == 1 and drift["early_windows"] == [1] and drift["late_windows"] == [3]
    assert drift["drift"] == 0


def test_series_growth_baseline_slope_and_before_load():
    points = [
        (-5.0, 90.0),
        (0.0, 100.0),
        (30.0, 110.0),
        (60.0, 120.0),
        (120.0, 122.0),
        (180.0, 124.0),
    ]
    growth = analysis.series_growth(points, baseline_t=60)
    assert growth["before_load"] == 90 and growth["baseline"] == 120 and growth["last"] == 124
    assert growth["growth"] == 4 and growth["slope_per_min"] == pytest.approx(2.0)
    assert analysis.slope_per_min([(0, 1), (60, 2)]) is None


def test_rate_from_the_knee():
    assert cli.resolve_rate(None, 40, 0.7) == pytest.approx(28)
    assert cli.resolve_rate(30, None) == 30
    for bad in ((None, None), (30, 40), (0, None)):
        with pytest.raises(ValueError):
            cli.resolve_rate(*bad)
    assert cli.default_users(28) == 28 and cli.default_users(1.5) == 4


def test_process_roles_from_command_lines():
    py = "/work/main/.venv/bin/python"
    worker = [
        py,
        "-m",
        "_bentoml_impl.worker.service",
        "service:Router",
        "--service-name",
        "ensemble",
        "--fd",
        "5",
        "--worker-id",
        "1",
        "--args",
        "{}",
    ]
    assert sampling.process_role(worker) == "ensemble#1"
    assert (
        sampling.process_role([py, "-m", "bentoml", "serve", "service:Router", "--port", "3000"])
        == "arbiter"
    )
    tracker = "from multiprocessing.resource_tracker import main;main(7)"
    assert sampling.process_role([py, "-c", tracker]) == "resource_tracker"
    assert sampling.process_role([], "zombie") == "zombie"
    assert sampling.label_processes([(30, "x"), (20, "x"), (10, "router#1")]) == {
        10: "router#1",
        20: "x",
        30: "x~2",
    }


def test_report_renders_every_window_and_process(tmp_path):
    result = judge(traffic(), memory(leak_mb_per_min=10))
    meta = {
        "name": "soak-test",
        "command": "python -m loadtests.soak --rate 20",
        "rate": 20.0,
        "users": 20,
        "classes": ["RoutedUser"],
        "duration_s": 600.0,
        "sample_interval_s": 5.0,
        "host": "http://127.0.0.1:1",
        "served": True,
        "server_pid": 10,
        "pids": {"router#1": 11},
    }
    markdown = report.render_report(meta, result)
    assert markdown.startswith("# Soak test soak-test: FAIL")
    assert "| 9 | 540-600 |" in markdown and "| router#1 | 11 |" in markdown
    assert "**total**" in markdown
    report.plot(result, memory(), tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 10_000


def test_reanalyze_reads_the_files_and_rewrites_the_report(tmp_path):
    t0 = 1_800_000_000.0
    with open(tmp_path / "requests.csv", "w") as f:
        for t, ms, ok in traffic(minutes=3, rps=5):
            f.write(f"{t0 + t:.4f},{ms:.2f},/api/classify,{int(ok)},\n")
        f.write("1800000001.0,12.0,/api/cl")  # a line cut by a kill is skipped
    (tmp_path / "locust_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count\n,Aggregated,900,1\n"
    )  # Locust saw a failure the log did not
    samples = [{**s, "epoch": t0 + s["t_s"]} for s in memory(minutes=3)]
    meta = {
        "name": "x",
        "command": "python -m loadtests.soak --rate 5",
        "rate": 5.0,
        "users": 5,
        "classes": ["RoutedUser"],
        "duration_s": 180.0,
        "window_s": 30.0,
        "sample_interval_s": 5.0,
        "max_p99_drift": 0.1,
        "max_rss_growth_mb": 50.0,
        "host": "h",
        "served": False,
    }
    (tmp_path / "soak.json").write_text(json.dumps({"config": meta, "samples": samples}))
    assert cli.main(["--reanalyze", str(tmp_path)]) == 1  # the one failure
    markdown = (tmp_path / "report.md").read_text()
    assert "| failed requests | 1 | 0 | **FAIL** |" in markdown
    assert "| 5 | 150-180 | 150 |" in markdown
    assert (tmp_path / "soak.png").exists()
