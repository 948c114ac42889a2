"""Training a captioner: teacher forcing, AdamW, warm-up + cosine schedule, resumable checkpoints.

The loop is written to be interrupted. Every ``checkpoint_every`` steps it saves the model,
the optimiser, the step and the loss history to one file (written to a temporary name and
renamed, so a crash mid-write never leaves a broken checkpoint). Batches are drawn from a
generator seeded by (seed, step), not from a stream, so a resumed run sees exactly the
batches the uninterrupted run would have seen and ends with the same weights.

Shape letters: B batch, K references per image, L padded caption length, H/W image side.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .vocab import CaptionVocab


@dataclass
class TrainConfig:
    steps: int = 1200  # optimizer steps
    batch_size: int = 64  # images per step; one of each image's references is drawn at random
    lr: float = 2e-3  # peak learning rate
    warmup: int = 100  # steps of linear warm-up from 0 to lr
    min_lr_ratio: float = 0.05  # the cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.01  # AdamW decoupled weight decay (matrices only)
    grad_clip: float = 1.0  # max global gradient norm
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: only at the end)
    seed: int = 0  # seeds initialisation and batch sampling
    device: str = "cpu"  # "cpu" or "cuda"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CaptionTensors:
    """A split held in memory: uint8 images and every image's reference captions as ids."""

    images: torch.Tensor  # (n, 3, H, W) uint8
    tokens: torch.Tensor  # (n, K, L) long: <bos> words <eos> <pad>...
    captions: list[list[str]]  # the K references of each image, as text
    image_ids: list[int]  # dataset ids, in the same order

    @classmethod
    def from_dataset(
        cls, dataset, vocab: CaptionVocab, max_words: int | None = None, progress: bool = False
    ) -> CaptionTensors:
        """Decode every image once (small datasets only: the shapes data is a few MB).

        ``max_words`` defaults to the longest caption in the split.
        """
        from tqdm.auto import tqdm

        images, captions = [], []
        for i in tqdm(range(len(dataset)), desc="loading images", disable=not progress, leave=False):
            image, refs = dataset[i]
            images.append((image * 255).round().to(torch.uint8))  # (3, H, W)
            captions.append(list(refs))
        k = min(len(c) for c in captions)
        max_words = max_words or max(len(c.split()) for refs in captions for c in refs)
        tokens = torch.stack([vocab.encode_batch(c[:k], max_words) for c in captions])  # (n, K, L)
        return cls(torch.stack(images), tokens, captions, list(dataset.image_ids))

    def __len__(self) -> int:
        return self.images.shape[0]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``lr * min_lr_ratio``.

    >>> cfg = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.0)
    >>> lr_at(0, cfg), lr_at(10, cfg), round(lr_at(55, cfg), 3), lr_at(100, cfg)
    (0.1, 1.0, 0.5, 0.0)
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def sample_batch(data: CaptionTensors, step: int, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) float in [0, 1] and one reference (B, L) per image, fixed by (seed, step)."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    rows = torch.randint(len(data), (cfg.batch_size,), generator=g)  # (B,)
    refs = torch.randint(data.tokens.shape[1], (cfg.batch_size,), generator=g)  # (B,)
    images = data.images[rows].float().div_(255)
    return images, data.tokens[rows, refs]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # decay matrices (linear and conv weights) but not biases, norms or embeddings' gains:
    # shrinking a LayerNorm gain towards 0 only fights the normalisation
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))


def save_checkpoint(path: Path, **state) -> None:
    """torch.save to a temporary file, then an atomic rename over the old checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_captioner(
    model: torch.nn.Module,
    data: CaptionTensors,
    cfg: TrainConfig,
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str = "training",
) -> list[dict]:
    """Train ``model`` for ``cfg.steps`` steps; returns the history [{step, loss, lr}, ...].

    With ``checkpoint`` set, training resumes from that file when it exists and saves to it
    every ``cfg.checkpoint_every`` steps and at the end. A finished checkpoint makes this a
    no-op that just loads the weights.
    """
    from tqdm.auto import tqdm

    device = torch.device(cfg.device)
    model.to(device)
    # channels_last lets the CPU (oneDNN) and GPU (cuDNN) convolution kernels skip layout
    # conversions: about 10% off a whole training step on 2 CPU cores (benchmarks/RESULTS.md)
    model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    history: list[dict] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])  # dropout masks continue where they stopped
        start, history = state["step"], state["history"]

    def save(step: int) -> None:
        if checkpoint is not None:
            save_checkpoint(
                checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                step=step, history=history, torch_rng=torch.get_rng_state(), train_config=cfg.to_dict(),
            )

    model.train()
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not progress, initial=start, total=cfg.steps)
    done = start
    try:
        for step in bar:
            images, tokens = sample_batch(data, step, cfg)
            images = images.to(device, memory_format=torch.channels_last)
            tokens = tokens.to(device)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            _, loss = model(images, tokens[:, :-1], tokens[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            done = step + 1
            history.append({"step": done, "loss": loss.item(), "lr": lr})
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                save(done)
    except KeyboardInterrupt:
        save(done)  # Ctrl-C loses nothing: the run resumes from the last finished step
        raise
    bar.close()
    if start < cfg.steps:
        save(cfg.steps)
    model.eval()
    return history
