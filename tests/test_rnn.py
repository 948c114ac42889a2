"""Our written-out RNN/LSTM/GRU against torch.nn given the same weights; the MLP LM against a
hand computation; the training and gradient-inspection helpers against direct computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from velm_course.engine import TrainConfig, fit
from velm_course.nn import IGNORE_INDEX, lm_objective
from velm_course.text.chars import (
    char_vocab,
    decode_chars,
    encode_chars,
    random_windows,
    window_batches,
)
from velm_course.text.mlp_lm import MLPLM, MLPLMConfig
from velm_course.text.rnn import RNN, RNNLM, RNNLMConfig, hidden_grad_norms, sequence_bits

TORCH_RNNS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _pair(cell: str, input_size=5, hidden=7, layers=2, seed=0):
    torch.manual_seed(seed)
    ref = TORCH_RNNS[cell](input_size, hidden, num_layers=layers, batch_first=True).double()
    ours = RNN(cell, input_size, hidden, layers).double().load_torch_weights(ref)
    return ours, ref


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("given_state", [False, True])
def test_matches_torch_nn(cell, given_state):
    ours, ref = _pair(cell)
    x = torch.randn(3, 6, 5, dtype=torch.double)
    state = None
    if given_state:
        h0 = torch.randn(2, 3, 7, dtype=torch.double)
        state = (h0, torch.randn(2, 3, 7, dtype=torch.double)) if cell == "lstm" else h0
    out, final = ours(x, state)
    ref_out, ref_final = ref(x, state)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-6)
    if cell == "lstm":
        for a, b in zip(final, ref_final, strict=True):  # h_n and c_n
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(final, ref_final, rtol=0, atol=1e-6)


def test_same_parameter_shapes_as_torch_and_bad_input():
    ours, ref = _pair("lstm")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    with pytest.raises(ValueError, match="unknown cell"):
        RNN("transformer", 4, 4)
    with pytest.raises(ValueError, match="unknown cell"):
        RNNLM(RNNLMConfig(vocab_size=5, cell="Lstm"))
    with pytest.raises(ValueError, match="dropout"):
        RNNLM(RNNLMConfig(vocab_size=5, dropout=1.0))
    with pytest.raises(ValueError, match="GRU"):
        RNN("gru", 5, 7, 2).load_torch_weights(nn.LSTM(5, 7, 2, batch_first=True))
    with pytest.raises(ValueError, match="one-directional"):
        RNN("gru", 5, 7, 2).load_torch_weights(nn.GRU(5, 7, 2, batch_first=True, bidirectional=True))


def test_lm_with_torch_weights_gives_torch_logits():
    torch.manual_seed(3)
    cfg = RNNLMConfig(vocab_size=11, cell="gru", n_embd=4, n_hidden=6, n_layer=2)
    lm = RNNLM(cfg).double()
    ref = nn.GRU(4, 6, 2, batch_first=True).double()
    lm.rnn.load_torch_weights(ref)
    idx = torch.randint(0, 11, (2, 9))
    expected = lm.out(ref(lm.tok_emb(idx))[0])
    torch.testing.assert_close(lm(idx)[0], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_lm_loss_and_greedy_generation(cell):
    torch.manual_seed(1)
    lm = RNNLM(RNNLMConfig(vocab_size=13, cell=cell, n_embd=6, n_hidden=10, n_layer=2)).double().eval()
    idx, targets = torch.randint(0, 13, (4, 8)), torch.randint(0, 13, (4, 8))
    logits, loss = lm(idx, targets)
    assert logits.shape == (4, 8, 13)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 13), targets.reshape(-1)))
    # carrying the state one token at a time == rereading the whole text at every step
    out = lm.generate(idx[:, :3], 6, temperature=0)
    expected = idx[:, :3]
    for _ in range(6):
        expected = torch.cat([expected, lm(expected)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, expected)
    # sampling is reproducible from the seed
    assert torch.equal(lm.generate(idx[:, :2], 5, seed=7), lm.generate(idx[:, :2], 5, seed=7))


def test_mlp_lm_matches_a_hand_computation():
    torch.manual_seed(2)
    cfg = MLPLMConfig(vocab_size=9, context=3, n_embd=4, n_hidden=5)
    lm = MLPLM(cfg).double()
    idx = torch.randint(0, 9, (2, 6))
    targets = torch.randint(0, 9, (2, 6))
    logits, loss = lm(idx, targets)
    assert logits.shape == (2, 6, 9)
    start = cfg.vocab_size  # the padding row for "before the text"
    for b in range(2):
        for t in range(6):
            window = [idx[b, j].item() if j >= 0 else start for j in range(t - 2, t + 1)]
            x = torch.cat([lm.tok_emb.weight[w] for w in window])
            expected = lm.out.weight @ torch.tanh(lm.hidden.weight @ x + lm.hidden.bias) + lm.out.bias
            torch.testing.assert_close(logits[b, t], expected)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 9), targets.reshape(-1)))
    with pytest.raises(ValueError, match="outside"):
        lm(torch.tensor([[9]]))


def _grad_norm(params) -> float:
    return torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params if p.grad is not None)).item()


def test_engine_clips_and_learns():
    """An LSTM LM trained through the engine: the logged norm is the one before clipping, the
    optimizer sees the clipped gradient, and the loss falls on a periodic sequence."""
    torch.manual_seed(0)
    lm = RNNLM(RNNLMConfig(vocab_size=6, cell="lstm", n_embd=8, n_hidden=16))
    idx = torch.arange(6).repeat(4, 2)  # (4, 12): 0 1 2 3 4 5 0 1 ...
    targets = (idx + 1) % 6
    _, loss = lm(idx, targets)
    loss.backward()
    norm = _grad_norm(lm.parameters())
    lm.zero_grad(set_to_none=True)
    seen = []  # the gradient norm the optimizer steps with, after clipping
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(_grad_norm(p for g in opt.param_groups for p in g["params"])))

    def same_batch(start_step):
        while True:
            yield {"idx": idx, "targets": targets}

    common = dict(device="cpu", precision="fp32", warmup=0, min_lr_ratio=1.0, weight_decay=0.0,
                  log_every=1, checkpoint_every=0)
    try:
        first = fit(lm, lm_objective, same_batch, TrainConfig(steps=1, lr=0.02, grad_clip=1e-3, **common),
                    progress=False)
    finally:
        hook.remove()
    assert first[0]["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert first[0]["grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert first[0]["clipped"] == 1.0 and len(seen) == 1
    assert seen[0] <= 1e-3 * 1.0001
    # 60 more steps on windows of the same periodic sequence, clipped at 1
    data = torch.arange(6).repeat(20)
    history = fit(lm, lm_objective, window_batches(data, batch_size=4, block_size=12, seed=0),
                  TrainConfig(steps=60, lr=0.02, grad_clip=1.0, **common), progress=False)
    assert len(history) == 60
    assert history[-1]["loss"] < 0.2 * first[0]["loss"]


def test_hidden_grad_norms():
    torch.manual_seed(4)
    lm = RNNLM(RNNLMConfig(vocab_size=7, cell="rnn", n_embd=5, n_hidden=8, n_layer=2)).double()
    idx, targets = torch.randint(0, 7, (3, 12)), torch.randint(0, 7, (3, 12))
    norms = hidden_grad_norms(lm, idx, targets, layer=-1)
    assert norms.shape == (12,) and bool((norms > 0).all())
    # the last step's state reaches the loss only directly: compare with torch.nn.RNN
    ref = nn.RNN(5, 8, 2, batch_first=True).double()
    with torch.no_grad():
        for k, cell in enumerate(lm.rnn.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(cell, name))
    out = ref(lm.tok_emb(idx))[0]  # (B, T, H)
    loss = F.cross_entropy(lm.out(out[:, -1]), targets[:, -1])
    (g,) = torch.autograd.grad(loss, out)
    torch.testing.assert_close(norms[-1], g[:, -1].norm())
    # the loss of positions <= k cannot depend on later states: those gradients are exactly 0
    early = targets.clone()
    early[:, 6:] = IGNORE_INDEX  # no loss on positions 6..11
    all_steps = hidden_grad_norms(lm, idx, early, layer=0, last_step_only=False)
    assert bool((all_steps[:6] > 0).all()) and bool((all_steps[6:] == 0).all())
    # with small recurrent weights the gradient vanishes going back in time, step by step
    with torch.no_grad():
        for cell in lm.rnn.cells:
            cell.weight_hh.mul_(0.2)
    norms = hidden_grad_norms(lm, idx, targets, layer=0)
    assert bool((norms[1:] > norms[:-1]).all())
    assert norms[0] < 1e-4 * norms[-1]


def test_char_helpers_round_trip_and_windows():
    text = "To be, or not to be.\n"
    chars = char_vocab(text)
    assert chars == sorted(set(text)) and len(chars) == len(set(chars))
    assert decode_chars(encode_chars(text, chars), chars) == text
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode_chars("Q", chars)
    data = torch.arange(50) * 3
    x, y = random_windows(data, 5, 7, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (5, 7)
    assert bool((y == x + 3).all()) and bool((x[:, 1:] == x[:, :-1] + 3).all())  # contiguous windows
    with pytest.raises(ValueError, match="longer than block_size"):
        random_windows(data, 2, 50)


def test_window_batches_resume_where_an_uninterrupted_run_is():
    data = torch.arange(200) * 2
    batches = window_batches(data, batch_size=3, block_size=5, seed=4, grad_accum=2)
    stream = batches(0)
    uninterrupted = [next(stream) for _ in range(10)]  # 5 optimizer steps of 2 micro-batches
    for b in uninterrupted:
        assert b["idx"].shape == b["targets"].shape == (3, 5)
        assert bool((b["targets"] == b["idx"] + 2).all())
    resumed = batches(3)  # step 3 starts at micro-batch 6
    for expected in uninterrupted[6:]:
        got = next(resumed)
        assert torch.equal(got["idx"], expected["idx"]) and torch.equal(got["targets"], expected["targets"])
    # micro-batches differ from one another, and another seed gives other windows
    assert not torch.equal(uninterrupted[0]["idx"], uninterrupted[1]["idx"])
    other = next(window_batches(data, batch_size=3, block_size=5, seed=5, grad_accum=2)(0))
    assert not torch.equal(other["idx"], uninterrupted[0]["idx"])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_bits_matches_a_direct_sum(cell):
    torch.manual_seed(2)
    lm = RNNLM(RNNLMConfig(vocab_size=6, cell=cell, n_embd=4, n_hidden=9)).double()
    data = torch.randint(0, 6, (23,))
    start = 5

    def direct(piece, before):
        # one forward over the whole piece, log-probabilities picked out by hand
        inputs = torch.cat([torch.tensor([before]), piece[:-1]])[None]  # (1, n)
        logp = torch.log_softmax(lm(inputs)[0][0], dim=-1)  # (n, V)
        return -logp[torch.arange(len(piece)), piece].sum().item() / math.log(2)

    # one stream, small chunks: carrying the state across chunks loses nothing
    assert sequence_bits(lm, data, start, n_streams=1, chunk=4) == pytest.approx(direct(data, start), rel=1e-9)
    # three streams of ceil(23 / 3) = 8 tokens, each started after the token before it
    pieces = [(data[0:8], start), (data[8:16], data[7].item()), (data[16:], data[15].item())]
    expected = sum(direct(p, b) for p, b in pieces)
    assert sequence_bits(lm, data, start, n_streams=3, chunk=5) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="non-empty"):
        sequence_bits(lm, data[:0], start)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("n_layer", [1, 2])
def test_parameter_formula_and_equal_size_cells(cell, n_layer):
    from velm_course.text.rnn import hidden_for_parameters, rnnlm_parameters

    for vocab, embd, hidden in [(84, 32, 128), (7, 5, 3), (50, 16, 61)]:
        cfg = RNNLMConfig(vocab_size=vocab, cell=cell, n_embd=embd, n_hidden=hidden, n_layer=n_layer)
        assert rnnlm_parameters(cfg) == sum(p.numel() for p in RNNLM(cfg).parameters())
    # the chosen width is the closest to the target among all widths, counted on real models
    target = 96_468
    cfg = RNNLMConfig(vocab_size=84, cell=cell, n_embd=32, n_layer=n_layer)
    h = hidden_for_parameters(cfg, target)

    def size(width):
        return sum(p.numel() for p in RNNLM(RNNLMConfig(84, cell, 32, width, n_layer)).parameters())

    assert all(abs(size(h) - target) <= abs(size(w) - target) for w in (h - 2, h - 1, h + 1, h + 2))
    assert abs(size(h) - target) / target < 0.02
