"""A small CNN classifier for 64 px images, and the tools to read its predictions.

Shape letters: B batch, C channels, H/W image side, h/w feature-map side, K classes.

>>> SmallCNN(SmallCNNConfig(num_classes=4))(torch.randn(2, 3, 64, 64)).shape
torch.Size([2, 4])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# A small CNN classifier for 64x64 images


@dataclass
class SmallCNNConfig:
    num_classes: int = 10  # outputs of the linear head
    in_channels: int = 3  # RGB
    widths: tuple[int, ...] = (32, 64, 128)  # channels per stage; each stage halves H and W
    convs_per_stage: int = 2  # conv-BN-ReLU layers per stage
    dropout: float = 0.1  # dropout before the linear head


class SmallCNN(nn.Module):
    """A few stages of (conv3x3-BN-ReLU) x n followed by a 2x2 max-pool, then pool + linear.

    For 64x64 inputs with three stages the last map is 8x8: each unit sees a good part of
    the image, enough to tell a shape's colour, kind and size.

    >>> SmallCNN(SmallCNNConfig(num_classes=4))(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 4])
    """

    def __init__(self, config: SmallCNNConfig):
        super().__init__()
        if not config.widths or config.convs_per_stage < 1 or config.num_classes < 1:
            raise ValueError("need at least one stage, one conv per stage and one class")
        self.config = config
        layers: list[nn.Module] = []
        c = config.in_channels
        for width in config.widths:
            for _ in range(config.convs_per_stage):
                # no conv bias: the BN right after has its own shift
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                c = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.out_channels = c
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(c, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, h, w), with h = H / 2**len(widths)."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected (B, {self.config.in_channels}, H, W) images, got {tuple(x.shape)}"
            )
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean(dim=(2, 3))  # (B, C): global average pool
        return self.head(self.dropout(x))  # (B, num_classes)



@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The arg-max class of every example, in eval mode, in batches: (N,) long."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)])


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``m[i, j]`` = how many examples of true class i were predicted as class j.

    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    y_true, y_pred = torch.as_tensor(y_true).long(), torch.as_tensor(y_pred).long()
    if y_true.shape != y_pred.shape or y_true.dim() != 1:
        raise ValueError("y_true and y_pred must be 1-D and of the same length")
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    # each (true, pred) pair is one cell of a K x K grid, numbered true * K + pred
    counts = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes**2)
    return counts.view(num_classes, num_classes)  # (K, K)


def classifier_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of a batch {"x": (B, ...), "y": (B,)} and its size, for the engine."""
    return F.cross_entropy(model(batch["x"]), batch["y"], reduction="sum"), torch.tensor(len(batch["y"]))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """The share of examples whose predicted class (``predict``, eval mode) is the label.

    >>> accuracy(nn.Linear(2, 2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    Traceback (most recent call last):
    ...
    ValueError: need at least one example and one label per example, got 0 and 0
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need at least one example and one label per example, got {len(x)} and {len(y)}")
    return (predict(model, x, batch_size) == y.to(x.device)).float().mean().item()


def classifier_history(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 3, batch_size: int = 64,
    lr: float = 3e-3, seed: int = 0, eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    eval_every: int = 0, final_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Minibatch AdamW on cross-entropy with a cosine learning-rate decay, through the training
    engine (``velm_course.engine.fit``); returns the engine's history, one row per step.

    Each row has the step's ``"loss"``. With ``eval_sets={name: (x, y)}`` and ``eval_every=k``,
    every k-th row (and the last) also has ``"acc_<name>"``, the accuracy on that set: a learning
    curve. ``final_sets`` are measured once, at the last step (a test set that must not steer
    anything during training). Measuring switches the model to eval mode and back and draws no random numbers, so
    the training run is the same with or without it. The batch order is a function of ``seed``,
    so a run is repeatable (seed torch too, before building the model, for the same initial
    weights). The model trains where ``x`` lives.
    """
    from ..data.loader import tensor_batches
    from ..engine import TrainConfig, fit

    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as examples (and at least one), got {len(x)} and {len(y)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if eval_sets and eval_every < 1:
        raise ValueError("eval_sets need eval_every >= 1 (measure every that many steps)")
    steps = epochs * math.ceil(len(x) / batch_size)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=0, min_lr_ratio=0.0, weight_decay=1e-4,
                      grad_clip=0.0, seed=seed, device=str(x.device), log_every=1, checkpoint_every=0)

    def measure(m: nn.Module, step: int) -> dict:
        sets = dict(eval_sets or {}) if eval_sets and (step % eval_every == 0 or step == steps) else {}
        if step == steps:
            sets.update(final_sets or {})
        if not sets:
            return {}
        was_training = m.training
        scores = {f"acc_{name}": accuracy(m, ex, ey) for name, (ex, ey) in sets.items()}
        m.train(was_training)  # predict() switched to eval mode; the engine expects it as it was
        return scores

    return fit(model, classifier_loss, tensor_batches({"x": x, "y": y}, batch_size, seed, steps), cfg,
               progress=progress, unit="images", monitor=measure)


def train_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 3, batch_size: int = 64,
    lr: float = 3e-3, seed: int = 0, progress: bool = True,
) -> list[float]:
    """``classifier_history`` without measurements; returns the loss of every step.

    The batch order is a function of ``seed``, so a run is repeatable (seed torch too, before
    building the model, for the same initial weights). The model trains where ``x`` lives.
    """
    history = classifier_history(model, x, y, epochs, batch_size, lr, seed, progress=progress)
    return [h["loss"] for h in history]
