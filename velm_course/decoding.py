"""Choosing the next token: one place for every generator in the course.

A language model, recurrent or Transformer, text-only or looking at an image, ends each step
with logits over the vocabulary. How a token is picked from them is independent of the model:
greedy takes the arg-max, sampling draws from softmax(logits / temperature), optionally among
the k most likely tokens only.

Shape letters: B batch, V vocabulary.

>>> sample_next(torch.tensor([[0.0, 2.0, 1.0]]), temperature=0)
tensor([[1]])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token id per row of logits (B, V); returns (B, 1).

    ``temperature`` divides the logits: below 1 sharpens the distribution, above 1 flattens
    it, and 0 means greedy (always the most likely token). ``top_k`` samples only among the
    k most likely tokens.

    >>> sample_next(torch.tensor([[0.0, 2.0, 1.0]]), temperature=0)
    tensor([[1]])
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth_best = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)
