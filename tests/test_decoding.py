"""Choosing the next token from logits (greedy, temperature, top-k, top-p, and their errors), and
``generate``, the one loop every generator runs them in."""

import pytest
import torch

from velm_course.decoding import ban_tokens, generate, generators, sample_next


def test_sampling_helpers():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0]]).repeat(500, 1)
    top2 = sample_next(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(top2.flatten().tolist()) == {1, 2}
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(logits, top_k=0)


def test_greedy_is_the_row_argmax_and_top1_is_greedy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 11, generator=g)
    greedy = sample_next(logits, temperature=0)
    assert greedy.shape == (64, 1) and greedy.dtype == torch.long
    assert torch.equal(greedy[:, 0], logits.argmax(dim=1))
    # top_k=1 leaves one candidate per row, whatever the temperature
    assert torch.equal(sample_next(logits, temperature=2.5, top_k=1, generator=g), greedy)
    # top_k larger than the vocabulary is no restriction (and no error)
    assert sample_next(logits, top_k=100, generator=g).shape == (64, 1)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sample_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    logits = torch.tensor([1.0, 0.0, -0.5, 2.0])
    n = 20_000
    draws = sample_next(logits.repeat(n, 1), temperature, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws[:, 0], minlength=4).double() / n
    expected = torch.softmax(logits.double() / temperature, dim=0)
    # four binomial standard deviations of a frequency out of n draws
    assert bool(((freq - expected).abs() <= 4 * (expected * (1 - expected) / n).sqrt()).all())


def test_top_k_renormalises_over_the_k_best():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    n = 20_000
    draws = sample_next(logits.repeat(n, 1), 1.0, top_k=3, generator=torch.Generator().manual_seed(2))
    freq = torch.bincount(draws[:, 0], minlength=5).double() / n
    expected = torch.cat([torch.softmax(logits[:3].double(), dim=0), torch.zeros(2, dtype=torch.double)])
    assert freq[3:].sum() == 0
    assert bool(((freq - expected).abs() <= 4 * (expected * (1 - expected) / n).sqrt() + 1e-12).all())


def test_a_generator_makes_sampling_repeatable():
    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(3))
    a = sample_next(logits, 0.9, top_k=10, generator=torch.Generator().manual_seed(7))
    b = sample_next(logits, 0.9, top_k=10, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_nucleus_keeps_the_fewest_tokens_that_reach_p_and_renormalises():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])  # cumulative: 0.5, 0.8, 0.95, 1.0
    logits = probs.log()
    n = 20_000
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits.repeat(n, 1), top_p=0.8, generator=g)[:, 0]
    freq = torch.bincount(draws, minlength=4).double() / n
    expected = torch.tensor([0.5, 0.3, 0.0, 0.0], dtype=torch.float64) / 0.8  # the two that reach 0.8
    assert bool(((freq - expected).abs() <= 4 * (expected * (1 - expected) / n).sqrt() + 1e-12).all())
    # a p below the top token's probability keeps exactly that token
    assert set(sample_next(logits.repeat(50, 1), top_p=0.1, generator=g)[:, 0].tolist()) == {0}
    # p = 1 is plain sampling: the same draws from the same generator state
    a = sample_next(logits.repeat(200, 1), top_p=1.0, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits.repeat(200, 1), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits[None], top_p=0.0)


# ``generate`` on a "model" whose next-token logits depend only on the last token (a table), so
# the expected output can be worked out by hand. Tokens: 0 pad, 1 bos, 2 eos, 3 "a", 4 "b".
BOS_, EOS_, PAD_ = 1, 2, 0


def table_step(table, calls=None):
    def step(new):
        assert new.shape[1] == 1  # a cached model is fed the newest token only
        if calls is not None:
            calls.append(new[:, 0].tolist())
        return table[new[:, -1]].log()  # (B, V)
    return step


def test_generate_greedy_stops_pads_and_sums_log_probabilities():
    table = torch.full((5, 5), 1e-6)
    table[BOS_, 3], table[BOS_, 4] = 0.7, 0.3
    table[3, 4], table[3, EOS_] = 0.6, 0.4
    table[4, EOS_], table[4, 3] = 0.9, 0.1
    table = table / table.sum(1, keepdim=True)
    calls = []
    tokens, logp = generate(table_step(table, calls), 2, BOS_, EOS_, PAD_, max_new_tokens=10)
    assert tokens.tolist() == [[3, 4, EOS_], [3, 4, EOS_]]
    assert len(calls) == 3  # stopped as soon as every row wrote <eos>, not after 10 steps
    torch.testing.assert_close(logp, torch.log(table[BOS_, 3] * table[3, 4] * table[4, EOS_]).repeat(2))
    # a row that is done writes <pad> and adds nothing, while the other goes on
    first = {BOS_: 3, 3: EOS_}  # row 0 takes "a" then <eos>; once done it is fed <pad>
    rows = torch.tensor([[0.0] * 5, [0.0] * 5])

    def step(new):
        rows.zero_()
        for b, t in enumerate(new[:, 0].tolist()):
            rows[b, first.get(t, 3) if b == 0 else 4] = 10.0  # row 1 writes "b" forever
        return rows.clone()

    tokens, logp = generate(step, 2, BOS_, EOS_, PAD_, max_new_tokens=4)
    assert tokens.tolist() == [[3, EOS_, PAD_, PAD_], [4, 4, 4, 4]]  # row 1 never ends: cut at 4
    assert logp[0].item() == pytest.approx(2 * torch.log_softmax(torch.tensor([0, 0, 0, 10.0, 0]), 0)[3].item())


def test_generate_sampling_is_repeatable_and_per_row_streams_make_a_batch_equal_its_rows():
    table = torch.full((5, 5), 0.25)
    table[:, PAD_] = 0.0  # never written
    table[:, BOS_] = 0.0
    table[:, EOS_] = 0.1
    table = table / table.sum(1, keepdim=True)
    step = table_step(table)
    kw = dict(max_new_tokens=12, temperature=1.0)
    a, la = generate(step, 8, BOS_, EOS_, PAD_, generator=torch.Generator().manual_seed(5), **kw)
    b, lb = generate(step, 8, BOS_, EOS_, PAD_, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert len({tuple(r) for r in a.tolist()}) > 1  # it does sample: the rows differ
    seeds = [11, 12, 13, 14]
    together, logp = generate(step, 4, BOS_, EOS_, PAD_, generator=generators(seeds), **kw)
    for row, seed in enumerate(seeds):
        alone, logp_alone = generate(step, 1, BOS_, EOS_, PAD_, generator=generators([seed]), **kw)
        assert together[row, : alone.shape[1]].tolist() == alone[0].tolist()
        assert (together[row, alone.shape[1]:] == PAD_).all()
        torch.testing.assert_close(logp[row], logp_alone[0])
    with pytest.raises(ValueError, match="one generator per row"):
        generate(step, 3, BOS_, EOS_, PAD_, generator=generators(seeds), **kw)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(step, 3, BOS_, EOS_, PAD_, 0)


def test_ban_tokens_rules_tokens_out():
    logits = torch.tensor([[5.0, 4.0, 1.0]])
    assert sample_next(ban_tokens(logits, [0, 1]), temperature=0).item() == 2
    assert torch.equal(ban_tokens(logits, []), logits)
