"""A CLIP-style dual encoder: one tower for images, one for captions, one shared space.

Each tower turns its input into a single vector; both are projected to the same width E and
scaled to length 1, so the dot product of an image vector and a caption vector is their
cosine similarity. Training (``contrastive_loss_fn``, the CLIP loss of
``velm_course.multimodal.losses``) pulls each image towards its own caption and away from
the other captions of the batch. Nothing in the model ever reads an image and a caption
together: each side is embedded once, which is what makes search over many items cheap
(``similarity_matrix``: one matrix product) and lets a class be recognised by embedding a
sentence that names it (``zero_shot_scores``: "a red circle" against every image).

The image tower starts from *features* (grid (B, N, Dv), pooled (B, Dv)) of an image
encoder, not from pixels: the notebook runs a frozen pretrained encoder once over every
image (``encode_images``) and trains only what sits on top, a small adapter of
Transformer blocks. The text tower is a small non-causal Transformer over caption tokens;
padding is masked out, so a caption's embedding does not depend on how much padding follows.

Shape letters: B batch, T caption tokens, N image tokens, Dv image feature width, D model
width, E embedding width, C class prompts, V vocabulary.

>>> cfg = DualEncoderConfig(vocab_size=10, image_dim=8, d_model=16, embed_dim=12, n_head=2)
>>> model = DualEncoder(cfg)
>>> img, txt, scale = model(torch.randn(3, 4, 8), torch.randn(3, 8), torch.tensor([[1, 5, 2]] * 3))
>>> tuple(img.shape), tuple(txt.shape), round(img.norm(dim=1)[0].item(), 4)
((3, 12), (3, 12), 1.0)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.captions import PAD, whole_captions
from ..nn import Block, BlockConfig, check_token_ids, init_transformer_
from ..vision.encoders import encode_images  # noqa: F401 (it lived here first; notebooks import it from here)
from .losses import LogitScale, clip_loss


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside the block; the module's training mode comes back after.

    Measurements (retrieval, zero-shot, feature extraction) must not see dropout noise, and
    must not leave a model that was training switched to eval.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def check_distinct_images(image_id: torch.Tensor) -> None:
    """Raise unless image_id (B,) names B different images.

    The contrastive loss treats every off-diagonal pair of a batch as a mismatch. Two rows
    of the same image would make its second caption a "negative" for the first: the loss
    would push apart a picture and a caption that describe each other.

    >>> check_distinct_images(torch.tensor([3, 1, 3]))
    Traceback (most recent call last):
    ...
    ValueError: image_id holds the same image more than once ([3]): the contrastive loss would treat a matching caption as a negative; draw B distinct images per batch
    """
    if image_id.dim() != 1:
        raise ValueError(f"image_id must be (B,), got {tuple(image_id.shape)}")
    values, counts = image_id.unique(return_counts=True)
    if bool((counts > 1).any()):
        repeated = values[counts > 1].tolist()
        raise ValueError(f"image_id holds the same image more than once ({repeated}): the "
                         "contrastive loss would treat a matching caption as a negative; draw B "
                         "distinct images per batch")


def check_features(grid: torch.Tensor, pooled: torch.Tensor, image_dim: int) -> None:
    """Raise unless grid is (B, N, Dv) and pooled (B, Dv) with Dv = image_dim and N >= 1."""
    if (grid.dim() != 3 or grid.shape[1] == 0 or grid.shape[2] != image_dim
            or pooled.shape != (grid.shape[0], image_dim)):
        raise ValueError(f"expected image features grid (B, N, {image_dim}) and pooled "
                         f"(B, {image_dim}), got {tuple(grid.shape)} and {tuple(pooled.shape)}")


class TextTower(nn.Module):
    """Token + position embeddings, ``n_layer`` non-causal blocks, a final LayerNorm.

    Returns every token's state (B, T, D) and one vector per caption (B, D): the mean of the
    states of its non-PAD tokens. Why the mean and not the first token (BERT's [CLS])? The
    first token here is <bos>, the same input in every caption; its state only says something
    about the caption once attention has learned to gather into it, and a small tower trained
    briefly may not get there. The mean gives every word a direct path to the caption vector
    from the first step. Padding is excluded twice: no token attends to a PAD key (the
    key-padding mask), and PAD states are left out of the mean, so appending PAD tokens does
    not change the caption vector.
    """

    def __init__(self, vocab_size: int, d_model: int, n_layer: int, n_head: int, max_len: int,
                 dropout: float = 0.0):
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(BlockConfig(d_model=d_model, n_head=n_head, dropout=dropout, causal=False))
            for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        init_transformer_([self], n_layer)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """idx (B, T) caption tokens, PAD after the end -> states (B, T, D), pooled (B, D)."""
        check_token_ids(idx, self.vocab_size, self.max_len)
        keep = idx != PAD  # (B, T) the caption's real tokens
        empty = (~keep.any(dim=1)).nonzero()
        if len(empty):
            raise ValueError(f"caption {int(empty[0])} holds only padding: an empty caption has "
                             "nothing to embed")
        pos = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, D)
        mask = keep[:, None, None, :]  # (B, 1, 1, T): every query may look at real keys only
        for block in self.blocks:
            x = block(x, mask=mask)  # (B, T, D)
        x = self.ln_f(x)
        # where(), not a product: a PAD state must not reach the mean, even a non-finite one
        summed = torch.where(keep[..., None], x, 0.0).sum(dim=1)  # (B, T, D) -> (B, D)
        pooled = summed / keep.sum(dim=1, keepdim=True).to(x.dtype)  # (B, D)
        return x, pooled


class ImageTower(nn.Module):
    """The trainable image side on top of frozen features: Linear Dv -> D, ``n_adapter``
    non-causal blocks over the grid tokens (0 allowed: a linear adapter), a LayerNorm.

    Returns the adapted tokens (B, N, D) and their mean (B, D) as the image's vector. The
    encoder's own pooled vector is checked but not used: making the pooled vector the mean of
    the adapted tokens means everything trained on it (contrastive loss, attribute head)
    shapes the adapter, the one part every objective shares. For CNN encoders the encoder's
    pooled vector is the mean of the grid anyway.
    """

    def __init__(self, image_dim: int, d_model: int, n_adapter: int, n_head: int,
                 dropout: float = 0.0):
        super().__init__()
        if n_adapter < 0:
            raise ValueError(f"n_adapter must be >= 0, got {n_adapter}")
        self.image_dim = image_dim
        self.in_proj = nn.Linear(image_dim, d_model)
        self.blocks = nn.ModuleList(
            Block(BlockConfig(d_model=d_model, n_head=n_head, dropout=dropout, causal=False))
            for _ in range(n_adapter))
        self.ln = nn.LayerNorm(d_model)
        init_transformer_([self], n_adapter)

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """grid (B, N, Dv), pooled (B, Dv) -> tokens (B, N, D), pooled (B, D)."""
        check_features(grid, pooled, self.image_dim)
        x = self.in_proj(grid)  # (B, N, D)
        for block in self.blocks:
            x = block(x)  # (B, N, D): image tokens attend to each other, no order to respect
        x = self.ln(x)
        return x, x.mean(dim=1)  # (B, N, D), (B, D)


@dataclass
class DualEncoderConfig:
    vocab_size: int  # caption vocabulary, special tokens included
    image_dim: int  # Dv: width of the image encoder's grid and pooled features
    d_model: int = 64  # D: width of both towers
    embed_dim: int = 64  # E: width of the shared embedding space
    n_layer: int = 2  # text tower blocks
    n_adapter: int = 1  # image adapter blocks over the grid tokens (0: linear adapter only)
    n_head: int = 4  # attention heads in every block
    max_len: int = 24  # longest caption in tokens, <bos> and <eos> included
    learn_temperature: bool = True  # train the logit scale (CLIP) or keep it at 1 / 0.07

    def __post_init__(self):
        if min(self.vocab_size, self.image_dim, self.embed_dim, self.max_len) < 1:
            raise ValueError("vocab_size, image_dim, embed_dim and max_len must be >= 1")
        if self.n_layer < 0 or self.n_adapter < 0:
            raise ValueError("n_layer and n_adapter must be >= 0")
        if self.d_model < 1 or self.n_head < 1 or self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be a positive multiple of "
                             f"n_head={self.n_head}")


class DualEncoder(nn.Module):
    """Image features and captions -> unit vectors in one space of width E, and the scale."""

    def __init__(self, config: DualEncoderConfig):
        super().__init__()
        self.config = c = config
        self.image = ImageTower(c.image_dim, c.d_model, c.n_adapter, c.n_head)
        self.text = TextTower(c.vocab_size, c.d_model, c.n_layer, c.n_head, c.max_len)
        # no bias: a shared offset would add the same vector to every embedding, which only
        # pulls all of them towards one direction
        self.image_proj = nn.Linear(c.d_model, c.embed_dim, bias=False)
        self.text_proj = nn.Linear(c.d_model, c.embed_dim, bias=False)
        self.scale = LogitScale(learnable=c.learn_temperature)
        # the towers initialised themselves; the projections are the rest of what this owns
        init_transformer_([self.image_proj, self.text_proj], n_layer=1)  # no residual writes

    def embed_images(self, grid: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """grid (B, N, Dv), pooled (B, Dv) -> (B, E), each row of length 1."""
        return F.normalize(self.image_proj(self.image(grid, pooled)[1]), dim=-1)

    def embed_texts(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) caption tokens -> (B, E), each row of length 1."""
        return F.normalize(self.text_proj(self.text(idx)[1]), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        """ln(1 / temperature), capped at ln 100; a constant with learn_temperature=False."""
        return self.scale()

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, idx: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings (B, E), caption embeddings (B, E), logit scale ())."""
        return self.embed_images(grid, pooled), self.embed_texts(idx), self.logit_scale()


def contrastive_loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """The engine's loss: batch {"grid", "pooled", "idx"} of B distinct images with one
    caption each -> (clip_loss * B, B), so the engine's mean over items is the CLIP loss.

    A batch that carries "image_id" (``pretrainer.image_batches``) is checked for repeats.
    """
    if "image_id" in batch:
        check_distinct_images(batch["image_id"])
    # a batch from caption_targets holds idx without its last token: read the captions whole
    idx = whole_captions(batch["idx"], batch["targets"]) if "targets" in batch else batch["idx"]
    img, txt, scale = model(batch["grid"], batch["pooled"], idx)
    B = img.shape[0]
    return clip_loss(img, txt, scale) * B, B


def zero_shot_scores(model: nn.Module, grid: torch.Tensor, pooled: torch.Tensor,
                     prompt_idx: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B, C) of each image to each of C class prompts (C, T), e.g. the
    tokens of "a red circle", "a blue square", ...; the predicted class is the row's argmax.

    No classifier is trained: the classes are named in words, and the caption tower turns
    the names into the weights of a linear classifier. Prompts may be padded to a common
    length (padding does not change a caption's embedding). ``model``: a ``DualEncoder``, or
    any model with the same ``embed_images`` and ``embed_texts`` (the ``Pretrainer``).
    """
    with evaluating(model):
        img = model.embed_images(grid, pooled)  # (B, E)
        txt = model.embed_texts(prompt_idx)  # (C, E)
        return img @ txt.T  # (B, C)


def similarity_matrix(model: nn.Module, grid: torch.Tensor, pooled: torch.Tensor,
                      idx: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Cosine similarity (N_img, N_txt) of every image to every caption, for retrieval
    (``velm_course.eval.retrieval.recall_at_k``). Each side is embedded once, ``batch_size``
    items at a time; the matrix is one product of the two sets of unit vectors. ``model`` as
    in ``zero_shot_scores``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with evaluating(model):
        img = torch.cat([model.embed_images(grid[i:i + batch_size], pooled[i:i + batch_size])
                         for i in range(0, len(grid), batch_size)])  # (N_img, E)
        txt = torch.cat([model.embed_texts(idx[i:i + batch_size])
                         for i in range(0, len(idx), batch_size)])  # (N_txt, E)
        return img @ txt.T  # (N_img, N_txt)
