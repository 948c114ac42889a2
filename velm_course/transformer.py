"""A GPT language model, and a small BERT: the Transformer with and without a causal mask.

Attention, derived. Each position asks a question (a query q), and every position offers a
label (a key k) and a content (a value v). The answer at a position is a weighted average of
the values, weighted by how well each key matches the query:

    weights = softmax(q k^T / sqrt(hs)),    output = weights v

Why divide by sqrt(hs)? If the entries of q and k are independent with unit variance, the
dot product q . k sums hs such products and so has variance hs. Without the scaling, wide
heads give large scores, the softmax saturates to a one-hot and its gradients vanish.

A language model must not peek at the word it is predicting, so in GPT position t may only
attend to positions <= t: the causal mask sets the other scores to -inf before the softmax
(exp(-inf) = 0). BERT drops the mask and instead hides some input words (``mask_tokens``),
training the model to fill them in from both sides.

``attention`` below is the formula written out; the models run the same arithmetic through
``F.scaled_dot_product_attention`` (one fused kernel, in ``velm_course.attention``) and the
tests check that the two agree.

Shape letters: B batch, T query length, S key length, C = n_embd model width, nh heads,
hs = C // nh head size, V vocabulary.

>>> model = GPT(GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=16))
>>> logits, loss = model(torch.zeros(2, 8, dtype=torch.long))
>>> tuple(logits.shape), loss
((2, 8, 50), None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .attention import ACTIVATIONS, MLP, KVCache, MultiHeadAttention
from .rnn import sample_next

IGNORE_INDEX = -100  # label of positions that carry no loss (F.cross_entropy's default)


# ----------------------------------------------------------------------------- attention


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """exp(s_i) / sum_j exp(s_j) over the last axis, written out.

    Subtracting the row maximum first changes nothing mathematically (it cancels in the ratio)
    but keeps exp() from overflowing. A row that is all -inf has no valid entry and gives nan.

    >>> softmax(torch.tensor([0.0, math.log(3.0)]))
    tensor([0.2500, 0.7500])
    """
    e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention, the teaching version: softmax(q k^T / sqrt(hs)) v.

    q: (..., T, hs), k and v: (..., S, hs). ``mask``: booleans broadcastable to (..., T, S),
    True where a query may look at a key. ``causal``: query i sees keys 0..i only.

    >>> q = k = v = torch.eye(2)
    >>> attention(q, k, v, causal=True)[0]  # the first query can only see the first key
    tensor([1., 0.])
    """
    hs = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (..., T, S)
    if causal:
        T, S = scores.shape[-2:]
        causal_mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril()  # (T, S)
        mask = causal_mask if mask is None else mask & causal_mask
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no weight at all
    return softmax(scores) @ v  # (..., T, S) @ (..., S, hs) -> (..., T, hs)


# ----------------------------------------------------------------------------- GPT


@dataclass
class GPTConfig:
    block_size: int = 256  # longest context in tokens (the number of learned positions)
    vocab_size: int = 65  # number of token ids
    n_layer: int = 4  # Transformer blocks
    n_head: int = 4  # attention heads per block; must divide n_embd
    n_embd: int = 128  # model width C
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches
    bias: bool = True  # biases in the Linear and LayerNorm layers (GPT-2 has them)
    activation: str = "gelu"  # MLP nonlinearity: "gelu" (exact) or "gelu_tanh" (GPT-2's)

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}: use one of {sorted(ACTIVATIONS)}")


class Block(nn.Module):
    """Pre-norm Transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

    Normalising the input of each branch (rather than the sum, as the original Transformer
    did) leaves a clean identity path from the embeddings to the output, which is what lets
    deep stacks train without a careful warm-up.
    """

    def __init__(self, config: GPTConfig, causal: bool = True):
        super().__init__()
        c = config.n_embd
        self.causal = causal
        self.ln_1 = nn.LayerNorm(c, bias=config.bias)
        self.attn = MultiHeadAttention(c, config.n_head, config.dropout, bias=config.bias)
        self.ln_2 = nn.LayerNorm(c, bias=config.bias)
        self.mlp = MLP(c, config.dropout, bias=config.bias, activation=config.activation)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_1(x), causal=self.causal, cache=cache))  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


def _init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, and the two projections that
    write into the residual stream scaled by 1/sqrt(2 n_layer), so the sum of 2 n_layer
    branches starts with about the variance of one."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("out_proj.weight", "mlp.proj.weight")) else 0.02
            nn.init.normal_(p, mean=0.0, std=std)
        # LayerNorm weights keep their initial 1


def _check_idx(idx: torch.Tensor, block_size: int, past: int = 0) -> None:
    if idx.dim() != 2 or idx.dtype != torch.long:
        raise ValueError(f"idx must be a (B, T) tensor of token ids (int64), got {idx.dtype} {tuple(idx.shape)}")
    if past + idx.shape[1] > block_size:
        raise ValueError(
            f"context of {past + idx.shape[1]} tokens is longer than block_size={block_size}: "
            f"the model has no position embedding beyond that; crop to the last {block_size} tokens"
        )


class GPT(nn.Module):
    """Decoder-only Transformer language model (GPT-2's architecture).

    ``forward(idx, targets)`` returns logits (B, T, V), where logits[:, t] predict token
    t + 1, and the mean cross-entropy against ``targets`` (or None).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        c = config.n_embd
        self.tok_emb = nn.Embedding(config.vocab_size, c)
        self.pos_emb = nn.Embedding(config.block_size, c)  # learned, one vector per position
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, causal=True) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(c, bias=config.bias)
        self.lm_head = nn.Linear(c, config.vocab_size, bias=False)
        # weight tying: the output layer scores a token with the same vector that embeds it
        self.lm_head.weight = self.tok_emb.weight
        _init_weights(self, config.n_layer)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx, targets: (B, T) token ids. ``caches`` (one per block, used by ``generate``):
        idx holds only the tokens after those already cached."""
        past = 0 if caches is None else len(caches[0])
        _check_idx(idx, self.config.block_size, past)
        T = idx.shape[1]
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=None if caches is None else caches[i])
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by ``max_new_tokens`` sampled tokens; returns (B, T + new).

        ``temperature=0`` is greedy decoding. With ``use_cache`` the prompt is encoded once and
        then each step feeds only the newest token. Once the text outgrows block_size the
        context is cropped to the last block_size tokens; every token then shifts to a new
        position, the cached keys no longer apply, and each step recomputes in full. Call
        ``model.eval()`` first to switch dropout off.

        >>> model = GPT(GPTConfig(block_size=8, vocab_size=10, n_layer=1, n_head=1, n_embd=8))
        >>> model.generate(torch.zeros(1, 2, dtype=torch.long), 5, temperature=0).shape
        torch.Size([1, 7])
        """
        generator = None
        if seed is not None:
            generator = torch.Generator(device=idx.device).manual_seed(seed)
        block_size = self.config.block_size
        caches = [KVCache() for _ in self.blocks] if use_cache else None
        for _ in range(max_new_tokens):
            if caches is not None and idx.shape[1] <= block_size:
                logits, _ = self(idx[:, len(caches[0]):], caches=caches)  # only the new tokens
            else:
                logits, _ = self(idx[:, -block_size:])
            next_id = sample_next(logits[:, -1], temperature, top_k, generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)
        return idx

    # ------------------------------------------------------------- loading GPT-2 weights

    @classmethod
    def from_hf(cls, hf_model) -> GPT:
        """Our GPT with the weights of a Hugging Face ``GPT2LMHeadModel`` (same logits).

        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=20, n_positions=16))
        >>> GPT.from_hf(hf).config.activation
        'gelu_tanh'
        """
        config = gpt_config_from_hf(hf_model.config)
        model = cls(config)
        model.load_state_dict(convert_hf_gpt2_state_dict(hf_model.state_dict(), config))
        return model.to(next(hf_model.parameters()).dtype)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "gpt2", **hf_kwargs) -> GPT:
        """Load pretrained GPT-2 weights ("gpt2", "gpt2-medium", ... or a local folder written by
        ``save_pretrained``) through ``transformers`` and convert them. Needs the Hugging Face
        hub, or a copy already in its cache; extra keyword arguments go to HF's loader."""
        from transformers import GPT2LMHeadModel  # heavy import, only when asked for

        try:
            hf_model = GPT2LMHeadModel.from_pretrained(str(name_or_path), **hf_kwargs)
        except OSError as err:
            raise OSError(
                f"could not load GPT-2 weights {str(name_or_path)!r}: they are neither in a local "
                "folder nor in the Hugging Face cache, and the hub could not be reached. Run once "
                "with internet access, or pass a folder saved with save_pretrained()."
            ) from err
        return cls.from_hf(hf_model)


def gpt_config_from_hf(hf_config) -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT2Config, refusing settings our model does not have."""
    hf_activations = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
    act = hf_config.activation_function
    if act not in hf_activations:
        raise ValueError(f"GPT-2 activation {act!r} is not supported: use one of {sorted(hf_activations)}")
    c = hf_config.n_embd
    unsupported = {
        "n_inner (MLP width other than 4 n_embd)": hf_config.n_inner not in (None, 4 * c),
        "layer_norm_epsilon other than 1e-5": hf_config.layer_norm_epsilon != 1e-5,
        "scale_attn_weights=False": not hf_config.scale_attn_weights,
        "scale_attn_by_inverse_layer_idx": hf_config.scale_attn_by_inverse_layer_idx,
        "add_cross_attention": getattr(hf_config, "add_cross_attention", False),
    }
    bad = [name for name, is_set in unsupported.items() if is_set]
    if bad:
        raise ValueError(f"this GPT-2 config uses settings our GPT does not implement: {bad}")
    return GPTConfig(
        block_size=hf_config.n_positions, vocab_size=hf_config.vocab_size,
        n_layer=hf_config.n_layer, n_head=hf_config.n_head, n_embd=c,
        dropout=0.0, bias=True, activation=hf_activations[act],
    )


def convert_hf_gpt2_state_dict(hf_state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Rename (and transpose) a Hugging Face GPT2LMHeadModel state dict into ours.

    HF's GPT-2 uses ``Conv1D`` layers, which are Linear layers storing the weight as
    (in, out) instead of nn.Linear's (out, in): every matrix is transposed here. HF also packs
    q, k and v into one ``c_attn``; we keep q apart and k, v together, so it is split at C.
    """
    c = config.n_embd
    sd = {k.removeprefix("transformer."): v for k, v in hf_state.items()}
    out = {
        "tok_emb.weight": sd["wte.weight"],
        "lm_head.weight": sd["wte.weight"],  # tied
        "pos_emb.weight": sd["wpe.weight"],
        "ln_f.weight": sd["ln_f.weight"],
        "ln_f.bias": sd["ln_f.bias"],
    }
    for i in range(config.n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        for ln in ("ln_1", "ln_2"):
            out[b + ln + ".weight"] = sd[h + ln + ".weight"]
            out[b + ln + ".bias"] = sd[h + ln + ".bias"]
        w_qkv, b_qkv = sd[h + "attn.c_attn.weight"], sd[h + "attn.c_attn.bias"]  # (C, 3C), (3C,)
        out[b + "attn.q_proj.weight"] = w_qkv[:, :c].t()  # (C, C)
        out[b + "attn.q_proj.bias"] = b_qkv[:c]
        out[b + "attn.kv_proj.weight"] = w_qkv[:, c:].t()  # (2C, C)
        out[b + "attn.kv_proj.bias"] = b_qkv[c:]
        for ours, theirs in (("attn.out_proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            out[b + ours + ".weight"] = sd[h + theirs + ".weight"].t()
            out[b + ours + ".bias"] = sd[h + theirs + ".bias"]
    return {k: v.contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------- BERT


def mask_tokens(
    idx: torch.Tensor,
    vocab_size: int,
    mask_id: int,
    special_ids: list[int] | tuple[int, ...] = (),
    p: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption: returns (inputs, labels).

    Each ordinary token is selected with probability p (special tokens such as padding never
    are). Of the selected ones, 80% become ``mask_id``, 10% a random ordinary token and 10%
    stay as they are; ``labels`` holds the original token there and -100 everywhere else, so
    the loss counts only selected positions. Why not always [MASK]? That token never appears
    at fine-tuning time; the random and unchanged 20% make the model build a good
    representation of every input word, not only of the masked ones.

    >>> inputs, labels = mask_tokens(torch.arange(4, 20).view(2, 8), 20, mask_id=0, p=0.5,
    ...                              special_ids=[0, 1], generator=torch.Generator().manual_seed(0))
    >>> bool(((labels == -100) | (labels == torch.arange(4, 20).view(2, 8))).all())
    True
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"masking probability p must be in (0, 1), got {p}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id={mask_id} is not a token id of a {vocab_size}-token vocabulary")
    if idx.numel() and (idx.min() < 0 or idx.max() >= vocab_size):
        raise ValueError(f"idx holds ids outside [0, {vocab_size})")
    special_set = {*special_ids, mask_id}
    if any(not 0 <= s < vocab_size for s in special_set):
        raise ValueError(f"special_ids {sorted(special_set)} must be token ids in [0, {vocab_size})")
    if len(special_set) >= vocab_size:
        raise ValueError("every token id is special: nothing is left to mask")
    special = torch.tensor(sorted(special_set), dtype=torch.long, device=idx.device)
    ordinary = torch.ones(vocab_size, dtype=torch.bool, device=idx.device)
    ordinary[special] = False
    ordinary_ids = ordinary.nonzero().squeeze(1)  # the ids a random replacement may take

    def uniform() -> torch.Tensor:
        return torch.rand(idx.shape, generator=generator, device=idx.device)

    selected = (uniform() < p) & ordinary[idx]
    action = uniform()  # one draw decides between mask (< 0.8), random (< 0.9) and keep
    to_mask = selected & (action < 0.8)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    random_ids = ordinary_ids[
        torch.randint(len(ordinary_ids), idx.shape, generator=generator, device=idx.device)
    ]
    inputs = torch.where(to_mask, torch.full_like(idx, mask_id), idx)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = torch.where(selected, idx, torch.full_like(idx, IGNORE_INDEX))
    return inputs, labels


@dataclass
class BertConfig(GPTConfig):
    """The same fields as GPTConfig: block_size, vocab_size, n_layer, n_head, n_embd,
    dropout, bias, activation. Only the use differs (no causal mask, a masked-LM head)."""


class BertMLM(nn.Module):
    """A small bidirectional encoder trained with the masked-LM objective.

    The same pre-norm blocks as GPT, built without the causal mask, so every position sees
    the whole sequence. ``forward(inputs, labels)`` returns logits (B, T, V) for the token at
    each position and the cross-entropy over the positions whose label is not -100.

    >>> bert = BertMLM(BertConfig(block_size=16, vocab_size=30, n_layer=1, n_head=2, n_embd=16))
    >>> bert(torch.zeros(2, 10, dtype=torch.long))[0].shape
    torch.Size([2, 10, 30])
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        c = config.n_embd
        self.tok_emb = nn.Embedding(config.vocab_size, c)
        self.pos_emb = nn.Embedding(config.block_size, c)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, causal=False) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(c, bias=config.bias)
        # BERT's prediction head: one more nonlinear layer, then scores against the (tied)
        # token embeddings plus a per-token bias
        self.head_fc = nn.Linear(c, c)
        self.head_ln = nn.LayerNorm(c)
        self.head_out = nn.Linear(c, config.vocab_size)
        self.head_out.weight = self.tok_emb.weight
        self.approximate = ACTIVATIONS[config.activation]
        _init_weights(self, config.n_layer)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_idx(idx, self.config.block_size)
        pos = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        x = self.head_ln(F.gelu(self.head_fc(x), approximate=self.approximate))  # (B, T, C)
        logits = self.head_out(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return logits, loss
