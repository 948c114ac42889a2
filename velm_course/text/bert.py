"""A small BERT: the Transformer without a causal mask, trained to fill in hidden words.

GPT may not peek at the word it predicts, so its attention is causal. BERT drops the mask:
every position sees the whole sequence. To still have something to predict, some input
words are hidden (``mask_tokens``) and the model is trained to restore them from both sides
(the masked-LM objective).

Shape letters: B batch, T tokens, C = n_embd model width, V vocabulary.

>>> bert = BertMLM(BertConfig(block_size=16, vocab_size=30, n_layer=1, n_head=2, n_embd=16))
>>> bert(torch.zeros(2, 10, dtype=torch.long))[0].shape
torch.Size([2, 10, 30])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import ACTIVATIONS, IGNORE_INDEX, Block, check_token_ids, init_transformer_, lm_loss
from .gpt import GPTConfig


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
    stay as they are; ``labels`` holds the original token there and ``IGNORE_INDEX`` (-100) everywhere else, so
    the loss counts only selected positions. Why not always [MASK]? That token never appears
    at fine-tuning time; the random and unchanged 20% make the model build a good
    representation of every input word, not only of the masked ones.

    >>> inputs, labels = mask_tokens(torch.arange(4, 20).view(2, 8), 20, mask_id=0, p=0.5,
    ...                              special_ids=[0, 1], generator=torch.Generator().manual_seed(0))
    >>> bool(((labels == IGNORE_INDEX) | (labels == torch.arange(4, 20).view(2, 8))).all())
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
    each position and the cross-entropy over the positions whose label is not ``IGNORE_INDEX``.

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
        self.blocks = nn.ModuleList([Block(config.block_config(causal=False)) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(c, bias=config.bias)
        # BERT's prediction head: one more nonlinear layer, then scores against the (tied)
        # token embeddings plus a per-token bias
        self.head_fc = nn.Linear(c, c)
        self.head_ln = nn.LayerNorm(c)
        self.head_out = nn.Linear(c, config.vocab_size)
        self.head_out.weight = self.tok_emb.weight
        self.approximate = ACTIVATIONS[config.activation]
        init_transformer_([self], config.n_layer)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        check_token_ids(idx, max_len=self.config.block_size, max_len_name="block_size")
        pos = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        x = self.head_ln(F.gelu(self.head_fc(x), approximate=self.approximate))  # (B, T, C)
        logits = self.head_out(x)  # (B, T, V)
        return logits, lm_loss(logits, targets)


def mlm_batches(data: torch.Tensor, batch_size: int, block_size: int, vocab_size: int, mask_id: int, seed: int,
                special_ids: tuple[int, ...] = (), p: float = 0.15):
    """``batches(start_step)`` for the training engine: random windows of ``data`` (N,),
    corrupted by ``mask_tokens`` (selecting a share ``p`` of the tokens), as {"idx": inputs (B, T), "targets": labels (B, T)}, so
    ``lm_objective`` gives the masked-LM loss (only selected positions count). The windows and
    the masks of step s come from generators seeded with (seed, s): a resumed run reads the
    same batches.

    >>> batches = mlm_batches(torch.arange(1, 60) % 9 + 1, 2, 8, vocab_size=10, mask_id=0, seed=0)
    >>> batch = next(iter(batches(3)))
    >>> tuple(batch["idx"].shape), torch.equal(next(iter(batches(3)))["idx"], batch["idx"])  # step 3 again
    ((2, 8), True)
    """
    from .chars import random_windows

    def batches(start_step: int):
        step = start_step
        while True:
            g = torch.Generator().manual_seed(seed * 1_000_003 + step)
            windows, _ = random_windows(data, batch_size, block_size, g)
            inputs, labels = mask_tokens(windows, vocab_size, mask_id, special_ids, p=p, generator=g)
            yield {"idx": inputs, "targets": labels}
            step += 1
    return batches

