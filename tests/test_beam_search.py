"""Beam search: width 1 is greedy (same captions, same scores), it beats greedy where greedy is
short-sighted, cached equals uncached, and a batch equals its sequences one by one."""

import math

import pytest
import torch

from velm_course.data.captions import BOS, EOS, PAD
from velm_course.decoding import beam_search, sample_next
from velm_course.multimodal.captioner import Captioner, CaptionerConfig, never_special
from velm_course.multimodal.fusion import FUSION_KINDS


def strip(row):
    """Token ids up to and including <eos> (what a caption is), as a list."""
    row = row.tolist()
    return row[: row.index(EOS) + 1] if EOS in row else [t for t in row if t != PAD]


def captioner(fusion="cross_attention"):
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab_size=9, d_model=16, n_layer=2, n_head=2, max_len=8, fusion=fusion))
    with torch.no_grad():  # large random weights: sharp, varied distributions to search over
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model.eval()


def greedy(model, images):
    """Greedy decoding under the decoders' one rule (<pad> and <bos> are never written),
    recomputing the whole prefix at every step."""
    rows = []
    for row in range(len(images)):
        idx = torch.tensor([[BOS]])
        for _ in range(model.config.max_len - 1):
            logits, _ = model(images[row:row + 1], idx)
            nxt = int(never_special(logits[:, -1])[0].argmax())
            idx = torch.cat([idx, torch.tensor([[nxt]])], 1)
            if nxt == EOS:
                break
        rows.append(idx[0, 1:].tolist())
    return rows


@pytest.mark.parametrize("fusion", FUSION_KINDS)
def test_width_one_without_length_penalty_is_greedy(fusion):
    """Beam search of width 1 and the model's own greedy ``generate`` write the same captions,
    and both match the reference that recomputes every prefix: one rule for every decoder."""
    model = captioner(fusion)
    images = torch.rand(4, 3, 64, 64)
    beam = [strip(r) for r in model.beam_search(images, beam_width=1, length_penalty=0.0)]
    assert greedy(model, images) == beam == [strip(r) for r in model.generate(images)]


def test_width_one_scores_are_greedy_log_probabilities():
    """With length_penalty=0 a beam's score is its summed log-probability: the very number
    ``decoding.generate`` adds up for the greedy caption."""
    model = captioner()
    image = model.encode(torch.rand(3, 3, 64, 64))
    _, greedy_logp = model.generate_scored_from(image)
    caches = model.fusion.new_caches()
    _, scores = beam_search(lambda new: never_special(model.decode(image, new, caches)[:, -1]),
                            lambda index: [c.reorder(index) for c in caches], 3, BOS, EOS, PAD, 1,
                            model.config.max_len - 1, length_penalty=0.0)
    torch.testing.assert_close(scores, greedy_logp, rtol=1e-5, atol=1e-5)


def table_step(table):
    """A model whose next-token distribution depends only on the last token (a lookup table)."""
    last = {}

    def step(new):
        last["tokens"] = new[:, -1]
        return torch.log(table[new[:, -1]])  # (N, V)

    return step


def test_beam_search_finds_the_sequence_greedy_misses():
    # tokens: 0 pad, 1 bos, 2 eos, 3 "a", 4 "b"
    table = torch.full((5, 5), 1e-9)
    table[BOS, 3], table[BOS, 4] = 0.6, 0.4  # greedy takes "a"...
    table[3, EOS], table[3, 3], table[3, 4] = 0.34, 0.33, 0.33  # ...after which nothing is likely
    table[4, EOS], table[4, 3], table[4, 4] = 0.95, 0.025, 0.025  # "b" then <eos> is likely
    greedy = [BOS]
    while greedy[-1] != EOS:
        greedy.append(int(sample_next(torch.log(table[greedy[-1]])[None], temperature=0)))
    greedy_logp = sum(math.log(table[a, b]) for a, b in zip(greedy, greedy[1:], strict=False))
    tokens, scores = beam_search(table_step(table), lambda index: None, 1, BOS, EOS, PAD, beam_width=2,
                                 max_new_tokens=5, length_penalty=0.0)
    assert greedy[1:] == [3, EOS] and strip(tokens[0]) == [4, EOS]
    assert scores[0].item() == pytest.approx(math.log(0.4 * 0.95), rel=1e-5)
    assert scores[0].item() > greedy_logp


def test_cached_equals_uncached():
    """The captioner's cached beam search against the same search recomputing every prefix. The
    beams must change parents along the way (checked), or a cache that is never reordered
    would pass too."""
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(vocab_size=9, d_model=16, n_layer=2, n_head=2, max_len=8)).eval()
    with torch.no_grad():  # mild random weights: flat distributions, so beams overtake each other
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    images = torch.rand(8, 3, 64, 64)
    K = 4
    cached = model.beam_search(images, beam_width=K)
    image = tuple(x.repeat_interleave(K, dim=0) for x in model.encode(images))
    history = {"idx": torch.full((8 * K, 0), 0, dtype=torch.long), "reordered": False}

    def step(new):  # no cache: feed the whole prefix every time
        history["idx"] = torch.cat([history["idx"], new], dim=1)
        return never_special(model.decode(image, history["idx"])[:, -1])

    def reorder(index):
        history["reordered"] |= not torch.equal(index, torch.arange(len(index)))
        history["idx"] = history["idx"][index]

    uncached, _ = beam_search(step, reorder, 8, BOS, EOS, PAD, K, model.config.max_len - 1)
    assert history["reordered"]
    assert [strip(r) for r in cached] == [strip(r) for r in uncached]


def test_a_batch_equals_its_sequences_one_by_one():
    model = captioner()
    images = torch.rand(5, 3, 64, 64)
    together = [strip(r) for r in model.beam_search(images, beam_width=3)]
    alone = [strip(model.beam_search(images[i:i + 1], beam_width=3)[0]) for i in range(5)]
    assert together == alone


def test_length_penalty_trades_length_for_likelihood():
    # "a" <eos> is likelier in total; "b b b <eos>" has the higher mean log-probability
    table = torch.full((5, 5), 1e-9)
    table[BOS, 3], table[BOS, 4] = 0.5, 0.5
    table[3, EOS], table[3, 3] = 0.3, 0.7
    table[4, 4], table[4, EOS] = 0.9, 0.1
    short, s_score = beam_search(table_step(table), lambda i: None, 1, BOS, EOS, PAD, 4, 20, length_penalty=0.0)
    long, l_score = beam_search(table_step(table), lambda i: None, 1, BOS, EOS, PAD, 4, 20, length_penalty=1.0)
    assert strip(short[0]) == [3, EOS] and s_score.item() == pytest.approx(math.log(0.5 * 0.3), rel=1e-5)
    assert len(strip(long[0])) > 2 and set(strip(long[0])[:-1]) == {4}


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(lambda new: torch.zeros(len(new), 5), lambda i: None, 1, BOS, EOS, PAD, 0, 3)


def test_padding_and_bos_are_never_written():
    logits = torch.zeros(2, 6)
    logits[:, PAD], logits[:, BOS] = 10.0, 9.0  # the two most likely, and both ruled out
    assert sample_next(never_special(logits), temperature=0)[:, 0].tolist() == [EOS, EOS]
