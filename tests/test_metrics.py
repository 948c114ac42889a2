"""Tests for velm_course.eval.metrics: hand-worked examples, equality with pycocoevalcap, errors.

Every metric exists twice, the loop version that teaches it and the numpy version that is used;
the hand-worked examples run on both, and both must equal pycocoevalcap and each other.
"""

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velm_course.eval import metrics
from velm_course.eval.metrics import (
    CiderD,
    bleu,
    bleu_loop,
    cider_d,
    cider_d_loop,
    lcs_length,
    ngram_counts,
    rouge_l,
    rouge_l_loop,
    score_captions,
    tokenize_caption,
)

TINY, SMALL = 1e-15, 1e-9  # pycocoevalcap's BLEU smoothing constants, used in hand computations


# -----------------------------------------------------------------------------
# the reference implementation


def coco_scores(gts, res):
    """pycocoevalcap's Bleu(4), Rouge(), Cider() on our input convention."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    coco_res = {i: [c] for i, c in res.items()}  # pycocoevalcap wants one-element lists
    coco_gts = {i: list(refs) for i, refs in gts.items()}
    return {
        "bleu": Bleu(4).compute_score(coco_gts, coco_res, verbose=0),
        "rouge": Rouge().compute_score(coco_gts, coco_res),
        "cider": Cider().compute_score(coco_gts, coco_res),
    }


def assert_same_as_coco(gts, res):
    ref = coco_scores(gts, res)
    ref_corpus, ref_per_image = ref["bleu"]
    for bleu_ in (bleu, bleu_loop):
        corpus, per_image = bleu_(gts, res)
        np.testing.assert_allclose(corpus, ref_corpus, rtol=0, atol=1e-9)
        np.testing.assert_allclose(per_image, ref_per_image, rtol=0, atol=1e-9)

    for rouge_l_ in (rouge_l, rouge_l_loop):
        mean, per_image = rouge_l_(gts, res)
        assert mean == pytest.approx(ref["rouge"][0], abs=1e-9)
        np.testing.assert_allclose(per_image, ref["rouge"][1], rtol=0, atol=1e-9)

    for cider_d_ in (cider_d, cider_d_loop):
        mean, per_image = cider_d_(gts, res)
        assert mean == pytest.approx(ref["cider"][0], abs=1e-9)
        np.testing.assert_allclose(per_image, ref["cider"][1], rtol=0, atol=1e-9)

    scores = score_captions(gts, res)
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    for k in range(4):
        assert scores[f"Bleu_{k + 1}"] == pytest.approx(ref_corpus[k], abs=1e-9)
    assert scores["ROUGE_L"] == pytest.approx(ref["rouge"][0], abs=1e-9)
    assert scores["CIDEr"] == pytest.approx(ref["cider"][0], abs=1e-9)


# -----------------------------------------------------------------------------
# hand-worked examples


def test_ngram_counts_by_hand():
    # "a b a": unigrams a×2, b×1; bigrams "a b", "b a"; trigram "a b a"
    assert ngram_counts(["a", "b", "a"], 3) == {
        ("a",): 2, ("b",): 1, ("a", "b"): 1, ("b", "a"): 1, ("a", "b", "a"): 1,
    }
    assert ngram_counts([], 4) == {}


@pytest.mark.parametrize("bleu_", [bleu, bleu_loop])
def test_bleu_identical_caption_scores_one(bleu_):
    # every k-gram matches: p_k = (g + 1e-15) / (g + 1e-9) = 1 up to the smoothing; c = r, no penalty
    gts, res = {0: ["a cat sat on the mat"]}, {0: "a cat sat on the mat"}
    corpus, per_image = bleu_(gts, res)
    assert corpus == pytest.approx([1, 1, 1, 1], abs=1e-9)
    assert [s[0] for s in per_image] == pytest.approx([1, 1, 1, 1], abs=1e-9)


@pytest.mark.parametrize("bleu_", [bleu, bleu_loop])
def test_bleu_clipping_by_hand(bleu_):
    # candidate "the cat the cat" (c = 4), reference "the cat sat" (r = 3, no brevity penalty)
    # unigrams: the×2 -> clipped to 1, cat×2 -> clipped to 1: p1 = 2/4
    # bigrams: "the cat"×2 -> clipped to 1, "cat the"×1 -> 0:     p2 = 1/3
    # trigrams: "the cat the", "cat the cat" match nothing:       p3 = 0/2, smoothed to 1e-15/2
    # BLEU-1 = p1, BLEU-2 = (p1 p2)^(1/2), BLEU-3 = (p1 p2 p3)^(1/3) ~ 4.4e-6, not 0
    corpus, _ = bleu_({0: ["the cat sat"]}, {0: "the cat the cat"}, n=3)
    p1, p2, p3 = (2 + TINY) / (4 + SMALL), (1 + TINY) / (3 + SMALL), TINY / (2 + SMALL)
    assert corpus[0] == pytest.approx(0.5, abs=1e-9)
    assert corpus[1] == pytest.approx(math.sqrt(1 / 6), abs=1e-9)
    assert corpus[2] == pytest.approx((p1 * p2 * p3) ** (1 / 3), rel=1e-12)
    assert 4e-6 < corpus[2] < 5e-6


@pytest.mark.parametrize("bleu_", [bleu, bleu_loop])
def test_bleu_brevity_penalty_by_hand(bleu_):
    # "a cat" vs "a cat sat on the mat": p1 = p2 = 1 but c = 2 < r = 6, BP = exp(1 - 6/2) = exp(-2)
    corpus, per_image = bleu_({0: ["a cat sat on the mat"]}, {0: "a cat"}, n=2)
    assert corpus == pytest.approx([math.exp(-2)] * 2, abs=1e-9)
    assert [s[0] for s in per_image] == pytest.approx([math.exp(-2)] * 2, abs=1e-9)


@pytest.mark.parametrize("bleu_", [bleu, bleu_loop])
def test_bleu_closest_reference_length(bleu_):
    # c = 5; references of length 2 and 6. "closest" picks r = 6 (|5-6| < |5-2|), so
    # BP = exp(1 - 6/5); "shortest" (r = 2) or "average" (r = 4) would give no penalty.
    # Every candidate uni/bigram is in the long reference: p1 = p2 = 1.
    corpus, _ = bleu_({0: ["a b", "a b c d e f"]}, {0: "a b c d e"}, n=2)
    assert corpus == pytest.approx([math.exp(-0.2)] * 2, abs=1e-9)
    # a tie (lengths 4 and 6 around c = 5) goes to the shorter reference: r = 4, no penalty
    corpus, _ = bleu_({0: ["a b c d", "a b c d e f"]}, {0: "a b c d e"}, n=2)
    assert corpus == pytest.approx([1, 1], abs=1e-9)


@pytest.mark.parametrize("bleu_", [bleu, bleu_loop])
def test_bleu_corpus_pools_counts_not_scores(bleu_):
    # image 0: "a b" vs "a b" -> 2 of 2 unigrams; image 1: "c d e f" vs "c x y z" -> 1 of 4.
    # corpus BLEU-1 = (2 + 1) / (2 + 4) = 0.5 (c = r = 6), not the mean of 1.0 and 0.25
    corpus, per_image = bleu_({0: ["a b"], 1: ["c x y z"]}, {0: "a b", 1: "c d e f"}, n=1)
    assert corpus[0] == pytest.approx(0.5, abs=1e-9)
    assert per_image[0] == pytest.approx([1.0, 0.25], abs=1e-9)


@pytest.mark.parametrize("bleu_", [bleu, bleu_loop])
def test_bleu_disjoint_candidate_is_zero(bleu_):
    # no word in common: p1 = 1e-15 / 2, times BP = exp(1 - 3/2)
    corpus, _ = bleu_({0: ["a cat sat"]}, {0: "dog runs"}, n=1)
    assert corpus[0] == pytest.approx(TINY / (2 + SMALL) * math.exp(1 - 3 / 2), rel=1e-9)
    assert corpus[0] < 1e-9


def test_lcs_by_hand():
    assert lcs_length("a cat sat on the mat".split(), "the cat sat".split()) == 2  # "cat sat"
    assert lcs_length("a cat sat on the mat".split(), "a dog on a mat".split()) == 3  # "a on mat"
    assert lcs_length([], ["a"]) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abc"), max_size=7), st.lists(st.sampled_from("abc"), max_size=7))
def test_lcs_matches_brute_force(a, b):
    def is_subsequence(sub, seq):
        it = iter(seq)
        return all(x in it for x in sub)  # `in` advances the iterator past the match

    best = max(
        size
        for size in range(len(a) + 1)
        for sub in itertools.combinations(a, size)
        if is_subsequence(sub, b)
    )
    assert lcs_length(a, b) == best == lcs_length(b, a)


@pytest.mark.parametrize("rouge_l_", [rouge_l, rouge_l_loop])
def test_rouge_l_by_hand(rouge_l_):
    # candidate "a cat sat on the mat" (6 words)
    #   vs "the cat sat":    LCS 2 ("cat sat")    -> P = 2/6, R = 2/3
    #   vs "a dog on a mat": LCS 3 ("a on mat")   -> P = 3/6, R = 3/5
    # max P = 1/2 (second reference) and max R = 2/3 (first one), taken separately:
    # F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    mean, per_image = rouge_l_({0: ["the cat sat", "a dog on a mat"]}, {0: "a cat sat on the mat"})
    p, r = 1 / 2, 2 / 3
    expected = (1 + 1.44) * p * r / (r + 1.44 * p)
    assert per_image[0] == pytest.approx(expected, abs=1e-12)
    assert mean == pytest.approx(expected, abs=1e-12)
    # identical -> 1, disjoint -> 0, empty candidate -> 0; the mean is over images
    mean, per_image = rouge_l_({0: ["a b"], 1: ["a b"], 2: ["a b"]}, {0: "a b", 1: "c", 2: ""})
    assert per_image == [1.0, 0.0, 0.0]
    assert mean == pytest.approx(1 / 3)


@pytest.mark.parametrize("cider_d_", [cider_d, cider_d_loop])
def test_cider_d_by_hand(cider_d_):
    # Two images, N = 2, one reference each: "a cat", "a dog". Document frequencies:
    # "a" in both images -> idf log(2/2) = 0; "cat", "dog", "a cat", "a dog" in one -> idf log 2.
    # Image 0, candidate "a cat": unigram vectors {a: 0, cat: log2} for both -> cosine 1; the
    # bigram vectors {a cat: log2} -> cosine 1; no 3- or 4-grams -> 0.
    # CIDEr-D = 10 * mean over k of the cosines = 10 * (1 + 1 + 0 + 0)/4 = 5.
    # Image 1, candidate "a bird": "bird" never occurs in the references (idf log 2) and has no
    # match; "a" matches but has weight 0 -> every cosine 0.
    gts = {0: ["a cat"], 1: ["a dog"]}
    mean, per_image = cider_d_(gts, {0: "a cat", 1: "a bird"})
    assert per_image == pytest.approx([5.0, 0.0], abs=1e-12)
    assert mean == pytest.approx(2.5, abs=1e-12)
    # only up to bigrams: 10 * (1 + 1)/2
    assert cider_d_(gts, {0: "a cat", 1: "a bird"}, n=2)[1] == pytest.approx([10.0, 0.0], abs=1e-12)

    # Clipping, unigrams only: candidate "cat cat" has weight 2 log2 on "cat", clipped to the
    # reference weight log2: dot = log2 * log2, norms 2 log2 and log2 -> cosine 1/2 -> 5
    # (without clipping it would be cosine 1, a perfect score for repeating a word)
    assert cider_d_(gts, {0: "cat cat", 1: "a bird"}, n=1)[1][0] == pytest.approx(5.0, abs=1e-12)

    # Length penalty: candidate "cat" (1 word) vs "a cat" (2 words): cosine 1 (weight of "a" is
    # 0), times exp(-(1 - 2)^2 / (2 * 6^2)) = exp(-1/72)
    score = cider_d_(gts, {0: "cat", 1: "a bird"}, n=1)[1][0]
    assert score == pytest.approx(10 * math.exp(-1 / 72), abs=1e-12)

    # a single image: every reference n-gram has idf log(1/1) = 0, so CIDEr-D is 0 even for a copy
    assert cider_d_({0: ["a cat"]}, {0: "a cat"})[0] == 0.0


# -----------------------------------------------------------------------------
# equality with pycocoevalcap

VOCAB = ["a", "cat", "dog", "on", "mat"]  # small, so that n-grams overlap often


def captions(min_words):
    return st.lists(st.sampled_from(VOCAB), min_size=min_words, max_size=9).map(" ".join)


@st.composite
def caption_sets(draw):
    ids = draw(st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True))
    gts = {i: draw(st.lists(captions(1), min_size=1, max_size=5)) for i in ids}
    res = {i: draw(captions(0)) for i in reversed(ids)}  # key order must not matter
    return gts, res


@settings(max_examples=150, deadline=None)
@given(caption_sets())
def test_equal_to_pycocoevalcap_on_random_sets(sets):
    gts, res = sets
    assert_same_as_coco(gts, res)


RAW_GTS = {
    139: [
        "A woman stands in the dining area at the table.",
        "A room with chairs, a table, and a woman in it.",
        "A woman standing in a kitchen by a window",
        "A person standing at a table in a room.",
        "A living room with hard wood floors filled with furniture",
    ],
    285: [
        "A big burly grizzly bear is show with grass in the background.",
        "The large brown bear has a black nose.",
        "Closeup of a brown bear sitting in a grassy area.",
        "A large bear that is sitting on grass. ",
        "A close up picture of a brown bear's face.",
    ],
    632: [
        "Bedroom scene with a bookcase, blue comforter and window.",
        "A bedroom with a bookshelf full of books.",
        "This room has a bed with blue sheets and a large bookcase",
        "A bed and a mirror in a small room.",
        "a bed room with a neatly made bed a window and a book shelf",
    ],
    724: [
        "A stop sign is mounted upside-down on it's post. ",
        "A stop sign that is hanging upside down.",
        "An upside down stop sign by the road.",
        "a stop sign put upside down on a metal pole ",
    ],
}
RAW_RES = {
    139: "A woman standing in a kitchen next to a table.",
    285: "A brown bear sitting in the grass.",
    632: "A bedroom with a bed and a book shelf.",
    724: "A stop sign on a pole.",
}


def test_equal_to_pycocoevalcap_on_realistic_captions():
    gts = {i: [tokenize_caption(c) for c in refs] for i, refs in RAW_GTS.items()}
    res = {i: tokenize_caption(c) for i, c in RAW_RES.items()}
    assert gts[285][4] == "a close up picture of a brown bear 's face"
    assert_same_as_coco(gts, res)
    scores = score_captions(gts, res)
    assert 0 < scores["Bleu_4"] < scores["Bleu_3"] < scores["Bleu_2"] < scores["Bleu_1"] < 1
    assert scores["CIDEr"] > 0


# -----------------------------------------------------------------------------
# the fast versions against the loop versions, on bigger and odder sets


def random_sets(seed, n_images=60, vocab_size=12, max_len=30):
    """Tokenized caption sets with repeated words, very short and long captions, empty
    candidates, and tokens with a non-breaking space inside (PTB's "5\u00a01/2": BLEU and
    CIDEr split it, ROUGE-L does not, as in pycocoevalcap)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)] + ["5\u00a01/2", "-lrb-", "'s"]

    def caption(min_len):
        length = rng.choice([min_len, 1, 2, rng.randint(min_len, max_len)])
        return " ".join(rng.choice(vocab) for _ in range(max(length, min_len)))

    gts = {f"img{i}": [caption(1) for _ in range(rng.randint(1, 6))] for i in range(n_images)}
    res = {i: caption(0) for i in gts}
    res[next(iter(gts))] = ""
    return gts, res


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_loop(seed):
    gts, res = random_sets(seed, vocab_size=4 + 6 * seed)
    for fast, loop in [(bleu, bleu_loop), (rouge_l, rouge_l_loop), (cider_d, cider_d_loop)]:
        a, b = fast(gts, res), loop(gts, res)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_fast_and_loop_equal_pycocoevalcap_on_odd_sets(seed):
    assert_same_as_coco(*random_sets(100 + seed))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=70), st.lists(st.sampled_from("abce"), max_size=70))
def test_bit_parallel_lcs_equals_dynamic_programme(a, b):
    masks = {}
    for i, word in enumerate(a):
        masks[word] = masks.get(word, 0) | (1 << i)
    assert metrics._lcs_bits(masks, len(a), b) == lcs_length(a, b)


def test_score_captions_shares_its_tables_correctly():
    gts, res = random_sets(7)
    scores = score_captions(gts, res)
    assert scores["CIDEr"] == pytest.approx(cider_d(gts, res)[0], abs=1e-12)
    assert scores["ROUGE_L"] == pytest.approx(rouge_l(gts, res)[0], abs=1e-12)
    assert [scores[f"Bleu_{k}"] for k in range(1, 5)] == pytest.approx(bleu(gts, res)[0], abs=1e-12)


# -----------------------------------------------------------------------------
# CIDEr-D with document frequencies from a fixed corpus


def test_cider_d_class_with_own_references_equals_cider_d():
    for seed in range(4):
        gts, res = random_sets(seed)
        np.testing.assert_array_equal(CiderD(gts).per_image(gts, res), cider_d(gts, res)[1])
        mean, per_image = CiderD(list(gts.values()), n=3, sigma=4.0)(gts, res)
        np.testing.assert_array_equal(per_image, cider_d(gts, res, n=3, sigma=4.0)[1])


def test_cider_d_class_uses_the_corpus_document_frequencies():
    corpus_gts, _ = random_sets(11, n_images=80)
    gts, res = random_sets(12, n_images=20)
    scorer = CiderD(corpus_gts)
    # the loop version with the corpus's document frequencies and size
    doc_freq = metrics._cider_doc_freq(list(corpus_gts.values()), 4)
    expected = metrics._cider_loop(gts, res, list(gts), doc_freq, len(corpus_gts), 4, 6.0)
    np.testing.assert_allclose(scorer.per_image(gts, res), expected, rtol=1e-12, atol=1e-12)
    assert scorer.doc_freq(["w1"]) == doc_freq[("w1",)] > 0
    assert scorer.doc_freq(["w1", "w2"]) == doc_freq[("w1", "w2")]
    assert scorer.doc_freq(["never", "seen"]) == 0 and scorer.doc_freq([]) == 0


def test_fixed_document_frequencies_make_scores_independent_of_the_batch():
    # pycocoevalcap's CIDEr-D of an image changes with the other images in the set; with the
    # document frequencies fixed from a corpus it does not
    gts, res = random_sets(5, n_images=30)
    ids = list(gts)
    first = {i: gts[i] for i in ids[:20]}, {i: res[i] for i in ids[:20]}
    second = {i: gts[i] for i in ids[10:]}, {i: res[i] for i in ids[10:]}
    shared = slice(10, 20), slice(0, 10)
    own_a, own_b = cider_d(*first)[1], cider_d(*second)[1]
    assert not np.allclose(own_a[shared[0]], own_b[shared[1]])
    scorer = CiderD(gts)
    np.testing.assert_allclose(scorer.per_image(*first)[shared[0]], scorer.per_image(*second)[shared[1]],
                               rtol=1e-12, atol=1e-15)


def test_cider_d_class_errors():
    with pytest.raises(ValueError, match="empty"):
        CiderD({})
    with pytest.raises(TypeError, match="list of captions"):
        CiderD({0: "a cat"})
    with pytest.raises(ValueError, match="n must be"):
        CiderD({0: ["a cat"]}, n=0)
    with pytest.raises(ValueError, match="sigma"):
        CiderD({0: ["a cat"]}, sigma=-1)
    with pytest.raises(ValueError, match="same image ids"):
        CiderD({0: ["a cat"]}).per_image({0: ["a cat"]}, {1: "a cat"})


# -----------------------------------------------------------------------------
# tokenization (tested in full in tests/test_ptb_tokenizer.py)


def test_tokenize_caption_is_the_ptb_tokenizer():
    from velm_course.eval import ptb

    assert tokenize_caption is ptb.tokenize_caption and metrics.PTB_PUNCTUATION is ptb.PTB_PUNCTUATION
    assert tokenize_caption("A man's T-shirt (red), on the U.S. flag!") == "a man 's t-shirt -lrb- red -rrb- on the u.s. flag"


def test_tokenize_punctuation_list_is_coco_s():
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    assert set(PUNCTUATIONS) == metrics.PTB_PUNCTUATION


# -----------------------------------------------------------------------------
# bad input

SCORERS = [bleu, bleu_loop, rouge_l, rouge_l_loop, cider_d, cider_d_loop, score_captions]


@pytest.mark.parametrize("scorer", SCORERS)
def test_errors(scorer):
    with pytest.raises(ValueError, match="empty input"):
        scorer({}, {})
    with pytest.raises(ValueError, match="same image ids"):
        scorer({0: ["a cat"], 1: ["a dog"]}, {0: "a cat"})
    with pytest.raises(ValueError, match="same image ids"):
        scorer({0: ["a cat"]}, {0: "a cat", 2: "a dog"})
    with pytest.raises(ValueError, match="has an empty list of reference captions"):
        scorer({0: ["a cat"], 1: []}, {0: "a cat", 1: "a dog"})
    with pytest.raises(ValueError, match="empty reference"):
        scorer({0: ["a cat", "  "]}, {0: "a cat"})
    with pytest.raises(TypeError, match="one-element list"):
        scorer({0: ["a cat"]}, {0: ["a cat"]})
    with pytest.raises(TypeError, match="must be a list of reference captions"):
        scorer({0: "a cat"}, {0: "a cat"})


@pytest.mark.parametrize("bleu_, cider_d_", [(bleu, cider_d), (bleu_loop, cider_d_loop)])
def test_parameter_errors(bleu_, cider_d_):
    gts, res = {0: ["a cat"]}, {0: "a cat"}
    with pytest.raises(ValueError, match="n must be"):
        bleu_(gts, res, n=0)
    with pytest.raises(ValueError, match="n must be"):
        cider_d_(gts, res, n=0)
    with pytest.raises(ValueError, match="sigma"):
        cider_d_(gts, res, sigma=0.0)
