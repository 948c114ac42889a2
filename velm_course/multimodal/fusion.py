"""Fusion: four ways for text to meet an image, behind one interface.

Every fusion module takes the same three inputs and returns text states of the same shape:

    fused = fusion(text, grid, pooled)
    text (B, T, D) word states · grid (B, N, Dv) image tokens · pooled (B, Dv) → fused (B, T, D)

and owns its whole stack of ``n_layer`` Transformer layers (the shared ``velm_course.nn.Block``),
because *where* in the stack the image enters is exactly what tells the variants apart:

    concat            the pooled image vector, projected to D, is added to (or concatenated with
                      and mixed into) every word's input; self-attention layers follow. One
                      vector for the whole picture: no notion of where things are.
    prefix            the pooled vector becomes k "visual words" put before the caption
                      (ClipCap); the decoder's own self-attention reads them. Still one vector's
                      worth of information, spread over k slots.
    cross_attention   after the self-attention of every layer, each word attends to the image
                      tokens (the Transformer decoder, Flamingo). The only variant here that can
                      look at *different regions* for different words. With ``gated=True`` the
                      image enters through tanh(g)·CrossAttn, g initialised at 0: the model starts
                      as the text-only model exactly, and learns how much to look.
    co_attention      two streams, text and image, each with its own layers; in every layer each
                      stream attends to the other's states (ViLBERT, LXMERT). As an *encoder*
                      (``causal=False``: matching, VQA) information flows both ways. As a
                      *decoder* (``causal=True``) the image stream must not read the words:
                      image token j would then mix in word t+1, and word t, reading token j,
                      would see the future. So a causal co-attention model lets information
                      flow image → text only, and its image stream is an encoder of its own.

Generation feeds one new word at a time; each module takes ``caches`` (one ``KVCache`` per
causal self-attention layer, from ``new_caches()``) and then ``text`` holds only the new words.

Shape letters: B batch, T words, N image tokens, D model width, Dv image feature width,
k prefix tokens, nh heads.

>>> cfg = FusionConfig(kind="prefix", d_model=16, image_dim=8, n_layer=1, n_head=2, n_prefix=3)
>>> fusion = build_fusion(cfg)
>>> fusion(torch.randn(2, 5, 16), torch.randn(2, 4, 8), torch.randn(2, 8)).shape
torch.Size([2, 5, 16])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..nn import Block, BlockConfig, KVCache, MultiHeadAttention
from ..nn.block import MLP

FUSION_KINDS = ("concat", "prefix", "cross_attention", "co_attention")


@dataclass
class FusionConfig:
    kind: str = "cross_attention"  # one of FUSION_KINDS
    d_model: int = 128  # D: width of the word states in and out
    image_dim: int = 128  # Dv: width of the encoder's grid and pooled features
    n_layer: int = 2  # Transformer layers (per stream for co_attention)
    n_head: int = 4  # attention heads in every attention layer
    dropout: float = 0.0  # dropout on attention weights and residual branches while training
    causal: bool = True  # a decoder (word t sees words <= t) or an encoder (sees all words)
    concat_mode: str = "add"  # concat: "add" the projected image to each word, or "concat" and mix
    n_prefix: int = 4  # prefix: visual words put before the text
    gated: bool = False  # cross_attention: tanh-gated cross-attention, gate closed at the start

    def __post_init__(self):
        if self.kind not in FUSION_KINDS:
            raise ValueError(f"unknown fusion kind {self.kind!r}: choose from {FUSION_KINDS}")
        if self.concat_mode not in ("add", "concat"):
            raise ValueError(f"concat_mode must be 'add' or 'concat', got {self.concat_mode!r}")
        if self.n_layer < 1 or self.n_prefix < 1:
            raise ValueError("n_layer and n_prefix must be >= 1")
        if self.gated and self.kind != "cross_attention":
            raise ValueError("gated=True is a cross_attention option")


class Fusion(nn.Module):
    """What the four variants share: input checks, the cache list, the attention-map switch."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config

    def block(self, cross_attention: bool = False, causal: bool | None = None) -> Block:
        c = self.config
        return Block(BlockConfig(d_model=c.d_model, n_head=c.n_head, dropout=c.dropout,
                                 causal=c.causal if causal is None else causal,
                                 cross_attention=cross_attention))

    def new_caches(self) -> list[KVCache]:
        """Empty KV caches for generation, one per causal self-attention layer."""
        if not self.config.causal:
            raise ValueError("only a causal (decoder) fusion generates word by word")
        return [KVCache() for _ in range(self.config.n_layer)]

    def past_words(self, caches: list[KVCache] | None) -> int:
        """How many words the caches already hold (position of the next word)."""
        return 0 if caches is None else len(caches[0])

    def check(self, text, grid, pooled, caches) -> None:
        c = self.config
        if text.dim() != 3 or text.shape[-1] != c.d_model:
            raise ValueError(f"text must be (B, T, {c.d_model}), got {tuple(text.shape)}")
        if grid.dim() != 3 or grid.shape[-1] != c.image_dim or pooled.shape != (grid.shape[0], c.image_dim):
            raise ValueError(f"expected grid (B, N, {c.image_dim}) and pooled (B, {c.image_dim}), got "
                             f"{tuple(grid.shape)} and {tuple(pooled.shape)}")
        if text.shape[0] != grid.shape[0]:
            raise ValueError(f"text and image batch sizes differ: {text.shape[0]} vs {grid.shape[0]}")
        if caches is not None and len(caches) != len(self.new_caches()):
            raise ValueError(f"expected {len(self.new_caches())} caches, got {len(caches)}")

    def forward(self, text: torch.Tensor, grid: torch.Tensor, pooled: torch.Tensor,
                caches: list[KVCache] | None = None, need_weights: bool = False,
                text_mask: torch.Tensor | None = None):
        """Fused word states (B, T, D). With ``need_weights`` also a list with one entry per
        layer of the words' attention over the image tokens (B, nh, T, N), or [] for the
        variants that have none (concat, prefix).

        ``text_mask`` (B, T), True at real words, keeps an encoder's words from attending to
        padding (a causal decoder needs none: padding only ever follows the words).
        """
        self.check(text, grid, pooled, caches)
        key_mask = None
        if text_mask is not None:
            if text_mask.shape != text.shape[:2]:
                raise ValueError(f"text_mask must be (B, T) = {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
            key_mask = text_mask[:, None, None, :].bool()  # (B, 1, 1, T): every head, every query
        out, maps = self.fuse(text, grid, pooled, caches, need_weights, key_mask)
        return (out, maps) if need_weights else out

    def fuse(self, text, grid, pooled, caches, need_weights, key_mask):
        raise NotImplementedError


class ConcatFusion(Fusion):
    """The seed document's idea made correct: one image vector joins every word's input.

    ``add``:    x_t = w_t + P v           (P: Dv → D)
    ``concat``: x_t = M [w_t ; P v]       (M: 2D → D), the seed's Linear(768 + 1000, 768) on
                                          shapes that line up: the image vector is repeated
                                          along time before the concatenation.
    """

    def __init__(self, config: FusionConfig):
        super().__init__(config)
        self.image_proj = nn.Linear(config.image_dim, config.d_model)
        self.mix = nn.Linear(2 * config.d_model, config.d_model) if config.concat_mode == "concat" else None
        self.blocks = nn.ModuleList(self.block() for _ in range(config.n_layer))

    def fuse(self, text, grid, pooled, caches, need_weights, key_mask):
        v = self.image_proj(pooled)[:, None, :]  # (B, 1, D): one vector per image
        if self.mix is None:
            x = text + v  # (B, T, D), broadcast along T
        else:
            x = self.mix(torch.cat([text, v.expand(-1, text.shape[1], -1)], dim=-1))  # (B, T, 2D) -> (B, T, D)
        for i, block in enumerate(self.blocks):
            x = block(x, mask=key_mask, cache=None if caches is None else caches[i])
        return x, []


class PrefixFusion(Fusion):
    """ClipCap's prefix: an MLP maps the pooled image to k visual words put before the text.

    The self-attention layers see k + T positions; the first k outputs are dropped, since
    only words are predicted. A learned embedding per prefix slot lets the k slots differ.
    """

    def __init__(self, config: FusionConfig):
        super().__init__(config)
        k, d = config.n_prefix, config.d_model
        self.mapper = nn.Sequential(nn.Linear(config.image_dim, k * d), nn.Tanh(), nn.Linear(k * d, k * d))
        self.slot_emb = nn.Parameter(torch.randn(1, k, d) * 0.02)
        self.blocks = nn.ModuleList(self.block() for _ in range(config.n_layer))

    def past_words(self, caches):
        # the caches hold the prefix too, once the first call has put it there
        return 0 if caches is None or len(caches[0]) == 0 else len(caches[0]) - self.config.n_prefix

    def fuse(self, text, grid, pooled, caches, need_weights, key_mask):
        B, T, D = text.shape
        k = self.config.n_prefix
        first = caches is None or len(caches[0]) == 0
        if first:  # the prefix goes in once; later steps find it in the caches
            prefix = self.mapper(pooled).view(B, k, D) + self.slot_emb  # (B, k*D) -> (B, k, D)
            x = torch.cat([prefix, text], dim=1)  # (B, k + T, D)
        else:
            x = text
        mask = key_mask
        if mask is not None and first:  # the prefix slots are always there to be read
            mask = torch.cat([mask.new_ones(B, 1, 1, k), mask], dim=-1)  # (B, 1, 1, k + T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, cache=None if caches is None else caches[i])
        return (x[:, k:] if first else x), []  # (B, T, D): the words only


class GatedCrossAttention(nn.Module):
    """Flamingo's gated cross-attention layer, put before a text layer:

        x = x + tanh(g_attn) · CrossAttn(LN(x), image)
        x = x + tanh(g_mlp)  · MLP(LN(x))

    Both gates start at 0, so the layer starts as the identity: a (pretrained) text model keeps
    its behaviour exactly until training opens the gates.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_head, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout=dropout)
        self.gate_attn = nn.Parameter(torch.zeros(()))
        self.gate_mlp = nn.Parameter(torch.zeros(()))

    def forward(self, x, memory, need_weights: bool = False):
        a = self.attn(self.ln_1(x), memory=memory, need_weights=need_weights)
        a, w = a if need_weights else (a, None)
        x = x + torch.tanh(self.gate_attn) * a  # (B, T, D)
        x = x + torch.tanh(self.gate_mlp) * self.mlp(self.ln_2(x))
        return x, w


def image_projection(config: FusionConfig) -> nn.Module:
    """Dv -> D for the image tokens; nothing to learn when the widths already agree."""
    return nn.Identity() if config.image_dim == config.d_model else nn.Linear(config.image_dim, config.d_model)


class CrossAttentionFusion(Fusion):
    """Every layer: causal self-attention, then cross-attention from the words to the image
    tokens, then the MLP (one ``Block`` with ``cross_attention=True``). With ``gated=True``
    the text layers have no cross-attention of their own; a ``GatedCrossAttention`` layer
    before each one brings the image in, starting closed."""

    def __init__(self, config: FusionConfig):
        super().__init__(config)
        self.image_proj = image_projection(config)
        self.blocks = nn.ModuleList(self.block(cross_attention=not config.gated) for _ in range(config.n_layer))
        self.gates = nn.ModuleList(
            GatedCrossAttention(config.d_model, config.n_head, config.dropout) for _ in range(config.n_layer)
        ) if config.gated else None

    def fuse(self, text, grid, pooled, caches, need_weights, key_mask):
        memory = self.image_proj(grid)  # (B, N, D)
        x, maps = text, []
        for i, block in enumerate(self.blocks):
            cache = None if caches is None else caches[i]
            if self.gates is not None:
                x, w = self.gates[i](x, memory, need_weights)
                x = block(x, mask=key_mask, cache=cache)
            else:
                out = block(x, memory=memory, mask=key_mask, cache=cache, need_weights=need_weights)
                x, w = (out[0], out[1].cross_attn) if need_weights else (out, None)
            maps.append(w)
        return x, maps if need_weights else []


class CoAttentionFusion(Fusion):
    """Two streams of ``Block``s. Text layer l attends to the image states v_l; image layer l
    turns v_l into v_(l+1), attending to the text states from before text layer l (both
    exchanges read the other stream's states from before the layer, as in ViLBERT's
    co-attention). The text stream has the last word, so there is one image layer fewer
    than text layers: an image layer after the last text layer would have no reader.

    Causal (a decoder): the image stream does not read the text (see the module docstring).
    """

    def __init__(self, config: FusionConfig):
        super().__init__(config)
        self.image_proj = image_projection(config)
        self.text_blocks = nn.ModuleList(self.block(cross_attention=True) for _ in range(config.n_layer))
        # image tokens have no order to respect: never causal among themselves
        self.image_blocks = nn.ModuleList(
            self.block(cross_attention=not config.causal, causal=False) for _ in range(config.n_layer - 1))

    def fuse(self, text, grid, pooled, caches, need_weights, key_mask):
        x, v, maps = text, self.image_proj(grid), []  # (B, T, D), (B, N, D)
        for i, tb in enumerate(self.text_blocks):
            cache = None if caches is None else caches[i]
            out = tb(x, memory=v, mask=key_mask, cache=cache, need_weights=need_weights)
            x_new, w = (out[0], out[1].cross_attn) if need_weights else (out, None)
            if i < len(self.image_blocks):
                ib = self.image_blocks[i]
                # x: the text before this layer; the image reads real words only
                v = ib(v) if self.config.causal else ib(v, memory=x, memory_mask=key_mask)
            x = x_new
            maps.append(w)
        return x, maps if need_weights else []


_KINDS = {"concat": ConcatFusion, "prefix": PrefixFusion, "cross_attention": CrossAttentionFusion,
          "co_attention": CoAttentionFusion}


def build_fusion(config: FusionConfig, init: bool = True) -> Fusion:
    """The fusion module named by ``config.kind``, with the course's Transformer initialisation
    (``init=False`` leaves that to a model that initialises its parts together).

    >>> [type(build_fusion(FusionConfig(kind=k, d_model=8, image_dim=8, n_head=2))).__name__
    ...  for k in FUSION_KINDS]
    ['ConcatFusion', 'PrefixFusion', 'CrossAttentionFusion', 'CoAttentionFusion']
    """
    from ..nn import init_transformer_

    fusion = _KINDS[config.kind](config)
    if init:
        # the 1/sqrt(2 n_layer) scaling counts one stream's depth; the gates and prefix slots
        # are plain Parameters, which init_transformer_ leaves as built (gates closed at 0)
        init_transformer_([fusion], config.n_layer)
    return fusion
