"""WordPiece, BERT's subword tokenizer: greedy longest-match over a learned vocabulary.

Whole-word vocabularies have two problems: they are huge, and any word not seen in training
is unknown. Subword tokenizers fix both. Byte-level BPE is in ``velm_course.text.bpe``; this
module has WordPiece. Its vocabulary holds word starts ("play") and continuations marked
with ``##`` ("##ing"); a word is cut greedily, always taking the longest vocabulary piece
that fits: "playing" -> "play", "##ing".

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


def _xlogx(c):
    """c log c, with 0 log 0 = 0, elementwise."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c > 0, c * np.log(np.where(c > 0, c, 1.0)), 0.0)


def merge_gain(count_a, count_b, count_ab, merges, total: int, same=False):
    """How much merging a pair raises the training text's log-likelihood under a unigram model.

    A unigram model over units with maximum-likelihood probabilities gives the text
    ``L = sum_u c_u log(c_u / N) = sum_u c_u log c_u - N log N``. Merging the pair (a, b) at
    ``merges`` places removes that many a's and b's (two a's each when ``same``: the pair is
    (a, a)), adds as many of the merged unit (which may already have ``count_ab``
    occurrences) and shortens the text to ``N - merges`` units; only those terms of L change.
    A pair gains most when it is both frequent and more frequent than chance: roughly
    ``merges * log(P(ab) / (P(a) P(b)))``, the frequency-weighted version of the
    ``count(ab) / (count(a) count(b))`` score. Scalars give a float; arrays (one entry per
    pair) give an array, which is how the trainer scores every pair at once.

    >>> round(merge_gain(count_a=2, count_b=2, count_ab=0, merges=2, total=4), 4)  # "ab ab" -> 2 units
    2.7726
    """
    ca, cb, cab, m = (np.asarray(v, dtype=np.float64) for v in (count_a, count_b, count_ab, merges))
    same = np.asarray(same, dtype=bool)
    removed_a, removed_b = np.where(same, 2 * m, m), np.where(same, 0.0, m)
    if (m < 0).any() or min(ca.min(), cb.min(), cab.min()) < 0 or total < 0:
        raise ValueError("counts must be non-negative")
    if (removed_a > ca).any() or (removed_b > cb).any() or (m > total).any():
        raise ValueError("cannot merge more pairs than there are units")
    b_terms = np.where(same, 0.0, _xlogx(cb - removed_b) - _xlogx(cb))  # an (a, a) pair has no separate b
    gain = (_xlogx(ca - removed_a) - _xlogx(ca) + _xlogx(cab + m) - _xlogx(cab) + b_terms
            - (_xlogx(total - m) - _xlogx(total)))
    return float(gain) if gain.ndim == 0 else gain


OBJECTIVES = ("likelihood", "pmi")


def train_wordpiece(words: Iterable[str], vocab_size: int, unk_token: str = "[UNK]",
                    prefix: str = "##", objective: str = "likelihood") -> list[str]:
    """A WordPiece vocabulary of ``vocab_size`` tokens learned from a list of words.

    Start from single characters: a word's first character as is, every later one with
    ``prefix`` ("hug" -> "h", "##u", "##g"). Then, like BPE, merge pairs of adjacent units,
    choosing the pair by ``objective``:

    - ``"likelihood"`` (default): the merge that most raises the training words' likelihood
      under a unigram model of the units (``merge_gain``), the criterion Schuster and
      Nakajima (2012) describe for WordPiece. Frequent words end up whole;
    - ``"pmi"``: the score the Hugging Face course describes,
      ``count(a b) / (count(a) count(b))``. Without the frequency factor it prefers pairs of
      *rare* units: 2000 tokens learned from 200 kB of Shakespeare still cut "and" into
      "a ##n ##d".

    Ties go to the smallest pair (as strings; likelihood gains within 1e-9 tie). The merged unit drops b's prefix: ("h", "##u")
    -> "hu", ("##u", "##g") -> "##ug". Returns ``[unk_token]``, the characters (sorted), then
    the new tokens in the order they were made; two merges can make the same string, which is
    listed once. Google never published WordPiece's trainer, and HF's own
    ``WordPieceTrainer`` runs BPE with a ``##`` prefix; the *encoding* algorithm is the same
    everywhere.

    >>> words = ["hug"] * 10 + ["pug"] * 5 + ["pun"] * 12 + ["bun"] * 4 + ["hugs"] * 5
    >>> train_wordpiece(words, vocab_size=12, objective="pmi")[8:]  # "##s" only ever follows "##g"
    ['##gs', '##ug', '##ugs', 'hugs']
    >>> train_wordpiece(words, vocab_size=12)[8:]  # the frequent "##u ##g" and "##u ##n" first
    ['##ug', '##un', 'hug', 'pun']
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
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
    total = sum(unit_count.values())  # N: units in the whole training text

    def merges_of(p: tuple[str, str]) -> int:
        if p[0] != p[1]:
            return pair_count[p]
        # "a a a" holds the pair twice but can merge only once: count as merge_pair will merge
        return sum(freqs[w] * (len(units[w]) - len(merge_pair(units[w], p, None))) for w in where[p])

    def best_pair() -> tuple[str, str]:
        pairs = list(pair_count)
        if objective == "pmi":
            scores = [pair_count[p] / (unit_count[p[0]] * unit_count[p[1]]) for p in pairs]
        else:  # merge_gain of every pair at once
            scores = merge_gain([unit_count[a] for a, _ in pairs], [unit_count[b] for _, b in pairs],
                                [unit_count.get(a + b.removeprefix(prefix), 0) for a, b in pairs],
                                [merges_of(p) for p in pairs], total, [a == b for a, b in pairs]).tolist()
        # ties go to the smallest pair; gains are sums of logarithms, so equal gains reached along
        # different float paths can differ in the last bits: within 1e-9 counts as a tie
        cutoff = max(scores) - (1e-9 if objective == "likelihood" else 0.0)
        return min(p for p, sc in zip(pairs, scores, strict=True) if sc >= cutoff)

    known = set(vocab)
    while len(vocab) < vocab_size and pair_count:
        a, b = best_pair()
        merged = a + b.removeprefix(prefix)
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
        total -= merges_of((a, b))
        for w in where.pop((a, b)):
            add(w, -1)
            units[w] = merge_pair(units[w], (a, b), merged)  # the same left-to-right merge as BPE
            add(w, +1)
    return vocab
