"""Retrieval scores: Recall@K for image->text and text->image search, and its chance level.

A model that embeds images and captions in one space can search: for an image, sort every
caption by similarity; for a caption, sort every image. Recall@K is the share of queries
whose right answer is among the first K results:

- image -> text: an image usually has several captions (five in COCO and in the shapes
  data). It counts as retrieved at K when ANY of its captions is in its top K, the usual
  COCO protocol. So the first of its captions to appear is what matters.
- text -> image: a caption counts when its own image is in its top K.

Ties are ranked pessimistically: a wrong item with exactly the score of the right one is
put above it. Then a model that gives every pair the same score (a collapsed embedding) gets
the worst possible recall, never a perfect one, as it would if ties were broken in its
favour. In practice: the right answer's rank is 1 + the number of wrong items scoring at
least as high as the best right one, and it is found within K when that number is < K.

K larger than the number of candidates is clipped to it (the key keeps the K asked for):
with K >= N every query succeeds, as it does for a random ranking (``chance_recall`` = 1).

``chance_recall`` is the recall a random ranking gets on average, the baseline a model
must beat: with n candidates of which p are right, the chance that none of the p is among
K drawn without replacement is C(n - p, K) / C(n, K) (hypergeometric), so

    chance = 1 - C(n - p, K) / C(n, K)       (p = 1: K / n)

Shape letters: N_img images, N_txt captions.

>>> sim = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.1, 0.7]])  # image 0 has captions 0 and 1
>>> recall_at_k(sim, torch.tensor([0, 0, 1]), ks=(1,))
{'i2t_R@1': 1.0, 't2i_R@1': 1.0}
>>> chance_recall(n_candidates=3, n_positive=2, k=1)
0.6666666666666666
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def _check_ks(ks: Iterable[int]) -> list[int]:
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty: ask for at least one K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every K must be an int >= 1, got {k!r}")
    return ks


def recall_at_k(
    sim: torch.Tensor, text_image: torch.Tensor, ks: Iterable[int] = (1, 5, 10)
) -> dict[str, float]:
    """{"i2t_R@K": ..., "t2i_R@K": ... for K in ks}: shares in [0, 1] (see the module text).

    sim (N_img, N_txt): similarity of every image to every caption, higher = more alike.
    text_image (N_txt,) int64: the index of the image each caption belongs to; every image
    must have at least one caption. Ties count against the model; K is clipped to the number
    of candidates (N_txt for image->text, N_img for text->image).
    """
    ks = _check_ks(ks)
    if not isinstance(sim, torch.Tensor) or sim.dim() != 2:
        shape = tuple(sim.shape) if isinstance(sim, torch.Tensor) else type(sim).__name__
        raise ValueError(f"sim must be a (N_img, N_txt) matrix, got {shape}")
    n_img, n_txt = sim.shape
    if n_img == 0 or n_txt == 0:
        raise ValueError(f"empty batch: sim is {tuple(sim.shape)}")
    if bool(torch.isnan(sim).any()):
        raise ValueError("sim holds NaN: a NaN compares false with everything and would rank "
                         "arbitrarily")
    if (not isinstance(text_image, torch.Tensor) or text_image.dim() != 1
            or text_image.dtype != torch.long):
        raise ValueError("text_image must be a 1-D int64 tensor: the image index of each caption")
    if text_image.shape[0] != n_txt:
        raise ValueError(f"text_image has {text_image.shape[0]} entries but sim has {n_txt} "
                         "columns (captions)")
    text_image = text_image.to(sim.device)
    if bool((text_image < 0).any()) or bool((text_image >= n_img).any()):
        raise ValueError(f"text_image holds image indices outside [0, {n_img})")
    captions_per_image = torch.bincount(text_image, minlength=n_img)  # (N_img,)
    if bool((captions_per_image == 0).any()):
        image = int((captions_per_image == 0).nonzero()[0])
        raise ValueError(f"image {image} has no caption: image->text recall is undefined for it")

    images = torch.arange(n_img, device=sim.device)  # (N_img,)
    positive = text_image[None, :] == images[:, None]  # (N_img, N_txt) caption t is image i's
    # image -> text: wrong captions scoring at least as high as the image's best right caption
    best = sim.masked_fill(~positive, float("-inf")).amax(dim=1)  # (N_img,)
    i2t_above = ((sim >= best[:, None]) & ~positive).sum(dim=1)  # (N_img,)
    # text -> image: wrong images scoring at least as high as the caption's own image
    own = sim.gather(0, text_image[None, :]).squeeze(0)  # (1, N_txt) -> (N_txt,)
    t2i_above = ((sim >= own[None, :]) & ~positive).sum(dim=0)  # (N_txt,)

    # with 0-based counts, "found within K" is count < K; K beyond N needs no special case
    # (count <= N - 1 < K), which is the clipping
    scores = {}
    for k in ks:
        scores[f"i2t_R@{k}"] = (i2t_above < k).double().mean().item()
    for k in ks:
        scores[f"t2i_R@{k}"] = (t2i_above < k).double().mean().item()
    return scores


def chance_recall(n_candidates: int, n_positive: int, k: int) -> float:
    """Expected Recall@K of a uniformly random ranking: 1 - C(n - p, k) / C(n, k).

    n_candidates n: items ranked; n_positive p: how many of them are right (p captions per
    image for image->text, 1 for text->image); k is clipped to n, as in ``recall_at_k``.

    >>> chance_recall(1000, 1, 10)  # one right answer: k / n
    0.01
    """
    for name, value in (("n_candidates", n_candidates), ("n_positive", n_positive), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if n_positive > n_candidates:
        raise ValueError(f"n_positive={n_positive} is more than n_candidates={n_candidates}")
    k = min(k, n_candidates)
    # exact integers until the one division, so large n loses nothing to rounding
    total = math.comb(n_candidates, k)
    return (total - math.comb(n_candidates - n_positive, k)) / total
