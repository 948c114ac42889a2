"""Losses that tie images to text: contrastive (CLIP), image-text matching (BLIP), and the rest.

**Contrastive loss (CLIP).** A batch holds B matching (image, caption) pairs. Each image and
each caption becomes one vector of width D, scaled to length 1, so a dot product is a cosine
similarity in [-1, 1]. The logits are those similarities times a scale s = 1 / temperature:

    logits[i, j] = s * <img_i, txt_j>        (B, B); row i: image i against every caption

Caption i is the right answer for image i, so row i is a B-way classification whose target
is i, and column j is the same question asked the other way round (which image goes with
caption j?). The loss averages the two cross-entropies:

    L_i2t = mean_i [ logsumexp_j logits[i, j] - logits[i, i] ]
    L_t2i = mean_j [ logsumexp_i logits[i, j] - logits[j, j] ]
    L     = (L_i2t + L_t2i) / 2

Two landmarks: if every embedding is the same, each row is a uniform guess and L = ln B
exactly; if each image is far closer to its own caption than to any other, L goes to 0. The
other B - 1 captions of the batch are the negatives, so a larger batch is a harder test.

**Temperature.** Cosines live in [-1, 1]; a softmax over them is nearly flat. The scale s
sharpens it. CLIP learns ``logit_scale = ln s`` (a log, so it stays positive and its steps
are relative), starts at s = 1 / 0.07 and caps s at 100: beyond that the softmax is almost
a one-hot and training becomes unstable. ``LogitScale`` holds that number;
``check_logit_scale`` stops a run whose scale has left [0, ln 100].

**Memory.** The B x B logits grow with the square of the batch. ``chunked_clip_loss`` gives
the same loss and gradients while only ever holding chunk_size x B logits: a row's
logsumexp needs only that row, and backward recomputes each chunk instead of storing it.

**Image-text matching (ITM, BLIP).** A fused model reads an (image, caption) pair and says
"match" or "no match" (two logits). Random non-matching pairs are too easy, so the negatives
are hard ones: for each image a caption the contrastive model finds similar but that is not
one of its captions (``hard_negative_indices``, ``itm_pairs``, ``itm_loss``).

**Several objectives.** ``weighted_objective`` forms L = alpha L_text + beta L_image + gamma
L_joint (any names, any number of terms) and returns the terms detached for logging.

**An image-side objective for the shapes data.** ``attribute_targets`` and
``attribute_loss``: predict which (colour, shape) pairs a scene contains.

Shape letters: B batch (pairs), D embedding width, B_img images, B_txt captions, M pairs
scored by the ITM head, c chunk size, K attributes (colours x shapes).

>>> same = torch.ones(4, 2)  # identical embeddings: no pair can be told apart
>>> round(clip_loss(same, same, LogitScale()()).item(), 4)  # ln 4, whatever the temperature
1.3863
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's starting temperature, 0.07
LOGIT_SCALE_MAX = math.log(100)  # CLIP's cap: logits at most 100 x cosine
# float32 rounding of ln 100 and a clamp at exactly the cap must not trip the range check
_LOGIT_SCALE_TOL = 1e-4

# ----------------------------------------------------------------------------------------------
# input checks


def _check_pair(img: torch.Tensor, txt: torch.Tensor) -> None:
    """Raise unless img and txt are both (B, D) with the same B >= 1 and the same D."""
    for name, x in (("img", img), ("txt", txt)):
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (B, D) tensor of embeddings, got {shape}")
    if img.shape[0] != txt.shape[0]:
        raise ValueError(f"batch sizes differ: img has {img.shape[0]} rows, txt has "
                         f"{txt.shape[0]}; the contrastive loss needs one caption per image")
    if img.shape[0] == 0:
        raise ValueError("empty batch: img and txt have 0 rows")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"embedding widths differ: img is {img.shape[1]} wide, txt is "
                         f"{txt.shape[1]} wide; project both to the same width first")


def check_logit_scale(logit_scale: torch.Tensor) -> None:
    """Raise unless logit_scale is one finite number in [0, ln 100] (plus float rounding).

    A scale outside that range means the temperature was driven out of range (a learning rate
    too high for it, or no clamp), or that the scale was passed already exponentiated. Reading
    the value waits for the device (one ``.item()``), which is cheap next to a B x B matmul.

    >>> check_logit_scale(torch.tensor(1 / 0.07))
    Traceback (most recent call last):
    ...
    ValueError: logit_scale=14.2857 is outside [0, ln 100 = 4.6052]: temperature driven out of range (logit_scale is the log of 1/temperature; did you pass it already exponentiated?)
    """
    if not isinstance(logit_scale, torch.Tensor) or logit_scale.numel() != 1:
        shape = tuple(logit_scale.shape) if isinstance(logit_scale, torch.Tensor) else None
        raise ValueError(f"logit_scale must be a tensor holding one number, got "
                         f"{shape if shape is not None else type(logit_scale).__name__}")
    value = float(logit_scale.detach().reshape(()).item())
    if not math.isfinite(value):
        raise ValueError(f"logit_scale is {value}: temperature driven out of range "
                         "(not finite; look for a diverged run)")
    if not -_LOGIT_SCALE_TOL <= value <= LOGIT_SCALE_MAX + _LOGIT_SCALE_TOL:
        raise ValueError(
            f"logit_scale={value:.4f} is outside [0, ln 100 = {LOGIT_SCALE_MAX:.4f}]: temperature "
            "driven out of range (logit_scale is the log of 1/temperature; did you pass it "
            "already exponentiated?)"
        )


# ----------------------------------------------------------------------------------------------
# contrastive loss


def clip_logits(
    img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits_per_image (B, B), logits_per_text (B, B)) = exp(logit_scale) x cosine similarity.

    img and txt (B, D) are scaled to unit length here (``F.normalize``), so raw encoder
    outputs can be passed straight in; already-normalised inputs are unchanged in value.
    One consequence for gradients: the gradient with respect to img or txt has no component
    along the vector itself (stretching a vector does not change its direction).
    ``logits_per_text`` is the transpose: row j is caption j against every image.

    >>> logits_per_image, _ = clip_logits(torch.eye(2), torch.eye(2), torch.tensor(0.0))
    >>> logits_per_image
    tensor([[1., 0.],
            [0., 1.]])
    """
    _check_pair(img, txt)
    check_logit_scale(logit_scale)
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits_per_image = logit_scale.exp().reshape(()) * img @ txt.T  # (B, B)
    return logits_per_image, logits_per_image.T  # (B, B), (B, B)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The symmetric contrastive loss: the mean of the image->text and text->image
    cross-entropies over the (B, B) logits, pair i being the target of row i and column i.

    img, txt: (B, D) embeddings (normalised here); logit_scale: the log of 1 / temperature.
    """
    logits_per_image, logits_per_text = clip_logits(img, txt, logit_scale)
    targets = torch.arange(img.shape[0], device=img.device)  # (B,) pair i matches row i
    return (F.cross_entropy(logits_per_image, targets)
            + F.cross_entropy(logits_per_text, targets)) / 2


def _chunk_logsumexp(rows: torch.Tensor, others: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """logsumexp over j of scale * <rows_i, others_j>: (c,) from rows (c, D), others (B, D)."""
    return torch.logsumexp(scale * rows @ others.T, dim=1)  # (c, B) -> (c,)


def chunked_clip_loss(
    img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """``clip_loss`` with at most chunk_size x B logits alive at once, in forward and backward.

    Each half of the loss is a mean over rows of (logsumexp of the row - the diagonal term).
    The diagonal term is s * <img_i, txt_i>, a (B,) vector that needs no B x B matrix. The
    logsumexps of image rows are computed c rows at a time against all captions, and those of
    caption rows (the columns of logits_per_image) c rows at a time against all images. Each
    chunk runs under ``torch.utils.checkpoint``: forward keeps only its (c,) result, and
    backward recomputes the chunk's (c, B) logits when it needs them. Compute goes up by one
    extra forward of the logits; memory goes from B^2 to c x B.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    _check_pair(img, txt)
    check_logit_scale(logit_scale)
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    scale = logit_scale.exp().reshape(())
    diagonal = scale * (img * txt).sum(dim=1)  # (B,) logits[i, i]
    halves = []
    for rows, others in ((img, txt), (txt, img)):  # image->text, then text->image
        lse = [checkpoint(_chunk_logsumexp, rows[start:start + chunk_size], others, scale,
                          use_reentrant=False)  # (c,) each
               for start in range(0, rows.shape[0], chunk_size)]
        halves.append((torch.cat(lse) - diagonal).mean())  # (B,) -> ()
    return (halves[0] + halves[1]) / 2


# ----------------------------------------------------------------------------------------------
# temperature


class LogitScale(nn.Module):
    """ln(1 / temperature), learnable (a parameter) or fixed (a buffer), capped at ln 100.

    ``forward()`` returns the stored value clamped at ``LOGIT_SCALE_MAX``, as CLIP caps it.
    Because the clamp happens in forward, the loss gives the stored value no gradient once it
    is above the cap: the effective scale stays at 100 and only something else (momentum,
    weight decay) can move the stored value back. Keep this scalar out of weight decay.
    """

    def __init__(self, init: float = LOGIT_SCALE_INIT, learnable: bool = True) -> None:
        super().__init__()
        init = float(init)
        if not (math.isfinite(init) and 0 <= init <= LOGIT_SCALE_MAX):
            raise ValueError(f"init={init} must be a finite log-scale in [0, ln 100]")
        value = torch.tensor(init)
        if learnable:
            self.value = nn.Parameter(value)
        else:  # a buffer: saved with the model, moved by .to(), never trained
            self.register_buffer("value", value)

    def forward(self) -> torch.Tensor:
        return self.value.clamp(max=LOGIT_SCALE_MAX)

    def extra_repr(self) -> str:
        return f"value={self.value.item():.4f}, learnable={isinstance(self.value, nn.Parameter)}"


# ----------------------------------------------------------------------------------------------
# image-text matching with hard negatives


def _sample_negatives(sim: torch.Tensor, positive: torch.Tensor, generator, what: str,
                      of: str) -> torch.Tensor:
    """One column per row of sim (R, C), drawn from softmax over the row's negatives only."""
    has_negative = (~positive).any(dim=1)  # (R,)
    if not bool(has_negative.all()):
        row = int((~has_negative).nonzero()[0])
        raise ValueError(f"{of} {row} has no negative {what}: every {what} in the batch is "
                         "marked positive for it, so there is nothing to contrast with")
    # zeroing the positives' softmax weights and renormalising = a softmax over the negatives
    weights = torch.softmax(sim.masked_fill(positive, float("-inf")), dim=1)  # (R, C)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (R, 1) -> (R,)


def hard_negative_indices(
    sim: torch.Tensor, positive_mask: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(neg_text_for_image (B_img,), neg_image_for_text (B_txt,)): one hard negative each.

    sim (B_img, B_txt): similarities, best the contrastive logits (the temperature then sets
    how strongly similar items are preferred); no gradient flows through the draw.
    positive_mask (B_img, B_txt) bool: True where the caption describes the image. An image
    may have several captions in the batch; all of them must be marked, or one could be
    drawn as a "negative".

    For image i the negative caption is drawn with probability softmax(sim[i]) restricted to
    the captions that are not positive for i; for caption j likewise from column j. A
    similar-looking negative is drawn more often, which is the point: it teaches the matching
    head what the contrastive model still confuses.

    >>> sim = torch.tensor([[5.0, 0.0, -50.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    >>> neg_t, neg_i = hard_negative_indices(sim, torch.eye(3, dtype=torch.bool))
    >>> neg_t[0].item()  # caption 2 is far less similar to image 0 than caption 1
    1
    """
    if sim.dim() != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"sim must be a non-empty (B_img, B_txt) matrix, got {tuple(sim.shape)}")
    if positive_mask.shape != sim.shape or positive_mask.dtype != torch.bool:
        raise ValueError(f"positive_mask must be a bool tensor shaped like sim {tuple(sim.shape)}, "
                         f"got {positive_mask.dtype} {tuple(positive_mask.shape)}")
    sim = sim.detach()
    if not bool(torch.isfinite(sim).all()):
        raise ValueError("sim holds non-finite values")
    positive_mask = positive_mask.to(sim.device)
    neg_text = _sample_negatives(sim, positive_mask, generator, "caption", "image")
    neg_image = _sample_negatives(sim.T, positive_mask.T, generator, "image", "caption")
    return neg_text, neg_image


def itm_pairs(
    sim: torch.Tensor, positive_mask: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image_index (3B,), text_index (3B,), label (3B,)): the pairs an ITM head is trained on.

    The batch is B (image i, caption i) pairs, so sim (B, B) and the diagonal of
    positive_mask must be True. The result lists, in order: the B positives (i, i) with label
    1; each image i with its hard negative caption, label 0; each caption j with its hard
    negative image, label 0. A third of the pairs match, as in BLIP.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"sim must be square (B, B) for a batch of B pairs, got "
                         f"{tuple(sim.shape)}")
    if positive_mask.dim() == 2 and not bool(positive_mask.diagonal().all()):
        raise ValueError("positive_mask must be True on its diagonal: caption i belongs to image i")
    neg_text, neg_image = hard_negative_indices(sim, positive_mask, generator)
    pair = torch.arange(sim.shape[0], device=neg_text.device)  # (B,)
    image_index = torch.cat([pair, pair, neg_image])  # (3B,)
    text_index = torch.cat([pair, neg_text, pair])  # (3B,)
    label = torch.cat([torch.ones_like(pair), torch.zeros_like(pair), torch.zeros_like(pair)])
    return image_index, text_index, label


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the match head's logits (M, 2) against labels (M,), 1 = matching."""
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(f"logits must be (M, 2) (no match, match), got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (M,) with M = {logits.shape[0]} rows of logits, got "
                         f"{tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("empty batch: no pairs to score")
    if labels.dtype != torch.long or not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be int64 0 (no match) or 1 (match)")
    return F.cross_entropy(logits, labels)


# ----------------------------------------------------------------------------------------------
# several objectives


def weighted_objective(
    terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(sum of weights[name] * terms[name], {name: term detached}) for logging.

    L = alpha L_text + beta L_image + gamma L_joint is
    ``weighted_objective({"text": ..., "image": ..., "joint": ...},
    {"text": alpha, "image": beta, "joint": gamma})``. A term of weight 0 is left out of the
    sum and need not be computed at all; one that is given anyway is still logged. Every
    term must have a weight (0 to only log it), so a misspelt name cannot silently drop out.
    Logged values stay tensors: turning them into floats would wait for the device.

    >>> total, logs = weighted_objective({"a": torch.tensor(2.0), "b": torch.tensor(5.0)},
    ...                                  {"a": 0.5, "b": 0.0, "c": 0.0})
    >>> total.item(), sorted(logs)
    (1.0, ['a', 'b'])
    """
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {w!r}")
    unweighted = sorted(set(terms) - set(weights))
    if unweighted:
        raise ValueError(f"terms {unweighted} have no weight; give them weight 0 to only log them")
    used = [name for name, w in weights.items() if w != 0]
    missing = [name for name in used if name not in terms]
    if missing:
        raise ValueError(f"terms {missing} have a nonzero weight but were not given")
    if not used:
        raise ValueError("every weight is 0: there is nothing to train on")
    for name in used:
        if not isinstance(terms[name], torch.Tensor) or terms[name].dim() != 0:
            raise ValueError(f"term {name!r} must be a scalar tensor (a mean loss)")
    total = sum(weights[name] * terms[name] for name in used)
    return total, {name: term.detach() for name, term in terms.items()}


# ----------------------------------------------------------------------------------------------
# image-side objective for the shapes data


def attribute_targets(
    objects_per_image: Sequence[Sequence[Mapping]], colors: Iterable[str], shapes: Iterable[str]
) -> torch.Tensor:
    """(B, K) multi-hot float targets, K = len(colors) * len(shapes): entry
    color_index * len(shapes) + shape_index is 1 when the image holds that (colour, shape).

    Why this image-side objective for the shapes data: a scene is fully described by its
    (colour, shape) pairs, and those are exactly the words a caption has to get right, so the
    image encoder learns what the text side needs. It is cheap (one linear head and a BCE).
    Reconstructing masked patches would instead spend most of its capacity on the flat grey
    background, which no caption mentions.

    >>> scene = [{"color": "red", "shape": "star"}]
    >>> attribute_targets([scene], colors=["red", "blue"], shapes=["circle", "star"])
    tensor([[0., 1., 0., 0.]])
    """
    colors, shapes = list(colors), list(shapes)
    if not colors or not shapes:
        raise ValueError("colors and shapes must each name at least one value")
    if len(objects_per_image) == 0:
        raise ValueError("empty batch: objects_per_image has no images")
    color_index = {c: i for i, c in enumerate(colors)}
    shape_index = {s: i for i, s in enumerate(shapes)}
    targets = torch.zeros(len(objects_per_image), len(colors) * len(shapes))  # (B, K)
    for b, objects in enumerate(objects_per_image):
        for obj in objects:
            if obj.get("color") not in color_index or obj.get("shape") not in shape_index:
                raise ValueError(f"image {b}: object {dict(obj)} has a colour or shape not in "
                                 f"colors={colors} / shapes={shapes}")
            targets[b, color_index[obj["color"]] * len(shapes) + shape_index[obj["shape"]]] = 1.0
    return targets


def attribute_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of logits (B, K) against multi-hot targets (B, K): K
    independent yes/no questions "is there a <colour> <shape>?"."""
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(f"logits and targets must both be (B, K) and the same shape, got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("empty batch: logits have 0 rows")
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
