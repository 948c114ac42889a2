"""Byte-level byte-pair encoding (BPE), the tokenizer family of GPT-2 and most LLMs since.

Text is first turned into UTF-8 bytes, so the starting vocabulary is the 256 possible byte
values and *any* string can be encoded: there is no unknown token. Training then repeats
one step: find the most frequent pair of adjacent tokens and give it a new id, replacing
every occurrence. Token 256 is the first merge, 257 the second, and so on, so the ordered
list of merges *is* the tokenizer.

Hand-worked on "aaabdaaabac" (a=97, b=98, c=99, d=100), with no regex split:

    (97, 97)   seen 4 times        -> 256   "aa"    [256, 97, 98, 100, 256, 97, 98, 97, 99]
    (97, 98)   seen 2 times        -> 257   "ab"    [256, 257, 100, 256, 257, 97, 99]
    (256, 257) seen 2 times        -> 258   "aaab"  [258, 100, 258, 97, 99]

At the second step (256, 97) is also seen twice; ties go to the smallest pair of ids, so
every run of the trainer gives the same merges.

GPT-2 adds one idea: before counting, split the text into chunks with a regex (words with
their leading space, numbers, punctuation runs, whitespace) and never merge across a
chunk boundary. Without it, frequent byte pairs such as "e " or ". T" glue words to
their neighbours and the vocabulary fills with fragments like "the c". Counting is done
over *distinct* chunks weighted by their frequency, which makes training fast: the
Shakespeare corpus has about a million words but only a few tens of thousands of
distinct ones.

Encoding a chunk replays the merges: repeatedly merge the adjacent pair that was learned
*earliest* (lowest id), until no learned pair is left. Decoding concatenates the bytes of
each id and decodes the result as UTF-8.

>>> tok = BPETokenizer().train("aaabdaaabac", vocab_size=259, pattern=None)
>>> tok.merges
[(97, 97), (97, 98), (256, 257)]
>>> tok.encode("aaabdaaabac")
[258, 100, 258, 97, 99]
>>> tok.decode([258, 100])
'aaabd'
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import pairwise
from numbers import Integral
from pathlib import Path

# The chunking regex of GPT-2: English contractions, a word with an optional leading
# space, a number with an optional leading space, a run of other symbols, then whitespace.
# "\s+(?!\S)" takes a run of spaces *except the last one*, which then goes to the word
# after it (" world"), so "hello   world" splits as "hello", "  ", " world".
# \p{L} and \p{N} (Unicode letters and numbers) need the third-party `regex` module.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)"""
    r"""| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
    r"""|\s+(?!\S)|\s+"""
)
N_BYTES = 256  # ids 0..255 are the raw byte values
FORMAT = "velm-byte-bpe"  # tag written into saved files, checked on load


def pair_counts(ids: Sequence[int]) -> Counter:
    """How often each adjacent pair occurs in ``ids`` (overlaps count: "aaa" has two "aa").

    >>> pair_counts([1, 2, 1, 2, 3])
    Counter({(1, 2): 2, (2, 1): 1, (2, 3): 1})
    """
    return Counter(pairwise(ids))


def merge_pair(ids: Sequence, pair: tuple, new_id) -> list:
    """``ids`` with every occurrence of ``pair`` replaced by ``new_id``, left to right.

    Works on any symbols that compare with ``==``: byte ids here, WordPiece's string units
    in ``velm_course.text.wordpiece``.

    >>> merge_pair([97, 97, 97, 98], (97, 97), 256)  # "aaa" -> "aa" "a": no overlap
    [256, 97, 98]
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def split_chunks(text: str, pattern: str | None) -> list[str]:
    """The chunks that BPE never merges across: the regex matches, or the whole text."""
    if pattern is None:
        return [text] if text else []
    import regex  # third-party: supports \p{L}; installed with `transformers`

    return regex.findall(pattern, text)


class BPETokenizer:
    """A byte-level BPE tokenizer: 256 byte tokens, then ``merges`` in order.

    ``BPETokenizer()`` with no merges is a plain byte tokenizer; :meth:`train` learns
    merges, :meth:`save` / :meth:`load` keep them in a JSON file.
    """

    def __init__(self, merges: Iterable[tuple[int, int]] = (),
                 pattern: str | None = GPT2_SPLIT_PATTERN):
        self.pattern = pattern
        self.merges: list[tuple[int, int]] = []  # merge i made token N_BYTES + i
        self.ranks: dict[tuple[int, int], int] = {}  # pair -> the id it merges into
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(N_BYTES)}  # id -> bytes
        for pair in merges:
            self._add_merge(tuple(pair))

    def _add_merge(self, pair: tuple[int, int]) -> None:
        new_id = N_BYTES + len(self.merges)
        if len(pair) != 2 or not all(isinstance(i, int) and 0 <= i < new_id for i in pair):
            raise ValueError(f"merge {len(self.merges)} is {pair!r}: it must be two ids "
                             f"below {new_id} (tokens that exist before it)")
        if pair in self.ranks:
            raise ValueError(f"the pair {pair} is merged twice")
        self.merges.append(pair)
        self.ranks[pair] = new_id
        self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # --- training -------------------------------------------------------------------------

    def train(self, text: str, vocab_size: int,
              pattern: str | None = GPT2_SPLIT_PATTERN) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges from ``text`` (fewer if the text runs out of
        pairs) and return ``self``. ``pattern=None`` merges across the whole text.

        >>> BPETokenizer().train("hello hello", 257).merges  # 4 pairs tie; "e" "l" is smallest
        [(101, 108)]
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("cannot train on an empty text")
        if not isinstance(vocab_size, int) or vocab_size < N_BYTES:
            raise ValueError(f"vocab_size must be an integer >= {N_BYTES} (the byte tokens), "
                             f"got {vocab_size!r}")
        # Start again from the 256 byte tokens.
        self.pattern, self.merges, self.ranks = pattern, [], {}
        self.vocab = {i: bytes([i]) for i in range(N_BYTES)}

        # Distinct chunks as byte-id lists, each with its number of occurrences.
        chunk_freqs = Counter(split_chunks(text, pattern))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_freqs]
        freqs = list(chunk_freqs.values())

        # stats[pair]: occurrences of pair in the whole text; where[pair]: which words
        # hold it. After a merge only the words holding the merged pair change, so we
        # update the counts of those words instead of recounting everything.
        stats: Counter = Counter()
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (ids, freq) in enumerate(zip(words, freqs, strict=True)):
            for pair in pairwise(ids):
                stats[pair] += freq
                where[pair].add(w)

        while self.vocab_size < vocab_size and stats:
            # Most frequent pair; ties -> smallest ids (a plain, reproducible rule).
            pair = max(stats, key=lambda p: (stats[p], -p[0], -p[1]))
            new_id = self.vocab_size
            self._add_merge(pair)
            for w in where.pop(pair):
                old, freq = words[w], freqs[w]
                new = merge_pair(old, pair, new_id)
                # Take the word's old pairs out of the counts and put its new pairs in.
                for p in pairwise(old):
                    stats[p] -= freq
                    if stats[p] == 0:
                        del stats[p]
                for p in pairwise(new):
                    stats[p] += freq
                    where[p].add(w)  # old entries may go stale; re-merging them is a no-op
                words[w] = new
        return self

    # --- encoding and decoding ------------------------------------------------------------

    def _encode_chunk(self, ids: list[int]) -> list[int]:
        while len(ids) >= 2:
            # The pair learned first is the one training would have merged first.
            pair = min(pairwise(ids), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break  # nothing left to merge
            ids = merge_pair(ids, pair, self.ranks[pair])
        return ids

    def encode(self, text: str, cache: dict[str, list[int]] | None = None) -> list[int]:
        """Token ids of ``text``; ``decode(encode(text)) == text`` for every string.

        A word that repeats is encoded once; pass the same ``cache`` dict to many calls (the
        lines of a text, say) to share that work between them.

        >>> tok, cache = BPETokenizer().train("ab ab ab", 258), {}
        >>> [tok.encode(line, cache) for line in ("ab", "ab ab")], sorted(cache)
        ([[256], [256, 257]], [' ab', 'ab'])
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids: list[int] = []
        cache = {} if cache is None else cache
        for chunk in split_chunks(text, self.pattern):
            if chunk not in cache:
                cache[chunk] = self._encode_chunk(list(chunk.encode("utf-8")))
            ids.extend(cache[chunk])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``. A cut through a multi-byte character decodes as U+FFFD."""
        pieces = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, Integral) or i not in self.vocab:
                raise ValueError(f"unknown token id {i!r} (vocabulary has ids "
                                 f"0..{self.vocab_size - 1})")
            pieces.append(self.vocab[int(i)])
        return b"".join(pieces).decode("utf-8", errors="replace")

    # --- saving and loading ---------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the pattern and the merges (the whole tokenizer) to a JSON file."""
        data = {"format": FORMAT, "pattern": self.pattern, "merges": [list(p) for p in self.merges]}
        Path(path).write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """A tokenizer saved by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved BPETokenizer (no format {FORMAT!r})")
        return cls(merges=[tuple(p) for p in data["merges"]], pattern=data["pattern"])
