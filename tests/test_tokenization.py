"""Word tokenization, stop words, the Porter stemmer (against nltk and the paper's own
examples), PPMI/SVD word vectors, and WordPiece (against Hugging Face `tokenizers`)."""

import math
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import velm_course.text.preprocessing as tk
from velm_course.data.corpus import load_shakespeare, shakespeare_splits
from velm_course.text.bpe import merge_pair
from velm_course.text.preprocessing import (
    STOP_WORDS,
    measure,
    porter_stem,
    remove_stop_words,
    word_tokenize,
)
from velm_course.text.word_vectors import (
    cooccurrence_counts,
    nearest_neighbours,
    ppmi,
    truncated_svd,
    word_vectors,
)
from velm_course.text.wordpiece import (
    WordPieceTokenizer,
    merge_gain,
    pre_tokenize,
    train_wordpiece,
)


@pytest.fixture(scope="module")
def corpus():
    return load_shakespeare()


# --- word tokenization and stop words ---------------------------------------------------------


def test_word_tokenize_examples():
    assert word_tokenize("O Romeo, Romeo! wherefore art thou Romeo?") == [
        "O", "Romeo", ",", "Romeo", "!", "wherefore", "art", "thou", "Romeo", "?"]
    assert word_tokenize("I'll o'er-leap 'em, 3,000.50 ducats") == [
        "I'll", "o'er", "-", "leap", "'", "em", ",", "3,000.50", "ducats"]
    assert word_tokenize("naïve café_au_lait") == ["naïve", "café", "_", "au", "_", "lait"]
    assert word_tokenize("  \n") == []


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_word_tokenize_keeps_every_non_space_character(text):
    tokens = word_tokenize(text)
    assert "".join(tokens) == "".join(re.split(r"\s+", text))
    assert all(t and not any(ch.isspace() for ch in t) for t in tokens)


def test_stop_words():
    assert all(w == w.lower() and w.isalpha() for w in STOP_WORDS)
    assert {"the", "and", "of", "is", "to"} <= STOP_WORDS and "king" not in STOP_WORDS
    tokens = word_tokenize("The King is dead, and THE queen weeps.")
    assert remove_stop_words(tokens) == ["King", "dead", ",", "queen", "weeps", "."]
    assert remove_stop_words(["thou", "art", "a", "villain"], {"Thou", "art"}) == ["a", "villain"]


# --- Porter stemmer ---------------------------------------------------------------------------


def test_measure_examples_from_the_paper():
    for m, words in [(0, ["tr", "ee", "tree", "y", "by"]), (1, ["trouble", "oats", "trees", "ivy"]),
                     (2, ["troubles", "private", "oaten", "orrery"])]:
        assert [measure(w) for w in words] == [m] * len(words)


# Every example the 1980 paper gives for a step, as (step, word, result of that step).
PAPER_STEP_EXAMPLES = {
    "1ab": "caresses caress ponies poni ties ti caress caress cats cat feed feed agreed agree "
           "plastered plaster bled bled motoring motor sing sing conflated conflate troubled "
           "trouble sized size hopping hop tanned tan falling fall hissing hiss fizzed fizz "
           "failing fail filing file",
    "1c": "happy happi sky sky",
    "2": "relational relate conditional condition rational rational valenci valence hesitanci "
         "hesitance digitizer digitize conformabli conformable radicalli radical differentli "
         "different vileli vile analogousli analogous vietnamization vietnamize predication "
         "predicate operator operate feudalism feudal decisiveness decisive hopefulness "
         "hopeful callousness callous formaliti formal sensitiviti sensitive sensibiliti sensible",
    "3": "triplicate triplic formative form formalize formal electriciti electric electrical "
         "electric hopeful hope goodness good",
    "4": "revival reviv allowance allow inference infer airliner airlin gyroscopic gyroscop "
         "adjustable adjust defensible defens irritant irrit replacement replac adjustment "
         "adjust dependent depend adoption adopt homologou homolog communism commun activate "
         "activ angulariti angular homologous homolog effective effect bowdlerize bowdler",
    "5": "probate probat rate rate cease ceas controll control roll roll",
}
STEPS = {
    "1ab": tk._step1ab, "1c": tk._step1c, "4": tk._step4, "5": tk._step5,
    "2": lambda w: tk._replace(w, tk.STEP2_RULES, 0),
    "3": lambda w: tk._replace(w, tk.STEP3_RULES, 0),
}


@pytest.mark.parametrize("step", list(PAPER_STEP_EXAMPLES))
def test_porter_steps_on_the_papers_examples(step):
    words = PAPER_STEP_EXAMPLES[step].split()
    for word, expected in zip(words[::2], words[1::2], strict=True):
        assert STEPS[step](word) == expected, (step, word)


def test_porter_full_stems():
    # generalizations -> (1a) generalization -> (2) generalize -> (3) general -> (4) gener
    assert porter_stem("Generalizations") == "gener"
    assert [porter_stem(w) for w in ["is", "as", "sky", "skies", "a", ""]] == [
        "i", "a", "sky", "ski", "a", ""]


def test_porter_matches_nltk_on_every_shakespeare_word(corpus):
    from nltk.stem import PorterStemmer

    nltk_stem = PorterStemmer(mode=PorterStemmer.ORIGINAL_ALGORITHM).stem
    words = sorted({w.lower() for w in word_tokenize(corpus)})  # apostrophes included
    assert len(words) > 25_000
    # Measured: all 26,420 distinct words (22,790 purely alphabetic) stem the same.
    assert [porter_stem(w) for w in words] == [nltk_stem(w) for w in words]


# --- word vectors -----------------------------------------------------------------------------


def naive_cooccurrence(sentences, vocab, window):
    counts = np.zeros((len(vocab), len(vocab)))
    for s in sentences:
        for i, w in enumerate(s):
            for j in range(max(0, i - window), min(len(s), i + window + 1)):
                if j != i and w in vocab and s[j] in vocab:
                    counts[vocab.index(w), vocab.index(s[j])] += 1
    return counts


@settings(max_examples=40, deadline=None)
@given(sentences=st.lists(st.lists(st.sampled_from("abcdx"), max_size=8), max_size=6),
       window=st.integers(1, 3))
def test_cooccurrence_counts_match_nested_loops(sentences, window):
    vocab = ["a", "b", "c", "d"]  # "x" is out of the vocabulary
    np.testing.assert_array_equal(cooccurrence_counts(sentences, vocab, window),
                                  naive_cooccurrence(sentences, vocab, window))


def test_ppmi_matches_the_formula_entry_by_entry():
    counts = np.random.default_rng(0).integers(0, 4, size=(5, 5)).astype(float)
    got = ppmi(counts)
    n = counts.sum()
    for w in range(5):
        for c in range(5):
            if counts[w, c] == 0:
                assert got[w, c] == 0
            else:
                p_wc, p_w, p_c = counts[w, c] / n, counts[w].sum() / n, counts[:, c].sum() / n
                assert got[w, c] == pytest.approx(max(np.log(p_wc / (p_w * p_c)), 0))


def test_truncated_svd_matches_numpy():
    rng = np.random.default_rng(1)
    low_rank = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 30))  # rank 6
    u, s, vt = truncated_svd(low_rank, 6)
    np.testing.assert_allclose(s, np.linalg.svd(low_rank, compute_uv=False)[:6], rtol=1e-10)
    np.testing.assert_allclose(u * s @ vt, low_rank, atol=1e-9)
    # a full-rank matrix with a clear gap after the 3rd singular value
    m = low_rank[:, :3] @ rng.standard_normal((3, 30)) * 10 + rng.standard_normal((40, 30))
    u, s, vt = truncated_svd(m, 3)
    np.testing.assert_allclose(s, np.linalg.svd(m, compute_uv=False)[:3], rtol=1e-6)
    np.testing.assert_allclose(u.T @ u, np.eye(3), atol=1e-10)


def test_word_vectors_find_words_that_share_contexts():
    # Animals and foods fill the same slots of different sentence frames, so each word's
    # two nearest neighbours must be the other two words of its group.
    rng = np.random.default_rng(0)
    groups = {"animal": ["cat", "dog", "horse"], "food": ["bread", "cheese", "apple"]}
    frames = {"animal": ["the {} runs fast", "a wild {} sleeps", "feed the {} now"],
              "food": ["we eat {} daily", "fresh {} tastes good", "buy some {} today"]}
    sentences = [rng.choice(frames[g]).format(rng.choice(groups[g])).split()
                 for g in ["animal", "food"] * 200]
    vocab, vecs = word_vectors(sentences, dim=6, window=2, min_count=5)
    assert vecs.shape == (len(vocab), 6) and vocab[0] == "the"  # most frequent first
    for group in groups.values():
        for word in group:
            neighbours = nearest_neighbours(word, vocab, vecs, k=2)
            assert {w for w, _ in neighbours} == set(group) - {word}, (word, neighbours)
            assert neighbours[0][1] > 0.9


def test_nearest_neighbours_is_cosine_order():
    rng = np.random.default_rng(2)
    vecs, vocab = rng.standard_normal((20, 4)), [f"w{i}" for i in range(20)]
    got = nearest_neighbours("w3", vocab, vecs, k=19)
    cos = vecs @ vecs[3] / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(vecs[3]))
    expected = sorted((i for i in range(20) if i != 3), key=lambda i: -cos[i])
    assert [w for w, _ in got] == [vocab[i] for i in expected]
    assert [s for _, s in got] == pytest.approx([cos[i] for i in expected])


def test_word_vectors_bad_input():
    with pytest.raises(ValueError, match="dim"):
        word_vectors([["a", "b"]], dim=3)
    with pytest.raises(ValueError, match="window"):
        word_vectors([["a", "b"]], dim=1, window=0)
    with pytest.raises(ValueError, match="min_count"):
        word_vectors([["a", "b"]], dim=1, min_count=0)
    with pytest.raises(TypeError, match="token lists"):
        word_vectors(["to be or not"], dim=1)
    with pytest.raises(KeyError, match="zebra"):
        nearest_neighbours("zebra", ["a"], np.ones((1, 2)))


# --- WordPiece --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wp_vocab():
    """2000 tokens learned from 200 kB of the training plays."""
    return train_wordpiece(pre_tokenize(shakespeare_splits()["train"][:200_000]), 2000)


def hf_wordpiece(vocab, max_chars=100):
    from tokenizers import Tokenizer, models, pre_tokenizers

    hf = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=max_chars))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    return hf


def test_wordpiece_hand_worked():
    wp = WordPieceTokenizer(["[UNK]", "play", "##ing", "##in", "##g", "p", "##lay", "##s"])
    # "playing": longest first piece is "play" (not "p"), then "##ing" (not "##in" + "##g").
    assert wp.tokenize("playing") == ["play", "##ing"]
    assert wp.encode("plays p") == [1, 7, 5]
    assert wp.tokenize("layp") == ["[UNK]"]  # no piece starts "l": the whole word is unknown
    assert wp.decode([1, 2, 5, 6]) == "playing play"


def test_wordpiece_matches_hf_on_the_whole_corpus(wp_vocab, corpus):
    ours = WordPieceTokenizer(wp_vocab)
    hf = hf_wordpiece(ours.vocab)
    # Both sides get the same words (pre_tokenize equals HF's Whitespace pre-tokenizer;
    # checked on a slice below, as HF takes ~7 s to pre-tokenize the whole corpus into
    # Python objects). HF's WordPiece model cuts each distinct word; we compare the ids
    # of all ~1.2 million words.
    words = pre_tokenize(corpus)
    hf_pieces = {w: [t.id for t in hf.model.tokenize(w)] for w in set(words)}
    expected = [i for w in words for i in hf_pieces[w]]
    got = ours.encode(corpus)
    assert got == expected
    assert 0 < Counter(got)[ours.vocab["[UNK]"]] < 0.01 * len(got)  # a few unknowns, tested too


def test_wordpiece_matches_hf_end_to_end(wp_vocab):
    from tokenizers import decoders, pre_tokenizers

    held_out = shakespeare_splits()["val"][:100_000]
    ours = WordPieceTokenizer(wp_vocab)
    hf = hf_wordpiece(ours.vocab)
    assert pre_tokenize(held_out) == [w for w, _ in
                                      pre_tokenizers.Whitespace().pre_tokenize_str(held_out)]
    encoding = hf.encode(held_out)
    assert ours.encode(held_out) == encoding.ids
    assert ours.tokenize(held_out) == encoding.tokens
    hf_decoder = decoders.WordPiece(prefix="##", cleanup=False)
    assert ours.decode(encoding.ids) == hf_decoder.decode(encoding.tokens)


def test_wordpiece_long_words_match_hf():
    vocab = ["[UNK]", "a", "##a", "b", "##b"]
    ours = WordPieceTokenizer(vocab, max_chars_per_word=4)
    hf = hf_wordpiece(ours.vocab, max_chars=4)
    text = "ab abab ababa b aaaaaaa ba"
    assert ours.encode(text) == hf.encode(text).ids
    assert ours.tokenize("abab ababa") == ["a", "##b", "##a", "##b", "[UNK]"]


def recount(units_by_word, freqs):
    """(unit counts, adjacent-pair counts) over every word, weighted by its frequency, from scratch."""
    unit_count, pair_count = Counter(), Counter()
    for w, us in units_by_word.items():
        for u in us:
            unit_count[u] += freqs[w]
        for pair in zip(us, us[1:], strict=False):
            pair_count[pair] += freqs[w]
    return unit_count, pair_count


def unigram_loglik(units_by_word, freqs):
    """sum_u c_u log(c_u / N) over every unit of every word, counted from scratch."""
    counts, _ = recount(units_by_word, freqs)
    total = sum(counts.values())
    return sum(c * math.log(c / total) for c in counts.values())


def reference_wordpiece(words, vocab_size, prefix="##", objective="pmi"):
    """Recount every unit and pair before each merge. For "likelihood", try every pair by
    really merging it in every word and recomputing the whole log-likelihood."""
    freqs = Counter(words)
    units = {w: [w[0]] + [prefix + c for c in w[1:]] for w in freqs}
    vocab = ["[UNK]"] + sorted({u for us in units.values() for u in us})
    while len(vocab) < vocab_size:
        unit_count, pair_count = recount(units, freqs)
        if not pair_count:
            break
        if objective == "pmi":
            a, b = min(pair_count, key=lambda p: (-pair_count[p] / (unit_count[p[0]] * unit_count[p[1]]), p))
        else:
            before = unigram_loglik(units, freqs)
            gains = {p: unigram_loglik({w: merge_pair(us, p, p[0] + p[1].removeprefix(prefix))
                                        for w, us in units.items()}, freqs) - before for p in pair_count}
            top = max(gains.values())
            a, b = min(p for p, g in gains.items() if g >= top - 1e-9)
        merged = a + b.removeprefix(prefix)
        if merged not in vocab:
            vocab.append(merged)
        units = {w: merge_pair(us, (a, b), merged) for w, us in units.items()}
    return vocab


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.text(alphabet="abcé", min_size=1, max_size=6), min_size=1, max_size=25),
       extra=st.integers(0, 15))
def test_train_wordpiece_matches_recounting_reference(words, extra):
    n_chars = len({w[0] for w in words} | {"##" + c for w in words for c in w[1:]})
    size = 1 + n_chars + extra
    for objective in ("pmi", "likelihood"):
        assert train_wordpiece(words, size, objective=objective) == reference_wordpiece(words, size,
                                                                                       objective=objective)


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.text(alphabet="abc", min_size=1, max_size=7), min_size=1, max_size=20))
def test_merge_gain_is_the_change_in_log_likelihood(words):
    # for every possible first merge: the formula against merging in every word and recounting
    freqs = Counter(words)
    units = {w: [w[0]] + ["##" + c for c in w[1:]] for w in freqs}
    counts, pairs = recount(units, freqs)
    total = sum(counts.values())
    before = unigram_loglik(units, freqs)
    listed = list(pairs)
    merges = []
    for a, b in listed:
        merged = a + b.removeprefix("##")
        new_units = {w: merge_pair(us, (a, b), merged) for w, us in units.items()}
        m = sum(freqs[w] * (len(units[w]) - len(new_units[w])) for w in units)  # merges really made
        merges.append(m)
        gain = merge_gain(counts[a], counts[b], counts.get(merged, 0), m, total, same=a == b)
        assert gain == pytest.approx(unigram_loglik(new_units, freqs) - before, abs=1e-9)
    if listed:  # all pairs at once, as the trainer scores them, give the same numbers
        np.testing.assert_allclose(
            merge_gain([counts[a] for a, _ in listed], [counts[b] for _, b in listed],
                       [counts.get(a + b[2:], 0) for a, b in listed], merges, total, [a == b for a, b in listed]),
            [merge_gain(counts[a], counts[b], counts.get(a + b[2:], 0), m, total, a == b)
             for (a, b), m in zip(listed, merges, strict=True)], atol=1e-9)


def test_trained_vocab_cuts_its_training_words(wp_vocab):
    assert len(wp_vocab) == len(set(wp_vocab)) == 2000 and wp_vocab[0] == "[UNK]"
    wp = WordPieceTokenizer(wp_vocab)
    words = pre_tokenize(shakespeare_splits()["train"][:200_000])
    # Every character of the training words is in the vocabulary, so nothing is unknown,
    # and the pieces spell the word back.
    for word in set(words):
        pieces = wp.tokenize_word(word)
        assert "[UNK]" not in pieces
        assert pieces[0] + "".join(p.removeprefix("##") for p in pieces[1:]) == word
    # The likelihood objective keeps frequent words whole: every one of the 30 commonest words
    # is a single token, and a word averages well under two pieces (the "pmi" score, which
    # prefers pairs of rare units, needs about 2.6 and still cuts "and" into "a ##n ##d").
    common = [w for w, _ in Counter(words).most_common(30)]
    assert all(wp.tokenize_word(w) == [w] for w in common), [w for w in common if len(wp.tokenize_word(w)) > 1]
    n_pieces = len(wp.tokenize(" ".join(words)))
    pmi = WordPieceTokenizer(train_wordpiece(words, 2000, objective="pmi"))
    assert pmi.tokenize_word("and") == ["a", "##n", "##d"]
    assert n_pieces < 0.7 * len(pmi.tokenize(" ".join(words)))


# --- bad input --------------------------------------------------------------------------------


def test_bad_input():
    for fn in (word_tokenize, porter_stem, pre_tokenize):
        with pytest.raises(TypeError, match="str"):
            fn(b"bytes")
    wp = WordPieceTokenizer({"[UNK]": 0, "a": 1})
    with pytest.raises(TypeError, match="str"):
        wp.encode(["a"])
    for bad_id in (2, -1, "a", True, 1.0):
        with pytest.raises(ValueError, match="unknown token id"):
            wp.decode([1, bad_id])
    assert wp.decode(np.array([1, 0])) == "a [UNK]"  # numpy integers are fine
    with pytest.raises(ValueError, match="unk_token"):
        WordPieceTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="twice"):
        WordPieceTokenizer(["[UNK]", "a", "a"])
    with pytest.raises(ValueError, match="share an id"):
        WordPieceTokenizer({"[UNK]": 0, "a": 0})
    with pytest.raises(TypeError, match="vocab"):
        WordPieceTokenizer("[UNK] a")
    with pytest.raises(ValueError, match="max_chars_per_word"):
        WordPieceTokenizer(["[UNK]"], max_chars_per_word=0)
    with pytest.raises(ValueError, match="empty"):
        train_wordpiece([], 10)
    with pytest.raises(ValueError, match="empty"):
        train_wordpiece(["a", ""], 10)
    with pytest.raises(TypeError, match="strings"):
        train_wordpiece(["a", 3], 10)
    with pytest.raises(ValueError, match="vocab_size"):
        train_wordpiece(["abc"], 3)  # [UNK] + 3 characters need 4
