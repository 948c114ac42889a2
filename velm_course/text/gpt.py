"""GPT: a decoder-only Transformer language model (GPT-2's architecture), and GPT-2's weights.

Token and position embeddings, a stack of causal pre-norm blocks (``velm_course.nn.Block``),
a final LayerNorm and a head that scores every token with the (tied) embedding table. The
causal mask makes position t see only positions <= t, so logits[:, t] predict token t + 1.
Generation can keep a ``KVCache`` per block: the prompt is encoded once and each new token
costs one row of work. ``GPT.from_hf`` loads a Hugging Face ``GPT2LMHeadModel``'s weights
and gives the same logits.

Shape letters: B batch, T tokens, C = n_embd model width, V vocabulary.

>>> model = GPT(GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=16))
>>> logits, loss = model(torch.zeros(2, 8, dtype=torch.long))
>>> tuple(logits.shape), loss
((2, 8, 50), None)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..decoding import sample_next
from ..nn import (
    ACTIVATIONS,
    Block,
    BlockConfig,
    KVCache,
    check_token_ids,
    init_transformer_,
    lm_loss,
)


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

    def block_config(self, causal: bool = True) -> BlockConfig:
        """The shared Transformer block these settings describe."""
        return BlockConfig(d_model=self.n_embd, n_head=self.n_head, dropout=self.dropout, bias=self.bias,
                           activation=self.activation, causal=causal)


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
        self.blocks = nn.ModuleList([Block(config.block_config(causal=True)) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(c, bias=config.bias)
        self.lm_head = nn.Linear(c, config.vocab_size, bias=False)
        # weight tying: the output layer scores a token with the same vector that embeds it
        self.lm_head.weight = self.tok_emb.weight
        init_transformer_([self], config.n_layer)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx, targets: (B, T) token ids. ``caches`` (one per block, used by ``generate``):
        idx holds only the tokens after those already cached."""
        past = 0 if caches is None else len(caches[0])
        check_token_ids(idx, max_len=self.config.block_size, past=past, max_len_name="block_size")
        T = idx.shape[1]
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=None if caches is None else caches[i])
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, lm_loss(logits, targets)

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
