"""`python -m training`: train both models, print a summary, save them to the BentoML model store.

Examples:
    python -m training                      # the embedded default data set (60,000 rows)
    python -m training --quick              # small but complete, for tests and CI
    python -m training --data my.csv --target label --report results/training.json
    python -m training --cascade-tolerance 0.005   # a stricter goal for the cascade's threshold
    python -m training --from-feedback --state-url sqlite:///var/state.db   # retrain (see below)

`--from-feedback` retrains the ensemble from recent labelled requests plus the original data
(training/retrain.py): exit 0 with the new tag when accepted, 3 when refused (nothing saved),
2 on errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

from training.data import DataError  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="CSV or Parquet file (default: the embedded data set)"
    )
    parser.add_argument("--target", default=None, help="label column (default data: 'risk')")
    parser.add_argument("--rows", type=int, help="use only the first N rows (or generate N rows)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--quick", action="store_true", help="small but complete training (< ~2 min)"
    )
    parser.add_argument("--report", type=Path, help="also write the summary as JSON here")
    parser.add_argument(
        "--cascade-tolerance",
        type=float,
        default=0.01,
        metavar="POINTS",
        help="cascade goal: validation accuracy at most this far below the ensemble's, at the "
        "lowest escalation rate (default 0.01 = one point)",
    )
    parser.add_argument("--no-save", action="store_true", help="train and evaluate only")
    parser.add_argument(
        "--if-missing", action="store_true", help="do nothing if the store already has both models"
    )
    retraining = parser.add_argument_group(
        "retraining from feedback (defaults: serving/config/experiments.py RetrainingConfig)"
    )
    retraining.add_argument(
        "--from-feedback",
        action="store_true",
        help="retrain the ensemble from recent labelled requests plus the original data",
    )
    retraining.add_argument(
        "--state-url",
        default=None,
        help="state store with the labelled requests (default: $SERVING_STATE_URL, as serving)",
    )
    retraining.add_argument(
        "--parent",
        default=None,
        metavar="VERSION",
        help="ensemble version to retrain (default: the pinned one, else "
        "$SERVING_ENSEMBLE_MODEL or ensemble:latest)",
    )
    retraining.add_argument(
        "--since", type=float, default=None, metavar="SECONDS", help="feedback window"
    )
    retraining.add_argument(
        "--holdout", type=float, default=None, metavar="FRACTION", help="recent holdout share"
    )
    retraining.add_argument(
        "--tolerance", type=float, default=None, help="allowed accuracy drop on the holdout"
    )
    retraining.add_argument(
        "--original-tolerance",
        type=float,
        default=None,
        help="allowed accuracy drop on the original test split",
    )
    retraining.add_argument(
        "--min-labelled", type=int, default=None, help="labelled requests needed to train"
    )
    args = parser.parse_args(argv)
    if args.from_feedback:
        if args.if_missing or args.rows:
            parser.error("--from-feedback does not take --if-missing or --rows")
        return args
    if args.data is not None and args.target is None:
        parser.error("--data needs --target COLUMN")
    if not 0.0 <= args.cascade_tolerance <= 1.0:
        parser.error("--cascade-tolerance must be between 0 and 1 (accuracy, 0.01 = one point)")
    return args


def summary_table(report: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [
        ("model", "accuracy", "macro_f1", "log_loss", "vote weight", "stacker share")
    ]
    metrics = ("accuracy", "macro_f1", "log_loss")
    rows.append(("classic", *(f"{report['classic'][k]:.4f}" for k in metrics), "", ""))
    for name, m in report["members"].items():
        rows.append(
            (
                f"  {name}",
                *(f"{m[k]:.4f}" for k in metrics),
                f"{m['weight']:.3f}",
                f"{m['stacker_importance']:.3f}",
            )
        )
    vote = report["ensemble"]["soft_vote"]
    rows.append(("  (weighted soft vote)", *(f"{vote[k]:.4f}" for k in metrics), "1.000", ""))
    rows.append(
        ("ensemble (stacked)", *(f"{report['ensemble'][k]:.4f}" for k in metrics), "", "1.000")
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) for r in rows]
    net = report["network"]
    lines.append(
        f"network: float {net['float_accuracy']:.4f} -> int8 TFLite {net['int8_accuracy']:.4f} "
        f"({net['tflite_bytes'] / 1024:.0f} KiB)"
    )
    lines.append(
        f"data: {report['data']['source']}, {report['data']['rows']} rows, "
        f"{report['data']['features']} features"
    )
    if "cascade" in report:
        from training.cascade import summary_lines

        lines.extend(summary_lines(report["cascade"]))
    lines.append(f"training time: {report['training_seconds']} s")
    for kind in ("classic", "ensemble"):
        if "tag" in report[kind]:
            lines.append(f"saved {report[kind]['tag']}")
    return "\n".join(lines)


def from_feedback(args: argparse.Namespace) -> int:
    """`--from-feedback`: exit 0 accepted, 3 refused (nothing saved), 2 error."""
    from serving.config.experiments import RetrainingConfig
    from serving.config.settings import ServingSettings
    from training.retrain import (
        EXIT_ACCEPTED,
        EXIT_ERROR,
        EXIT_REFUSED,
        RetrainError,
        RetrainOptions,
        retrain,
        summary_lines,
    )

    cfg = RetrainingConfig()

    def pick(value, default):
        return default if value is None else value

    try:
        state_url = args.state_url or ServingSettings().state_url
        options = RetrainOptions(
            state_url=state_url,
            parent=args.parent,
            since_s=pick(args.since, cfg.feedback_window_s),
            holdout=pick(args.holdout, cfg.holdout_fraction),
            tolerance=pick(args.tolerance, cfg.tolerance),
            original_tolerance=pick(args.original_tolerance, cfg.original_tolerance),
            min_labelled=pick(args.min_labelled, cfg.min_labelled),
            quick=args.quick,
            save=not args.no_save,
            data=args.data,
            target=args.target,
            seed=args.seed,
        )
        if not 0.05 <= options.holdout <= 0.9:
            raise RetrainError("--holdout must be between 0.05 and 0.9")
        result = retrain(options)
    except (RetrainError, DataError) as exc:
        result = {"outcome": "failed", "reasons": [str(exc)]}
        print(f"training: error: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    except Exception as exc:  # the state store or model store failed: an error, not a refusal
        logging.getLogger("training").exception("retraining failed")
        result = {"outcome": "failed", "reasons": [f"{type(exc).__name__}: {exc}"]}
        code = EXIT_ERROR
    else:
        print("\n".join(summary_lines(result)))
        code = EXIT_ACCEPTED if result["outcome"] == "accepted" else EXIT_REFUSED
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result, indent=2, default=str))
        print(f"report written to {args.report}")
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.from_feedback:
        return from_feedback(args)
    if args.if_missing:
        from models.store import has_models

        if has_models():
            print(
                "training: the model store already has classic and ensemble; skipping "
                "(drop --if-missing to retrain)"
            )
            return 0
    from training.pipeline import TrainingOptions, train

    options = TrainingOptions(
        data=args.data,
        target=args.target or "risk",
        rows=args.rows,
        seed=args.seed,
        quick=args.quick,
        save=not args.no_save,
        cascade_tolerance=args.cascade_tolerance,
    )
    try:
        report = train(options)
    except DataError as exc:
        print(f"training: error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(report))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2))
        print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
