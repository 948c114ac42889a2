"""Scoring a captioner honestly on a held-out split.

A caption metric means little alone: CIDEr 2.8 is good or bad only next to what a model that
cannot see, a constant caption or a person scores on the same references. This module writes
the captions of those rows and scores every row the same way:

- ``caption_images``: the model's captions (greedy, or beam search);
- ``fixed_caption``: the one caption that scores best on the validation split, said of every
  image (what copying the commonest template is worth);
- ``nearest_neighbour_captions``: the caption of the training image whose encoder features are
  closest (retrieval instead of generation);
- ``human_row``: each image's first reference, scored against its other references. Every row
  is then scored against those same other references (``score_rows``), so the rows compare.

``score_rows`` gives each row the COCO metrics under pycocoevalcap's names plus whatever
content scores the dataset provides (the shapes data knows what each image shows: see
``velm_course.data.registry``).

>>> human, others = human_row({1: ["a red star", "a star that is red"]})
>>> human, others
({1: 'a red star'}, {1: ['a star that is red']})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import torch

from ..data.captions import CaptionVocab
from ..vision.encoders import as_encoder_input
from .coco_eval import evaluate_captions
from .metrics import cider_d, tokenize_caption

ContentScores = Callable[[dict[int, str]], dict[str, float]]


@torch.no_grad()
def caption_images(
    model: torch.nn.Module, images: torch.Tensor, vocab: CaptionVocab, batch_size: int = 256,
    beam_width: int = 1,
) -> list[str]:
    """Captions for uint8 or [0, 1] float images (n, 3, H, W), or row numbers (n,) into cached
    features: greedy when ``beam_width`` is 1, else beam search with that many beams."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch_size):
        batch = as_encoder_input(images[i : i + batch_size].to(device))  # uint8 travels, the device converts
        tokens = model.generate(batch) if beam_width == 1 else model.beam_search(batch, beam_width)
        out += [vocab.decode(row) for row in tokens.tolist()]
    return out


def human_row(references: Mapping[int, list[str]]) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Each image's first reference as a "human" caption, and the references left to score
    every row against. Needs at least two references per image."""
    short = [i for i, refs in references.items() if len(refs) < 2]
    if short:
        raise ValueError(f"the human row needs two references or more per image; image {short[0]!r} has "
                         f"{len(references[short[0]])}")
    return ({i: refs[0] for i, refs in references.items()},
            {i: list(refs[1:]) for i, refs in references.items()})


def fixed_caption(candidates: list[str], references: Mapping[int, list[str]], top: int = 100) -> tuple[str, float]:
    """The one caption that, said of every image, scores the highest CIDEr-D on ``references``.

    The candidates are the ``top`` most frequent of ``candidates`` (the training captions,
    PTB-tokenized): a constant caption worth reporting is a common one. Choose it on the
    validation split and score it on test, like a model.

    >>> refs = {1: ["a red star"], 2: ["a red star and a blue disc"], 3: ["a green box"]}
    >>> fixed_caption(["a red star", "a green box", "a red star"], refs)[0]
    'a red star'
    """
    # scored as the COCO evaluation scores: PTB-tokenized references and candidates
    common = [c for c, _ in Counter(tokenize_caption(c) for c in candidates).most_common(top)]
    if not common:
        raise ValueError("no candidate captions to choose a fixed caption from")
    refs = {i: [tokenize_caption(r) for r in rs] for i, rs in references.items()}
    scored = [(cider_d(refs, dict.fromkeys(refs, c))[0], c) for c in common]
    score, best = max(scored, key=lambda sc: (sc[0], sc[1]))  # ties: the same choice every run
    return best, score


@torch.no_grad()
def image_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Pooled, L2-normalised encoder features (n, C) of a captioner's image encoder."""
    model.eval()
    device = next(model.parameters()).device
    feats = []
    for i in range(0, images.shape[0], batch_size):
        _, pooled = model.encode(as_encoder_input(images[i : i + batch_size].to(device)))  # (b, C)
        feats.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
    return torch.cat(feats)


def nearest_neighbour_captions(query: torch.Tensor, keys: torch.Tensor, key_captions: list[str]) -> list[str]:
    """For each query feature (n, C), the caption of the most similar key (m, C) by cosine.

    >>> keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> nearest_neighbour_captions(torch.tensor([[0.1, 0.9]]), keys, ["a red star", "a blue disc"])
    ['a blue disc']
    """
    if keys.shape[0] != len(key_captions):
        raise ValueError(f"{keys.shape[0]} key features but {len(key_captions)} key captions")
    sims = torch.nn.functional.normalize(query, dim=-1) @ torch.nn.functional.normalize(keys, dim=-1).T  # (n, m)
    return [key_captions[j] for j in sims.argmax(dim=1).tolist()]


# the n-gram metrics, in pure Python and fast; METEOR (Java, about 10 s to start) is asked for by name
FAST_METRICS = ("Bleu", "ROUGE_L", "CIDEr")


def score_split(
    captions: dict[int, str],
    references: dict[int, list[str]],
    content_scores: ContentScores | None = None,
    metrics: tuple[str, ...] = FAST_METRICS,
) -> dict:
    """pycocoevalcap-named metrics of raw captions (PTB-tokenized as the COCO evaluation does,
    ``eval.coco_eval.evaluate_captions``), plus the dataset's own content scores when it has them."""
    scores = evaluate_captions(references, captions, metrics=list(metrics))
    if content_scores is not None:
        scores.update(content_scores(captions))
    return scores


def score_rows(
    rows: Mapping[str, dict[int, str]],
    references: Mapping[int, list[str]],
    content_scores: ContentScores | None = None,
    metrics: tuple[str, ...] = FAST_METRICS,
) -> dict[str, dict]:
    """``score_split`` for every row, all against the same references."""
    return {name: score_split(captions, dict(references), content_scores, metrics) for name, captions in rows.items()}


def _cell(value, width: int) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}d}" if isinstance(value, int) else f"{value:{width}.3f}"


# the columns of the rows table, in order; a column shows when some row has it
TABLE_KEYS = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE", "scene_f1", "exact_scene", "count_accuracy",
              "relation_accuracy", "relation_n", "hallucination_rate")


def rows_table(scores: Mapping[str, Mapping[str, float]], keys: tuple[str, ...] = TABLE_KEYS) -> str:
    """The rows' scores as a fixed-width text table, three decimals (counts as whole numbers);
    "-" where a row has no such score (or it is None: undefined, like the accuracy of relations
    no caption states).

    >>> print(rows_table({"model": {"CIDEr": 2.5, "Bleu_4": 0.61}, "blind": {"CIDEr": 0.4, "Bleu_4": 0.2}}))
    row                   Bleu_4     CIDEr
    model                  0.610     2.500
    blind                  0.200     0.400
    """
    shown = [k for k in keys if any(k in row for row in scores.values())]
    width = {k: max(10, len(k) + 2) for k in shown}
    first = max(18, *(len(name) + 2 for name in scores))
    lines = [f"{'row':{first}}" + "".join(f"{k:>{width[k]}}" for k in shown)]
    for name, row in scores.items():
        lines.append(f"{name:{first}}" + "".join(_cell(row.get(k), width[k]) for k in shown))
    return "\n".join(lines)
