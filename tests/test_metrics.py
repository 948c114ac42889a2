"""Tests for velm_course.eval.metrics: hand-worked examples, equality with pycocoevalcap, errors."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velm_course.eval.metrics import (
    PTB_PUNCTUATION,
    bleu,
    cider_d,
    lcs_length,
    ngram_counts,
    rouge_l,
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
    corpus, per_image = bleu(gts, res)
    ref_corpus, ref_per_image = ref["bleu"]
    np.testing.assert_allclose(corpus, ref_corpus, rtol=0, atol=1e-9)
    np.testing.assert_allclose(per_image, ref_per_image, rtol=0, atol=1e-9)

    mean, per_image = rouge_l(gts, res)
    assert mean == pytest.approx(ref["rouge"][0], abs=1e-9)
    np.testing.assert_allclose(per_image, ref["rouge"][1], rtol=0, atol=1e-9)

    mean, per_image = cider_d(gts, res)
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


def test_bleu_identical_caption_scores_one():
    # every k-gram matches: p_k = (g + 1e-15) / (g + 1e-9) = 1 up to the smoothing; c = r, no penalty
    gts, res = {0: ["a cat sat on the mat"]}, {0: "a cat sat on the mat"}
    corpus, per_image = bleu(gts, res)
    assert corpus == pytest.approx([1, 1, 1, 1], abs=1e-9)
    assert [s[0] for s in per_image] == pytest.approx([1, 1, 1, 1], abs=1e-9)


def test_bleu_clipping_by_hand():
    # candidate "the cat the cat" (c = 4), reference "the cat sat" (r = 3, no brevity penalty)
    # unigrams: the×2 -> clipped to 1, cat×2 -> clipped to 1: p1 = 2/4
    # bigrams: "the cat"×2 -> clipped to 1, "cat the"×1 -> 0:     p2 = 1/3
    # trigrams: "the cat the", "cat the cat" match nothing:       p3 = 0/2, smoothed to 1e-15/2
    # BLEU-1 = p1, BLEU-2 = (p1 p2)^(1/2), BLEU-3 = (p1 p2 p3)^(1/3) ~ 4.4e-6, not 0
    corpus, _ = bleu({0: ["the cat sat"]}, {0: "the cat the cat"}, n=3)
    p1, p2, p3 = (2 + TINY) / (4 + SMALL), (1 + TINY) / (3 + SMALL), TINY / (2 + SMALL)
    assert corpus[0] == pytest.approx(0.5, abs=1e-9)
    assert corpus[1] == pytest.approx(math.sqrt(1 / 6), abs=1e-9)
    assert corpus[2] == pytest.approx((p1 * p2 * p3) ** (1 / 3), rel=1e-12)
    assert 4e-6 < corpus[2] < 5e-6


def test_bleu_brevity_penalty_by_hand():
    # "a cat" vs "a cat sat on the mat": p1 = p2 = 1 but c = 2 < r = 6, BP = exp(1 - 6/2) = exp(-2)
    corpus, per_image = bleu({0: ["a cat sat on the mat"]}, {0: "a cat"}, n=2)
    assert corpus == pytest.approx([math.exp(-2)] * 2, abs=1e-9)
    assert [s[0] for s in per_image] == pytest.approx([math.exp(-2)] * 2, abs=1e-9)


def test_bleu_closest_reference_length():
    # c = 5; references of length 2 and 6. "closest" picks r = 6 (|5-6| < |5-2|), so
    # BP = exp(1 - 6/5); "shortest" (r = 2) or "average" (r = 4) would give no penalty.
    # Every candidate uni/bigram is in the long reference: p1 = p2 = 1.
    corpus, _ = bleu({0: ["a b", "a b c d e f"]}, {0: "a b c d e"}, n=2)
    assert corpus == pytest.approx([math.exp(-0.2)] * 2, abs=1e-9)
    # a tie (lengths 4 and 6 around c = 5) goes to the shorter reference: r = 4, no penalty
    corpus, _ = bleu({0: ["a b c d", "a b c d e f"]}, {0: "a b c d e"}, n=2)
    assert corpus == pytest.approx([1, 1], abs=1e-9)


def test_bleu_corpus_pools_counts_not_scores():
    # image 0: "a b" vs "a b" -> 2 of 2 unigrams; image 1: "c d e f" vs "c x y z" -> 1 of 4.
    # corpus BLEU-1 = (2 + 1) / (2 + 4) = 0.5 (c = r = 6), not the mean of 1.0 and 0.25
    corpus, per_image = bleu({0: ["a b"], 1: ["c x y z"]}, {0: "a b", 1: "c d e f"}, n=1)
    assert corpus[0] == pytest.approx(0.5, abs=1e-9)
    assert per_image[0] == pytest.approx([1.0, 0.25], abs=1e-9)


def test_bleu_disjoint_candidate_is_zero():
    # no word in common: p1 = 1e-15 / 2, times BP = exp(1 - 3/2)
    corpus, _ = bleu({0: ["a cat sat"]}, {0: "dog runs"}, n=1)
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


def test_rouge_l_by_hand():
    # candidate "a cat sat on the mat" (6 words)
    #   vs "the cat sat":    LCS 2 ("cat sat")    -> P = 2/6, R = 2/3
    #   vs "a dog on a mat": LCS 3 ("a on mat")   -> P = 3/6, R = 3/5
    # max P = 1/2 (second reference) and max R = 2/3 (first one), taken separately:
    # F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    mean, per_image = rouge_l({0: ["the cat sat", "a dog on a mat"]}, {0: "a cat sat on the mat"})
    p, r = 1 / 2, 2 / 3
    expected = (1 + 1.44) * p * r / (r + 1.44 * p)
    assert per_image[0] == pytest.approx(expected, abs=1e-12)
    assert mean == pytest.approx(expected, abs=1e-12)
    # identical -> 1, disjoint -> 0, empty candidate -> 0; the mean is over images
    mean, per_image = rouge_l({0: ["a b"], 1: ["a b"], 2: ["a b"]}, {0: "a b", 1: "c", 2: ""})
    assert per_image == [1.0, 0.0, 0.0]
    assert mean == pytest.approx(1 / 3)


def test_cider_d_by_hand():
    # Two images, N = 2, one reference each: "a cat", "a dog". Document frequencies:
    # "a" in both images -> idf log(2/2) = 0; "cat", "dog", "a cat", "a dog" in one -> idf log 2.
    # Image 0, candidate "a cat": unigram vectors {a: 0, cat: log2} for both -> cosine 1; the
    # bigram vectors {a cat: log2} -> cosine 1; no 3- or 4-grams -> 0.
    # CIDEr-D = 10 * mean over k of the cosines = 10 * (1 + 1 + 0 + 0)/4 = 5.
    # Image 1, candidate "a bird": "bird" never occurs in the references (idf log 2) and has no
    # match; "a" matches but has weight 0 -> every cosine 0.
    gts = {0: ["a cat"], 1: ["a dog"]}
    mean, per_image = cider_d(gts, {0: "a cat", 1: "a bird"})
    assert per_image == pytest.approx([5.0, 0.0], abs=1e-12)
    assert mean == pytest.approx(2.5, abs=1e-12)
    # only up to bigrams: 10 * (1 + 1)/2
    assert cider_d(gts, {0: "a cat", 1: "a bird"}, n=2)[1] == pytest.approx([10.0, 0.0], abs=1e-12)

    # Clipping, unigrams only: candidate "cat cat" has weight 2 log2 on "cat", clipped to the
    # reference weight log2: dot = log2 * log2, norms 2 log2 and log2 -> cosine 1/2 -> 5
    # (without clipping it would be cosine 1, a perfect score for repeating a word)
    assert cider_d(gts, {0: "cat cat", 1: "a bird"}, n=1)[1][0] == pytest.approx(5.0, abs=1e-12)

    # Length penalty: candidate "cat" (1 word) vs "a cat" (2 words): cosine 1 (weight of "a" is
    # 0), times exp(-(1 - 2)^2 / (2 * 6^2)) = exp(-1/72)
    score = cider_d(gts, {0: "cat", 1: "a bird"}, n=1)[1][0]
    assert score == pytest.approx(10 * math.exp(-1 / 72), abs=1e-12)

    # a single image: every reference n-gram has idf log(1/1) = 0, so CIDEr-D is 0 even for a copy
    assert cider_d({0: ["a cat"]}, {0: "a cat"})[0] == 0.0


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
# tokenisation


def test_tokenize_caption_by_hand():
    assert tokenize_caption("A man's T-shirt (red), on the U.S. flag!") == "a man 's t-shirt red on the u.s. flag"
    assert tokenize_caption("Don't stop... it's 10:30, e.g. now.") == "do n't stop it 's 10:30 e.g. now"
    assert tokenize_caption('The dogs\' toys -- "here" cost $3.50; 50% off') == "the dogs toys here cost $ 3.50 50 % off"
    assert tokenize_caption("  'Happy'   o'clock\nrock&roll ") == "happy o'clock rock & roll"
    assert tokenize_caption("...!?") == ""


def test_tokenize_punctuation_list_is_coco_s():
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    assert set(PUNCTUATIONS) == PTB_PUNCTUATION


TREEBANK_SENTENCES = [
    "A man's T-shirt, (red) and a dog!",
    "Two people don't like the $3.50 sandwich.",
    "A woman is riding a horse; the horse's mane is long.",
    'A sign that says "stop" at 10:30, near a bus.',
    "The dogs' toys -- a ball & a stick -- are on the floor?",
    "A plate of food: rice, beans, and 50% more meat.",
]


@pytest.mark.parametrize("sentence", TREEBANK_SENTENCES)
def test_tokenize_matches_treebank_tokenizer(sentence):
    # nltk's Treebank tokenizer follows the same PTB conventions; COCO then drops punctuation
    from nltk.tokenize import TreebankWordTokenizer

    tokens = TreebankWordTokenizer().tokenize(sentence.lower(), convert_parentheses=True)
    expected = " ".join(t for t in tokens if t not in PTB_PUNCTUATION)
    assert tokenize_caption(sentence) == expected


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="aBz19 .,;:!?'\"()-$&\n", max_size=40))
def test_tokenize_is_idempotent_and_drops_punctuation(text):
    out = tokenize_caption(text)
    assert tokenize_caption(out) == out
    assert out == out.lower()
    assert out == " ".join(out.split())  # single spaces, nothing at the ends
    assert not set(out.split()) & PTB_PUNCTUATION


# -----------------------------------------------------------------------------
# bad input

SCORERS = [bleu, rouge_l, cider_d, score_captions]


@pytest.mark.parametrize("scorer", SCORERS)
def test_errors(scorer):
    with pytest.raises(ValueError, match="empty input"):
        scorer({}, {})
    with pytest.raises(ValueError, match="same image ids"):
        scorer({0: ["a cat"], 1: ["a dog"]}, {0: "a cat"})
    with pytest.raises(ValueError, match="same image ids"):
        scorer({0: ["a cat"]}, {0: "a cat", 2: "a dog"})
    with pytest.raises(ValueError, match="no reference"):
        scorer({0: ["a cat"], 1: []}, {0: "a cat", 1: "a dog"})
    with pytest.raises(ValueError, match="empty reference"):
        scorer({0: ["a cat", "  "]}, {0: "a cat"})
    with pytest.raises(TypeError, match="one-element list"):
        scorer({0: ["a cat"]}, {0: ["a cat"]})
    with pytest.raises(TypeError, match="list of reference strings"):
        scorer({0: "a cat"}, {0: "a cat"})


def test_parameter_errors():
    gts, res = {0: ["a cat"]}, {0: "a cat"}
    with pytest.raises(ValueError, match="n must be"):
        bleu(gts, res, n=0)
    with pytest.raises(ValueError, match="n must be"):
        cider_d(gts, res, n=0)
    with pytest.raises(ValueError, match="sigma"):
        cider_d(gts, res, sigma=0.0)
