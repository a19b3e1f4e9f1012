"""Load tests: `python -m loadtests run SCENARIO ...` and `python -m loadtests check RUN_DIR ...`.

python -m loadtests run mixed --users 20 --duration 60s --host http://127.0.0.1:3000
python -m loadtests run step --users 64 --duration 3m --serve --check
python -m loadtests check results/20260101-120000-mixed/ --slo loadtests/locust/slo.yaml
python -m loadtests.benchmark --duration 20s --users 16      # the side-by-side report
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from loadtests.locust import runner

    parser = argparse.ArgumentParser(
        prog="python -m loadtests",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run a Locust scenario headless; results in results/<timestamp>-<scenario>/"
    )
    runner.add_arguments(run)
    check = commands.add_parser(
        "check", help="SLO gate: compare a run's *_stats.csv with a YAML of targets"
    )
    check.add_argument("run", type=Path, help="a run directory (or its *_stats.csv)")
    check.add_argument("--slo", type=Path, default=runner.SLO_FILE)
    commands.add_parser("scenarios", help="list the scenarios")
    args = parser.parse_args(argv)
    if args.command == "run":
        return runner.run(args)
    if args.command == "check":
        from loadtests.locust import slo

        return slo.check(args.run, args.slo)
    for name, (classes, shape, description) in runner.SCENARIOS.items():
        print(f"{name:<9} {shape:<7} {', '.join(classes):<70} {description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
