"""N-gram LMs: hand-worked numbers, a slow dict-based reference, nltk.lm, and bad input."""

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velm_course.text.ngram import BOS, EOS, SMOOTHINGS, UNK, NGramConfig, NGramLM

D = 0.75

# --- a slow, obviously-correct reference ------------------------------------------------------


class ReferenceLM:
    """Dict-of-Counters n-gram model written straight from the textbook formulas.

    ``nltk_unigram=True`` swaps the bottom of the Kneser-Ney recursion for nltk's: the plain
    continuation frequency N1+(. w) / N1+(. .), with no discount and no uniform floor.
    """

    def __init__(self, sentences, order, smoothing, k=1.0, min_count=1, nltk_unigram=False):
        self.n, self.smoothing, self.k, self.nltk_unigram = order, smoothing, k, nltk_unigram
        freq = Counter(w for s in sentences for w in s)
        self.vocab = [EOS, UNK] + sorted(w for w, c in freq.items() if c >= min_count and w != UNK)
        self.events = [self.pad(s) for s in sentences]
        # counts[m][h][w]: raw counts at the top order, continuation counts below it.
        self.counts = defaultdict(lambda: defaultdict(Counter))
        types_above = set()
        for padded in self.events:
            for i in range(order - 1, len(padded)):
                gram = tuple(padded[i - order + 1: i + 1])
                self.counts[order][gram[:-1]][gram[-1]] += 1
                types_above.add(gram)
        for m in range(order - 1, 0, -1):
            for gram in types_above:  # each distinct (v, h, w) adds 1 to (h, w)
                self.counts[m][gram[1:-1]][gram[-1]] += 1
            types_above = {g[1:] for g in types_above}

    def map(self, w):
        return w if w in self.vocab or w == BOS else UNK

    def pad(self, sentence):
        return [BOS] * (self.n - 1) + [self.map(w) for w in sentence] + [EOS]

    def prob(self, w, h):
        h = tuple(self.map(x) for x in h)
        if self.smoothing == "mle":
            c = self.counts[self.n][h]
            return c[w] / sum(c.values())
        if self.smoothing == "add_k":
            c = self.counts[self.n][h]
            return (c[w] + self.k) / (sum(c.values()) + self.k * len(self.vocab))
        return self.kn(w, h)

    def kn(self, w, h):
        m = len(h) + 1
        if m == 0:
            return 1 / len(self.vocab)
        c = self.counts[m][h]
        total = sum(c.values())
        if m == 1 and self.nltk_unigram:
            return c[w] / total
        lower = self.kn(w, h[1:]) if h else (1 / len(self.vocab))
        if total == 0:  # unseen context: fall through to the lower order
            return lower
        return (max(c[w] - D, 0) + D * len(c) * lower) / total

    def perplexity(self, sentences):
        logs = []
        for s in sentences:
            padded = self.pad(s)
            logs += [math.log(self.prob(padded[i], tuple(padded[i - self.n + 1: i])))
                     for i in range(self.n - 1, len(padded))]
        return math.exp(-sum(logs) / len(logs))


def contexts_of(sentences, order):
    """Every (order-1)-word context that precedes a token in the padded sentences."""
    out = set()
    for s in sentences:
        padded = [BOS] * (order - 1) + list(s) + [EOS]
        out |= {tuple(padded[i - order + 1: i]) for i in range(order - 1, len(padded))}
    return sorted(out)


def as_model_sees(context, lm):
    """The context as the model looks it up: last order-1 words, <s>-padded, OOV -> <unk>."""
    n = lm.config.order
    padded = [BOS] * (n - 1) + [w if w in lm.vocab or w == BOS else UNK for w in context]
    return tuple(padded[len(padded) - (n - 1):])


words = st.sampled_from(["a", "b", "c", "d", "e"])
corpora = st.lists(st.lists(words, max_size=6), min_size=1, max_size=6)
# Contexts to probe: any mix of known words, an unseen word and the start symbol.
probe_contexts = st.lists(st.lists(st.sampled_from(["a", "b", "c", "z", BOS]), max_size=4),
                          max_size=4)


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(sentences=corpora, order=st.integers(1, 4), smoothing=st.sampled_from(SMOOTHINGS),
       min_count=st.integers(1, 2), extra=probe_contexts)
def test_distributions_sum_to_one(sentences, order, smoothing, min_count, extra):
    lm = NGramLM(NGramConfig(order=order, smoothing=smoothing, min_count=min_count)).fit(sentences)
    assert BOS not in lm.vocab and EOS in lm.vocab and UNK in lm.vocab
    for ctx in contexts_of(sentences, order):  # seen contexts: every smoothing is defined
        p = lm.distribution(ctx)
        assert p.shape == (len(lm.vocab),) and (p >= 0).all()
        assert math.isclose(p.sum(), 1.0, rel_tol=1e-12)
    seen = {as_model_sees(c, lm) for c in contexts_of(sentences, order)}
    for ctx in extra:
        if smoothing == "mle" and as_model_sees(ctx, lm) not in seen:
            # MLE is 0/0 after an unseen context: we refuse rather than invent numbers.
            with pytest.raises(ValueError, match="MLE is undefined"):
                lm.distribution(ctx)
            continue
        p = lm.distribution(ctx)
        assert (p >= 0).all() and math.isclose(p.sum(), 1.0, rel_tol=1e-12)
        # The one-word path (prob) and the whole-vocabulary path (distribution) agree.
        for i in range(0, len(lm.vocab), 2):
            assert math.isclose(lm.prob(lm.vocab[i], ctx), p[i], rel_tol=1e-12, abs_tol=1e-15)


@settings(max_examples=60, deadline=None)
@given(sentences=corpora, order=st.integers(1, 4), smoothing=st.sampled_from(SMOOTHINGS),
       min_count=st.integers(1, 2), k=st.sampled_from([0.1, 1.0, 2.5]))
def test_matches_reference_implementation(sentences, order, smoothing, min_count, k):
    cfg = NGramConfig(order=order, smoothing=smoothing, k=k, min_count=min_count)
    lm = NGramLM(cfg).fit(sentences)
    ref = ReferenceLM(sentences, order, smoothing, k=k, min_count=min_count)
    assert lm.vocab == ref.vocab
    for ctx in contexts_of(sentences, order) + [("z",) * (order - 1)]:
        if smoothing == "mle" and ctx == ("z",) * (order - 1) and order > 1:
            continue  # unseen context: undefined for MLE (tested above)
        np.testing.assert_allclose(lm.distribution(ctx), [ref.prob(w, ctx) for w in lm.vocab],
                                   rtol=1e-12, atol=1e-15)
    # logprob/perplexity (vectorised path) agree with the reference's per-token sum.
    assert math.isclose(lm.perplexity(sentences), ref.perplexity(sentences), rel_tol=1e-10)
    s = sentences[0]
    padded = ref.pad(s)
    manual = sum(math.log(ref.prob(padded[i], tuple(padded[i - order + 1: i])))
                 for i in range(order - 1, len(padded)))
    assert math.isclose(lm.logprob(s), manual, rel_tol=1e-10)


@pytest.mark.parametrize("size", [50, 10**9])  # lookup-table path, sorting path
def test_unique_inverse_matches_numpy(size):
    from velm_course.text.ngram import _unique_inverse

    keys = np.random.default_rng(0).integers(0, size, 200)
    uniq, inv = _unique_inverse(keys, size)
    want_uniq, want_inv = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(uniq, want_uniq)
    np.testing.assert_array_equal(inv, want_inv)


# --- hand-worked numbers ----------------------------------------------------------------------

# Three sentences. Padded for a bigram model:
#   <s> a b </s>       <s> a b b </s>       <s> b a </s>
# Bigram counts c(h, w):
#   after <s>: a 2, b 1            (total 3)
#   after a:   b 2, </s> 1         (total 3)
#   after b:   </s> 2, b 1, a 1    (total 4)
# Vocabulary: </s>, <unk>, a, b  (V = 4; <s> is never predicted).
TOY = [["a", "b"], ["a", "b", "b"], ["b", "a"]]


def test_hand_worked_mle_and_laplace():
    mle = NGramLM(NGramConfig(order=2, smoothing="mle")).fit(TOY)
    assert mle.vocab == [EOS, UNK, "a", "b"]
    assert mle.prob("b", ["a"]) == 2 / 3
    assert mle.prob(EOS, ["b"]) == 2 / 4
    assert mle.prob("a", []) == 2 / 3  # empty context = sentence start
    assert mle.prob("a", ["a"]) == 0.0
    # P(a b </s>) = P(a|<s>) P(b|a) P(</s>|b) = 2/3 * 2/3 * 2/4
    assert math.isclose(mle.logprob(["a", "b"]), math.log(2 / 3 * 2 / 3 * 2 / 4))
    # Laplace: (c + 1) / (c(h) + V)
    lap = NGramLM(NGramConfig(order=2, smoothing="add_k", k=1.0)).fit(TOY)
    assert math.isclose(lap.prob("b", ["a"]), 3 / 7)
    assert math.isclose(lap.prob(UNK, ["b"]), 1 / 8)
    assert math.isclose(lap.prob("zebra", ["b"]), 1 / 8)  # unseen word -> <unk>
    assert math.isclose(lap.prob("a", ["zebra"]), 1 / 4)  # unseen context -> uniform
    add_half = NGramLM(NGramConfig(order=2, smoothing="add_k", k=0.5)).fit(TOY)
    assert math.isclose(add_half.prob("b", ["a"]), 2.5 / 5)  # (2 + .5) / (3 + .5 * 4)


def test_hand_worked_kneser_ney_bigram():
    lm = NGramLM(NGramConfig(order=2, smoothing="kneser_ney", discount=D)).fit(TOY)
    # Unigram level: continuation counts N1+(. w) = distinct words before w among the 7
    # bigram types (<s> a) (a b) (b </s>) (b b) (<s> b) (b a) (a </s>):
    #   a: {<s>, b} 2    b: {a, b, <s>} 3    </s>: {b, a} 2    <unk>: 0
    # total 7, 3 types, recursion ends in uniform 1/4:
    #   P1(w) = (max(N1+ - .75, 0) + .75 * 3 * 1/4) / 7
    p1 = {"a": (1.25 + 0.5625) / 7, "b": (2.25 + 0.5625) / 7,
          EOS: (1.25 + 0.5625) / 7, UNK: 0.5625 / 7}
    for w, p in p1.items():
        assert math.isclose(lm.prob(w, ["zebra"]), p)  # <unk> context unseen -> unigram level
    # Bigram level, raw counts: P(b | a) = (2 - .75 + .75 * 2 types * P1(b)) / 3
    assert math.isclose(lm.prob("b", ["a"]), (1.25 + 1.5 * p1["b"]) / 3)
    # P(<unk> | b) = (0 + .75 * 3 types * P1(<unk>)) / 4
    assert math.isclose(lm.prob(UNK, ["b"]), 2.25 * p1[UNK] / 4)


def test_hand_worked_kneser_ney_trigram_start():
    # One sentence "a b", trigram: events (<s> <s> a) (<s> a b) (a b </s>), V = 4.
    lm = NGramLM(NGramConfig(order=3, smoothing="kneser_ney", discount=D)).fit([["a", "b"]])
    # Unigram level: a, b, </s> each have one left neighbour: P1(a) = (.25 + .75*3/4) / 3
    p1 = (0.25 + 0.5625) / 3
    # Bigram level after <s>: the only trigram ending in (<s> a) is (<s> <s> a), so the
    # continuation count is 1, total 1, 1 type: P2(a | <s>) = .25 + .75 * P1(a)
    p2 = 0.25 + 0.75 * p1
    # Trigram level after (<s> <s>), raw count 1: P3 = .25 + .75 * P2
    assert math.isclose(lm.prob("a", []), 0.25 + 0.75 * p2)
    assert math.isclose(lm.prob("a", []), 0.58984375)


def test_min_count_maps_rare_words_to_unk():
    lm = NGramLM(NGramConfig(order=2, smoothing="mle", min_count=2)).fit([["a", "b", "c"], ["a", "b"]])
    assert lm.vocab == [EOS, UNK, "a", "b"]  # c was seen once
    # after b: <unk> (was c) once, </s> once
    assert lm.prob("c", ["b"]) == lm.prob(UNK, ["b"]) == lm.prob("zebra", ["b"]) == 0.5
    assert lm.prob(EOS, ["c"]) == 1.0  # c in the context is <unk> too


def test_generate_is_seeded_and_follows_the_data():
    lm = NGramLM(NGramConfig(order=2, smoothing="mle")).fit(TOY)
    out = lm.generate(50, seed=3)
    assert len(out) == 50 and out == lm.generate(50, seed=3)
    # Under MLE every generated bigram must have been seen in training.
    seen = {(p[i - 1], p[i]) for s in TOY for p in [[BOS, *s, EOS]] for i in range(1, len(p))}
    prev = BOS
    for w in out:
        assert (prev, w) in seen
        prev = BOS if w == EOS else w


# --- nltk.lm ----------------------------------------------------------------------------------
#
# We give nltk exactly our padded events: for each predicted token, the order-n n-gram that
# ends in it and all of its suffixes (that is what our counts are made of). nltk's own
# pipeline (padded_everygram_pipeline) counts a little more; see the last test.


def nltk_model(cls, sentences, order, min_count=1, **kwargs):
    from nltk.lm import Vocabulary

    ref = ReferenceLM(sentences, order, "mle", min_count=min_count)
    text = [[tuple(p[i - m + 1: i + 1]) for i in range(order - 1, len(p)) for m in range(1, order + 1)]
            for p in ref.events]
    # nltk looks every token up in its vocabulary, contexts included, so <s> must be in it or
    # it would be read as <unk>. nltk adds its unk label itself (listing it too counts it twice).
    vocab = Vocabulary([w for w in ref.vocab if w != UNK] + [BOS], unk_label=UNK)
    lm = cls(order, vocabulary=vocab, **kwargs)
    lm.fit(text)
    return lm, ref


SEEDED_CORPORA = [
    [np.random.default_rng(seed).choice(list("abcdef"), size=n).tolist() for n in sizes]
    for seed, sizes in enumerate([(3, 5, 0, 4), (6, 6, 2, 1, 3), (1, 8, 4)])
]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("sentences", SEEDED_CORPORA)
def test_mle_matches_nltk(sentences, order):
    from nltk.lm import MLE

    ref_lm, _ = nltk_model(MLE, sentences, order)
    lm = NGramLM(NGramConfig(order=order, smoothing="mle")).fit(sentences)
    for ctx in contexts_of(sentences, order):
        np.testing.assert_allclose(lm.distribution(ctx), [ref_lm.score(w, ctx) for w in lm.vocab],
                                   rtol=1e-12)
    events = [tuple(p[i - order + 1: i + 1]) for p in [[BOS] * (order - 1) + s + [EOS] for s in sentences]
              for i in range(order - 1, len(p))]
    assert math.isclose(lm.perplexity(sentences), ref_lm.perplexity(events), rel_tol=1e-10)
    # Difference: after a context it never saw (<unk> never occurs in these corpora), nltk's
    # MLE returns 0 for every word, a "distribution" that sums to 0; ours raises instead.
    if order > 1:
        unseen = (UNK,) * (order - 1)
        assert sum(ref_lm.score(w, unseen) for w in ref_lm.vocab) == 0.0
        with pytest.raises(ValueError, match="MLE is undefined"):
            lm.distribution(unseen)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("sentences", SEEDED_CORPORA)
def test_laplace_matches_nltk(sentences, order):
    from nltk.lm import Laplace, Vocabulary

    fitted, ref = nltk_model(Laplace, sentences, order)
    lm = NGramLM(NGramConfig(order=order, smoothing="add_k", k=1.0)).fit(sentences)
    V = len(lm.vocab)
    # Difference: nltk's vocabulary must contain <s> (see nltk_model), and Laplace divides by
    # len(vocab), so it spreads mass over V + 1 symbols, one of which (<s>) can never occur.
    assert len(fitted.vocab) == V + 1
    ctx = contexts_of(sentences, order)[0]
    counts = fitted.context_counts(ctx)
    c, total = counts["a"], counts.N()
    assert math.isclose(fitted.score("a", ctx), (c + 1) / (total + V + 1))
    assert math.isclose(lm.prob("a", ctx), (c + 1) / (total + V))
    # With the same counts and our vocabulary (no <s>) the two agree exactly, for seen and
    # unseen contexts alike. unmasked_score skips nltk's lookup, which would map <s> to <unk>.
    same = Laplace(order, vocabulary=Vocabulary([w for w in lm.vocab if w != UNK], unk_label=UNK),
                   counter=fitted.counts)
    assert len(same.vocab) == V
    for ctx in contexts_of(sentences, order) + [(UNK,) * (order - 1)]:
        np.testing.assert_allclose(lm.distribution(ctx),
                                   [same.unmasked_score(w, ctx) for w in lm.vocab], rtol=1e-12)
    logs = [math.log(same.unmasked_score(p[i], tuple(p[i - order + 1: i])))
            for p in ref.events for i in range(order - 1, len(p))]
    assert math.isclose(lm.perplexity(sentences), math.exp(-sum(logs) / len(logs)), rel_tol=1e-10)


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("sentences", SEEDED_CORPORA)
def test_kneser_ney_against_nltk(sentences, order):
    from nltk.lm import KneserNeyInterpolated

    # nltk's default discount is 0.1; ours is 0.75, so pass it. (nltk also cannot do order 1:
    # its unigram level reads continuation counts from bigrams that an order-1 model lacks.)
    fitted, _ = nltk_model(KneserNeyInterpolated, sentences, order, discount=D)
    lm = NGramLM(NGramConfig(order=order, smoothing="kneser_ney", discount=D)).fit(sentences)
    ours_ref = ReferenceLM(sentences, order, "kneser_ney")
    nltk_ref = ReferenceLM(sentences, order, "kneser_ney", nltk_unigram=True)
    probes = contexts_of(sentences, order) + [(UNK,) * (order - 1), (BOS,) * (order - 2) + ("f",)]
    for ctx in probes:
        ctx = tuple(w if w in lm.vocab or w == BOS else UNK for w in ctx)
        # Above the unigram level the definitions agree: nltk == the reference with nltk's
        # unigram level, to rounding, in seen and unseen contexts ...
        np.testing.assert_allclose([fitted.score(w, ctx) for w in lm.vocab],
                                   [nltk_ref.prob(w, ctx) for w in lm.vocab], rtol=1e-12)
        # ... and ours == the same reference with the textbook unigram level.
        np.testing.assert_allclose(lm.distribution(ctx), [ours_ref.prob(w, ctx) for w in lm.vocab],
                                   rtol=1e-12)
    # The difference is only at the bottom: nltk's unigram is N1+(. w) / N1+(. .), with no
    # discount and no uniform floor, so a word with no continuation count gets 0 from it
    # (here <unk>, which never occurs in training), while ours keeps it above 0.
    assert fitted.score(UNK, (UNK,) * (order - 1)) == 0.0
    assert lm.prob(UNK, [UNK] * (order - 1)) > 0.0
    assert math.isclose(lm.perplexity(sentences), ours_ref.perplexity(sentences), rel_tol=1e-10)


@pytest.mark.parametrize("order", [2, 3])
def test_kneser_ney_equals_nltk_when_every_word_continues(order):
    """The unigram levels coincide when every vocabulary word has a continuation count.

    Ours is (N1+(. w) - d + d * types / V) / N1+(. .); with types == V that is nltk's
    N1+(. w) / N1+(. .). Here c and d are rare (-> <unk>) and every symbol of
    {</s>, <unk>, a, b} follows something, so the two models agree everywhere. (The same
    happens on real text once rare words become <unk>: see benchmarks/bench_ngram.py.)
    """
    from nltk.lm import KneserNeyInterpolated

    sentences = [["a", "b", "c"], ["b", "a", "d"], ["a", "b"]]
    fitted, _ = nltk_model(KneserNeyInterpolated, sentences, order, min_count=2, discount=D)
    lm = NGramLM(NGramConfig(order=order, discount=D, min_count=2)).fit(sentences)
    assert lm.vocab == [EOS, UNK, "a", "b"]
    for ctx in contexts_of(sentences, order) + [(UNK,) * (order - 1), ("zebra",) * (order - 1)]:
        ctx = as_model_sees(ctx, lm)
        np.testing.assert_allclose(lm.distribution(ctx), [fitted.score(w, ctx) for w in lm.vocab],
                                   rtol=1e-12)


def test_nltk_standard_pipeline_does_not_sum_to_one():
    """nltk's own padding counts (<s> <s>) as a bigram, which breaks normalisation.

    padded_everygram_pipeline(3, [["a", "b"]]) pads to <s> <s> a b </s> </s> and counts
    every 1-, 2- and 3-gram in it. At the trigram context (<s> <s>) only "a" follows:
    alpha(a) = 1 - d, gamma = d. The bigram context (<s>) has raw followers {<s>, a} (2
    types, because of the <s> <s> bigram) but only one continuation ((<s> <s> a)), so its
    gamma is 2d over a total of 1 and that level sums to 1 + d; the trigram level then sums
    to (1 - d) + d (1 + d) = 1 + d^2 = 1.5625. Ours, fed the same sentence, sums to 1.
    """
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import padded_everygram_pipeline

    train, vocab = padded_everygram_pipeline(3, [["a", "b"]])
    nltk_lm = KneserNeyInterpolated(3, discount=D)
    nltk_lm.fit(train, vocab)
    assert BOS in nltk_lm.vocab  # nltk can "predict" <s>
    assert math.isclose(sum(nltk_lm.score(w, (BOS, BOS)) for w in nltk_lm.vocab), 1 + D**2)
    ours = NGramLM(NGramConfig(order=3, discount=D)).fit([["a", "b"]])
    assert math.isclose(ours.distribution([]).sum(), 1.0)


def test_vocabulary_cutoff_matches_nltk():
    from nltk.lm import Vocabulary

    sentences = SEEDED_CORPORA[1]
    for min_count in (1, 2, 3):
        lm = NGramLM(NGramConfig(order=2, min_count=min_count)).fit(sentences)
        nltk_vocab = Vocabulary([w for s in sentences for w in s], unk_cutoff=min_count, unk_label=UNK)
        assert set(lm.vocab) - {EOS} == set(nltk_vocab)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"order": 0}, "order"), ({"order": 2.0}, "order"),
    ({"k": 0.0}, "k must"), ({"k": -1.0}, "k must"),
    ({"discount": 0.0}, "discount"), ({"discount": 1.0}, "discount"), ({"discount": 1.5}, "discount"),
    ({"smoothing": "witten_bell"}, "unknown smoothing"),
    ({"min_count": 0}, "min_count"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NGramConfig(**kwargs)


def test_bad_data():
    lm = NGramLM(NGramConfig(order=2))
    with pytest.raises(ValueError, match="not fitted"):
        lm.prob("a")
    with pytest.raises(ValueError, match="empty corpus"):
        lm.fit([])
    with pytest.raises(TypeError, match="string"):
        lm.fit("to be or not")
    with pytest.raises(TypeError, match="split it first"):
        lm.fit(["to be or not"])
    with pytest.raises(ValueError, match="reserved"):
        lm.fit([["a", EOS, "b"]])
    lm.fit(TOY)
    with pytest.raises(ValueError, match="never predicts"):
        lm.prob(BOS, ["a"])
    with pytest.raises(ValueError, match="empty corpus"):
        lm.perplexity([])
    with pytest.raises(ValueError, match="MLE is undefined"):
        NGramLM(NGramConfig(order=2, smoothing="mle")).fit(TOY).perplexity([["zebra"]])


# --- tokenizer --------------------------------------------------------------------------------


def test_tokenize_sentences_hand_worked():
    from velm_course.text.ngram import tokenize_sentences

    text = ("=== Macbeth ===\n\nFirst Witch.\nWhen shall we three meet again?\n"
            "In thunder--lightning, or in rain! 'Tis 1 o'er-long; I'll go\n")
    assert tokenize_sentences(text) == [
        ["first", "witch", "."],  # the title line is gone; a speaker name ends in "."
        ["when", "shall", "we", "three", "meet", "again", "?"],
        ["in", "thunder", "lightning", ",", "or", "in", "rain", "!"],
        # a leading apostrophe and digits are dropped, inner apostrophes kept; no final
        # . ! ? still closes the last sentence
        ["tis", "o'er", "long", ";", "i'll", "go"],
    ]
    assert tokenize_sentences("") == [] and tokenize_sentences("=== T ===\n\n") == []
    # Round trip on text that is already tokenized: joining and re-tokenizing is the identity.
    sents = tokenize_sentences(text)
    assert tokenize_sentences(" ".join(w for s in sents for w in s)) == sents
    with pytest.raises(TypeError, match="one string"):
        tokenize_sentences(["to", "be"])
