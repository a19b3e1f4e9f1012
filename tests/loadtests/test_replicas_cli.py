"""`python -m loadtests.replicas` without servers: the CLI parses, the configurations and their
order, the summary over rounds and the report rendered from canned runs; nginx's generated config.
(No Locust import: it monkey-patches the process.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from loadtests.benchmark.measure import Measurement
from loadtests.harness.common import ROOT
from loadtests.harness.nginx import Nginx
from loadtests.replicas import __main__ as replicas
from loadtests.replicas import deployment
from loadtests.replicas import report as replicas_report


def test_defaults_run_every_configuration():
    args = replicas.parse_args([])
    assert [c.key for c in args.configs] == ["a", "b", "c", "d"]
    assert (args.users, args.duration_s, args.rounds, args.model) == (16, 10.0, 2, "classic")
    assert args.bentoml_home is None and not args.train_quick


def test_options_parse():
    args = replicas.parse_args(
        ["--users", "8", "--duration", "1m", "--rounds", "3", "--only", "nginx-3, a",
         "--model", "ensemble", "--bentoml-home", "/tmp/store", "--train-quick"]
    )  # fmt: skip
    assert [c.key for c in args.configs] == ["a", "d"]  # canonical order, by letter or name
    assert (args.users, args.duration_s, args.rounds, args.model) == (8, 60.0, 3, "ensemble")
    assert str(args.bentoml_home) == "/tmp/store" and args.train_quick


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "a,e"], "unknown configuration"),
        (["--only", ","], "at least one configuration"),
        (["--duration", "ten seconds"], "not a duration"),
        (["--duration", "1s"], "at least 3 s"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--users", "0"], "--users must be at least 1"),
        (["--model", "fastest"], "invalid choice"),
    ],
)
def test_bad_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        replicas.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_configurations_and_alternating_order():
    by_key = deployment.CONFIG_BY_KEY
    assert (by_key["b"].workers, by_key["d"].replicas) == (2, 3)
    assert by_key["c"].nginx and by_key["c"].postgres and not by_key["a"].postgres
    configs = deployment.parse_only("a,b,c,d")
    assert [c.key for c in deployment.round_order(configs, 0)] == ["a", "b", "c", "d"]
    assert [c.key for c in deployment.round_order(configs, 1)] == ["d", "c", "b", "a"]
    assert {(a, b) for a, b, _ in deployment.RATIOS} == {("b", "a"), ("c", "a"), ("d", "c")}


def measurement(key: str, goodput: float, p99: float, cpu: float, failures: int = 0):
    requests = int(goodput * 10) + failures
    return Measurement(
        key, 16, 10.0, requests, failures, goodput, goodput, p99 / 3, p99 / 1.5, p99, cpu, 4.0
    )


def run(key: str, round_: int, goodput: float, p99: float, cpu: float, **parts):
    return replicas_report.Run(
        key,
        round_,
        measurement(key, goodput, p99, cpu, parts.pop("failures", 0)),
        {"graphs": cpu - sum(parts.values()), "nginx": 0.0, "postgres": 0.0, **parts},
    )


CANNED = {
    "a": [run("a", 1, 1000, 30, 1.0), run("a", 2, 1200, 30, 1.0)],
    "b": [run("b", 1, 1650, 24, 1.1), run("b", 2, 1650, 24, 1.1)],
    "c": [run("c", 1, 880, 33, 1.2, nginx=0.15, postgres=0.05, failures=11)],
    "d": [run("d", 1, 800, 36, 1.4, nginx=0.15, postgres=0.1)],
}


def test_summary_takes_the_median_over_rounds_and_counts_every_error():
    a = replicas_report.summarize(CANNED["a"])
    assert a["goodput"] == 1100 and a["rounds"] == 2 and a["requests"] == 22000
    c = replicas_report.summarize(CANNED["c"])
    assert c["failures"] == 11 and c["error_rate"] == pytest.approx(11 / 8811)
    assert c["cpu_parts_ms_per_req"]["nginx"] == 0.15


def test_report_renders_the_table_ratios_and_every_run():
    meta = {
        "started": "2026-12-02T06:00:00",
        "command": "python -m loadtests.replicas --users 16",
        "machine": "2 CPUs, x86_64, Python 3.11",
        "load_average_start": [4.0, 4.0, 4.0],
        "load_average_end": [5.0, 4.0, 4.0],
        "models": "classic:x, ensemble:y",
        "commit": "abc1234",
        "users": 16,
        "duration_s": 10.0,
        "rounds": 2,
        "header": "X-Model-Preference: classic",
        "skipped": {},
        "deployments": {"d": {"processes": {"graphs": 12}, "replicas_answering": {"d-r1": 4}}},
    }
    report = replicas_report.render(meta, CANNED)
    assert report.startswith("# Router workers and replicas 2026-12-02T06:00:00")
    assert (
        "| (a) 1 replica, 1 router worker, direct | 1 × 1 worker | direct | SQLite | 1,100/s |"
        in (report)
    )
    assert "| (b) 1 replica, 2 router workers, direct | 1 × 2 workers | direct | SQLite |" in report
    assert "| (d) 3 replicas behind nginx | 3 × 1 worker | nginx | PostgreSQL | 800/s |" in report
    assert "| 0.15 / 0.10 |" in report  # nginx / PostgreSQL shares of (d)'s CPU per request
    assert "| 0.12% |" in report  # (c)'s 11 failures in 8,811 requests
    assert "| b/a | 2 router workers vs 1 (direct, SQLite) | 1.50× | 0.80× |" in report
    assert "| c/a |" in report and "| d/c | 3 replicas vs 1" in report
    assert "| d/c | 3 replicas vs 1 (behind nginx, shared PostgreSQL) | 0.91× |" in report
    assert report.count("| (a) direct-1w |") == 2  # every run, both rounds
    assert "replicas answering {'d-r1': 4}" in report


def test_report_names_what_was_skipped_and_leaves_out_ratios_it_cannot_make():
    meta = {
        "started": "t",
        "command": "c",
        "machine": "m",
        "load_average_start": [1, 1, 1],
        "users": 16,
        "duration_s": 10.0,
        "rounds": 1,
        "header": "X-Model-Preference: classic",
        "skipped": {"c": "nginx is not installed", "d": "nginx is not installed"},
    }
    report = replicas_report.render(meta, {"a": CANNED["a"], "b": CANNED["b"]})
    assert "Skipped: (c) nginx is not installed; (d) nginx is not installed" in report
    assert "| b/a |" in report and "| c/a |" not in report and "| d/c |" not in report


def test_nginx_config_round_robins_over_the_upstreams(tmp_path):
    nginx = Nginx(["127.0.0.1:4001", "127.0.0.1:4002"], workdir=tmp_path / "nginx")
    conf = (tmp_path / "nginx" / "nginx.conf").read_text()
    assert "server 127.0.0.1:4001 max_fails=1 fail_timeout=2s;" in conf
    assert "server 127.0.0.1:4002 max_fails=1 fail_timeout=2s;" in conf
    assert f"listen 127.0.0.1:{nginx.port};" in conf and nginx.url.endswith(f":{nginx.port}")
    nginx.stop()  # never started: nothing to stop; a given workdir is kept
    assert (tmp_path / "nginx" / "nginx.conf").exists()


def test_the_tests_get_nginx_from_the_load_tests():
    from tests import support

    assert support.Nginx is Nginx


def test_the_cli_imports_without_locust():
    code = "import sys, loadtests.replicas.__main__; sys.exit('locust' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
