"""Seeded comparisons behind two claims of the vision chapters, with learning curves.

- ``depth_ablation`` (notebook 05): plain and residual stacks of growing depth, trained alike.
  The claim it tests: without skip connections a deeper network trains *worse*.
- ``augmentation_ablation`` (notebook 06): the same classifier with and without an augmentation,
  measured on test sets that differ from the training data. The claim: augmentation pays off
  when the test images vary in a way the training images do not, and the augmentation covers it.

Every run is one call of ``classifier_history``: the same budget (steps, batch size, learning
rate) for every variant, the same batch order for the same seed, and an accuracy measured on
each evaluation set every ``eval_every`` steps, and on each final set (a test set) once, at the
end. Both functions return long-format rows (one per
run and measured step), ready for ``pandas.DataFrame``; ``final_scores`` reduces them to a mean and
a spread over seeds.

>>> rows = [{"variant": "a", "seed": s, "step": 2, "acc_val": v} for s, v in ((0, 0.5), (1, 0.7))]
>>> final_scores(rows, ["acc_val"])
{'a': {'acc_val': (0.6, 0.1)}}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

EvalSets = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _runs(
    variants: dict[str, Callable[[int], tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]],
    seeds: Sequence[int], eval_sets: EvalSets, eval_every: int, final_sets: EvalSets | None, batch_size: int,
    lr: float, progress: bool,
) -> list[dict]:
    """Train every variant once per seed; ``variants[name](seed)`` builds (model, x, y) for one run."""
    from tqdm.auto import tqdm

    from .small_cnn import classifier_history

    rows = []
    jobs = [(seed, name) for seed in seeds for name in variants]
    for seed, name in tqdm(jobs, desc="runs", disable=not progress):
        torch.manual_seed(seed)  # the initial weights of this seed, the same for every variant
        model, x, y = variants[name](seed)
        history = classifier_history(model, x, y, epochs=1, batch_size=batch_size, lr=lr, seed=seed,
                                     eval_sets=eval_sets, eval_every=eval_every, final_sets=final_sets,
                                     progress=False)
        rows += [{"variant": name, "seed": seed, **row} for row in history]
    return rows


def final_scores(rows: list[dict], metrics: Sequence[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{variant: {metric: (mean, std)}}`` over seeds, at each run's last measured step.

    The spread is the population standard deviation of the per-seed values (0 for one seed),
    as ``experiments.grid.summarize`` computes it.
    """
    from ..experiments.grid import summarize

    last: dict[tuple[str, int], dict] = {}
    for row in rows:
        if all(m in row for m in metrics):
            key = (row["variant"], row["seed"])
            if key not in last or row["step"] > last[key]["step"]:
                last[key] = row
    runs = [{"cell": variant, "seed": seed, "metrics": row} for (variant, seed), row in last.items()]
    return {variant: {m: (s["mean"], s["std"]) for m, s in scores.items()}
            for variant, scores in summarize(runs, metrics).items()}


def depth_ablation(
    x: torch.Tensor, y: torch.Tensor, eval_sets: EvalSets, blocks: Sequence[int] = (4, 16),
    seeds: Sequence[int] = (0, 1, 2), epochs: int = 2, batch_size: int = 64, lr: float = 3e-3,
    eval_every: int = 8, width: int = 16, final_sets: EvalSets | None = None, progress: bool = True,
) -> list[dict]:
    """Plain and residual ``ConvStack``s with each number of ``blocks``, every seed, one budget.

    ``x`` (N, 3, H, W) are normalised images, ``y`` (N,) their classes. Rows carry ``variant``
    ("plain, 10 layers"), ``layers``, ``residual``, ``seed``, ``step``, ``loss`` (the training
    loss of that step) and, every ``eval_every`` steps, ``acc_<name>`` for each evaluation set (and at
    the last step for each of ``final_sets``).

    >>> x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 2
    >>> rows = depth_ablation(x, y, {"train": (x, y)}, blocks=(1,), seeds=(0,), epochs=1, batch_size=8,
    ...                       eval_every=1, width=4, progress=False)
    >>> sorted({r["variant"] for r in rows}), len(rows)
    (['plain, 4 layers', 'residual, 4 layers'], 4)
    """
    from .resnet import ConvStack, ConvStackConfig

    num_classes = int(y.max()) + 1
    repeats = (x.repeat(epochs, 1, 1, 1), y.repeat(epochs))  # the same examples, `epochs` times

    def build(n_blocks: int, residual: bool):
        return lambda seed: (ConvStack(ConvStackConfig(num_classes, n_blocks, residual, width)), *repeats)

    variants, meta = {}, {}
    for n_blocks in blocks:
        for residual in (False, True):
            name = f"{'residual' if residual else 'plain'}, {2 * n_blocks + 2} layers"
            variants[name], meta[name] = build(n_blocks, residual), (2 * n_blocks + 2, residual)
    rows = _runs(variants, seeds, eval_sets, eval_every, final_sets, batch_size, lr, progress)
    for row in rows:
        row["layers"], row["residual"] = meta[row["variant"]]
    return rows


def augmentation_ablation(
    x: torch.Tensor, y: torch.Tensor, eval_sets: EvalSets,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    normalize: Callable[[torch.Tensor], torch.Tensor], num_classes: int, seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 20, batch_size: int = 32, lr: float = 3e-3, eval_every: int = 10,
    model_factory: Callable[[int], torch.nn.Module] | None = None, final_sets: EvalSets | None = None,
    progress: bool = True,
) -> list[dict]:
    """One classifier trained with and without ``augment``, every seed, the same steps and batches.

    ``x`` (N, 3, H, W) are images in [0, 1]. The augmented run sees a fresh random view of every
    image in every one of ``epochs`` passes (``augment(x, generator)``, drawn up front from a
    generator seeded per run); the plain run sees the same images as often, unchanged. Both then
    take the same steps over sets of the same size, in the same order: only the augmentation
    differs. ``normalize`` applies to the training images (the evaluation sets come normalised).
    The model is a ``SmallCNN`` unless ``model_factory(num_classes)`` builds another.
    Rows carry ``variant`` ("no augmentation" or "augmentation"), ``seed``, ``step``, ``loss``
    and, every ``eval_every`` steps, ``acc_<name>`` (and at the last step for ``final_sets``).

    >>> x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 2
    >>> flip = lambda images, g: images.flip(-1)
    >>> rows = augmentation_ablation(x, y, {"train": (x, y)}, flip, lambda t: t, 2, seeds=(0,), epochs=2,
    ...                              batch_size=4, eval_every=2, progress=False)
    >>> [(r["variant"], r["step"]) for r in rows if "acc_train" in r]
    [('no augmentation', 2), ('no augmentation', 4), ('augmentation', 2), ('augmentation', 4)]
    """
    from .small_cnn import SmallCNN, SmallCNNConfig

    def make_model() -> torch.nn.Module:
        if model_factory is not None:
            return model_factory(num_classes)
        return SmallCNN(SmallCNNConfig(num_classes=num_classes, widths=(16, 32, 64)))

    labels = y.repeat(epochs)
    plain = normalize(x.repeat(epochs, 1, 1, 1))  # the same images as often, unaugmented

    def unaugmented(seed: int):
        return make_model(), plain, labels

    def augmented(seed: int):
        model = make_model()  # first, so both variants of a seed start from the same weights
        g = torch.Generator().manual_seed(seed)  # the views of this seed, whatever ran before
        return model, normalize(torch.cat([augment(x, g) for _ in range(epochs)])), labels

    return _runs({"no augmentation": unaugmented, "augmentation": augmented}, seeds, eval_sets, eval_every,
                 final_sets, batch_size, lr, progress)
