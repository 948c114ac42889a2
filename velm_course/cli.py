"""The ``velm-course`` command.

    velm-course train                          train and evaluate the captioner (the active profile)
    velm-course train --run-dir DIR --resume   continue an interrupted run from its last checkpoint
    velm-course train --resume RUN_DIR         the same
    velm-course evaluate RUN_DIR               score a trained run on the test split (beam search),
                                               write the COCO results file results_test.json
    velm-course caption --run-dir RUN_DIR IMAGE...   caption image files
    velm-course fetch coco [--dest DIR] [--year 2017]   download COCO captions and Karpathy's split (checked, resumable)

Every setting of the run config (``velm_course.engine.config``) is an option of ``train``:
``velm-course train --help`` lists them with their meaning. Several GPUs:
``torchrun --nproc_per_node N -m velm_course.cli train ...`` (``--batch-size`` is per process).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from dataclasses import fields, replace
from pathlib import Path

from .engine.config import (
    DATASETS,
    DECODERS,
    PRECISIONS,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    field_help,
)
from .profiles import PROFILE_ENV, PROFILE_NAMES, get_profile

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


def _at_least(kind, minimum):
    """An argparse type: a number of ``kind`` (int or float) no smaller than ``minimum``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            word = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"expected a {word}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# settings that must be at least 1 (the rest of the numbers must be at least 0)
_AT_LEAST_ONE = {"image_size", "n_train", "n_val", "n_test", "min_word_count", "max_words", "d_model",
                 "n_layer", "n_head", "steps", "batch_size", "grad_accum", "log_every", "val_batches",
                 }
_CHOICES = {"dataset": DATASETS, "precision": PRECISIONS, "decoder": DECODERS}


def _option(section: str, name: str) -> str:
    return f"--{'eval-' if section == 'eval' else ''}{name.replace('_', '-')}"


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from .vision.encoders import ENCODER_NAMES

    choices = {**_CHOICES, "encoder": ENCODER_NAMES}
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} settings")
        helps = field_help(cls)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            default, text = helps[f.name]
            dest = f"{section}.{f.name}"
            tp = hints[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                tp = next(t for t in typing.get_args(tp) if t is not type(None))
            kwargs = {"dest": dest, "default": None, "help": f"{text} (profile default: {default})"}
            if tp is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif f.name in choices:
                kwargs["choices"] = list(choices[f.name])
            elif tp is int:
                kwargs["type"] = _at_least(int, 1 if f.name in _AT_LEAST_ONE else 0)
                kwargs["metavar"] = "N"
            elif tp is float:
                kwargs["type"] = _at_least(float, 0)
                kwargs["metavar"] = "X"
            names = [_option(section, f.name)]
            if dest == "train.steps":
                names.append("--max-steps")
            group.add_argument(*names, **kwargs)


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path | None]:
    """The run config the options ask for, and the run folder when resuming.

    A new run starts from the profile; a resumed run from its saved ``config.json``, with only
    the options given on the command line changed.
    """
    changes: dict[str, dict] = {}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            changes.setdefault(section, {})[name] = value
    run_dir = Path(args.run_dir) if args.run_dir else None
    if isinstance(args.resume, str):
        if run_dir is not None and run_dir != Path(args.resume):
            raise ValueError(f"--resume {args.resume} and --run-dir {run_dir} name different folders")
        run_dir = Path(args.resume)
    if args.resume:
        if run_dir is None:
            raise ValueError("--resume needs the run folder: --resume RUN_DIR, or --run-dir RUN_DIR --resume")
        base = RunConfig.load(run_dir / "config.json")
        if args.profile and args.profile != base.profile:
            raise ValueError(f"{run_dir} was trained with profile {base.profile!r}, not {args.profile!r}")
    else:
        # the dataset first: it may bring a preset (COCO in the full profile), which options then change
        dataset = changes.get("data", {}).get("dataset")
        base = get_profile(args.profile, **({"dataset": dataset} if dataset else {})).run
    config = replace(base, **{s: replace(getattr(base, s), **kw) for s, kw in changes.items()})
    return config, run_dir


def _train(args: argparse.Namespace) -> int:
    from .pipeline import train_and_evaluate

    config, run_dir = config_from_args(args)
    t = config.train
    if args.resume:
        print(f"resuming {run_dir} (its config.json, {t.steps} steps)")
    else:
        print(f"profile {config.profile}: {config.data.dataset} data, {t.steps} steps of {t.batch_size} "
              f"on {t.device}, {config.model.encoder} encoder")
    run_dir = train_and_evaluate(config, run_dir=run_dir, runs_dir=args.runs_dir, resume=bool(args.resume),
                                 progress=not args.no_progress)
    print_metrics(json.loads((run_dir / "metrics.json").read_text()))
    print(f"run folder: {run_dir}")
    return 0


def print_metrics(metrics: dict) -> None:
    """Every row of every scored split in one table, and what the image is worth in nats."""
    from .eval.captioning import rows_table

    splits = [s for s in ("test", "compositional") if s in metrics]
    n = metrics.get("n_images", {})
    print("\n" + ", ".join(f"{s}: {n.get(s, '?')} images" for s in splits)
          + f"; {metrics.get('references', 'scored against the references')}")
    print(rows_table({f"{s}/{row}": scores for s in splits for row, scores in metrics[s].items()}))
    if "nll" in metrics:
        nll = metrics["nll"]
        print(f"\nvalidation cross-entropy: captioner {nll['model']:.3f}, blind {nll['blind']:.3f} "
              f"nats per token: the image is worth {nll['image_worth']:.3f} nats per token")


def _evaluate(args: argparse.Namespace) -> int:
    """Score a trained run's captioner on a split with beam search; write the COCO results file."""
    import torch

    from .data.registry import open_caption_data
    from .engine.trainer import resolve_device
    from .eval.captioning import caption_images, rows_table, score_rows
    from .pipeline import load_captioner

    run_dir = Path(args.run_dir)
    model, vocab, config = load_captioner(run_dir, args.which)
    model.to(resolve_device("auto"))  # a GPU where there is one: beam search over 5,000 COCO images
    data = open_caption_data(config.data, seed=config.train.seed)
    ds = data.split(args.split)
    refs = ds.captions_by_id()
    images = torch.stack([ds.get_uint8(i)[0] for i in range(len(ds))])
    captions = dict(zip(ds.image_ids, caption_images(model, images, vocab, config.eval.batch_size, args.beam_width),
                        strict=True))
    # against all references here (no human row): the numbers papers report
    # every metric; one that cannot run on this machine (SPICE without CoreNLP) is left out with a warning
    scores = score_rows({"model": captions}, refs, data.content_scores.get(args.split),
                        metrics=("Bleu", "METEOR", "ROUGE_L", "CIDEr", "SPICE"))
    results = run_dir / f"results_{args.split}.json"
    results.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in captions.items()], indent=2))
    (run_dir / f"eval_{args.split}.json").write_text(json.dumps(
        {"split": args.split, "beam_width": args.beam_width, "checkpoint": args.which, "n_images": len(captions),
         "references": "all", "scores": scores["model"]}, indent=2))
    print(f"{args.split} split, {len(captions)} images, beam width {args.beam_width}, against all references")
    print(rows_table(scores))
    print(f"captions: {results}")
    return 0


def _caption(args: argparse.Namespace) -> int:
    """Caption image files with a trained run's captioner; unreadable files are skipped and counted."""
    import numpy as np
    import torch

    from .data.coco import open_rgb
    from .eval.captioning import caption_images
    from .pipeline import load_captioner

    model, vocab, config = load_captioner(args.run_dir, args.which)
    images, paths, skipped = [], [], 0
    for path in args.images:
        try:
            image = open_rgb(Path(path), config.data.image_size)
        except Exception as err:  # missing, not an image, truncated: say which and go on
            print(f"skipped {path}: {type(err).__name__}: {err}", file=sys.stderr)
            skipped += 1
            continue
        images.append(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1))  # (3, H, W)
        paths.append(path)
    if images:
        for path, caption in zip(paths, caption_images(model, torch.stack(images), vocab, beam_width=args.beam_width),
                                 strict=True):
            print(f"{path}\t{caption}")
    if skipped:
        print(f"{skipped} of {len(args.images)} images could not be read", file=sys.stderr)
    return 0 if images else 2


def _fetch(args: argparse.Namespace) -> int:
    from .data.coco import fetch_coco
    from .profiles import data_dir

    dest = args.dest or str(data_dir() / "coco")
    # pass only what was asked for, so fetch_coco's own defaults stay the defaults
    options = {}
    if args.year is not None:
        options["year"] = args.year
    if args.keep_archives:
        options["keep_archives"] = True
    try:
        fetch_coco(dest, **options)
    except OSError as err:  # the network kept failing, or the disk is full: say so, no traceback
        print(f"velm-course: error: {err}", file=sys.stderr)
        return 1
    print(f"COCO is in {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="velm-course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train and evaluate the captioning model")
    train.add_argument("--profile", choices=list(PROFILE_NAMES), default=None,
                       help=f"size preset (default: ${PROFILE_ENV}, else ci)")
    train.add_argument("--run-dir", default=None, help="the run folder (default: a new RUNS_DIR/<timestamp>)")
    train.add_argument("--runs-dir", default="runs", help="where new run folders go (default: runs/)")
    train.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                       help="continue the run in --run-dir (or in RUN_DIR) from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_options(train)
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="score a trained run on its test split with beam search")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (velm-course train's output)")
    evaluate.add_argument("--split", default="test", choices=["val", "test", "compositional"])
    evaluate.add_argument("--beam-width", type=_at_least(int, 1), default=3, metavar="N",
                          help="beams (1: greedy; default 3)")
    evaluate.add_argument("--which", default="best", choices=["best", "last"],
                          help="the checkpoint: lowest validation loss (default) or the last one")
    evaluate.set_defaults(func=_evaluate)

    caption = sub.add_parser("caption", help="caption image files with a trained run's captioner")
    caption.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)")
    caption.add_argument("--run-dir", required=True, help="the run folder (velm-course train's output)")
    caption.add_argument("--beam-width", type=_at_least(int, 1), default=3, metavar="N",
                         help="beams (1: greedy; default 3)")
    caption.add_argument("--which", default="best", choices=["best", "last"])
    caption.set_defaults(func=_caption)

    fetch = sub.add_parser("fetch", help="download a dataset")
    fetch.add_argument("dataset", choices=["coco"])
    fetch.add_argument("--dest", default=None,
                       help="folder to download into (default: $VELM_DATA_DIR/coco, see velm_course.profiles.data_dir)")
    fetch.add_argument("--year", type=int, choices=[2014, 2017], default=None,
                       help="COCO 2014 (default; Karpathy's split uses its file names) or 2017, the same images")
    fetch.add_argument("--keep-archives", action="store_true",
                       help="keep the downloaded zips after unpacking (default: delete them)")
    fetch.set_defaults(func=_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .engine import distributed

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            distributed.init_from_env(getattr(args, "train.device") or "auto")
        return args.func(args)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the engine saved a checkpoint first
        where = getattr(args, "run_dir", None) or getattr(args, "resume", None)
        hint = f"--run-dir {where} --resume" if isinstance(where, str) else "--resume RUN_DIR"
        print(f"\ninterrupted{': ' + str(err) if str(err) else ''}\ncontinue with: velm-course train {hint}",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # bad settings, data or files
        print(f"velm-course: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
