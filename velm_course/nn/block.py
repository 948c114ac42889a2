"""The Transformer block every model of the course is built from, and its feed-forward layer.

    x = x + SelfAttn(LN(x))                  causal for a decoder, not for an encoder
    x = x + CrossAttn(LN(x), memory)         only in blocks built with cross_attention=True
    x = x + MLP(LN(x))

Pre-norm: normalising the input of each branch (rather than the sum, as the original
Transformer did) leaves a clean identity path from the embeddings to the output, which makes
deep stacks far less dependent on the long learning-rate warm-up the original needed. It does
not make the learning rate irrelevant: notebook 06's small ViT, trained with no warm-up at all,
learns faster at 1e-3 than at the CNN's 3e-3. GPT and BERT are stacks of blocks
without cross-attention (causal and not); the ViT is a non-causal stack over patch tokens;
the captioner's decoder is a causal stack with cross-attention to the image tokens.

Dropout sits in one place per branch: on the attention weights, and on each branch's output
before it is added back to the residual stream.

Shape letters: B batch, T tokens, S memory tokens, C model width.

>>> block = Block(BlockConfig(d_model=16, n_head=2, causal=True, cross_attention=True))
>>> block(torch.randn(2, 5, 16), memory=torch.randn(2, 7, 16)).shape
torch.Size([2, 5, 16])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, MultiHeadAttention

# GELU comes in two forms: the exact x * Phi(x) ("gelu"), and the tanh approximation GPT-2 was
# trained with (Hugging Face calls it "gelu_new"). They differ by ~1e-3, enough to matter
# when loading pretrained weights.
ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}


class MLP(nn.Module):
    """The position-wise feed-forward layer: widen (4× by default), GELU, project back."""

    def __init__(
        self, d_model: int, hidden: int | None = None, dropout: float = 0.0, bias: bool = True,
        activation: str = "gelu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use one of {sorted(ACTIVATIONS)}")
        self.approximate = ACTIVATIONS[activation]
        hidden = hidden or 4 * d_model
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.proj = nn.Linear(hidden, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


@dataclass
class BlockConfig:
    d_model: int  # width C of the residual stream
    n_head: int  # attention heads; must divide d_model
    mlp_hidden: int | None = None  # hidden width of the MLP (None: 4 * d_model)
    dropout: float = 0.0  # on attention weights and on each branch's output
    bias: bool = True  # biases in the Linear and LayerNorm layers
    activation: str = "gelu"  # MLP nonlinearity: "gelu" (exact) or "gelu_tanh" (GPT-2's)
    ln_eps: float = 1e-5  # LayerNorm epsilon (1e-5 in GPT-2, 1e-6 in the original ViT)
    causal: bool = False  # self-attention sees only earlier positions (a decoder)
    cross_attention: bool = False  # add a sub-layer that attends to a memory (image tokens)

    def __post_init__(self):
        if self.d_model < 1 or self.n_head < 1 or self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be a positive multiple of n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class BlockWeights(NamedTuple):
    self_attn: torch.Tensor  # (B, nh, T, T + cached)
    cross_attn: torch.Tensor | None  # (B, nh, T, S), None without cross-attention


class Block(nn.Module):
    def __init__(self, config: BlockConfig):
        super().__init__()
        c = config.d_model
        self.causal = config.causal
        self.ln_1 = nn.LayerNorm(c, eps=config.ln_eps, bias=config.bias)
        self.attn = MultiHeadAttention(c, config.n_head, config.dropout, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)
        if config.cross_attention:
            self.ln_cross = nn.LayerNorm(c, eps=config.ln_eps, bias=config.bias)
            self.cross_attn = MultiHeadAttention(c, config.n_head, config.dropout, bias=config.bias)
        else:
            self.cross_attn = None
        self.ln_2 = nn.LayerNorm(c, eps=config.ln_eps, bias=config.bias)
        self.mlp = MLP(c, config.mlp_hidden, config.dropout, config.bias, config.activation)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, BlockWeights]:
        """x: (B, T, C); memory: (B, S, C) for cross-attention. Returns (B, T, C), and the
        attention weights of both sub-layers with ``need_weights``."""
        if (memory is None) != (self.cross_attn is None):
            raise ValueError("pass memory exactly when the block was built with cross_attention=True")
        a = self.attn(self.ln_1(x), causal=self.causal, mask=mask, cache=cache, need_weights=need_weights)
        a, w_self = a if need_weights else (a, None)
        x = x + self.drop(a)  # (B, T, C)
        w_cross = None
        if self.cross_attn is not None:
            a = self.cross_attn(self.ln_cross(x), memory=memory, mask=memory_mask, need_weights=need_weights)
            a, w_cross = a if need_weights else (a, None)
            x = x + self.drop(a)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return (x, BlockWeights(w_self, w_cross)) if need_weights else x
