"""Scoring a captioner on a held-out split.

``caption_images`` writes a caption for every image; ``score_split`` scores them with the COCO
metrics (BLEU, ROUGE-L, CIDEr-D) plus whatever content scores the dataset itself provides
(the shapes data knows what each image shows: see ``velm_course.data.registry``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.captions import CaptionVocab
from .metrics import score_captions


@torch.no_grad()
def caption_images(
    model: torch.nn.Module, images: torch.Tensor, vocab: CaptionVocab, batch_size: int = 256
) -> list[str]:
    """Greedy captions for uint8 or [0, 1] float images (n, 3, H, W)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch_size):
        batch = images[i : i + batch_size]
        batch = batch.to(device, memory_format=torch.channels_last)
        if batch.dtype == torch.uint8:
            batch = batch.float().div_(255)  # uint8 travels, the device converts
        out += [vocab.decode(row) for row in model.generate(batch).tolist()]
    return out


def score_split(
    captions: dict[int, str],
    references: dict[int, list[str]],
    content_scores: Callable[[dict[int, str]], dict[str, float]] | None = None,
) -> dict:
    """pycocoevalcap-named metrics, plus the dataset's own content scores when it has them."""
    scores = score_captions(references, captions)
    if content_scores is not None:
        scores.update(content_scores(captions))
    return scores
