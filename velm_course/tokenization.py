"""Classic text preprocessing, count-based word vectors, and WordPiece subwords.

Before neural language models, an NLP pipeline turned text into a bag of normalised words:

1. tokenize: cut the text into words, numbers and punctuation (``word_tokenize``);
2. drop stop words, the very frequent function words ("the", "of", "and") that say little
   about what a text is about (``remove_stop_words``);
3. stem: strip suffixes so that "connect", "connected", "connection" all become "connect"
   (``porter_stem``, the Porter algorithm of 1980, written from its published rules).

Words can then get vectors from the company they keep. Count how often each word appears
near each other word, re-weight the counts by positive pointwise mutual information
(PPMI: how much more often than chance two words meet), and compress the rows with a
truncated SVD. Words used in the same contexts end up with similar rows
(``word_vectors``, ``nearest_neighbours``).

Whole-word vocabularies have two problems: they are huge, and any word not seen in
training is unknown. Subword tokenizers fix both. Byte-level BPE is in ``velm_course.bpe``;
this module has WordPiece, BERT's tokenizer. Its vocabulary holds word starts ("play") and
continuations marked with ``##`` ("##ing"); a word is cut greedily, always taking the
longest vocabulary piece that fits: "playing" -> "play", "##ing".

Shape letters used in comments: V the vocabulary size, d the vector dimension, k the rank
kept by the SVD.

>>> word_tokenize("Don't stop, it's 3.5 miles!")
["Don't", 'stop', ',', "it's", '3.5', 'miles', '!']
>>> [porter_stem(w) for w in ["connected", "connection", "relational", "ponies"]]
['connect', 'connect', 'relat', 'poni']
>>> WordPieceTokenizer(["[UNK]", "play", "##ing", "##ed"]).tokenize("playing played plays")
['play', '##ing', 'play', '##ed', '[UNK]']
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from numbers import Integral

import numpy as np

from .bpe import merge_pair

# --- 1. word tokenization -------------------------------------------------------------------

# A word is letters, possibly joined by inner apostrophes (don't, o'er, ne'er-do-well is
# three words and two hyphens); a number is digits with inner "." or "," groups (3.5,
# 1,000); anything else that is not whitespace is a one-character token. [^\W\d_] is
# "a word character that is not a digit or underscore", i.e. a Unicode letter.
WORD_PATTERN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+(?:[.,]\d+)*|\S")


def word_tokenize(text: str) -> list[str]:
    """Words, numbers and single punctuation characters of ``text``, in order.

    A leading or trailing apostrophe is punctuation: "'Tis" gives "'", "Tis".

    >>> word_tokenize("'Tis 1,000 o'clock...")
    ["'", 'Tis', '1,000', "o'clock", '.', '.', '.']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return WORD_PATTERN.findall(text)


# --- 2. stop words --------------------------------------------------------------------------

# Our own short list of English function words: articles, pronouns, auxiliaries,
# prepositions, conjunctions and a few adverbs. Lower case; contractions are left out
# because word_tokenize keeps them whole. Real lists differ at the edges (is "never" a
# stop word?): which words to drop depends on the task.
STOP_WORDS = frozenset("""
a an the
i me my mine myself we us our ours ourselves you your yours yourself yourselves
he him his himself she her hers herself it its itself they them their theirs themselves
this that these those who whom whose which what
am is are was were be been being have has had having do does did doing
will would shall should can could may might must
and but or nor so if then than because as while until unless though although
of at by for with about against between into through during before after above below
to from up down in out on off over under again further once
here there when where why how all any both each few more most other some such
no not only own same too very just now also
""".split())


def remove_stop_words(tokens: Iterable[str], stop_words: Iterable[str] = STOP_WORDS
                      ) -> list[str]:
    """``tokens`` without the stop words; the test ignores case, the output keeps it.

    >>> remove_stop_words(["The", "cat", "sat", "on", "the", "mat"])
    ['cat', 'sat', 'mat']
    """
    stop = {w.lower() for w in stop_words}
    return [t for t in tokens if t.lower() not in stop]


# --- 3. the Porter stemmer ------------------------------------------------------------------
#
# Porter (1980), "An algorithm for suffix stripping". A word is seen as [C](VC)^m[V], where
# C is a run of consonants and V a run of vowels; m, the *measure*, roughly counts
# syllables: m("tree") = 0, m("trouble") = 1, m("troubles") = 2. A vowel is a, e, i, o, u,
# and y when it follows a consonant ("toy": y is a consonant; "syzygy": the 2nd and 3rd y
# are vowels). Each step is a list of rules "(condition) S1 -> S2"; only the rule with
# the longest suffix S1 that ends the word is tried, and if its condition on the stem (the
# word without S1) fails, the step changes nothing. Conditions:
#   m > k      the measure of the stem
#   *v*        the stem contains a vowel
#   *d         the stem ends with a double consonant ("-tt", "-ss")
#   *o         the stem ends consonant-vowel-consonant, the last not w, x or y ("-hop")


def _is_consonant(word: str, i: int) -> bool:
    if word[i] in "aeiou":
        return False
    if word[i] == "y":  # a vowel after a consonant, a consonant at the start or after a vowel
        return i == 0 or not _is_consonant(word, i - 1)
    return True


def measure(stem: str) -> int:
    """m in [C](VC)^m[V]: the number of vowel-run to consonant-run transitions.

    >>> [measure(w) for w in ["tree", "trouble", "troubles", "oaten", "private"]]
    [0, 1, 2, 2, 2]
    """
    cv = "".join("c" if _is_consonant(stem, i) else "v" for i in range(len(stem)))
    return cv.count("vc")


def _has_vowel(stem: str) -> bool:
    return any(not _is_consonant(stem, i) for i in range(len(stem)))


def _ends_double_consonant(stem: str) -> bool:
    return len(stem) >= 2 and stem[-1] == stem[-2] and _is_consonant(stem, len(stem) - 1)


def _ends_cvc(stem: str) -> bool:
    return (len(stem) >= 3 and _is_consonant(stem, len(stem) - 3)
            and not _is_consonant(stem, len(stem) - 2) and _is_consonant(stem, len(stem) - 1)
            and stem[-1] not in "wxy")


def _longest_suffix(word: str, suffixes: Iterable[str]) -> str | None:
    matches = [s for s in suffixes if word.endswith(s)]
    return max(matches, key=len) if matches else None


# Step 2 and step 3 rules, all with the condition m > 0. (Later versions of the algorithm
# changed "abli" to "bli" and added "logi"; this is the published 1980 list.)
STEP2_RULES = {
    "ational": "ate", "tional": "tion", "enci": "ence", "anci": "ance", "izer": "ize",
    "abli": "able", "alli": "al", "entli": "ent", "eli": "e", "ousli": "ous",
    "ization": "ize", "ation": "ate", "ator": "ate", "alism": "al", "iveness": "ive",
    "fulness": "ful", "ousness": "ous", "aliti": "al", "iviti": "ive", "biliti": "ble",
}
STEP3_RULES = {
    "icate": "ic", "ative": "", "alize": "al", "iciti": "ic", "ical": "ic", "ful": "", "ness": "",
}
# Step 4 removes these with the condition m > 1 ("ion" also needs the stem to end in s or t).
STEP4_SUFFIXES = ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment",
                  "ent", "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize")


def _replace(word: str, rules: Mapping[str, str], min_measure: int) -> str:
    """Apply the longest-suffix rule of ``rules`` if the stem's measure exceeds min_measure."""
    suffix = _longest_suffix(word, rules)
    if suffix is None:
        return word
    stem = word[: -len(suffix)]
    return stem + rules[suffix] if measure(stem) > min_measure else word


def _step1ab(word: str) -> str:
    # 1a: plurals. sses -> ss, ies -> i, ss -> ss, s -> "" (no conditions).
    suffix = _longest_suffix(word, ("sses", "ies", "ss", "s"))
    if suffix is not None:
        word = word[: -len(suffix)] + {"sses": "ss", "ies": "i", "ss": "ss", "s": ""}[suffix]
    # 1b: past tenses and participles. (m > 0) eed -> ee; (*v*) ed -> ""; (*v*) ing -> "".
    if word.endswith("eed"):  # the longest suffix: "ed" is not tried even if m = 0 ("feed")
        return word[:-1] if measure(word[:-3]) > 0 else word
    suffix = _longest_suffix(word, ("ed", "ing"))
    if suffix is None or not _has_vowel(word[: -len(suffix)]):
        return word
    word = word[: -len(suffix)]
    # ... and when ed/ing went, tidy the stem: conflat(ed) -> conflate, hopp(ing) -> hop,
    # fil(ing) -> file, but fall(ing) -> fall, hiss(ed) -> hiss, fizz(ed) -> fizz.
    if word.endswith(("at", "bl", "iz")):
        return word + "e"
    if _ends_double_consonant(word) and word[-1] not in "lsz":
        return word[:-1]
    if measure(word) == 1 and _ends_cvc(word):
        return word + "e"
    return word


def _step1c(word: str) -> str:
    # (*v*) y -> i: happy -> happi, but sky stays sky.
    return word[:-1] + "i" if word.endswith("y") and _has_vowel(word[:-1]) else word


def _step4(word: str) -> str:
    suffix = _longest_suffix(word, STEP4_SUFFIXES)
    if suffix is None:
        return word
    stem = word[: -len(suffix)]
    if measure(stem) > 1 and (suffix != "ion" or stem.endswith(("s", "t"))):
        return stem
    return word


def _step5(word: str) -> str:
    # 5a: (m > 1) e -> ""; (m = 1 and not *o) e -> "": probate -> probat, rate stays rate.
    if word.endswith("e"):
        stem = word[:-1]
        if measure(stem) > 1 or (measure(stem) == 1 and not _ends_cvc(stem)):
            word = stem
    # 5b: (m > 1 and *d and *L) -> single letter: controll -> control, roll stays roll.
    if word.endswith("ll") and measure(word) > 1:
        word = word[:-1]
    return word


def porter_stem(word: str) -> str:
    """The Porter (1980) stem of ``word``, lower-cased first.

    Every word goes through all the steps, short ones too ("is" -> "i"), as the paper
    describes; some implementations leave words of one or two letters alone.

    >>> [porter_stem(w) for w in ["caresses", "hopping", "generalizations", "oscillators"]]
    ['caress', 'hop', 'gener', 'oscil']
    """
    if not isinstance(word, str):
        raise TypeError(f"word must be a str, got {type(word).__name__}")
    word = word.lower()
    word = _step1ab(word)
    word = _step1c(word)
    word = _replace(word, STEP2_RULES, min_measure=0)
    word = _replace(word, STEP3_RULES, min_measure=0)
    word = _step4(word)
    return _step5(word)


# --- 4. count-based word vectors ------------------------------------------------------------


def cooccurrence_counts(sentences: Sequence[Sequence[str]], vocab: Sequence[str],
                        window: int) -> np.ndarray:
    """(V, V) counts: C[i, j] = how often word j is within ``window`` positions of word i.

    Windows stay inside a sentence and are symmetric, so C is symmetric. Words not in
    ``vocab`` keep their positions (they still separate other words) but are not counted.

    >>> cooccurrence_counts([["a", "b", "a"]], ["a", "b"], window=1)
    array([[0., 2.],
           [2., 0.]])
    """
    index = {w: i for i, w in enumerate(vocab)}
    # All sentences in one id array, with `window` ids of -1 between them, so a window
    # never reaches into the next sentence; -1 also marks out-of-vocabulary words.
    gap = [-1] * window
    ids = np.array([i for s in sentences for i in [index.get(w, -1) for w in s] + gap],
                   dtype=np.int64)
    counts = np.zeros((len(vocab), len(vocab)))
    for d in range(1, window + 1):  # every pair d positions apart: (left, right)
        left, right = ids[:-d], ids[d:]
        keep = (left >= 0) & (right >= 0)
        np.add.at(counts, (left[keep], right[keep]), 1)
    return counts + counts.T  # each pair also counts from the right word's side


def ppmi(counts: np.ndarray) -> np.ndarray:
    """Positive pointwise mutual information of a (V, V) co-occurrence count matrix.

    PMI(w, c) = log P(w, c) / (P(w) P(c)) = log C[w, c] * N / (C[w, :] C[:, c]), with N the
    total count: 0 when w and c meet as often as chance predicts, > 0 when more often.
    Pairs never seen have PMI -inf; PPMI keeps max(PMI, 0), so they become 0.

    >>> ppmi(np.array([[0.0, 2.0], [2.0, 2.0]])).round(3)  # log(2 * 6 / (2 * 4)) = 0.405
    array([[0.   , 0.405],
           [0.405, 0.   ]])
    """
    total = counts.sum()
    rows, cols = counts.sum(axis=1, keepdims=True), counts.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * total / (rows * cols))
    return np.where(counts > 0, np.maximum(pmi, 0.0), 0.0)


def truncated_svd(matrix: np.ndarray, k: int, n_iter: int = 4, oversample: int = 10,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top ``k`` singular triplets (U, S, Vt) of ``matrix`` by randomized SVD.

    A full SVD of a (V, V) matrix costs O(V^3); we only want k directions. Multiply the
    matrix by k + oversample random vectors: the result mostly spans the top singular
    directions. A few "power iterations" (multiply by M M^T again) sharpen that, and
    an SVD of the small projected matrix gives the answer (Halko, Martinsson, Tropp 2011).
    Exact when the matrix has rank <= k + oversample.
    """
    rng = np.random.default_rng(seed)
    n_cols = min(k + oversample, min(matrix.shape))
    q, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], n_cols)))
    for _ in range(n_iter):  # re-orthonormalise so the columns do not all collapse onto u_1
        q, _ = np.linalg.qr(matrix @ (matrix.T @ q))
    u_small, s, vt = np.linalg.svd(q.T @ matrix, full_matrices=False)  # (n_cols, V)
    return (q @ u_small)[:, :k], s[:k], vt[:k]


def word_vectors(sentences: Sequence[Sequence[str]], dim: int = 50, window: int = 2,
                 min_count: int = 1) -> tuple[list[str], np.ndarray]:
    """``(vocab, vectors)``: PPMI + truncated SVD vectors, one (d,) row per vocab word.

    The vocabulary is every word seen at least ``min_count`` times, most frequent first
    (ties alphabetical). Each row is U_k S_k, the word's coordinates along the top ``dim``
    singular directions of its PPMI row.

    >>> vocab, vecs = word_vectors([["a", "b"], ["a", "c"]], dim=2, window=1)
    >>> vocab, vecs.shape
    (['a', 'b', 'c'], (3, 2))
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    if not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
        raise TypeError("sentences must be a list of token lists, e.g. [['to', 'be'], ...]")
    freq = Counter(w for s in sentences for w in s)
    vocab = sorted((w for w, c in freq.items() if c >= min_count), key=lambda w: (-freq[w], w))
    if not isinstance(dim, int) or not 1 <= dim <= len(vocab):
        raise ValueError(f"dim must be an integer in [1, {len(vocab)}] (the vocabulary "
                         f"size), got {dim!r}")
    weights = ppmi(cooccurrence_counts(sentences, vocab, window))  # (V, V)
    u, s, _ = truncated_svd(weights, dim)  # (V, k), (k,)
    return vocab, u * s  # (V, d)


def nearest_neighbours(word: str, vocab: Sequence[str], vectors: np.ndarray, k: int = 5
                       ) -> list[tuple[str, float]]:
    """The ``k`` words whose vectors have the highest cosine similarity with ``word``'s.

    >>> nearest_neighbours("a", ["a", "b", "c"], np.array([[1.0, 0], [1, 1], [0, 1]]), k=2)
    [('b', 0.7071067811865475), ('c', 0.0)]
    """
    vocab = list(vocab)
    if word not in vocab:
        raise KeyError(f"{word!r} is not in the vocabulary")
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]  # (V, d); zero rows stay zero
    i = vocab.index(word)
    sims = unit @ unit[i]  # (V,)
    order = [j for j in np.argsort(-sims, kind="stable") if j != i][:k]
    return [(vocab[j], float(sims[j])) for j in order]


# --- 5. WordPiece ---------------------------------------------------------------------------

# The pre-tokenizer of HF tokenizers' `Whitespace`: runs of word characters, or runs of
# other non-space characters. "don't!" -> "don", "'", "t", "!".
PRE_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]+")


def pre_tokenize(text: str) -> list[str]:
    """The words WordPiece cuts into pieces: ``\\w+`` runs and runs of other symbols.

    >>> pre_tokenize("Hello, world...!")
    ['Hello', ',', 'world', '...!']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return PRE_TOKEN_PATTERN.findall(text)


class WordPieceTokenizer:
    """Greedy longest-match-first WordPiece, the algorithm of BERT's tokenizer.

    ``vocab`` is a list of tokens (id = position) or a ``{token: id}`` dict. Non-initial
    pieces carry ``prefix``. A word with more than ``max_chars_per_word`` characters,
    or with a part no piece covers, becomes the single token ``unk_token``.

    >>> wp = WordPieceTokenizer(["[UNK]", "un", "##aff", "##able"])
    >>> wp.tokenize("unaffable unable affable")  # no piece starts "affable"
    ['un', '##aff', '##able', 'un', '##able', '[UNK]']
    >>> wp.decode(wp.encode("unaffable"))
    'unaffable'
    """

    def __init__(self, vocab: Mapping[str, int] | Sequence[str], unk_token: str = "[UNK]",
                 prefix: str = "##", max_chars_per_word: int = 100):
        if isinstance(vocab, str) or not isinstance(vocab, Mapping | Sequence):
            raise TypeError("vocab must be a list of tokens or a {token: id} dict")
        self.vocab = dict(vocab) if isinstance(vocab, Mapping) else {t: i for i, t in
                                                                      enumerate(vocab)}
        if len(self.vocab) != len(vocab):
            raise ValueError("vocab lists a token twice")
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        if len(self.id_to_token) != len(self.vocab):
            raise ValueError("two tokens of vocab share an id")
        if unk_token not in self.vocab:
            raise ValueError(f"unk_token {unk_token!r} is not in the vocabulary")
        if not isinstance(max_chars_per_word, int) or max_chars_per_word < 1:
            raise ValueError(f"max_chars_per_word must be an integer >= 1, "
                             f"got {max_chars_per_word!r}")
        self.unk_token, self.prefix, self.max_chars_per_word = unk_token, prefix, max_chars_per_word
        self._longest = max(len(t) for t in self.vocab)  # no piece has more characters

    def tokenize_word(self, word: str) -> list[str]:
        """The pieces of one pre-tokenized word, or ``[unk_token]``."""
        if len(word) > self.max_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            # Try the longest candidate first and shrink it until it is in the vocabulary.
            for end in range(min(len(word), start + self._longest), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    pieces.append(piece)
                    start = end
                    break
            else:  # no piece starts here: the whole word is unknown, not just this part
                return [self.unk_token]
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """The pieces of every word of ``text`` (see :func:`pre_tokenize`)."""
        cache: dict[str, list[str]] = {}  # most words repeat: cut each distinct one once
        pieces = []
        for word in pre_tokenize(text):
            if word not in cache:
                cache[word] = self.tokenize_word(word)
            pieces.extend(cache[word])
        return pieces

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return [self.vocab[p] for p in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Pieces joined back: a ``##`` piece sticks to the one before, others get a space.

        Spaces around punctuation are not restored: "Hi, you" decodes as "Hi , you".
        """
        words: list[str] = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, Integral) or i not in self.id_to_token:
                raise ValueError(f"unknown token id {i!r}")
            token = self.id_to_token[int(i)]
            if token.startswith(self.prefix) and words:
                words[-1] += token[len(self.prefix):]
            else:
                words.append(token)
        return " ".join(words)


def train_wordpiece(words: Iterable[str], vocab_size: int, unk_token: str = "[UNK]",
                    prefix: str = "##") -> list[str]:
    """A WordPiece vocabulary of ``vocab_size`` tokens learned from a list of words.

    Start from single characters: a word's first character as is, every later one with
    ``prefix`` ("hug" -> "h", "##u", "##g"). Then, like BPE, merge pairs of adjacent
    units, but choose the pair with the highest *likelihood score*

        score(a, b) = count(a b) / (count(a) count(b)),

    which prefers pairs whose parts seldom appear apart, over pairs that are merely
    frequent. Ties go to the smallest pair (as strings). The merged unit drops b's prefix:
    ("h", "##u") -> "hu", ("##u", "##g") -> "##ug". Returns ``[unk_token]``, the
    characters (sorted), then the new tokens in the order they were made; two merges can
    make the same string, which is listed once.

    Google never published WordPiece's trainer; this is the scoring rule the Hugging Face
    course describes. (HF's own ``WordPieceTrainer`` runs BPE with a ``##`` prefix, so its
    vocabularies differ; the *encoding* algorithm is the same everywhere.) Dividing by
    count(a) count(b) favours rare units: 2000 tokens learned from 200 kB of Shakespeare
    still cut "and" into "a ##n ##d", about 2.6 pieces per word.

    >>> words = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    >>> train_wordpiece(words, vocab_size=12)[8:]  # "##s" only ever follows "##g"
    ['##gs', '##ug', '##ugs', 'hugs']
    """
    word_freqs = Counter(words)
    if not word_freqs or not all(word_freqs):
        raise ValueError("cannot train on an empty word list or on empty words")
    if any(not isinstance(w, str) for w in word_freqs):
        raise TypeError("words must be strings")
    # Units of each distinct word, and its frequency.
    units = [[w[0]] + [prefix + ch for ch in w[1:]] for w in word_freqs]
    freqs = list(word_freqs.values())
    vocab = [unk_token] + sorted({u for us in units for u in us})
    if not isinstance(vocab_size, int) or vocab_size < len(vocab):
        raise ValueError(f"vocab_size must be an integer >= {len(vocab)} ([UNK] and the "
                         f"{len(vocab) - 1} characters), got {vocab_size!r}")

    # Unit counts, pair counts, and which words hold each pair; updated word by word after
    # each merge, as in BPE training.
    unit_count: Counter = Counter()
    pair_count: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)

    def add(w: int, sign: int) -> None:  # add (or with sign=-1 remove) word w's counts
        for u in units[w]:
            unit_count[u] += sign * freqs[w]
        for pair in pairwise(units[w]):
            pair_count[pair] += sign * freqs[w]
            if sign > 0:
                where[pair].add(w)
            elif pair_count[pair] == 0:
                del pair_count[pair]

    for w in range(len(units)):
        add(w, +1)
    def score_then_pair(p: tuple[str, str]) -> tuple[float, tuple[str, str]]:  # min() wins
        return -pair_count[p] / (unit_count[p[0]] * unit_count[p[1]]), p

    known = set(vocab)
    while len(vocab) < vocab_size and pair_count:
        a, b = min(pair_count, key=score_then_pair)
        merged = a + b.removeprefix(prefix)
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
        for w in where.pop((a, b)):
            add(w, -1)
            units[w] = merge_pair(units[w], (a, b), merged)  # the same left-to-right merge as BPE
            add(w, +1)
    return vocab


