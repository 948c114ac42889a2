"""An image-captioning model: image tokens → a Transformer decoder that attends to them.

    P(caption | image) = prod_t P(w_t | w_<t, image)

The image encoder turns a picture into a small grid of tokens (B, N, C). The decoder is a
GPT-style stack of pre-norm blocks with one extra sub-layer: after causal self-attention
over the words written so far, each word position cross-attends to the image tokens. That
is the only place the image enters, so a "blind" model (``blind=True``) that swaps the image
tokens for one learned constant token is the same network minus vision: the baseline that
shows what the image is worth.

Shape letters: B batch, T caption tokens, N image tokens, C model width, V vocabulary.

>>> cfg = CaptionerConfig(vocab_size=20, d_model=32, n_layer=1, n_head=2, image_size=64)
>>> model = Captioner(cfg)
>>> logits, loss = model(torch.rand(2, 3, 64, 64), torch.ones(2, 5, dtype=torch.long))
>>> tuple(logits.shape), loss is None
((2, 5, 20), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MLP, MultiHeadAttention
from .encoders import build_image_encoder
from .vocab import BOS, EOS, PAD


@dataclass
class CaptionerConfig:
    vocab_size: int  # number of caption words, special tokens included
    d_model: int = 128  # width of image tokens, word embeddings and every block
    n_layer: int = 2  # decoder blocks
    n_head: int = 4  # attention heads in each self- and cross-attention
    max_len: int = 24  # longest caption in tokens, <bos> and <eos> included
    dropout: float = 0.1  # dropout inside attention and MLPs while training
    image_size: int = 64  # side of the square input images
    encoder: str = "small_cnn"  # image encoder name, see velm_course.encoders
    blind: bool = False  # True: never look at the image (the no-vision baseline)


class DecoderBlock(nn.Module):
    """Pre-norm: x + SelfAttn(LN(x)), then x + CrossAttn(LN(x), image), then x + MLP(LN(x))."""

    def __init__(self, config: CaptionerConfig):
        super().__init__()
        c = config.d_model
        self.ln_self = nn.LayerNorm(c)
        self.self_attn = MultiHeadAttention(c, config.n_head, config.dropout)
        self.ln_cross = nn.LayerNorm(c)
        self.cross_attn = MultiHeadAttention(c, config.n_head, config.dropout)
        self.ln_mlp = nn.LayerNorm(c)
        self.mlp = MLP(c, config.dropout)

    def forward(self, x: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.ln_self(x), causal=True)  # (B, T, C)
        x = x + self.cross_attn(self.ln_cross(x), memory=image_tokens)  # (B, T, C)
        return x + self.mlp(self.ln_mlp(x))


class Captioner(nn.Module):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        self.config = config
        c = config.d_model
        if config.blind:
            # one learned "image" token that carries no information about the picture
            self.encoder = None
            self.blind_token = nn.Parameter(torch.zeros(1, 1, c))
        else:
            self.encoder = build_image_encoder(config.encoder, c, config.image_size)
            self.ln_image = nn.LayerNorm(c)
        self.tok_emb = nn.Embedding(config.vocab_size, c)
        self.pos_emb = nn.Embedding(config.max_len, c)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(c)
        self.lm_head = nn.Linear(c, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying: one table for reading and writing words
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, N, C) for the decoder to attend to (N = 1 for the blind model)."""
        if self.encoder is None:
            return self.blind_token.expand(images.shape[0], -1, -1)  # (B, 1, C)
        grid, _pooled = self.encoder(images)  # (B, N, C)
        return self.ln_image(grid)

    def decode(self, image_tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Next-word logits (B, T, V) for caption prefixes idx (B, T)."""
        T = idx.shape[1]
        if T > self.config.max_len:
            raise ValueError(f"caption of {T} tokens is longer than max_len={self.config.max_len}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x, image_tokens)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def forward(
        self, images: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: logits for every position, and the mean cross-entropy if targets given.

        ``targets`` is ``idx`` shifted left by one; <pad> targets are ignored by the loss.
        """
        logits = self.decode(self.encode(images), idx)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD)
        return logits, loss

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_new_tokens: int | None = None) -> torch.Tensor:
        """Greedy decoding: start from <bos>, append the most likely word until <eos>.

        Returns (B, T') token ids without the leading <bos>. The image is encoded once and
        reused at every step; the decoder re-reads the whole prefix each step, which costs
        little for captions of ~20 tokens.
        """
        max_new_tokens = max_new_tokens or self.config.max_len - 1
        image_tokens = self.encode(images)
        B = images.shape[0]
        idx = torch.full((B, 1), BOS, dtype=torch.long, device=images.device)
        done = torch.zeros(B, dtype=torch.bool, device=images.device)
        for _ in range(min(max_new_tokens, self.config.max_len - 1)):
            logits = self.decode(image_tokens, idx)[:, -1]  # (B, V)
            nxt = logits.argmax(dim=-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)  # finished captions only pad
            idx = torch.cat([idx, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if done.all():
                break
        return idx[:, 1:]
