"""The captioning cell of an experiment grid, and the image-encoder comparison built on it.

``caption_task(base)`` returns a task for ``run_grid``: it trains one captioner with the main job's
code (``pipeline.fit_captioner``: the engine, model selection on the validation loss) with a cell's
settings over ``base``, then captions the validation and test images greedily and scores them
(CIDEr-D and the rest of the fast COCO metrics, plus the dataset's content scores). Every cell
decodes the same way, so the cells differ only in what the grid changes. The test split (and the
compositional split, images of colour-shape pairs no training caption shows, when the data has
one) is scored here too, but nothing in a grid is chosen on it; compare cells on validation.

``ENCODER_GRID`` is the comparison notebook 09 shows: three image encoders trained from scratch with
the captioner (the course's small CNN, the course's ViT and torchvision's ResNet-18), each read two
ways, as a grid of region tokens (cross-attention) and as one pooled vector (prefix).
``FUSION_GRID`` is notebook 13's: the small CNN with each of the four ways a decoder can read an
image (``multimodal.fusion``), at the same budget. Recorded with

    python -m velm_course.experiments.captioning --grid encoder --record data/experiments/encoder_grid.json
    python -m velm_course.experiments.captioning --grid fusion --record data/experiments/fusion_grid.json

and on COCO in a GPU session (the full profile's data and model):

    python -m velm_course.experiments.captioning --grid fusion --profile full --dataset coco --device cuda --steps 20000
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..engine import RunConfig
from .grid import Task, command_line, run_grid, summarize, write_record

# what the image-encoder comparison varies: encoder x the way the decoder reads it
ENCODER_GRID = {
    f"{encoder}, {reading}": {"encoder": encoder, "fusion": fusion}
    for encoder in ("small_cnn", "course_vit", "resnet18")
    for reading, fusion in (("grid", "cross_attention"), ("pooled", "prefix"))
}
ENCODER_METRICS = ("val.CIDEr", "val.content_accuracy", "val_loss", "trainable_params", "train_seconds")
# what the fusion comparison varies: where the image enters the decoder, nothing else
FUSION_GRID = {fusion: {"fusion": fusion} for fusion in ("concat", "prefix", "cross_attention", "co_attention")}
GRIDS = {"encoder": ENCODER_GRID, "fusion": FUSION_GRID}


def encoder_grid_config(steps: int = 600, device: str = "cpu", profile: str = "ci", dataset: str = "shapes",
                        root: str | None = None) -> RunConfig:
    """The fixed settings every captioning grid shares, one budget for every cell.

    ``ci`` (the recorded grids): the ``ci`` data and a narrow decoder (width 64, 2 blocks) for
    ``steps`` steps. ``full``: the full profile's data and model (a GPU session); with
    ``dataset="coco"`` the same grid trains on COCO (``root``: its folder, else the default).

    >>> encoder_grid_config(profile="full", dataset="coco", device="cuda").data.dataset
    'coco'
    """
    from ..profiles import get_profile, with_overrides

    base = get_profile(profile).run
    if profile == "ci":
        base = with_overrides(base, d_model=64, n_layer=2, n_head=4, warmup=50, checkpoint_every=100, log_every=25)
    coco = {"n_compositional": 0} if dataset == "coco" else {}  # COCO has no compositional split
    return with_overrides(base, steps=steps, val_every=max(1, steps // 6), device=device, dataset=dataset,
                          root=root, **coco)


def caption_task(base: RunConfig, progress: bool = False) -> Task:
    """A ``run_grid`` task that trains and scores one captioner per (cell, seed); see the module."""
    from ..data.registry import open_caption_data
    from ..eval.captioning import caption_images, score_split
    from ..pipeline import _uint8_images, _vocab, caption_pairs, fit_captioner
    from ..profiles import with_overrides

    opened: dict[str, tuple] = {}  # the data, opened once per data setting, shared by the cells

    def task(overrides: dict, seed: int, run_dir: Path) -> dict:
        cfg = with_overrides(base, **overrides)
        cfg = replace(cfg, train=replace(cfg.train, seed=seed))
        key = json.dumps(cfg.data.__dict__, sort_keys=True, default=str)
        if key not in opened:
            data = open_caption_data(cfg.data, seed=base.train.seed, progress=progress)  # one dataset, every seed
            opened[key] = (data, {})
        data, pairs = opened[key]
        cfg.save(run_dir / "config.json")
        vocab, max_words = _vocab(run_dir, cfg, data.train)
        if max_words not in pairs:
            pairs[max_words] = caption_pairs(cfg, data, vocab, max_words, progress)
        train_pairs, _, val_batches = pairs[max_words]
        model, history, seconds, step = fit_captioner(cfg, train_pairs, val_batches, vocab, max_words, run_dir,
                                                      progress=progress)
        scores = {}
        splits = ("val", "test") + (("compositional",) if data.compositional is not None else ())
        for split in splits:
            ds = data.split(split)
            captions = dict(zip(ds.image_ids, caption_images(model, _uint8_images(ds), vocab, cfg.eval.batch_size),
                                strict=True))
            scores[split] = score_split(captions, ds.captions_by_id(), data.content_scores.get(split))
        curve = [{k: h[k] for k in ("step", "loss", "val_loss") if k in h} for h in history]
        return {
            **scores,
            "val_loss": min(h["val_loss"] for h in history if "val_loss" in h),
            "selected_step": step,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "train_seconds": seconds,
            "curve": curve,
        }

    return task


def run_encoder_grid(out_dir: str | Path, seeds=(0, 1, 2), steps: int = 600, cells: dict | None = None,
                     device: str = "cpu", progress: bool = True, profile: str = "ci", dataset: str = "shapes",
                     root: str | None = None) -> list[dict]:
    """A captioning grid (``ENCODER_GRID`` by default) at ``steps`` steps per run, on the fixed
    settings of ``encoder_grid_config`` (every captioning grid of the course shares them)."""
    base = encoder_grid_config(steps, device, profile, dataset, root)
    return run_grid(cells or ENCODER_GRID, seeds, caption_task(base, progress=False), out_dir,
                    signature={"task": "captioning", "config": base.to_dict()}, progress=progress)


def record(results: list[dict], path: str | Path, command: str) -> dict:
    """A small JSON for the repository: the command, the recording process's environment (torch,
    threads), the fixed settings, every run's metrics (no curves' raw rows beyond the validation
    losses) and the summary over seeds."""
    def keep(m: dict) -> dict:
        return {**{k: v for k, v in m.items() if k != "curve"},
                "val_curve": [{"step": h["step"], "val_loss": h["val_loss"]} for h in m["curve"] if "val_loss" in h]}

    return write_record(path, command, results, ENCODER_METRICS, keep)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="A captioning comparison on the shapes data: the image encoders "
                                                 "of notebook 09 or the fusions of notebook 13.")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="encoder", help="which comparison")
    parser.add_argument("--out", default=None, help="folder of the grid's runs (resumable; default runs/<grid>_grid)")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell: 0, 1, ...")
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto" (the recorded grid ran on cpu)')
    parser.add_argument("--profile", default="ci", choices=("ci", "full"),
                        help="ci: the recorded grids' narrow decoder; full: the full profile's data and model (GPU)")
    parser.add_argument("--dataset", default="shapes", choices=("shapes", "coco"), help="the captions to train on")
    parser.add_argument("--root", default=None, help="dataset folder (default: under $VELM_DATA_DIR)")
    parser.add_argument("--record", default=None, help="also write the small JSON the notebook reads here")
    args = parser.parse_args(argv)
    out = args.out or f"runs/{args.grid}_grid"
    results = run_encoder_grid(out, seeds=tuple(range(args.seeds)), steps=args.steps, cells=GRIDS[args.grid],
                               device=args.device, profile=args.profile, dataset=args.dataset, root=args.root)
    summary = summarize(results, ENCODER_METRICS)
    for cell, scores in summary.items():
        print(f"{cell:22}", "  ".join(f"{m} {s['mean']:.3f}±{s['half_range']:.3f}" for m, s in scores.items()))
    if args.record:
        record(results, args.record, command_line("velm_course.experiments.captioning", argv))


if __name__ == "__main__":
    main()
