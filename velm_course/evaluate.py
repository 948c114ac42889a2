"""Scoring a captioner on a held-out split: n-gram metrics, and what they miss.

Besides the COCO metrics (BLEU, ROUGE-L, CIDEr-D), the shapes data lets us ask a sharper
question: does the caption name exactly the right objects? ``content_accuracy`` parses each
generated caption with the generator's own vocabulary and compares the (colour, shape)
pairs with the drawn scene. The ``oracle`` row scores captions with exactly the right
content written in a template no reference uses: its CIDEr shows how much of the score is
template matching rather than seeing.
"""

from __future__ import annotations

import torch

from .data.shapes import oracle_caption, parse_objects
from .metrics import score_captions
from .vocab import CaptionVocab


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
        if batch.dtype == torch.uint8:
            batch = batch.float() / 255
        batch = batch.to(device, memory_format=torch.channels_last)
        out += [vocab.decode(row) for row in model.generate(batch).tolist()]
    return out


def content_accuracy(captions: dict[int, str], scenes: dict[int, list[dict]]) -> float:
    """Fraction of images whose caption names exactly the scene's set of (colour, shape) pairs.

    >>> scene = [{"color": "red", "shape": "circle"}]
    >>> content_accuracy({1: "a red circle", 2: "a blue circle"}, {1: scene, 2: scene})
    0.5
    """
    hits = [parse_objects(captions[i]) == {(o["color"], o["shape"]) for o in scenes[i]} for i in captions]
    return sum(hits) / len(hits)


def score_split(captions: dict[int, str], references: dict[int, list[str]], scenes: dict[int, list[dict]]) -> dict:
    """pycocoevalcap-named metrics plus ``content_accuracy`` for one set of captions."""
    scores = score_captions(references, captions)
    scores["content_accuracy"] = content_accuracy(captions, scenes)
    return scores


def oracle_captions(scenes: dict[int, list[dict]]) -> dict[int, str]:
    """Right content, held-out template: the ceiling for a model that sees perfectly
    but writes differently from the annotators."""
    return {i: oracle_caption(objs) for i, objs in scenes.items()}
