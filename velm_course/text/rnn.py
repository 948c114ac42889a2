"""Recurrent language models: RNN, LSTM and GRU cells written out, unrolled over time.

The fixed-window MLP model (``velm_course.text.mlp_lm``) sees only its last few tokens. A
recurrent network instead carries a hidden state h_t through the sequence, one step per
token, so in principle it can remember anything:

    h_t = f(x_t, h_{t-1}),    P(w_{t+1} | w_<=t) = softmax(W_out h_t)

In practice the gradient reaching h_t from a loss far in the future is a product of one
Jacobian per step and tends to vanish (or explode); ``hidden_grad_norms`` measures it. LSTM
and GRU cells add gates that let the state pass through unchanged, which keeps it alive.

The cells are written out gate by gate below and unrolled with a Python loop. Their
parameters have exactly the names and layout of ``torch.nn.RNN/LSTM/GRU`` (gates stacked in
torch's order: LSTM i, f, g, o; GRU r, z, n), so ``RNN.load_torch_weights`` is a renaming
and the tests check that both give the same outputs.

Shape letters: B batch, T time steps, I input size, H hidden size, L layers, V vocabulary,
E embedding size, G gates (1 for the plain RNN, 4 for the LSTM, 3 for the GRU).

>>> model = RNNLM(RNNLMConfig(cell="lstm", vocab_size=20, n_embd=8, n_hidden=16))
>>> logits, loss = model(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))
>>> tuple(logits.shape), loss.shape
((2, 5, 20), torch.Size([]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..decoding import _generator, sample_next
from ..nn.loss import IGNORE_INDEX, check_token_ids, lm_loss

# a recurrent state: h (L, B, H) for the RNN and GRU, the pair (h, c) for the LSTM
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

# ----------------------------------------------------------------------------- cells


class RNNCell(nn.Module):
    """Elman RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""

    n_gates = 1

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        G, H = self.n_gates, hidden_size
        # same names, shapes and initialisation, U(-1/sqrt(H), 1/sqrt(H)), as torch.nn.RNN
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G * H, H))
        self.bias_ih = nn.Parameter(torch.empty(G * H))
        self.bias_hh = nn.Parameter(torch.empty(G * H))
        bound = 1 / math.sqrt(H)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x: (B, I), h: (B, H) -> h': (B, H)."""
        return torch.tanh(F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh))


class LSTMCell(RNNCell):
    """LSTM: a memory cell c that is only ever scaled and added to, guarded by three gates."""

    n_gates = 4

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, I), state (h, c) each (B, H) -> (h', c')."""
        h, c = state
        gates = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)  # each (B, H), in torch's order
        i = torch.sigmoid(i)  # input gate: how much of the new candidate to write
        f = torch.sigmoid(f)  # forget gate: how much of the old memory to keep
        g = torch.tanh(g)  # candidate values to write
        o = torch.sigmoid(o)  # output gate: how much of the memory to show as h
        c = f * c + i * g  # additive update: with f near 1 the gradient flows back unchanged
        h = o * torch.tanh(c)
        return h, c


class GRUCell(RNNCell):
    """GRU: like the LSTM's memory but with one state, interpolating old and new."""

    n_gates = 3

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x: (B, I), h: (B, H) -> h': (B, H)."""
        xr, xz, xn = F.linear(x, self.weight_ih, self.bias_ih).chunk(3, dim=1)  # each (B, H)
        hr, hz, hn = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=1)  # each (B, H)
        r = torch.sigmoid(xr + hr)  # reset gate: how much of the past enters the candidate
        z = torch.sigmoid(xz + hz)  # update gate: how much of the old state to keep
        n = torch.tanh(xn + r * hn)  # candidate state (r scales the recurrent term, bias included)
        return (1 - z) * n + z * h  # z near 1 copies h through: the gradient's shortcut


CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


class RNN(nn.Module):
    """A stack of recurrent cells unrolled over time, batch-first, like ``torch.nn.RNN/LSTM/GRU``.

    ``forward(x, state)`` takes x (B, T, I) and an optional initial state h0 (L, B, H), or
    (h0, c0) for the LSTM, and returns (output (B, T, H) of the top layer, final state in the
    same layout as the initial one). Each layer's outputs are the next layer's inputs; dropout,
    when set, sits between layers (not after the last), as in torch.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}: use one of {sorted(CELLS)}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError("hidden_size and num_layers must be positive")
        self.cell_type, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList([CELLS[cell](size, hidden_size) for size in sizes])
        self.drop = nn.Dropout(dropout)

    def initial_state(self, batch_size: int, like: torch.Tensor) -> State:
        zeros = like.new_zeros(self.num_layers, batch_size, self.hidden_size)  # (L, B, H)
        return (zeros, zeros.clone()) if self.cell_type == "lstm" else zeros

    def unroll(self, x: torch.Tensor, state: State | None = None) -> tuple[list[list[torch.Tensor]], State]:
        """The loop itself: returns the hidden state of every layer at every step,
        ``hs[layer][t]`` (B, H) (the very tensors later steps were computed from, so autograd
        can give the gradient reaching each of them), and the final state."""
        B, T, _ = x.shape
        state = self.initial_state(B, x) if state is None else state
        lstm = self.cell_type == "lstm"
        hs, finals = [], []
        layer_input = list(x.unbind(1))  # T tensors (B, I)
        for layer, cell in enumerate(self.cells):
            s = (state[0][layer], state[1][layer]) if lstm else state[layer]  # (B, H) each
            steps = []
            for x_t in layer_input:
                s = cell(x_t, s)
                steps.append(s[0] if lstm else s)  # h_t: (B, H)
            hs.append(steps)
            finals.append(s)
            is_last = layer == self.num_layers - 1
            layer_input = steps if is_last else [self.drop(h) for h in steps]
        if lstm:
            final = (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))  # (L, B, H) each
        else:
            final = torch.stack(finals)  # (L, B, H)
        return hs, final

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        hs, final = self.unroll(x, state)
        return torch.stack(hs[-1], dim=1), final  # (B, T, H)

    @torch.no_grad()
    def load_torch_weights(self, module: nn.RNNBase) -> RNN:
        """Copy the weights of a ``torch.nn.RNN/LSTM/GRU`` (batch_first, bias=True, one
        direction, tanh, same sizes): torch's ``weight_ih_l{k}`` is our ``cells.{k}.weight_ih``."""
        expected = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[self.cell_type]
        if type(module) is not expected or module.bidirectional or not module.bias or module.proj_size:
            raise ValueError(f"expected a one-directional {expected.__name__} with biases, got {module}")
        if module.hidden_size != self.hidden_size or module.num_layers != self.num_layers:
            raise ValueError("hidden_size and num_layers must match")
        if getattr(module, "nonlinearity", "tanh") != "tanh":
            raise ValueError("only the tanh RNN is implemented")
        for k, cell in enumerate(self.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(module, f"{name}_l{k}"))
        return self


# ----------------------------------------------------------------------------- RNN LM


@dataclass
class RNNLMConfig:
    vocab_size: int  # number of token ids
    cell: str = "lstm"  # "rnn", "lstm" or "gru"
    n_embd: int = 32  # size of the token embeddings fed to the first layer
    n_hidden: int = 128  # hidden state size H of every layer
    n_layer: int = 1  # stacked recurrent layers
    dropout: float = 0.0  # dropout on embeddings, between layers and before the output layer


def rnnlm_parameters(config: RNNLMConfig) -> int:
    """The number of parameters of ``RNNLM(config)``, counted from the formula: the embedding
    table, G gates of (input + hidden) x hidden weights and two bias vectors per layer, the
    output layer.

    >>> cfg = RNNLMConfig(vocab_size=84, cell="lstm", n_embd=32, n_hidden=128)
    >>> rnnlm_parameters(cfg) == sum(p.numel() for p in RNNLM(cfg).parameters())
    True
    """
    G, H, V, E = CELLS[config.cell].n_gates, config.n_hidden, config.vocab_size, config.n_embd
    inputs = [E] + [H] * (config.n_layer - 1)
    return V * E + sum(G * H * (i + H) + 2 * G * H for i in inputs) + H * V + V


def hidden_for_parameters(config: RNNLMConfig, n_params: int) -> int:
    """The hidden size that brings ``config``'s model closest to ``n_params`` parameters, to
    compare cells at equal size: a GRU (3 gates) gets a wider state than an LSTM (4 gates).

    >>> lstm = RNNLMConfig(vocab_size=84, cell="lstm", n_embd=32, n_hidden=128)
    >>> hidden_for_parameters(replace(lstm, cell="gru"), rnnlm_parameters(lstm))
    148
    """
    sizes = range(1, 8 * int(math.sqrt(n_params)) + 2)
    return min(sizes, key=lambda h: abs(rnnlm_parameters(replace(config, n_hidden=h)) - n_params))


class RNNLM(nn.Module):
    """Embedding -> multi-layer RNN -> linear layer over the vocabulary.

    ``forward(idx, targets)`` returns logits (B, T, V), logits[:, t] predicting token t + 1,
    and the mean cross-entropy (or None).
    """

    def __init__(self, config: RNNLMConfig):
        super().__init__()
        if config.vocab_size < 1 or config.n_embd < 1:
            raise ValueError("vocab_size and n_embd must be positive")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.rnn = RNN(config.cell, config.n_embd, config.n_hidden, config.n_layer, config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.n_hidden, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, _ = self.step(idx, state)
        return logits, lm_loss(logits, targets)

    def step(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits (B, T, V) and the final state, to continue from later."""
        check_token_ids(idx, self.config.vocab_size)
        out, state = self.rnn(self.drop(self.tok_emb(idx)), state)  # (B, T, H)
        return self.out(self.drop(out)), state

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, seed: int | None = None,
        top_k: int | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by ``max_new_tokens`` tokens (``temperature=0``: greedy).

        The prompt is read once; after that each step feeds only the newest token and the
        carried state, which is what makes an RNN cheap to sample from.

        >>> lm = RNNLM(RNNLMConfig(vocab_size=10, cell="gru", n_hidden=8))
        >>> lm.generate(torch.zeros(1, 3, dtype=torch.long), 4, seed=0).shape
        torch.Size([1, 7])
        """
        generator = _generator(seed, idx.device)
        logits, state = self.step(idx)
        for _ in range(max_new_tokens):
            next_id = sample_next(logits[:, -1], temperature, top_k, generator)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)
            logits, state = self.step(next_id, state)
        return idx



def hidden_grad_norms(
    model: RNNLM, idx: torch.Tensor, targets: torch.Tensor, layer: int = 0, last_step_only: bool = True
) -> torch.Tensor:
    """||d loss / d h_t|| for every time step t of one layer: the vanishing-gradient plot.

    With ``last_step_only`` the loss is the cross-entropy of the last position alone, so
    entry t shows how much the prediction at the end still depends on the state at step t;
    for a plain RNN it typically shrinks geometrically as t moves back. The gradient is the
    total one: through every later step, not only the direct path to the output.
    Returns a (T,) tensor; the norm is over batch and hidden units.

    >>> lm = RNNLM(RNNLMConfig(vocab_size=5, cell="rnn", n_hidden=8))
    >>> hidden_grad_norms(lm, torch.zeros(1, 6, dtype=torch.long), torch.zeros(1, 6, dtype=torch.long)).shape
    torch.Size([6])
    """
    check_token_ids(idx, model.config.vocab_size)
    hs, _ = model.rnn.unroll(model.drop(model.tok_emb(idx)))
    logits = model.out(model.drop(torch.stack(hs[-1], dim=1)))  # (B, T, V)
    if last_step_only:
        logits, targets = logits[:, -1:], targets[:, -1:]
    loss = lm_loss(logits, targets)
    grads = torch.autograd.grad(loss, hs[layer])  # T tensors (B, H)
    return torch.stack([torch.linalg.vector_norm(g) for g in grads])  # (T,)



def sequence_bits(model: RNNLM, data: torch.Tensor, start_id: int, n_streams: int = 1, chunk: int = 256) -> float:
    """Total -log2 P(data) in bits: every token of ``data`` (N,) predicted from those before it.

    The first token is predicted after a single ``start_id`` token (for text, a newline).
    To use a batch, the sequence is cut into ``n_streams`` contiguous pieces read side by
    side; each piece starts from a fresh state with only the token before it as context, so
    more streams is faster but slightly pessimistic. Within a piece the state is carried
    from one ``chunk`` of steps to the next, so nothing else is forgotten.
    Divide by the number of characters for bits per character.

    >>> lm = RNNLM(RNNLMConfig(vocab_size=4, cell="gru", n_hidden=8))
    >>> sequence_bits(lm, torch.tensor([1, 2, 3, 0, 1]), start_id=0, n_streams=2) > 0
    True
    """
    if data.dim() != 1 or len(data) == 0 or n_streams < 1 or chunk < 1:
        raise ValueError("need a non-empty 1-D sequence and positive n_streams and chunk")
    was_training = model.training
    model.eval()
    inputs = torch.cat([data.new_tensor([start_id]), data[:-1]])  # (N,): the token before each target
    length = math.ceil(len(data) / n_streams)  # steps per stream; the last stream is padded
    pad = length * n_streams - len(data)
    inputs = torch.cat([inputs, inputs.new_zeros(pad)]).view(n_streams, length)  # (S, L)
    targets = torch.cat([data, data.new_full((pad,), IGNORE_INDEX)]).view(n_streams, length)  # (S, L)
    total_nats, state = 0.0, None
    for t in range(0, length, chunk):
        logits, state = model.step(inputs[:, t : t + chunk], state)  # (S, chunk, V)
        total_nats += lm_loss(logits, targets[:, t : t + chunk], reduction="sum").item()
    model.train(was_training)
    return total_nats / math.log(2)
