"""From a dataset to training batches: a resumable seeded sampler and the caption batches.

The order in which a run sees its examples is a function of (seed, step) only: epoch e is
the permutation ``randperm(n)`` drawn from a generator seeded with (seed, e), the epochs are
laid end to end, and optimizer step s with global batch G reads positions [s G, (s + 1) G)
of that stream. So a run resumed at step s sees exactly what the uninterrupted run saw, with
nothing to save but the step; and under DDP rank r of R takes the r-th slice of each global
batch, so R processes with batch G / R see the same examples as one process with batch G.

Shape letters: B batch, L padded caption length, H/W image side.

>>> list(ResumableBatchSampler(n=4, batch_size=2, seed=0, steps=2))
[[0, 1], [3, 2]]
>>> list(ResumableBatchSampler(n=4, batch_size=2, seed=0, steps=2, start_step=1))
[[3, 2]]
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .captions import CaptionVocab, caption_targets


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Index batches for one process, from micro-step ``start_step * grad_accum`` on."""

    def __init__(self, n: int, batch_size: int, seed: int, steps: int, start_step: int = 0,
                 grad_accum: int = 1, rank: int = 0, world_size: int = 1):
        if n < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        if batch_size < 1 or grad_accum < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError("batch_size, grad_accum and world_size must be >= 1, and 0 <= rank < world_size")
        self.n, self.b, self.seed = n, batch_size, seed
        self.first, self.last = start_step * grad_accum, steps * grad_accum  # micro-steps
        self.rank, self.world = rank, world_size
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def batch_at(self, micro_step: int) -> list[int]:
        G = self.b * self.world  # global micro-batch
        start = micro_step * G + self.rank * self.b  # this rank's slice of the stream
        out = []
        for pos in range(start, start + self.b):
            epoch, offset = divmod(pos, self.n)
            out.append(int(self._permutation(epoch)[offset]))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for m in range(self.first, self.last):
            yield self.batch_at(m)

    def __len__(self) -> int:
        return self.last - self.first


class CaptionPairs(Dataset):
    """Every (image, reference caption) pair of a captions dataset as one training example.

    An epoch sees each caption once. Images are uint8; with ``in_memory`` every image is
    decoded once up front (a small dataset's decode then costs nothing per step).
    ``transform`` (a torchvision ``transforms.v2`` pipeline, or any function of a uint8
    (3, H, W) tensor that returns one of the same size) runs on every example as it is read:
    augmentation belongs here, on the worker processes, not in the training step. Mind that a
    horizontal flip swaps "left" and "right" in the captions (see ``vision.transforms``).

    ``tokens`` gives each image's captions already tokenised, by image id ((K, max_words + 2)
    each, from a cache such as ``CaptionData.caption_tokens`` for COCO); without it the
    captions are tokenised here.

    With ``rows`` (one row number per image of ``dataset``, (n,) int64), an example carries its
    image's row in a feature cache instead of the picture: nothing is decoded, and the model's
    encoder (``CachedFeatures``, ``MappedFeatures``) looks the features up.
    """

    def __init__(self, dataset, vocab: CaptionVocab, max_words: int, in_memory: bool = False,
                 progress: bool = False, transform=None, rows: torch.Tensor | None = None,
                 tokens: dict[int, torch.Tensor] | None = None):
        self.dataset, self.vocab, self.max_words = dataset, vocab, max_words
        self.transform = transform
        if tokens is None:  # tokenise here: each image's captions (K, L)
            by_id = dataset.captions_by_id()
            self.tokens = [vocab.encode_batch(by_id[i], max_words) for i in dataset.image_ids]
        else:  # tokenised before (and cached) by the dataset, by image id
            self.tokens = [tokens[i] for i in dataset.image_ids]
            if self.tokens and self.tokens[0].shape[1] != max_words + 2:
                raise ValueError(f"the given tokens have {self.tokens[0].shape[1]} ids per caption, "
                                 f"not max_words + 2 = {max_words + 2}")
        self.pairs = [(i, k) for i, t in enumerate(self.tokens) for k in range(len(t))]
        self.images = None
        self.rows = rows
        if rows is not None:
            if rows.shape != (len(self.tokens),) or rows.dtype != torch.int64:
                raise ValueError(f"rows must be (n,) int64 with one row per image ({len(self.tokens)}), "
                                 f"got {rows.dtype} of shape {tuple(rows.shape)}")
            if transform is not None:
                raise ValueError("a transform changes pixels; cached features have none to change")
        elif in_memory:
            from tqdm.auto import tqdm

            self.images = torch.stack([dataset.get_uint8(i)[0] for i in tqdm(
                range(len(dataset)), desc="decoding images", disable=not progress, leave=False)])

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, j: int) -> dict:
        i, k = self.pairs[j]
        if self.rows is not None:
            return {"image": self.rows[i], "tokens": self.tokens[i][k]}  # a row number, ()
        image = self.images[i] if self.images is not None else self.dataset.get_uint8(i)[0]
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "tokens": self.tokens[i][k]}


def collate_captions(items: list[dict]) -> dict:
    """Stack examples into a batch: images (B, 3, H, W) uint8 (or row numbers (B,) into cached
    features), idx and targets (B, L - 1)."""
    idx, targets = caption_targets(torch.stack([it["tokens"] for it in items]))  # (B, L - 1) each
    return {"images": torch.stack([it["image"] for it in items]), "idx": idx, "targets": targets}


def batch_loader(dataset: Dataset, collate, batch_size: int, seed: int, steps: int, grad_accum: int = 1,
                 num_workers: int = 0, pin_memory: bool = False):
    """``batches(start_step)`` for the engine: a DataLoader over a resumable sampler.

    Worker processes decode in parallel; pinned memory lets the copy to a GPU overlap with
    compute. The loader's own generator (seeded per start step) keeps it from drawing on the
    global random state, which belongs to dropout.
    """
    from ..engine import distributed

    def batches(start_step: int):
        dist = distributed.info()
        sampler = ResumableBatchSampler(len(dataset), batch_size, seed, steps, start_step, grad_accum,
                                        dist.rank, dist.world_size)
        return iter(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                               pin_memory=pin_memory, persistent_workers=False,
                               generator=torch.Generator().manual_seed(seed + start_step)))
    return batches


def tensor_batches(tensors: dict[str, torch.Tensor], batch_size: int, seed: int, steps: int,
                   grad_accum: int = 1):
    """``batches(start_step)`` over tensors held in memory (same first dimension), e.g. a
    classifier's examples and labels.

    >>> batches = tensor_batches({"x": torch.arange(6)}, batch_size=2, seed=0, steps=3)
    >>> sorted(torch.cat([b["x"] for b in batches(0)]).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    lengths = {len(t) for t in tensors.values()}
    if len(lengths) != 1:
        raise ValueError(f"tensors must have the same length, got {sorted(lengths)}")
    size = lengths.pop()
    from ..engine import distributed

    def batches(start_step: int):
        dist = distributed.info()
        sampler = ResumableBatchSampler(size, batch_size, seed, steps, start_step, grad_accum, dist.rank,
                                        dist.world_size)
        for rows in sampler:
            rows = torch.tensor(rows)
            yield {k: t[rows] for k, t in tensors.items()}
    return batches
