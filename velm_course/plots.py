"""Figures the training run writes: the loss curve and a grid of captioned test images."""

from __future__ import annotations

from pathlib import Path

import torch


def plot_loss_curves(histories: dict[str, list[dict]], path: Path | None = None):
    """Training loss (a mean over each logging window) and, where measured, validation loss
    (dashed), one colour per run; saved to ``path`` if given. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, history) in enumerate(histories.items()):
        colour = f"C{i}"
        train = [h for h in history if "loss" in h]
        ax.plot([h["step"] for h in train], [h["loss"] for h in train], color=colour, label=f"{name} (train)")
        val = [h for h in history if "val_loss" in h]
        if val:
            # markers, so a run validated once (at its end) still shows its point
            ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "--o", color=colour, markersize=4,
                    label=f"{name} (validation)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy per token (nats)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_caption_grid(
    images: torch.Tensor,
    generated: list[str],
    references: list[list[str]],
    path: Path | None = None,
    cols: int = 4,
):
    """Images (n, 3, H, W) uint8 with the generated caption and one reference under each."""
    import textwrap

    import matplotlib.pyplot as plt

    n = images.shape[0]
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i].permute(1, 2, 0).numpy())  # (H, W, 3) for matplotlib
        gen = textwrap.fill(f"model: {generated[i]}", 34)
        ref = textwrap.fill(f"ref: {references[i][0]}", 34)
        ax.set_title(f"{gen}\n{ref}", fontsize=8, loc="left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_seed_architecture(path: Path | None = None):
    """The course's running diagram: two encoders, a fusion layer, an output layer."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    boxes = {  # name: (x, y, colour) of each box's centre, in axes units
        "text input": (0.1, 0.72, "#dbe9f6"),
        "image input": (0.1, 0.28, "#fde2cf"),
        "language encoder\n(n-gram → RNN → GPT/BERT)": (0.36, 0.72, "#9ecae1"),
        "vision encoder\n(CNN/ResNet → ViT)": (0.36, 0.28, "#fdae6b"),
        "fusion layer\n(concat · prefix ·\ncross-attention)": (0.64, 0.5, "#c7e9c0"),
        "output layer\n(next word · answer ·\nmatch score)": (0.89, 0.5, "#d9d9d9"),
    }
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(0.1, 0.9)
    ax.axis("off")
    for label, (x, y, colour) in boxes.items():
        ax.add_patch(FancyBboxPatch((x - 0.095, y - 0.13), 0.19, 0.26, boxstyle="round,pad=0.01",
                                    facecolor=colour, edgecolor="black", linewidth=1))
        ax.text(x, y, label, ha="center", va="center", fontsize=9)
    names = list(boxes)
    for a, b in [(0, 2), (1, 3), (2, 4), (3, 4), (4, 5)]:
        (xa, ya, _), (xb, yb, _) = boxes[names[a]], boxes[names[b]]
        ax.add_patch(FancyArrowPatch((xa + 0.1, ya), (xb - 0.1, yb), arrowstyle="-|>", mutation_scale=14))
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
