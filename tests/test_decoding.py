"""Choosing the next token from logits: greedy, temperature, top-k, and their errors."""

import pytest
import torch

from velm_course.decoding import sample_next


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
