"""Character-level text as tensors: a vocabulary of characters, ids, and random training windows.

>>> chars = char_vocab("hello")
>>> decode_chars(encode_chars("hole", chars), chars)
'hole'
"""

from __future__ import annotations

import torch


def char_vocab(text: str) -> list[str]:
    """The sorted distinct characters of ``text``: position i is the character of id i.

    >>> char_vocab("abba!")
    ['!', 'a', 'b']
    """
    return sorted(set(text))


def encode_chars(text: str, chars: list[str]) -> torch.Tensor:
    """Ids (N,) int64 of every character of ``text`` under the vocabulary ``chars``.

    >>> encode_chars("bab", ["a", "b"])
    tensor([1, 0, 1])
    """
    index = {ch: i for i, ch in enumerate(chars)}
    missing = sorted(set(text) - index.keys())
    if missing:
        raise ValueError(f"characters {missing[:10]} are not in the vocabulary")
    return torch.tensor([index[ch] for ch in text], dtype=torch.long)


def decode_chars(ids: torch.Tensor | list[int], chars: list[str]) -> str:
    """The text of a 1-D sequence of ids; inverse of :func:`encode_chars`.

    >>> decode_chars(torch.tensor([1, 0, 1]), ["a", "b"])
    'bab'
    """
    return "".join(chars[i] for i in torch.as_tensor(ids).tolist())


def random_windows(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows of ``data`` (N,): inputs x (B, T) and targets y = x shifted by one.

    >>> x, y = random_windows(torch.arange(10), 2, 3, torch.Generator().manual_seed(0))
    >>> bool((y == x + 1).all())
    True
    """
    if data.dim() != 1 or len(data) <= block_size:
        raise ValueError(f"need a 1-D sequence longer than block_size={block_size}, got shape {tuple(data.shape)}")
    starts = torch.randint(0, len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = starts[:, None] + torch.arange(block_size)  # (B, T)
    return data[offsets], data[offsets + 1]


def window_batches(data: torch.Tensor, batch_size: int, block_size: int, seed: int, grad_accum: int = 1):
    """``batches(start_step)`` for the training engine: random windows of ``data`` (N,), as
    {"idx": (B, T), "targets": (B, T)}, ``grad_accum`` micro-batches per optimizer step. The
    windows of micro-batch m come from a generator seeded with (seed, m), so a resumed run
    reads the same windows as an uninterrupted one.

    >>> batches = window_batches(torch.arange(100), batch_size=2, block_size=4, seed=0)
    >>> first = next(iter(batches(5)))
    >>> bool((first["targets"] == first["idx"] + 1).all())
    True
    """
    def batches(start_step: int):
        micro = start_step * grad_accum
        while True:
            g = torch.Generator().manual_seed(seed * 1_000_003 + micro)
            x, y = random_windows(data, batch_size, block_size, g)
            yield {"idx": x, "targets": y}
            micro += 1
    return batches
