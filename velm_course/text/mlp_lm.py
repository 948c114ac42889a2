"""A fixed-window neural language model (Bengio et al., 2003).

The model embeds the previous ``context`` tokens, concatenates the vectors and predicts the
next token with one tanh hidden layer. It generalises across similar words, which counts
cannot, but its window is fixed: the recurrent models of ``velm_course.text.rnn`` remove that
limit.

Shape letters: B batch, T time steps, E embedding size, V vocabulary.

>>> lm = MLPLM(MLPLMConfig(vocab_size=10, context=2))
>>> logits, loss = lm(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))
>>> tuple(logits.shape), loss.dim()
((3, 4, 10), 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..nn.loss import check_token_ids, lm_loss


@dataclass
class MLPLMConfig:
    vocab_size: int  # number of token ids
    context: int = 3  # how many previous tokens the model sees (the fixed window)
    n_embd: int = 16  # size of each token's embedding vector
    n_hidden: int = 128  # width of the tanh hidden layer
    dropout: float = 0.0  # dropout on the hidden layer while training


class MLPLM(nn.Module):
    """Bengio-style model: logits[:, t] = W tanh(U [e(w_{t-c+1}); ...; e(w_t)] + b) + d.

    Positions before the start of the text are filled with an extra "start" embedding
    (row ``vocab_size`` of the table), so every position has a full window.

    >>> lm = MLPLM(MLPLMConfig(vocab_size=10, context=2))
    >>> lm(torch.zeros(3, 4, dtype=torch.long))[0].shape
    torch.Size([3, 4, 10])
    """

    def __init__(self, config: MLPLMConfig):
        super().__init__()
        if config.vocab_size < 1 or config.context < 1:
            raise ValueError("vocab_size and context must be positive")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size + 1, config.n_embd)  # + the start token
        self.hidden = nn.Linear(config.context * config.n_embd, config.n_hidden)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.n_hidden, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        check_token_ids(idx, self.config.vocab_size)
        B, T = idx.shape
        n = self.config.context
        start = torch.full((B, n - 1), self.config.vocab_size, dtype=idx.dtype, device=idx.device)
        padded = torch.cat([start, idx], dim=1)  # (B, n - 1 + T)
        windows = padded.unfold(1, n, 1)  # (B, T, n): window t ends at token t
        x = self.tok_emb(windows).flatten(2)  # (B, T, n * E), the embeddings side by side
        logits = self.out(self.drop(torch.tanh(self.hidden(x))))  # (B, T, V)
        return logits, lm_loss(logits, targets)
