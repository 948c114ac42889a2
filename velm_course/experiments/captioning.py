"""The captioning cell of an experiment grid, and the image-encoder comparison built on it.

``caption_task(base)`` returns a task for ``run_grid``: it trains one captioner with the main job's
code (``pipeline.fit_captioner``: the engine, model selection on the validation loss) with a cell's
settings over ``base``, then captions the validation and test images greedily and scores them
(CIDEr-D and the rest of the fast COCO metrics, plus the dataset's content scores). Every cell
decodes the same way, so the cells differ only in what the grid changes. The test split is scored
here too, but nothing in a grid is chosen on it; compare cells on validation.

``ENCODER_GRID`` is the comparison notebook 09 shows: three image encoders trained from scratch with
the captioner (the course's small CNN, the course's ViT and torchvision's ResNet-18), each read two
ways, as a grid of region tokens (cross-attention) and as one pooled vector (prefix). Recorded with

    python -m velm_course.experiments.captioning --out runs/encoder_grid --record data/experiments/encoder_grid.json
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..engine import RunConfig
from .grid import Task, run_grid, summarize

# what the image-encoder comparison varies: encoder x the way the decoder reads it
ENCODER_GRID = {
    f"{encoder}, {reading}": {"encoder": encoder, "fusion": fusion}
    for encoder in ("small_cnn", "course_vit", "resnet18")
    for reading, fusion in (("grid", "cross_attention"), ("pooled", "prefix"))
}
ENCODER_METRICS = ("val.CIDEr", "val.content_accuracy", "val_loss", "trainable_params", "train_seconds")


def encoder_grid_config(steps: int = 600, device: str = "cpu") -> RunConfig:
    """The fixed settings of the encoder comparison: the ``ci`` data, a narrow decoder, one budget."""
    from ..profiles import get_profile, with_overrides

    base = get_profile("ci").run
    return with_overrides(base, d_model=64, n_layer=2, n_head=4, steps=steps, warmup=50, val_every=steps // 6,
                          checkpoint_every=100, log_every=25, device=device)


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
        for split in ("val", "test"):
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
                     device: str = "cpu", progress: bool = True) -> list[dict]:
    """The encoder comparison (``ENCODER_GRID`` by default) at ``steps`` steps per run."""
    base = encoder_grid_config(steps, device)
    return run_grid(cells or ENCODER_GRID, seeds, caption_task(base, progress=False), out_dir,
                    signature={"task": "captioning", "config": base.to_dict()}, progress=progress)


def record(results: list[dict], path: str | Path, command: str) -> dict:
    """A small JSON for the repository: the command, the fixed settings, every run's metrics (no
    curves' raw rows beyond the validation losses) and the summary over seeds."""
    runs = []
    for r in results:
        row = {k: r[k] for k in ("cell", "seed", "overrides", "seconds")}
        if "error" in r:
            row["error"] = r["error"]
        else:
            m = r["metrics"]
            row["metrics"] = {k: v for k, v in m.items() if k != "curve"}
            row["metrics"]["val_curve"] = [{"step": h["step"], "val_loss": h["val_loss"]}
                                           for h in m["curve"] if "val_loss" in h]
        runs.append(row)
    out = {"command": command, "signature": results[0]["signature"] if results else {},
           "runs": runs, "summary": summarize(results, ENCODER_METRICS)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse
    import shlex
    import sys

    parser = argparse.ArgumentParser(description="The image-encoder comparison of notebook 09, on the shapes data.")
    parser.add_argument("--out", default="runs/encoder_grid", help="folder of the grid's runs (resumable)")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell: 0, 1, ...")
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto" (the recorded grid ran on cpu)')
    parser.add_argument("--record", default=None, help="also write the small JSON the notebook reads here")
    args = parser.parse_args(argv)
    results = run_encoder_grid(args.out, seeds=tuple(range(args.seeds)), steps=args.steps, device=args.device)
    summary = summarize(results, ENCODER_METRICS)
    for cell, scores in summary.items():
        print(f"{cell:22}", "  ".join(f"{m} {s['mean']:.3f}±{s['half_range']:.3f}" for m, s in scores.items()))
    if args.record:
        record(results, args.record, "python -m velm_course.experiments.captioning " + shlex.join(
            argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
