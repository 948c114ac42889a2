"""The VQA cell of an experiment grid: from scratch or pretrain -> fine-tune, and pretraining's loss weights.

``vqa_task(setup)`` returns a task for ``run_grid``. A cell says whether the VQA model starts
from a pretrainer (``"pretrain": True``) and, if so, with which weights of
L = alpha L_text + beta L_image + gamma L_joint it was pretrained on the captions
(``multimodal.pretrainer``). For each seed the task

1. pretrains with that seed (or reads the pretrainer from the grid's ``pretrained/`` folder,
   where every pretrainer trained here is kept, so cells that share a recipe share its weights;
   the weights the course ships for notebook 11 are not used, so every pretrainer of a grid ran
   on one machine with one thread count and its time is measured there);
2. scores the pretrainer's retrieval on the validation images (Recall@1 image -> text and
   text -> image over all their captions; only a pretrainer with gamma > 0 has learned to
   embed, the others are scored anyway and should sit near chance);
3. fine-tunes a VQA model on ``share`` of the training questions (the regime where pretraining
   pays off, notebook 11) through the engine, and scores accuracy on validation, test and the
   compositional split (colour-shape pairs no training image shows).

Every cell fine-tunes with the same steps, batches, learning rate and seeds; a cell without
pretraining is the baseline the same budget buys from scratch. Nothing is chosen on test.
An invalid cell (weights given without pretraining, all three weights 0, an unknown setting)
raises ``ValueError``, which ``run_grid`` records and reports.

``STRATEGY_GRID`` is notebook 13's comparison. Recorded with

    python -m velm_course.experiments.vqa --record data/experiments/vqa_grid.json
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .grid import Task, command_line, run_grid, summarize, write_record

# what the strategy comparison varies: pretraining or not, and what pretraining optimises
STRATEGY_GRID = {
    "from scratch": {"pretrain": False},
    "captioning only (a=1, b=0, g=0)": {"pretrain": True, "alpha": 1.0, "beta": 0.0, "gamma": 0.0},
    "image-text only (a=0, b=0, g=1)": {"pretrain": True, "alpha": 0.0, "beta": 0.0, "gamma": 1.0},
    "course recipe (a=1, b=0, g=1)": {"pretrain": True, "alpha": 1.0, "beta": 0.0, "gamma": 1.0},
    "all three (a=1, b=1, g=1)": {"pretrain": True, "alpha": 1.0, "beta": 1.0, "gamma": 1.0},
}
VQA_METRICS = ("val.accuracy", "test.accuracy", "compositional.accuracy", "retrieval.i2t_R@1",
               "retrieval.t2i_R@1", "trainable_params", "train_seconds")
SETTINGS = ("pretrain", "alpha", "beta", "gamma")


@dataclass
class VQASetup:
    """What every cell of a VQA grid shares: the data, the recipe's sizes, the fine-tuning budget."""

    data: object  # a vqa_recipe.ShapesVQA: frozen features, questions, captions
    recipe: object  # a vqa_recipe.VQARecipe: model sizes and pretraining budget (weights per cell)
    encoder_file: str  # the frozen encoder's weights, part of the pretrainers' cache key
    val_captions: torch.Tensor  # (n_val, K, L) validation captions as tokens, for retrieval
    steps: int = 300  # fine-tuning steps of every cell
    share: float = 0.1  # share of the training questions fine-tuned on
    lr: float = 2e-3  # fine-tuning peak learning rate (notebook 11's, not tuned per cell)
    batch_size: int = 64  # questions per fine-tuning step
    device: str = "cpu"

    def signature(self) -> dict:
        """The fixed settings a stored result must share to be reused."""
        from dataclasses import asdict

        return {"task": "vqa", "recipe": asdict(self.recipe), "encoder": Path(self.encoder_file).name,
                "n_train": len(self.data.image_ids["train"]), "steps": self.steps, "share": self.share,
                "lr": self.lr, "batch_size": self.batch_size}


def cell_recipe(recipe, overrides: dict, seed: int):
    """The pretraining recipe of a cell, or None for a cell without pretraining; ValueError if invalid.

    >>> from velm_course.multimodal.vqa_recipe import VQARecipe
    >>> cell_recipe(VQARecipe(), {"pretrain": True, "gamma": 0.0}, seed=2).gamma
    0.0
    >>> cell_recipe(VQARecipe(), {"pretrain": False, "alpha": 1.0}, seed=0)
    Traceback (most recent call last):
    ...
    ValueError: loss weights ['alpha'] without pretraining mean nothing
    """
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; a VQA cell sets {SETTINGS}")
    weights = {k: float(overrides[k]) for k in ("alpha", "beta", "gamma") if k in overrides}
    if not overrides.get("pretrain", False):
        if weights:
            raise ValueError(f"loss weights {sorted(weights)} without pretraining mean nothing")
        return None
    new = replace(recipe, seed=seed, **weights)
    if new.alpha == new.beta == new.gamma == 0:
        raise ValueError("alpha, beta and gamma are all 0: pretraining would have nothing to train on")
    return new


def history_seconds(history: list[dict], batch_size: int, unit: str) -> float:
    """Training seconds recovered from the engine's history: each logged window's steps times the
    batch, divided by that window's throughput (``{unit}_per_s``). Validation and monitor time are
    not in it.

    >>> history_seconds([{"step": 10, "images_per_s": 100.0}, {"step": 30, "images_per_s": 50.0}], 10, "images")
    5.0
    """
    seconds, last = 0.0, 0
    for row in history:
        seconds += (row["step"] - last) * batch_size / row[f"{unit}_per_s"]
        last = row["step"]
    return seconds


def retrieval_scores(pretrainer, grid: torch.Tensor, pooled: torch.Tensor, captions: torch.Tensor) -> dict:
    """Recall@1 both ways of a pretrainer's embeddings: ``n`` images against their ``n * K`` captions."""
    from ..eval.retrieval import recall_at_k
    from ..multimodal.dual_encoder import similarity_matrix

    text = captions.flatten(0, 1)  # (n * K, L): every caption
    text_image = torch.arange(len(captions)).repeat_interleave(captions.shape[1])  # caption -> its image
    return recall_at_k(similarity_matrix(pretrainer, grid, pooled, text), text_image, ks=(1,))


def vqa_task(setup: VQASetup, cache_dir: str | Path) -> Task:
    """A ``run_grid`` task that (pre)trains, fine-tunes and scores one VQA model; see the module."""
    from ..multimodal.vqa_recipe import evaluate_vqa, finetune, new_vqa_model, pretrained_for_vqa

    data = setup.data

    def task(overrides: dict, seed: int, run_dir: Path) -> dict:
        recipe = cell_recipe(setup.recipe, overrides, seed)
        start = time.perf_counter()
        metrics, pretrainer, pretrain_seconds = {}, None, 0.0
        if recipe is not None:
            pretrainer, history, _ = pretrained_for_vqa(data, recipe, setup.encoder_file, device=setup.device,
                                                        cache_dir=cache_dir, progress=False, shipped=False)
            # measured when it was trained: a cached pretrainer keeps its history, not a clock
            pretrain_seconds = history_seconds(history, recipe.pretrain_batch_size, "images")
            metrics["retrieval"] = retrieval_scores(pretrainer, *data.features["val"], setup.val_captions)
            metrics["pretrain_final_loss"] = history[-1]["loss"]
        model = new_vqa_model(data, setup.recipe, pretrainer, seed=seed)
        fine_start = time.perf_counter()
        history = finetune(model, data, setup.steps, seed, fraction=setup.share, lr=setup.lr,
                           batch_size=setup.batch_size, eval_every=max(1, setup.steps // 6), device=setup.device)
        metrics["finetune_seconds"] = time.perf_counter() - fine_start
        for split in ("val", "test", "compositional"):
            scores = evaluate_vqa(model, data, split)
            metrics[split] = {"accuracy": scores["accuracy"],
                              "per_type": {t: s["accuracy"] for t, s in scores["per_type"].items()}}
        metrics["val_curve"] = [{"step": h["step"], "val_accuracy": h["val_accuracy"]} for h in history]
        metrics["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        metrics["pretrain_params"] = sum(p.numel() for p in pretrainer.parameters()) if pretrainer else 0
        metrics["pretrain_seconds"] = pretrain_seconds
        # the compute a cell costs, pretraining included even when its weights came from the cache
        metrics["train_seconds"] = pretrain_seconds + metrics["finetune_seconds"]
        metrics["wall_seconds"] = time.perf_counter() - start
        return metrics

    return task


def shapes_setup(profile: str = "ci", steps: int | None = None, share: float = 0.1, device: str = "cpu",
                 progress: bool = False) -> VQASetup:
    """Notebook 11's data and recipe for ``profile`` (generated and encoded if need be)."""
    from ..data.shapes import ShapesConfig, ensure_shapes, shapes_split
    from ..multimodal.vqa_recipe import VQARecipe, load_shapes_vqa
    from ..profiles import get_profile
    from ..vision.pretrain import PretrainConfig, pretrained_shapes_encoder

    prof = get_profile(profile)
    sizes = prof.notebooks
    shapes_cfg = ShapesConfig.from_profile(prof, n_compositional=prof.run.data.n_compositional)
    recipe = VQARecipe(d_model=sizes.fusion_d_model, pretrain_steps=sizes.vqa_pretrain_steps)
    encoder, _, encoder_file = pretrained_shapes_encoder(shapes_cfg, PretrainConfig(d_model=recipe.d_model),
                                                         progress=progress)
    root = ensure_shapes(shapes_cfg)
    data = load_shapes_vqa(root, encoder)
    val = shapes_split(root, "val")
    by_id = val.captions_by_id()
    val_captions = torch.stack([data.vocab.encode_batch(by_id[i], data.max_words)
                                for i in data.image_ids["val"]])  # (n_val, K, L)
    return VQASetup(data, recipe, encoder_file, val_captions, steps=steps or sizes.vqa_steps, share=share,
                    device=device)


def run_vqa_grid(setup: VQASetup, out_dir: str | Path, seeds=(0, 1, 2), cells: dict | None = None,
                 progress: bool = True) -> list[dict]:
    """The strategy comparison (``STRATEGY_GRID`` by default); pretrainers are kept in out_dir/pretrained."""
    out_dir = Path(out_dir)
    return run_grid(cells or STRATEGY_GRID, seeds, vqa_task(setup, out_dir / "pretrained"), out_dir,
                    signature=setup.signature(), progress=progress)


def record(results: list[dict], path: str | Path, command: str) -> dict:
    """The small JSON notebook 13 reads: the command, the recording process's environment, the fixed
    settings, every run, the summary."""
    return write_record(path, command, results, VQA_METRICS)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Notebook 13's VQA comparison: from scratch vs pretrain -> "
                                                 "fine-tune with several loss weightings, on the shapes data.")
    parser.add_argument("--out", default="runs/vqa_grid", help="folder of the grid's runs (resumable)")
    parser.add_argument("--profile", default="ci", help="the data and model sizes (notebook 11's)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default: the profile's vqa_steps)")
    parser.add_argument("--share", type=float, default=0.1, help="share of the training questions fine-tuned on")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell: 0, 1, ...")
    parser.add_argument("--device", default="cpu", help='"cpu", "cuda" or "auto"')
    parser.add_argument("--record", default=None, help="also write the small JSON the notebook reads here")
    args = parser.parse_args(argv)
    setup = shapes_setup(args.profile, args.steps, args.share, args.device, progress=True)
    results = run_vqa_grid(setup, args.out, seeds=tuple(range(args.seeds)))
    for cell, scores in summarize(results, VQA_METRICS).items():
        print(f"{cell:34}", "  ".join(f"{m} {s['mean']:.3f}±{s['half_range']:.3f}" for m, s in scores.items()))
    if args.record:
        record(results, args.record, command_line("velm_course.experiments.vqa", argv))


if __name__ == "__main__":
    main()
