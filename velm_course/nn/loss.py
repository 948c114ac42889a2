"""The token cross-entropy every language model and captioner shares, with one ignore index.

Positions that carry no loss (padding after a caption's end, tokens BERT did not mask) get
the label ``IGNORE_INDEX``. It is named here once, and every model and data path uses it.

Shape letters: B batch, T time steps, V vocabulary.

>>> logits = torch.zeros(1, 2, 4)
>>> round(lm_loss(logits, torch.tensor([[1, IGNORE_INDEX]])).item(), 4)  # ln 4 over one token
1.3863
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of positions that carry no loss (F.cross_entropy's default)


def lm_loss(
    logits: torch.Tensor, targets: torch.Tensor | None, reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor | None:
    """Cross-entropy of logits (B, T, V) against targets (B, T), ignoring ``IGNORE_INDEX``.

    ``reduction="sum"`` gives the summed loss, for averaging over a count of tokens that
    spans several batches (gradient accumulation, several processes). ``label_smoothing`` = ε
    trains against (1 - ε) on the target plus ε spread evenly over the whole vocabulary, so
    the model is never pushed to infinite confidence; it is not a likelihood any more, so
    report held-out loss without it.
    """
    if targets is None:
        return None
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction, label_smoothing=label_smoothing)


def check_token_ids(idx: torch.Tensor, vocab_size: int | None = None, max_len: int | None = None,
                    past: int = 0, max_len_name: str = "max_len") -> None:
    """Raise a clear error unless idx is a (B, T) int64 tensor of ids < vocab_size and, after
    ``past`` tokens already cached, fits ``max_len`` (the model's setting ``max_len_name``).

    >>> check_token_ids(torch.zeros(1, 5, dtype=torch.long), max_len=4, max_len_name="block_size")
    Traceback (most recent call last):
    ...
    ValueError: context of 5 tokens is longer than block_size=4: the model has no position embedding beyond that; crop to the last 4 tokens
    """
    if idx.dim() != 2 or idx.dtype != torch.long:
        raise ValueError(f"idx must be a (B, T) tensor of token ids (int64), got {idx.dtype} {tuple(idx.shape)}")
    # the ids' values only on the CPU: on a GPU, reading them back would make the host wait for
    # the device at every step; an id out of range there still stops the run (CUDA's device-side
    # assert in the embedding lookup), with a less friendly message
    if (vocab_size is not None and idx.numel() and idx.device.type == "cpu"
            and (idx.min() < 0 or idx.max() >= vocab_size)):
        raise ValueError(f"idx holds ids outside [0, {vocab_size})")
    if max_len is not None and past + idx.shape[1] > max_len:
        raise ValueError(
            f"context of {past + idx.shape[1]} tokens is longer than {max_len_name}={max_len}: the model has no "
            f"position embedding beyond that; crop to the last {max_len} tokens"
        )


def lm_objective(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The training engine's loss for any LM with ``forward(idx, targets=None)``: the summed
    cross-entropy of batch {"idx": (B, T), "targets": (B, T)} and the number of scored tokens."""
    logits, _ = model(batch["idx"])
    targets = batch["targets"]
    return lm_loss(logits, targets, reduction="sum"), (targets != IGNORE_INDEX).sum()
