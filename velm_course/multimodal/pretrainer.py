"""One model, three objectives: L = alpha L_text + beta L_image + gamma L_joint (BLIP-like).

The image side is frozen features (grid, pooled) of a pretrained encoder, read by one small
trainable adapter (``ImageTower``). Every objective reads the adapter's output, so all three
shape the same image representation; the weights alpha, beta, gamma decide how much each
one gets to say.

    L_text   captioning: a causal decoder with cross-attention to the adapted image tokens
             writes the caption (``Captioner``'s decoder; token cross-entropy).
    L_image  an image-only task: a linear head on the pooled image vector says which
             (colour, shape) pairs the scene holds (``attribute_loss``; multi-hot BCE).
    L_joint  L_contrastive + L_itm. Contrastive: the CLIP loss between the pooled image and
             the pooled caption (a ``TextTower``), each projected to E and normalised.
             Image-text matching: a non-causal cross-attention fusion reads a caption's
             token states over an image's tokens and a linear head on the first token's
             fused state says "match" or "no match", for the B true pairs and 2B hard
             negatives drawn from the contrastive similarities.

``grad_share`` measures how strongly each weighted objective pulls on the shared adapter.

**Batches.** {"grid" (B, N, Dv), "pooled" (B, Dv), "idx" (B, T), "targets" (B, T) from
``caption_targets``, "attributes" (B, K) float, "image_id" (B,) long}, with B *distinct*
images and one caption each: the contrastive loss and the hard-negative draw treat every
off-diagonal pair as a mismatch, which is only true when no image appears twice. A batch
with a repeated image_id raises. ``image_batches`` draws such batches, resumably.

Shape letters: B batch, T caption tokens, L = T + 1 whole caption, N image tokens, Dv image
feature width, D model width, E embedding width, K attributes, V vocabulary.

>>> cfg = PretrainerConfig(vocab_size=10, image_dim=8, n_attributes=4, d_model=16, embed_dim=8,
...                        n_layer=1, n_head=2, max_len=6)
>>> model = Pretrainer(cfg)
>>> tokens = torch.tensor([[[1, 5, 6, 2, 0, 0]], [[1, 7, 2, 0, 0, 0]], [[1, 8, 9, 4, 2, 0]]])
>>> batches = image_batches(torch.randn(3, 4, 8), torch.randn(3, 8), tokens, torch.zeros(3, 4),
...                         batch_size=3, seed=0, steps=1)
>>> sorted(model.terms(next(batches(0))))
['contrastive', 'image', 'itm', 'joint', 'text']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.captions import PAD, caption_targets, whole_captions
from ..nn import init_transformer_, lm_loss
from .captioner import Captioner, CaptionerConfig
from .dual_encoder import (
    ImageTower,
    TextTower,
    check_distinct_images,
    check_features,
    evaluating,
)
from .fusion import FusionConfig, build_fusion
from .losses import (
    LogitScale,
    attribute_loss,
    clip_loss,
    itm_loss,
    itm_pairs,
    weighted_objective,
)

TERMS = ("text", "image", "contrastive", "itm", "joint")  # what ``terms`` can report
WEIGHTED = ("text", "image", "joint")  # the three that enter the objective


@dataclass
class PretrainerConfig:
    vocab_size: int  # caption vocabulary, special tokens included
    image_dim: int  # Dv: width of the frozen encoder's grid and pooled features
    n_attributes: int  # K: outputs of the attribute head (colours x shapes)
    d_model: int = 64  # D: width of the adapter, the text tower, the decoder and the fusion
    embed_dim: int = 64  # E: width of the contrastive embedding space
    n_layer: int = 2  # blocks of the text tower, and of the caption decoder
    n_adapter: int = 1  # shared image adapter blocks (0: a linear adapter)
    n_fusion: int = 1  # cross-attention layers of the matching (ITM) fusion
    n_head: int = 4  # attention heads in every block
    max_len: int = 24  # longest caption in tokens, <bos> and <eos> included
    dropout: float = 0.0  # dropout in every block while training
    alpha: float = 1.0  # weight of L_text (captioning)
    beta: float = 1.0  # weight of L_image (attributes)
    gamma: float = 1.0  # weight of L_joint (contrastive + matching)
    itm: bool = True  # L_joint includes image-text matching (False: contrastive only)
    learn_temperature: bool = True  # train the contrastive logit scale or keep it at 1 / 0.07
    seed: int = 0  # seeds the model's generator for the hard-negative draws

    def __post_init__(self):
        for name in ("alpha", "beta", "gamma"):
            w = getattr(self, name)
            number = isinstance(w, (int, float)) and not isinstance(w, bool)
            if not number or not math.isfinite(w) or w < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        if self.alpha == self.beta == self.gamma == 0:
            raise ValueError("alpha, beta and gamma are all 0: there is nothing to train on")
        if min(self.vocab_size, self.image_dim, self.n_attributes, self.embed_dim, self.n_fusion,
               self.max_len) < 1:
            raise ValueError("vocab_size, image_dim, n_attributes, embed_dim, n_fusion and "
                             "max_len must be >= 1")
        if self.d_model < 1 or self.n_head < 1 or self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be a positive multiple of "
                             f"n_head={self.n_head}")

    def weights(self) -> dict[str, float]:
        """The weight of every term ``terms`` can report: the logged-only ones get 0."""
        return {"text": self.alpha, "image": self.beta, "joint": self.gamma,
                "contrastive": 0.0, "itm": 0.0}


class Pretrainer(nn.Module):
    """The shared adapter, and one head (or tower) per objective; see the module docstring."""

    def __init__(self, config: PretrainerConfig):
        super().__init__()
        self.config = c = config
        # shared: the one trainable part every objective reads, so the one whose gradients
        # ``grad_share`` compares
        self.image = ImageTower(c.image_dim, c.d_model, c.n_adapter, c.n_head, c.dropout)
        # L_text. The captioner's decoder is reused as it is. Given no encoder it would build
        # a CNN of its own; nn.Identity (no weights) stops that, and the image reaches the
        # decoder through ``prepare`` instead: decode(prepare(adapter tokens, pooled), idx)
        self.captioner = Captioner(
            CaptionerConfig(vocab_size=c.vocab_size, d_model=c.d_model, n_layer=c.n_layer,
                            n_head=c.n_head, max_len=c.max_len, dropout=c.dropout,
                            fusion="cross_attention"),
            encoder=nn.Identity())
        # L_image
        self.attribute_head = nn.Linear(c.d_model, c.n_attributes)
        # L_joint: the caption side, the two projections into the shared space, the
        # temperature, and the matching fusion and head
        self.text = TextTower(c.vocab_size, c.d_model, c.n_layer, c.n_head, c.max_len, c.dropout)
        self.image_proj = nn.Linear(c.d_model, c.embed_dim, bias=False)
        self.text_proj = nn.Linear(c.d_model, c.embed_dim, bias=False)
        self.scale = LogitScale(learnable=c.learn_temperature)
        # causal=False: to judge a pair, every word may read every other word
        self.itm_fusion = build_fusion(FusionConfig(
            kind="cross_attention", d_model=c.d_model, image_dim=c.d_model, n_layer=c.n_fusion,
            n_head=c.n_head, dropout=c.dropout, causal=False))
        self.itm_head = nn.Linear(c.d_model, 2)
        # the towers, the captioner and the fusion initialised themselves; the heads are left
        init_transformer_([self.attribute_head, self.image_proj, self.text_proj, self.itm_head],
                          n_layer=1)
        # the hard-negative draws come from the model's own generator, never the global random
        # state (dropout's); it lives on the CPU, where the (B, B) similarities are copied for
        # the draw, and its state is saved with the weights (see get_extra_state)
        self.itm_generator = torch.Generator().manual_seed(c.seed)

    # --- the generator's state travels in state_dict, so a resumed run draws the same negatives

    def get_extra_state(self) -> dict:
        return {"itm_generator": self.itm_generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.itm_generator.set_state(state["itm_generator"].cpu())

    # --- the pieces

    def logit_scale(self) -> torch.Tensor:
        """ln(1 / temperature) of the contrastive loss, capped at ln 100."""
        return self.scale()

    def embed_images(self, grid: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """grid (B, N, Dv), pooled (B, Dv) -> (B, E) unit vectors (as ``DualEncoder``'s)."""
        return F.normalize(self.image_proj(self.image(grid, pooled)[1]), dim=-1)

    def embed_texts(self, idx: torch.Tensor) -> torch.Tensor:
        """Whole captions (B, L) -> (B, E) unit vectors (as ``DualEncoder``'s)."""
        return F.normalize(self.text_proj(self.text(idx)[1]), dim=-1)

    def check_batch(self, batch: dict, need_attributes: bool) -> int:
        """Raise a clear error unless the batch has the documented format; return B."""
        needed = ["grid", "pooled", "idx", "targets", "image_id"]
        needed += ["attributes"] if need_attributes else []
        missing = [k for k in needed if k not in batch]
        if missing:
            raise ValueError(f"batch lacks {missing}; see the module docstring for its format")
        check_features(batch["grid"], batch["pooled"], self.config.image_dim)
        B = batch["grid"].shape[0]
        idx, targets = batch["idx"], batch["targets"]
        if idx.dim() != 2 or idx.shape[0] != B or targets.shape != idx.shape:
            raise ValueError(f"idx and targets must both be (B, T) with B = {B}, got "
                             f"{tuple(idx.shape)} and {tuple(targets.shape)}")
        if batch["image_id"].shape != (B,):
            raise ValueError(f"image_id must be ({B},), got {tuple(batch['image_id'].shape)}")
        check_distinct_images(batch["image_id"])
        if need_attributes and batch["attributes"].shape != (B, self.config.n_attributes):
            raise ValueError(f"attributes must be ({B}, {self.config.n_attributes}), got "
                             f"{tuple(batch['attributes'].shape)}")
        return B

    def forward(self, batch: dict, all_terms: bool = False) -> dict[str, torch.Tensor]:
        """The mean of each objective on the batch (see ``terms``); ``forward`` so a
        DistributedDataParallel wrapper sees the call."""
        c = self.config
        want = {name: all_terms or w != 0 for name, w in
                (("text", c.alpha), ("image", c.beta), ("joint", c.gamma))}
        self.check_batch(batch, need_attributes=want["image"])
        idx, targets = batch["idx"], batch["targets"]
        tokens, pooled = self.image(batch["grid"], batch["pooled"])  # (B, N, D), (B, D)
        terms: dict[str, torch.Tensor] = {}
        if want["text"]:
            logits = self.captioner.decode(self.captioner.prepare(tokens, pooled), idx)  # (B, T, V)
            terms["text"] = lm_loss(logits, targets)
        if want["image"]:
            terms["image"] = attribute_loss(self.attribute_head(pooled), batch["attributes"])
        if want["joint"]:
            whole = whole_captions(idx, targets)  # (B, L)
            states, text_vec = self.text(whole)  # (B, L, D), (B, D)
            img = F.normalize(self.image_proj(pooled), dim=-1)  # (B, E)
            txt = F.normalize(self.text_proj(text_vec), dim=-1)  # (B, E)
            scale = self.logit_scale()
            terms["contrastive"] = clip_loss(img, txt, scale)
            terms["joint"] = terms["contrastive"]
            if c.itm:
                sim = scale.exp() * img @ txt.T  # (B, B): the contrastive logits
                terms["itm"] = self.itm_term(tokens, pooled, states, sim, whole != PAD)
                terms["joint"] = terms["joint"] + terms["itm"]
        return terms

    def terms(self, batch: dict, all_terms: bool = False) -> dict[str, torch.Tensor]:
        """{name: mean loss} for the terms of nonzero weight: "text", "image", and for L_joint
        "contrastive", "itm" (when ``config.itm``) and "joint" (their sum). ``all_terms=True``
        computes every term whatever its weight, to log them all."""
        return self(batch, all_terms=all_terms)

    def itm_term(self, tokens: torch.Tensor, pooled: torch.Tensor, states: torch.Tensor,
                 sim: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L_itm over the B true pairs and 2B hard negatives.

        tokens (B, N, D), pooled (B, D): the adapted image; states (B, L, D): the text
        tower's caption states; sim (B, B): contrastive logits, from which each image draws a
        negative caption and each caption a negative image (detached: the draw is not
        differentiated). With B distinct images, one caption each, only the diagonal is
        positive.

        The fused state of the first token (<bos>, the same input in every caption) is the
        pair's summary, as BERT's [CLS]: after the fusion it has read the whole caption and
        the image. ``text_mask`` (B, L), True at real tokens, keeps the fusion's words from
        reading padding, so a pair's score does not depend on how its batch was padded.
        """
        B = sim.shape[0]
        positive = torch.eye(B, dtype=torch.bool)  # (B, B) caption i describes image i only
        # the draw runs on the CPU with the model's generator: a (B, B) copy, and the same
        # negatives on any device
        pairs = itm_pairs(sim.detach().float().cpu(), positive, self.itm_generator)
        image_index, text_index, label = (t.to(sim.device) for t in pairs)  # (3B,) each
        mask = None if text_mask is None else text_mask[text_index]  # (3B, L)
        # index_select, not states[text_index]: every row is picked three times, and the backward
        # of advanced indexing sums those repeats in a thread-dependent order on the CPU (runs
        # would differ in the last bits); index_select's backward sums them in a fixed order
        fused = self.itm_fusion(states.index_select(0, text_index), tokens.index_select(0, image_index),
                                pooled.index_select(0, image_index), text_mask=mask)  # (3B, L, D)
        logits = self.itm_head(fused[:, 0])  # (3B, 2): no match, match
        return itm_loss(logits, label)

    def generate(self, grid: torch.Tensor, pooled: torch.Tensor,
                 max_new_tokens: int | None = None) -> torch.Tensor:
        """Greedy captions (B, T') for image features, without the leading <bos> (eval mode
        inside; the training mode comes back after)."""
        with evaluating(self):
            image = self.captioner.prepare(*self.image(grid, pooled))  # (B, N, D), (B, D)
            return self.captioner.generate_from(image, max_new_tokens)


def _unwrap(model: nn.Module) -> Pretrainer:
    """The Pretrainer itself, also when DistributedDataParallel wraps it."""
    return getattr(model, "module", model)


def objective(model: nn.Module, batch: dict, all_terms: bool = False
              ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """The engine's loss_fn: (B * L, B, {name: B * term}) with L = alpha L_text + beta L_image
    + gamma L_joint, so the engine's mean over images is L and every term is logged as
    ``loss_<name>``. ``functools.partial(objective, all_terms=True)`` logs the terms of weight
    0 too (at the cost of computing them)."""
    terms = model(batch, all_terms=all_terms)
    total, logs = weighted_objective(terms, _unwrap(model).config.weights())
    B = batch["idx"].shape[0]
    return total * B, B, {name: value * B for name, value in logs.items()}


def grad_share(model: nn.Module, batch: dict) -> dict[str, float]:
    """How strongly each weighted objective pulls on the shared image adapter.

    For each of alpha L_text, beta L_image, gamma L_joint, its own backward pass
    (``torch.autograd.grad``, which leaves every ``.grad`` alone) gives its gradient over the
    adapter's parameters; "norm_<name>" is that gradient's norm and "share_<name>" its share
    of the sum of the three norms. A term of weight 0 has norm and share 0.

    What it tells: a loss that is large need not steer the shared representation, and a small
    one may; the norms say which objective's updates dominate the adapter, and so what it is
    being shaped for. What it does not: the shares are of the sum of norms, not of the norm of
    the summed gradient, since two gradients may partly cancel. Measured in eval mode (no
    dropout) and with the hard-negative generator put back afterwards, so measuring during a
    run changes nothing about the run.
    """
    inner = _unwrap(model)
    c = inner.config
    shared = [p for p in inner.image.parameters() if p.requires_grad]
    if not shared:
        raise ValueError("the image adapter has no trainable parameters: nothing is shared")
    generator_state, was_training = inner.itm_generator.get_state(), inner.training
    inner.eval()
    try:
        with torch.enable_grad():
            terms = inner(batch)
            norms = {}
            for name in WEIGHTED:
                weight = c.weights()[name]
                if weight == 0:
                    norms[name] = 0.0
                    continue
                grads = torch.autograd.grad(weight * terms[name], shared, retain_graph=True,
                                            allow_unused=True)
                squares = [g.pow(2).sum() for g in grads if g is not None]
                norms[name] = math.sqrt(float(sum(squares))) if squares else 0.0
    finally:
        inner.itm_generator.set_state(generator_state)
        inner.train(was_training)
    total = sum(norms.values())
    out = {f"norm_{name}": norms[name] for name in WEIGHTED}
    out.update({f"share_{name}": norms[name] / total if total > 0 else 0.0 for name in WEIGHTED})
    return out


def image_batches(
    grid: torch.Tensor, pooled: torch.Tensor, tokens_per_image: torch.Tensor,
    attributes: torch.Tensor, batch_size: int, seed: int, steps: int, grad_accum: int = 1,
) -> Callable[[int], Iterator[dict]]:
    """``batches(start_step)`` for the engine over features held in memory: each micro-batch
    holds ``batch_size`` distinct images, each with one of its K captions.

    grid (n, N, Dv), pooled (n, Dv): features of n images; tokens_per_image (n, K, L): K
    captions per image as <bos> words <eos> <pad>... (``CaptionVocab.encode_batch``);
    attributes (n, A) multi-hot.

    Like ``velm_course.data.loader.ResumableBatchSampler``, everything is a function of
    (seed, step), so a run resumed at step s sees the batches the uninterrupted run saw:
    epoch e is a permutation of the images from a generator seeded with (seed, e), and the
    caption of each image is drawn from a generator seeded with (seed, step). That class
    itself does not fit: it lays the epochs end to end, so a batch that straddles two epochs
    may hold the same image twice. Here each epoch is cut into whole batches; the n mod G
    images left over at the end of an epoch's permutation (G = batch_size x processes) sit
    that epoch out, so every batch holds distinct images and an epoch sees every other image
    exactly once. Under DDP, process r takes the r-th slice of each global batch.
    """
    n = grid.shape[0]
    if tokens_per_image.dim() != 3 or tokens_per_image.dtype != torch.long:
        raise ValueError(f"tokens_per_image must be an int64 (n, K, L) tensor, got "
                         f"{tokens_per_image.dtype} {tuple(tokens_per_image.shape)}")
    if grid.dim() != 3 or pooled.shape != (n, grid.shape[2]):
        raise ValueError(f"expected grid (n, N, Dv) and pooled (n, Dv), got {tuple(grid.shape)} "
                         f"and {tuple(pooled.shape)}")
    if tokens_per_image.shape[0] != n or attributes.dim() != 2 or attributes.shape[0] != n:
        raise ValueError(f"tokens_per_image and attributes must have one row per image ({n}), "
                         f"got {tuple(tokens_per_image.shape)} and {tuple(attributes.shape)}")
    if tokens_per_image.shape[1] == 0 or bool((tokens_per_image[:, :, 0] == PAD).any()):
        raise ValueError("every image needs K >= 1 captions and every caption slot must hold "
                         "one (a row starting with PAD is empty)")
    if batch_size < 1 or grad_accum < 1:
        raise ValueError("batch_size and grad_accum must be >= 1")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is more than the {n} images: a batch cannot "
                         "hold that many distinct images")
    K = tokens_per_image.shape[1]
    from ..engine import distributed

    def batches(start_step: int) -> Iterator[dict]:
        dist = distributed.info()
        G = batch_size * dist.world_size  # one global micro-batch
        if G > n:
            raise ValueError(f"a global batch of {G} images is more than the {n} images")
        per_epoch = n // G
        mine = slice(dist.rank * batch_size, (dist.rank + 1) * batch_size)
        epoch_seen, perm = -1, None
        for m in range(start_step * grad_accum, steps * grad_accum):  # micro-steps
            epoch, j = divmod(m, per_epoch)
            if epoch != epoch_seen:  # even and odd seeds: two streams that never meet
                g = torch.Generator().manual_seed(2 * (seed * 1_000_003 + epoch))
                epoch_seen, perm = epoch, torch.randperm(n, generator=g)  # (n,)
            g = torch.Generator().manual_seed(2 * (seed * 1_000_003 + m) + 1)
            choice = torch.randint(K, (G,), generator=g)[mine]  # (B,) which caption
            rows = perm[j * G:(j + 1) * G][mine]  # (B,) which images
            idx, targets = caption_targets(tokens_per_image[rows, choice])  # (B, L) -> (B, L - 1)
            yield {"grid": grid[rows], "pooled": pooled[rows], "idx": idx, "targets": targets,
                   "attributes": attributes[rows].float(), "image_id": rows}

    return batches
