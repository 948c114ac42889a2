"""Word-level n-gram language models: MLE, add-k and interpolated Kneser-Ney.

A language model gives a probability to a sentence w_1 ... w_T. The chain rule of
probability writes it exactly as a product of next-word predictions,

    P(w_1 ... w_T) = P(w_1) P(w_2 | w_1) P(w_3 | w_1 w_2) ... P(w_T | w_1 ... w_{T-1}),

and an n-gram model makes the Markov assumption that only the last n-1 words matter:

    P(w_t | w_1 ... w_{t-1}) ~= P(w_t | w_{t-n+1} ... w_{t-1}).

Every conditional then depends on a short "context" tuple, and we can estimate it by
counting. Sentences are padded with n-1 start symbols ``<s>`` on the left (so the first
word has a full context) and one end symbol ``</s>`` on the right (so the model also
learns where sentences stop, and sentence probabilities over all lengths sum to one).
``<s>`` only ever appears in contexts; it is never predicted, so it is not part of the
vocabulary the distributions range over. The vocabulary is ``</s>``, ``<unk>`` and every
training word seen at least ``min_count`` times; rarer training words and every word not
seen in training (at scoring time) are mapped to ``<unk>``.

Three ways to turn counts c(h, w) of context h followed by word w into probabilities:

- MLE: c(h, w) / c(h). Zero for anything unseen, undefined for an unseen context.
- add-k: (c(h, w) + k) / (c(h) + k V); Laplace smoothing is k = 1.
- interpolated Kneser-Ney: subtract a discount d from every seen count and give the
  freed mass to a lower-order distribution. The lower orders do not use raw counts but
  *continuation counts*: how many distinct words precede (h', w). "Francisco" is frequent
  but only after "San", so it should be a poor guess in a new context. The recursion
  ends in the uniform distribution 1/V, so every word keeps some probability.

The counting is vectorised: words become integer ids, every context becomes an integer
id, and (context id, word id) pairs become int64 keys that ``np.unique`` counts.

Shape letters used in comments: E events (predicted tokens, ``</s>`` included),
n the model order, V the vocabulary size, C_m the number of distinct contexts at level m.

>>> lm = NGramLM(NGramConfig(order=2, smoothing="add_k", k=1.0)).fit([["a", "b"], ["a"]])
>>> lm.vocab
['</s>', '<unk>', 'a', 'b']
>>> round(lm.prob("b", ["a"]), 4)  # (c(a b) + 1) / (c(a) + V) = 2 / 6
0.3333
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
SMOOTHINGS = ("mle", "add_k", "kneser_ney")
# A word is letters with optional inner apostrophes ("o'er", "i'll"); . , ! ? ; : are tokens of
# their own. Everything else (digits, dashes, brackets, quotes) is dropped.
WORD_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|[.,!?;:]")


@dataclass(frozen=True)
class NGramConfig:
    order: int = 3  # n: predict a word from the n-1 words before it (1 = unigram)
    smoothing: str = "kneser_ney"  # one of SMOOTHINGS
    k: float = 1.0  # pseudo-count for add_k (k = 1 is Laplace smoothing)
    discount: float = 0.75  # absolute discount d for Kneser-Ney, in (0, 1)
    min_count: int = 1  # training words seen fewer times than this become <unk>

    def __post_init__(self):
        if not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"order must be an integer >= 1, got {self.order!r}")
        if self.smoothing not in SMOOTHINGS:
            raise ValueError(f"unknown smoothing {self.smoothing!r}: use one of {SMOOTHINGS}")
        if not self.k > 0:
            raise ValueError(f"k must be > 0 for add-k smoothing, got {self.k!r}")
        if not 0 < self.discount < 1:
            raise ValueError(f"discount must lie in (0, 1), got {self.discount!r}")
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1, got {self.min_count!r}")


# --- text to sentences ------------------------------------------------------------------------


def tokenize_sentences(text: str) -> list[list[str]]:
    """Lower-case ``text``, split it into word and punctuation tokens, and cut it into
    sentences after every ``.``, ``!`` or ``?``. Lines starting with ``===`` (the corpus's
    work titles) are dropped. Notebook 01 and ``benchmarks/bench_ngram.py`` read the Shakespeare
    splits this way.

    >>> tokenize_sentences("=== Hamlet ===\\nTo be, or not to be? O'er-hasty\\n")
    [['to', 'be', ',', 'or', 'not', 'to', 'be', '?'], ["o'er", 'hasty']]
    """
    if not isinstance(text, str):
        raise TypeError(f"expected the text as one string, got {type(text).__name__}")
    body = "\n".join(line for line in text.lower().splitlines() if not line.startswith("==="))
    sentences, current = [], []
    for tok in WORD_TOKEN.findall(body):
        current.append(tok)
        if tok in ".!?":
            sentences.append(current)
            current = []
    if current:  # text that does not end with . ! ? still makes a last sentence
        sentences.append(current)
    return sentences


# --- the math, as pure functions -------------------------------------------------------------


def pad_sentence(tokens: Sequence[str], order: int) -> list[str]:
    """``order - 1`` start symbols, the tokens, one end symbol.

    >>> pad_sentence(["to", "be"], 3)
    ['<s>', '<s>', 'to', 'be', '</s>']
    """
    return [BOS] * (order - 1) + list(tokens) + [EOS]


def mle_prob(count, context_total):
    """Maximum likelihood: the fraction of times the context was followed by the word.

    >>> mle_prob(2, 8)
    0.25
    """
    return count / context_total


def add_k_prob(count, context_total, k: float, vocab_size: int):
    """Add-k: pretend every word of the vocabulary was seen k more times after the context.

    >>> add_k_prob(0, 2, 1.0, 4)  # Laplace: (0 + 1) / (2 + 4)
    0.16666666666666666
    """
    return (count + k) / (context_total + k * vocab_size)


def kneser_ney_prob(count, context_total, context_types, lower_prob, discount: float):
    """One level of interpolated Kneser-Ney (or absolute discounting).

    ``count`` is the (raw or continuation) count of (h, w), ``context_total`` the sum of
    those counts over all w, ``context_types`` how many w have a non-zero count, and
    ``lower_prob`` the lower-order probability P(w | h minus its first word). Each seen
    count gives up ``discount``; the ``discount * context_types`` freed this way is shared
    out in proportion to the lower order. Summed over w this is exactly 1 whenever the
    lower order sums to 1 (and every non-zero count is >= 1 > discount).

    >>> float(kneser_ney_prob(3, 4, 2, 0.5, 0.75))  # (3 - 0.75 + 0.75 * 2 * 0.5) / 4
    0.75
    """
    return (np.maximum(count - discount, 0.0) + discount * context_types * lower_prob) / context_total


# --- the model --------------------------------------------------------------------------------


class NGramLM:
    """An n-gram language model over sentences (lists of word strings).

    Call ``fit`` once; then ``prob``, ``distribution``, ``logprob`` (natural log),
    ``perplexity`` and ``generate``. Words outside the vocabulary count as ``<unk>``.
    Contexts shorter than order-1 are padded with ``<s>`` on the left, as at the start of a
    sentence; longer ones are cut to their last order-1 words.

    MLE is undefined for a context never seen in training: ``prob``, ``distribution``,
    ``logprob`` and ``perplexity`` raise ValueError there (use add_k or kneser_ney).
    The smoothed models define every context: add-k is uniform for an unseen context and
    Kneser-Ney falls back to the longest seen suffix of it.

    >>> lm = NGramLM(NGramConfig(order=2, smoothing="mle")).fit([["a", "b"], ["a", "a"]])
    >>> lm.prob("b", ["a"])  # "a" is followed by b, a, </s>
    0.3333333333333333
    """

    def __init__(self, config: NGramConfig | None = None):
        self.config = config or NGramConfig()
        self.vocab: list[str] = []  # id -> word: </s>, <unk>, then sorted training words
        self.word2id: dict[str, int] = {}

    # --- counting ---

    def fit(self, sentences: Iterable[Sequence[str]]) -> NGramLM:
        """Count n-grams in ``sentences`` (an iterable of token lists). Returns self."""
        sentences = _check_sentences(sentences)
        n, min_count = self.config.order, self.config.min_count
        freq = Counter(chain.from_iterable(sentences))
        kept = sorted(w for w, c in freq.items() if c >= min_count and w != UNK)
        self.vocab = [EOS, UNK] + kept
        self.word2id = {w: i for i, w in enumerate(self.vocab)}
        V = len(self.vocab)
        grams = self._encode(sentences)  # (E, n): n-1 context ids then the word id

        # Context ids, level by level. Level m predicts from the last m-1 words, so its
        # context is grams[:, n-m : n-1]. Dropping the first word of a level-m context gives
        # the level-(m-1) context of the same event, which already has an id, so
        #     key = first word * C_{m-1} + id of the rest
        # names each context with one small int64 (< (V+1) * E; <s> has id V).
        # ctx_keys[m] is sorted, so a context's id is its position there.
        self._ctx_keys = [None, np.zeros(1, dtype=np.int64)]  # level 1: the empty context
        ctx = np.zeros(len(grams), dtype=np.int64)  # (E,) level-1 context id of each event
        for m in range(2, n + 1):
            size = (V + 1) * len(self._ctx_keys[m - 1])  # keys lie in [0, size)
            key = grams[:, n - m] * len(self._ctx_keys[m - 1]) + ctx
            uniq, ctx = _unique_inverse(key, size)
            self._ctx_keys.append(uniq)

        # Counts per level as sorted int64 keys (context id * V + word id) and counts.
        # The top level counts events. For Kneser-Ney each lower level m counts, for each
        # (h, w), the distinct words v such that (v, h, w) was seen at level m+1: map every
        # distinct level-(m+1) n-gram to its suffix and count how often each suffix appears.
        # Subtle: an n-gram that starts with <s> can only be preceded by more <s> padding, so
        # its continuation count is 1. We keep that plain definition (nltk does the same);
        # KenLM instead uses raw counts for n-grams that start with <s>.
        keys, counts = np.unique(ctx * V + grams[:, -1], return_counts=True)
        self._keys: list = [None] * (n + 1)
        self._counts: list = [None] * (n + 1)
        self._keys[n], self._counts[n] = keys, counts
        if self.config.smoothing == "kneser_ney":
            for m in range(n - 1, 0, -1):
                ctx_hi, w = np.divmod(self._keys[m + 1], V)
                ctx_lo = self._ctx_keys[m + 1][ctx_hi] % len(self._ctx_keys[m])  # drop first word
                self._keys[m], self._counts[m] = np.unique(ctx_lo * V + w, return_counts=True)

        # Per-context totals (sum of counts) and types (number of distinct next words).
        self._totals: list = [None] * (n + 1)
        self._types: list = [None] * (n + 1)
        for m in range(1, n + 1):
            if self._keys[m] is None:
                continue
            c = self._keys[m] // V
            size = len(self._ctx_keys[m])
            self._totals[m] = np.bincount(c, weights=self._counts[m], minlength=size)
            self._types[m] = np.bincount(c, minlength=size).astype(np.float64)
        return self

    def _encode(self, sentences: list[Sequence[str]]) -> np.ndarray:
        """(E, n) int64 array of every event: its n-1 context ids, then the predicted id."""
        n, V = self.config.order, len(self.vocab)
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        # map(dict.get, words, repeat(unk)) looks every word up in C, with <unk> as default.
        ids = map(self.word2id.get, chain.from_iterable(sentences), repeat(self.word2id[UNK]))
        words = np.fromiter(ids, dtype=np.int64, count=int(lengths.sum()))
        # One flat array holding every padded sentence: n-1 <s> (id V), words, </s> (id 0).
        starts = np.concatenate([[0], np.cumsum(lengths + n)[:-1]])  # where each sentence begins
        flat = np.full(int(lengths.sum()) + n * len(sentences), V, dtype=np.int64)
        sent_of_word = np.repeat(np.arange(len(sentences)), lengths)
        flat[np.arange(len(words)) + sent_of_word * n + (n - 1)] = words
        flat[starts + (n - 1) + lengths] = self.word2id[EOS]
        events = np.flatnonzero(flat != V)  # every position except the <s> padding
        return flat[events[:, None] + np.arange(-(n - 1), 1)]  # (E, n)

    # --- scoring ---

    def _check_fitted(self):
        if not self.vocab:
            raise ValueError("the model is not fitted yet: call fit(sentences) first")

    def _context_ids(self, grams: np.ndarray) -> list[np.ndarray]:
        """Context id of each row at every level (index m), -1 where never seen in training."""
        n = self.config.order
        ids = [None, np.zeros(len(grams), dtype=np.int64)]
        for m in range(2, n + 1):
            prev, table = ids[m - 1], self._ctx_keys[m]
            key = grams[:, n - m] * len(self._ctx_keys[m - 1]) + prev
            pos = np.minimum(np.searchsorted(table, key), len(table) - 1)
            # A context is known only if its suffix is: the table is closed under suffixes.
            ids.append(np.where((prev >= 0) & (table[pos] == key), pos, -1))
        return ids

    def _count(self, m: int, ctx: np.ndarray, word: np.ndarray) -> np.ndarray:
        """Level-m counts of (context id, word id) pairs; 0 where unseen."""
        keys = self._keys[m]
        key = ctx * len(self.vocab) + word
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return np.where((ctx >= 0) & (keys[pos] == key), self._counts[m][pos], 0)

    def _probs(self, grams: np.ndarray) -> np.ndarray:
        """P(last column | the other columns) for each row of an (N, n) id array."""
        cfg, n, V = self.config, self.config.order, len(self.vocab)
        ids = self._context_ids(grams)
        word = grams[:, -1]
        if cfg.smoothing == "kneser_ney":
            p = np.full(len(grams), 1.0 / V)  # the recursion ends in the uniform distribution
            for m in range(1, n + 1):
                seen = ids[m] >= 0
                c = np.where(seen, ids[m], 0)  # safe index; rows that are not seen are masked
                q = kneser_ney_prob(self._count(m, ids[m], word), self._totals[m][c],
                                    self._types[m][c], p, cfg.discount)
                p = np.where(seen, q, p)  # unseen context: keep the lower-order estimate
            return p
        ctx = ids[n]
        seen = ctx >= 0
        total = np.where(seen, self._totals[n][np.where(seen, ctx, 0)], 0.0)
        count = self._count(n, ctx, word)
        if cfg.smoothing == "add_k":
            return add_k_prob(count, total, cfg.k, V)
        if not seen.all():
            bad = grams[np.argmin(seen), :-1]
            raise ValueError(f"MLE is undefined for the unseen context {self._words(bad)}; "
                             "use add_k or kneser_ney smoothing")
        return mle_prob(count, total)

    def _words(self, ids) -> tuple[str, ...]:
        return tuple(BOS if i == len(self.vocab) else self.vocab[i] for i in ids)

    def _context_row(self, context: Sequence[str]) -> np.ndarray:
        """(n-1,) ids of a context given as words: last n-1 words, <s>-padded, OOV -> <unk>."""
        if isinstance(context, str):
            raise TypeError("context must be a sequence of words, not a string")
        n, V = self.config.order, len(self.vocab)
        context = [BOS] * (n - 1) + list(context)
        context = context[len(context) - (n - 1):]
        unk = self.word2id[UNK]
        return np.array([V if w == BOS else self.word2id.get(w, unk) for w in context],
                        dtype=np.int64)

    def _word_id(self, word: str) -> int:
        if word == BOS:
            raise ValueError("<s> is only a context symbol; the model never predicts it")
        return self.word2id.get(word, self.word2id[UNK])

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | context). Unknown words (in either) are looked up as ``<unk>``."""
        self._check_fitted()
        row = np.append(self._context_row(context), self._word_id(word))
        return float(self._probs(row[None, :])[0])

    def distribution(self, context: Sequence[str] = ()) -> np.ndarray:
        """(V,) next-word probabilities after ``context``, indexed like ``self.vocab``."""
        self._check_fitted()
        cfg, n, V = self.config, self.config.order, len(self.vocab)
        row = np.append(self._context_row(context), 0)
        ids = [None if i is None else int(i[0]) for i in self._context_ids(row[None, :])]
        if cfg.smoothing == "kneser_ney":
            p = np.full(V, 1.0 / V)
            for m in range(1, n + 1):
                if ids[m] >= 0:
                    p = kneser_ney_prob(self._dense_counts(m, ids[m]), self._totals[m][ids[m]],
                                        self._types[m][ids[m]], p, cfg.discount)
            return p
        if ids[n] < 0:
            if cfg.smoothing == "add_k":
                return np.full(V, 1.0 / V)
            raise ValueError(f"MLE is undefined for the unseen context {self._words(row[:-1])}; "
                             "use add_k or kneser_ney smoothing")
        counts, total = self._dense_counts(n, ids[n]), self._totals[n][ids[n]]
        if cfg.smoothing == "add_k":
            return add_k_prob(counts, total, cfg.k, V)
        return mle_prob(counts, total)

    def _dense_counts(self, m: int, ctx: int) -> np.ndarray:
        """(V,) level-m counts after one context id; the keys of one context are contiguous."""
        V = len(self.vocab)
        keys = self._keys[m]
        lo, hi = np.searchsorted(keys, [ctx * V, (ctx + 1) * V])
        dense = np.zeros(V)
        dense[keys[lo:hi] - ctx * V] = self._counts[m][lo:hi]
        return dense

    def _token_logprobs(self, sentences: list[Sequence[str]]) -> np.ndarray:
        self._check_fitted()
        with np.errstate(divide="ignore"):  # log(0) = -inf is the right answer for MLE
            return np.log(self._probs(self._encode(sentences)))

    def logprob(self, sentence: Sequence[str]) -> float:
        """Natural-log probability of one sentence, its ``</s>`` included."""
        return float(self._token_logprobs(_check_sentences([sentence])).sum())

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """exp(mean negative log-probability per predicted token, ``</s>`` included)."""
        logp = self._token_logprobs(_check_sentences(sentences))
        return math.exp(-logp.mean())

    def generate(self, n_words: int, seed: int = 0) -> list[str]:
        """Sample ``n_words`` tokens; a ``</s>`` ends a sentence and the next starts afresh.

        >>> lm = NGramLM(NGramConfig(order=2, smoothing="mle")).fit([["hi", "there"]])
        >>> lm.generate(4)
        ['hi', 'there', '</s>', 'hi']
        """
        self._check_fitted()
        rng = np.random.default_rng(seed)
        out: list[str] = []
        context: list[str] = []  # the current sentence so far (padding is added by lookup)
        for _ in range(n_words):
            p = self.distribution(context)
            word = self.vocab[rng.choice(len(p), p=p / p.sum())]  # renormalise float error
            out.append(word)
            context = [] if word == EOS else context + [word]
        return out


def _unique_inverse(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for int keys known to lie in [0, size).

    When the range is small (a single word's id, say) a lookup table replaces the sort:
    mark the keys present, and a running count of the marks is each key's rank.
    """
    if size > 4 * len(keys):
        return np.unique(keys, return_inverse=True)
    present = np.zeros(size, dtype=bool)
    present[keys] = True
    rank = np.cumsum(present) - 1  # (size,) position of each present key in the sorted uniques
    return np.flatnonzero(present), rank[keys]


def _check_sentences(sentences: Iterable[Sequence[str]]) -> list[Sequence[str]]:
    """A list of token lists, with clear errors for the usual mistakes."""
    if isinstance(sentences, str):
        raise TypeError("expected an iterable of sentences (token lists), got one string")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("empty corpus: need at least one sentence")
    for s in sentences:
        if isinstance(s, str):
            raise TypeError("each sentence must be a list of tokens, not a string: split it first")
        if BOS in s or EOS in s:
            raise ValueError(f"{BOS} and {EOS} are reserved boundary symbols; remove them "
                             "from the sentences (the model adds them)")
    return sentences
