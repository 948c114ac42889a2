"""Multi-head attention, the one building block shared by every Transformer in the course.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(hs)) V

Self-attention takes Q, K and V from the same sequence; cross-attention takes Q from the
text and K, V from something else (image tokens). One module does both: pass ``memory`` for
cross-attention. The arithmetic runs in ``F.scaled_dot_product_attention``, which is the
same formula as above in one fused, memory-saving kernel; the language-model chapter
writes it out by hand and tests that the two agree.

Shape letters: B batch, T query length, S key/value length, C model width,
nh heads, hs = C // nh head size.

>>> attn = MultiHeadAttention(d_model=32, n_head=4)
>>> attn(torch.randn(2, 5, 32), causal=True).shape
torch.Size([2, 5, 32])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)  # keys and values in one matmul
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """x: (B, T, C) queries; memory: (B, S, C) keys/values, default x itself."""
        B, T, C = x.shape
        src = x if memory is None else memory
        S = src.shape[1]
        q = self.q_proj(x)  # (B, T, C)
        k, v = self.kv_proj(src).split(C, dim=2)  # each (B, S, C)
        # split C into nh heads of hs and move heads next to batch: (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, S, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, S, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return self.out_proj(y)


class MLP(nn.Module):
    """The position-wise feed-forward layer: widen 4×, GELU, project back."""

    def __init__(self, d_model: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))
