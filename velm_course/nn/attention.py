"""Attention: the formula written out, and the one multi-head module every Transformer uses.

Each position asks a question (a query q), and every position offers a label (a key k) and a
content (a value v). The answer at a position is a weighted average of the values, weighted
by how well each key matches the query:

    weights = softmax(q k^T / sqrt(hs)),    output = weights v

Why divide by sqrt(hs)? If the entries of q and k are independent with unit variance, the dot
product q . k sums hs such products and so has variance hs. Without the scaling, wide heads
give large scores, the softmax saturates to a one-hot and its gradients vanish.

A language model must not peek at the word it predicts, so with ``causal=True`` position t
may only attend to positions <= t: the causal mask sets the other scores to -inf before the
softmax (exp(-inf) = 0).

``softmax``, ``attention_weights`` and ``attention`` are the teaching versions; the tests
check them against ``F.scaled_dot_product_attention``, the fused kernel that
``MultiHeadAttention`` runs. One module does self-attention (keys from x itself) and
cross-attention (keys from ``memory``, e.g. image tokens), causal or not, with an optional
``KVCache`` for generation and optional returned weights for visualisation.

Shape letters: B batch, T query length, S key/value length, C model width,
nh heads, hs = C // nh head size.

>>> attn = MultiHeadAttention(d_model=32, n_head=4)
>>> attn(torch.randn(2, 5, 32), causal=True).shape
torch.Size([2, 5, 32])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """exp(s_i) / sum_j exp(s_j) over the last axis, written out.

    Subtracting the row maximum first changes nothing mathematically (it cancels in the ratio)
    but keeps exp() from overflowing. A row that is all -inf has no valid entry and gives nan.

    >>> softmax(torch.tensor([0.0, math.log(3.0)]))
    tensor([0.2500, 0.7500])
    """
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def causal_mask(T: int, S: int, device=None) -> torch.Tensor:
    """(T, S) booleans, True where query i may see key j: the last T of S positions are queries.

    With S == T this is the usual lower triangle; with S > T (a KV cache holding S - T earlier
    tokens) query i sits at position S - T + i and sees keys 0 .. S - T + i.

    >>> causal_mask(2, 3).int().tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)): how much each query (..., T, hs) takes from each key (..., S, hs).

    ``mask``: booleans broadcastable to (..., T, S), True where a query may look at a key.
    ``causal``: query i sees keys up to its own position (see ``causal_mask``).
    A query that may look at no key at all (a padded position) gets all-zero weights, as in
    ``F.scaled_dot_product_attention``, rather than the nan of a softmax over nothing.

    >>> attention_weights(torch.eye(2), torch.eye(2), mask=torch.tensor([[True, False], [False, False]]))
    tensor([[1., 0.],
            [0., 0.]])
    """
    hs = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (..., T, S)
    if causal:
        cm = causal_mask(scores.shape[-2], scores.shape[-1], q.device)  # (T, S)
        mask = cm if mask is None else mask & cm
    if mask is None:
        return softmax(scores)  # (..., T, S)
    scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no weight at all
    # a nan in a padded row would spread: the next layer multiplies it by a zero weight
    return softmax(scores).masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # (..., T, S)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention, the teaching version: softmax(q k^T / sqrt(hs)) v.

    q: (..., T, hs), k and v: (..., S, hs); ``mask`` and ``causal`` as in ``attention_weights``.

    >>> q = k = v = torch.eye(2)
    >>> attention(q, k, v, causal=True)[0]  # the first query can only see the first key
    tensor([1., 0.])
    """
    return attention_weights(q, k, mask, causal) @ v  # (..., T, S) @ (..., S, hs) -> (..., T, hs)


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

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` (B',) of the batch, e.g. the surviving beams of a beam search."""
        if self.k is not None:
            self.k, self.v = self.k[index], self.v[index]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query and (key, value) projections.

    Keeping q apart from k, v lets one module serve self-attention (k, v from x) and
    cross-attention (k, v from ``memory``) with the same weights layout.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be divisible by n_head={n_head}")
        self.n_head = n_head
        self.dropout = dropout  # on the attention weights while training
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=bias)  # keys and values in one matmul
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        causal: bool = False,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C) queries; memory: (B, S, C) keys/values, default x itself.

        ``mask``: booleans broadcastable to (B, nh, T, S), True where a query may look (e.g. a
        key-padding mask of shape (B, 1, 1, S)). With ``cache`` (self-attention only), x holds
        just the new tokens: their keys and values are appended to the cache and the queries
        attend to everything cached. With ``need_weights`` the attention weights
        (B, nh, T, S) are returned too, computed by the written-out formula.
        """
        if cache is not None and memory is not None:
            raise ValueError("a KV cache is for self-attention; cross-attention keys never change")
        B, T, C = x.shape
        src = x if memory is None else memory
        S = src.shape[1]
        hs = C // self.n_head
        q = self.q_proj(x)  # (B, T, C)
        k, v = self.kv_proj(src).split(C, dim=2)  # each (B, S, C)
        # split C into nh heads of hs and move heads next to batch
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, S, self.n_head, hs).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, self.n_head, hs).transpose(1, 2)  # (B, nh, S, hs)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, nh, past + T, hs)
        S = k.shape[2]
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = attention_weights(q, k, mask, causal)  # (B, nh, T, S)
            y = F.dropout(weights, p, self.training) @ v  # (B, nh, T, hs)
        else:
            if causal and (mask is not None or S != T):
                # is_causal lines its mask up top-left, as if queries started at key 0; with a
                # cache (S > T) or an extra mask we build the bottom-right aligned mask ourselves
                cm = causal_mask(T, S, x.device)  # (T, S)
                mask = cm if mask is None else mask & cm
                causal = False
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        y = self.out_proj(y)
        return (y, weights) if need_weights else y
