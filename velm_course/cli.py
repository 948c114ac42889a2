"""The ``velm-course`` command.

    velm-course train                  train and evaluate the captioner on the shapes data
    velm-course train --resume RUN     continue an interrupted run from its last checkpoint
    velm-course fetch coco --dest DIR  download COCO 2014 captions and Karpathy's split
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from .profiles import PROFILE_ENV, Profile, get_profile


def _train(args: argparse.Namespace) -> int:
    from .pipeline import train_and_evaluate

    overrides = {f.name: getattr(args, f.name) for f in fields(Profile) if getattr(args, f.name, None) is not None}
    profile = get_profile(args.profile, **overrides)
    if args.resume:
        print(f"resuming {args.resume} (settings come from its config.json)")
    else:
        print(f"profile {profile.name}: {profile.steps} steps on {profile.device}, "
              f"{profile.n_train} training images of {profile.image_size}px")
    run_dir = train_and_evaluate(profile, runs_dir=args.runs_dir, resume=args.resume, progress=not args.no_progress)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    keys = ["Bleu_4", "ROUGE_L", "CIDEr", "content_accuracy"]
    print(f"{'':10}" + "".join(f"{k:>18}" for k in keys))
    for name, row in [("model", metrics), ("baseline", metrics["baseline"]), ("oracle", metrics["oracle"])]:
        print(f"{name:10}" + "".join(f"{row[k]:18.3f}" for k in keys))
    print(f"run folder: {run_dir}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from .data.coco import fetch_coco

    fetch_coco(args.dest)
    print(f"COCO is in {args.dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="velm-course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train and evaluate the captioning model")
    train.add_argument("--profile", choices=["ci", "full"], default=None,
                       help=f"size profile (default: ${PROFILE_ENV}, else ci)")
    train.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs/)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    for name in ["steps", "blind_steps", "batch_size", "n_train", "n_val", "n_test", "seed"]:
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None,
                           help=f"override the profile's {name}")
    train.set_defaults(func=_train)

    fetch = sub.add_parser("fetch", help="download a dataset")
    fetch.add_argument("dataset", choices=["coco"])
    fetch.add_argument("--dest", required=True, help="folder to download into")
    fetch.set_defaults(func=_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: run `velm-course train --resume <run folder>` to continue", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:  # bad settings or missing data: say what, no traceback
        print(f"velm-course: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
