"""Multi-head attention, the one building block shared by every Transformer in the course.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(hs)) V

Self-attention takes Q, K and V from the same sequence; cross-attention takes Q from the
text and K, V from something else (image tokens). One module does both: pass ``memory`` for
cross-attention. The arithmetic runs in ``F.scaled_dot_product_attention``, which is the
same formula as above in one fused, memory-saving kernel; ``velm_course.transformer`` writes
it out by hand and tests that the two agree.

For generation, self-attention can keep a ``KVCache``: the keys and values of the tokens it has
already seen, so each new token costs one row of work instead of recomputing the whole prefix.

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


class KVCache:
    """The keys and values one self-attention layer has computed so far, (B, nh, S, hs) each.

    >>> cache = KVCache()
    >>> k, v = cache.append(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    >>> len(cache)
    3
    """

    def __init__(self):
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new tokens' keys and values; return all of them, old ones first."""
        # concatenating copies the cache each step: simple, and cheap next to the model itself
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=bias)  # keys and values in one matmul
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C) queries; memory: (B, S, C) keys/values, default x itself.

        With ``cache`` (self-attention only), x holds just the new tokens: their keys and values
        are appended to the cache and the queries attend to everything cached.
        """
        if cache is not None and memory is not None:
            raise ValueError("a KV cache is for self-attention; cross-attention keys never change")
        B, T, C = x.shape
        src = x if memory is None else memory
        S = src.shape[1]
        q = self.q_proj(x)  # (B, T, C)
        k, v = self.kv_proj(src).split(C, dim=2)  # each (B, S, C)
        # split C into nh heads of hs and move heads next to batch: (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, S, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, S, hs)
        mask = None
        if cache is not None:
            past = len(cache)
            k, v = cache.append(k, v)  # (B, nh, past + T, hs)
            if causal and past > 0:
                # is_causal lines the mask up top-left, as if queries started at key 0; here
                # query i sits at position past + i, so it may see keys 0 .. past + i.
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
                causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return self.out_proj(y)


# GELU comes in two forms: the exact x * Phi(x) ("gelu"), and the tanh approximation GPT-2 was
# trained with (Hugging Face calls it "gelu_new"). They differ by ~1e-3, enough to matter
# when loading pretrained weights.
ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}


class MLP(nn.Module):
    """The position-wise feed-forward layer: widen 4×, GELU, project back."""

    def __init__(
        self, d_model: int, dropout: float = 0.0, bias: bool = True, activation: str = "gelu"
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use one of {sorted(ACTIVATIONS)}")
        self.approximate = ACTIVATIONS[activation]
        self.fc = nn.Linear(d_model, 4 * d_model, bias=bias)
        self.proj = nn.Linear(4 * d_model, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))
