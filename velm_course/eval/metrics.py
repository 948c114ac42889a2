"""Caption metrics as the COCO caption evaluation reports them: BLEU-1..4, ROUGE-L and CIDEr-D.

Each scorer reproduces `pycocoevalcap` (the reference Python code of the COCO caption
evaluation) exactly, quirks included, so numbers from the course can be compared with
numbers in papers. The quirks are explained in comments where they happen.

Every metric comes twice:

- ``bleu_loop``, ``rouge_l_loop``, ``cider_d_loop``: the metric written out as plain Python
  loops over words and n-grams, to read and to learn from (the notebook builds on them);
- ``bleu``, ``rouge_l``, ``cider_d``: the same numbers, computed with numpy over all images at
  once (and ROUGE-L with a bit-parallel LCS), many times faster. The tests check both against
  each other and against pycocoevalcap.

Input convention, the same for every scorer:

- ``gts``: ``{image_id: [reference caption, ...]}``, at least one reference per image;
- ``res``: ``{image_id: candidate caption}``, one plain string per image. pycocoevalcap
  wants a one-element list here; we take the string itself;
- captions are already tokenized and lower-cased, words separated by single spaces, as
  pycocoevalcap's PTB tokenizer leaves them: call :func:`tokenize_caption` (or
  :func:`velm_course.eval.coco_eval.evaluate_captions`, which does it for you) on raw text.

Per-image scores come in the order of ``gts``'s keys.

Notation: c = candidate length in words, r = effective reference length in words,
k = n-gram order (1 = unigrams, 2 = bigrams, ...).

>>> gts = {1: ["a cat sits on a mat"], 2: ["a dog runs on the grass"]}
>>> res = {1: "a cat sits on a mat", 2: "a dog sleeps"}
>>> scores = score_captions(gts, res)
>>> sorted(scores)
['Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'CIDEr', 'ROUGE_L']
>>> round(scores["Bleu_1"], 4)  # 8 of 9 words matched, times the brevity penalty exp(1 - 12/9)
0.6369
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from .ptb import PTB_PUNCTUATION, tokenize_caption

__all__ = [
    "PTB_PUNCTUATION", "tokenize_caption", "ngram_counts", "lcs_length", "bleu", "bleu_loop",
    "rouge_l", "rouge_l_loop", "cider_d", "cider_d_loop", "CiderD", "score_captions",
]

# -----------------------------------------------------------------------------
# shared helpers


def ngram_counts(words: Sequence[str], n: int) -> Counter:
    """Counts of every k-gram of ``words`` for k = 1..n, keyed by tuples of words.

    >>> ngram_counts("a b a".split(), 2)
    Counter({('a',): 2, ('b',): 1, ('a', 'b'): 1, ('b', 'a'): 1})
    """
    return Counter(
        tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
    )


def check_reference_lists(gts: Mapping) -> None:
    """Every image has a non-empty list of reference strings (raw or tokenized); the error
    names the image."""
    for image_id, refs in gts.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"gts[{image_id!r}] must be a list of reference captions, got {type(refs).__name__}")
        if len(refs) == 0:
            raise ValueError(f"image {image_id!r} has an empty list of reference captions")
        for ref in refs:
            if not isinstance(ref, str):
                raise TypeError(f"gts[{image_id!r}] holds a {type(ref).__name__}, expected caption strings")


def _check_inputs(gts: Mapping, res: Mapping) -> list[Hashable]:
    """Validate the input convention and return the image ids in ``gts`` order."""
    if not isinstance(gts, Mapping) or not isinstance(res, Mapping):
        raise TypeError("gts and res must be dicts: {image_id: [references]}, {image_id: candidate}")
    if len(gts) == 0 and len(res) == 0:
        raise ValueError("empty input: gts and res hold no images")
    if len(gts) != len(res) or any(i not in res for i in gts):
        only_gts = [i for i in gts if i not in res][:5]
        only_res = [i for i in res if i not in gts][:5]
        raise ValueError(
            f"gts and res must have the same image ids; only in gts: {only_gts}, only in res: {only_res}"
        )
    check_reference_lists(gts)
    for image_id, refs in gts.items():
        for ref in refs:
            if not ref.split():
                raise ValueError(f"image {image_id!r} has an empty reference caption")
        cand = res[image_id]
        if not isinstance(cand, str):
            hint = " (pass the caption string itself, not a one-element list)" if isinstance(cand, list) else ""
            raise TypeError(f"res[{image_id!r}] must be a str, got {type(cand).__name__}{hint}")
    return list(gts)


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")


def _check_sigma(sigma: float) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")


# pycocoevalcap's smoothing constants: `tiny` is added to every numerator and `small` to every
# denominator. A k-gram precision with no matches becomes ~1e-15 / guesses (effectively zero, and
# no log(0) anywhere); a candidate too short to have any k-grams gets 1e-15 / 1e-9 = 1e-6 instead
# of 0 / 0. The results are therefore never exactly 0 or exactly 1.
_TINY = 1e-15
_SMALL = 1e-9


# =============================================================================
# The loop versions: each metric in plain Python, to read


# -----------------------------------------------------------------------------
# BLEU


def _bleu_stats(cand: list[str], refs: list[list[str]], n: int) -> tuple[int, int, list[int], list[int]]:
    """The sufficient statistics of one image: (c, r, matched k-grams, candidate k-grams)."""
    c = len(cand)
    # "closest" effective reference length: the reference length nearest to c.
    # A tie (one reference shorter, one longer by the same amount) goes to the shorter one.
    r = min((len(ref) for ref in refs), key=lambda length: (abs(length - c), length))
    # Clipping: a candidate k-gram counts as matched at most as often as it occurs in any
    # single reference (the max over references, not the sum), so "the the the" cannot
    # score by repeating a common word.
    max_ref_counts = Counter()
    for ref in refs:
        max_ref_counts |= ngram_counts(ref, n)  # `|` on Counters keeps the larger count
    correct = [0] * n
    for gram, count in ngram_counts(cand, n).items():
        correct[len(gram) - 1] += min(count, max_ref_counts[gram])
    guess = [max(0, c - k + 1) for k in range(1, n + 1)]  # a c-word caption has c-k+1 k-grams
    return c, r, correct, guess


def _bleu_from_stats(c: float, r: float, correct: Sequence[int], guess: Sequence[int]) -> list[float]:
    """BLEU-1..n from pooled statistics: geometric mean of precisions times brevity penalty."""
    scores = []
    product = 1.0
    for k in range(len(correct)):
        product *= (correct[k] + _TINY) / (guess[k] + _SMALL)  # precision of (k+1)-grams
        scores.append(product ** (1 / (k + 1)))  # BLEU-(k+1): geometric mean of p_1..p_{k+1}
    # Brevity penalty exp(1 - r/c) when the candidate is shorter than the reference: precision
    # alone would reward saying little. Written with the smoothed ratio c/r as pycocoevalcap does.
    ratio = (c + _TINY) / (r + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def bleu_loop(gts: Mapping, res: Mapping, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n and per-image BLEU-1..n, as pycocoevalcap's ``Bleu(n)``: the loop version.

    The corpus score is NOT the mean of the per-image scores: matched and total k-gram counts
    and the lengths c and r are summed over all images first, and BLEU is computed once from
    the sums. ``per_image[k][i]`` is BLEU-(k+1) of the i-th image (pycocoevalcap's layout).

    >>> corpus, per_image = bleu_loop({0: ["a cat sat on the mat"]}, {0: "a cat"})
    >>> round(corpus[0], 6) == round(math.exp(1 - 6 / 2), 6)  # perfect precision, short
    True
    """
    ids = _check_inputs(gts, res)
    _check_n(n)
    per_image: list[list[float]] = [[] for _ in range(n)]
    total_c, total_r = 0, 0
    total_correct, total_guess = [0] * n, [0] * n
    for image_id in ids:
        c, r, correct, guess = _bleu_stats(res[image_id].split(), [g.split() for g in gts[image_id]], n)
        for k, score in enumerate(_bleu_from_stats(c, r, correct, guess)):
            per_image[k].append(score)
        total_c += c
        total_r += r
        total_correct = [a + b for a, b in zip(total_correct, correct, strict=True)]
        total_guess = [a + b for a, b in zip(total_guess, guess, strict=True)]
    return _bleu_from_stats(total_c, total_r, total_correct, total_guess), per_image


# -----------------------------------------------------------------------------
# ROUGE-L


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (not necessarily contiguous) of two sequences.

    >>> lcs_length("a cat sat on the mat".split(), "the cat sat".split())  # "cat sat"
    2
    """
    # Dynamic programming one row at a time: prev[j] = LCS length of the words of `a` seen so
    # far (minus the current one) and b[:j]; cur is the same row including the current word.
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _rouge_f(precision: float, recall: float, beta: float) -> float:
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l_loop(gts: Mapping, res: Mapping, beta: float = 1.2) -> tuple[float, list[float]]:
    """Mean and per-image ROUGE-L F-scores, as pycocoevalcap's ``Rouge()``: the loop version.

    For each reference, precision = LCS / c and recall = LCS / len(reference). pycocoevalcap
    takes the max precision and the max recall over the references SEPARATELY (they may come
    from different references) and combines them as
    F = (1 + beta^2) P R / (R + beta^2 P), with beta = 1.2 weighting recall a bit more.

    >>> rouge_l_loop({0: ["a b c d"]}, {0: "a b c d"})[0]
    1.0
    """
    ids = _check_inputs(gts, res)
    scores = []
    for image_id in ids:
        # pycocoevalcap splits on single spaces (BLEU and CIDEr split on any whitespace), so an
        # empty candidate is one empty word here; it matches nothing and scores 0.
        cand = res[image_id].split(" ")
        refs = [g.split(" ") for g in gts[image_id]]
        lcs = [lcs_length(ref, cand) for ref in refs]
        precision = max(m / len(cand) for m in lcs)
        recall = max(m / len(ref) for m, ref in zip(lcs, refs, strict=True))
        scores.append(_rouge_f(precision, recall, beta))
    return float(np.mean(scores)), scores


# -----------------------------------------------------------------------------
# CIDEr-D


def _cider_doc_freq(refs_per_image: Sequence[Sequence[str]], n: int) -> Counter:
    """Document frequency: in how many images' reference SETS each k-gram occurs (an image
    counts once however many of its references contain it). Candidates do not contribute."""
    doc_freq = Counter()
    for refs in refs_per_image:
        doc_freq.update(set().union(*(ngram_counts(g.split(), n) for g in refs)))
    return doc_freq


def _cider_loop(
    gts: Mapping, res: Mapping, ids: list, doc_freq: Counter, n_docs: int, n: int, sigma: float
) -> np.ndarray:
    """Per-image CIDEr-D with given document frequencies over n_docs images."""
    log_n_docs = math.log(n_docs)

    def tfidf(counts: Counter) -> list[dict]:
        """One {k-gram: tf * idf} dict per order k."""
        vec: list[dict] = [{} for _ in range(n)]
        for gram, tf in counts.items():
            # idf = log(N / df). A k-gram absent from every reference is treated as if it were
            # in one image (df = 1), so it gets the largest idf, log N.
            idf = log_n_docs - math.log(max(1.0, doc_freq[gram]))
            vec[len(gram) - 1][gram] = tf * idf
        return vec

    def norms(vec: list[dict]) -> list[float]:
        return [math.sqrt(sum(w * w for w in v.values())) for v in vec]

    scores = []
    for image_id in ids:
        cand_words = res[image_id].split()
        cand_vec = tfidf(ngram_counts(cand_words, n))
        cand_norm = norms(cand_vec)
        total = 0.0  # sum over references and orders k of the penalised similarities
        for ref in gts[image_id]:
            ref_words = ref.split()
            ref_vec = tfidf(ngram_counts(ref_words, n))
            ref_norm = norms(ref_vec)
            # Gaussian length penalty: the "D" in CIDEr-D, against gaming by length.
            # (pycocoevalcap measures length as the number of bigrams, c - 1; the difference is
            # the same except for an empty candidate, which scores 0 either way.)
            delta = len(cand_words) - len(ref_words)
            penalty = math.exp(-(delta**2) / (2 * sigma**2))
            for k in range(n):
                # Clipping: the candidate weight of a k-gram is capped at its reference weight,
                # so repeating a k-gram more often than the reference does earns nothing.
                dot = sum(min(w, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0) for g, w in cand_vec[k].items())
                if cand_norm[k] > 0 and ref_norm[k] > 0:  # else dot is 0 as well
                    dot /= cand_norm[k] * ref_norm[k]
                total += dot * penalty
        scores.append(10.0 * total / n / len(gts[image_id]))
    return np.array(scores)


def cider_d_loop(gts: Mapping, res: Mapping, n: int = 4, sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """Mean and per-image CIDEr-D, as pycocoevalcap's ``Cider()`` (which is CIDEr-D): the loop version.

    Every caption becomes one TF-IDF vector per k-gram order k = 1..n. For each order, the
    candidate is compared with each reference by a clipped cosine similarity, multiplied by a
    Gaussian penalty on the length difference; the result is averaged over k and over the
    references and multiplied by 10.

    The IDF comes from the references of the evaluated set itself, so the score of one image
    depends on the other images (with a single image every IDF is 0 and CIDEr-D is 0).

    >>> gts = {0: ["a cat"], 1: ["a dog"]}
    >>> mean, per_image = cider_d_loop(gts, {0: "a cat", 1: "a bird"}, n=2)
    >>> per_image.tolist()  # "a" is in every image's references, so only "cat" counts
    [10.0, 0.0]
    """
    ids = _check_inputs(gts, res)
    _check_n(n)
    _check_sigma(sigma)
    doc_freq = _cider_doc_freq([gts[i] for i in ids], n)
    scores = _cider_loop(gts, res, ids, doc_freq, len(ids), n, sigma)
    return float(np.mean(scores)), scores


# =============================================================================
# The fast versions: the same arithmetic over all images at once
#
# Every caption is turned into integer word ids, and every k-gram into an integer id: the id of
# a k-gram is computed from the id of its first k-1 words and its last word,
# key = id(prefix) * V + word, made dense again with np.unique so the keys never overflow int64.
# "How often does caption c contain k-gram g" is then np.unique over the pairs (c, g), and every
# per-image sum or max is a bincount or a reduceat over sorted arrays.


class _Grams:
    """The k-grams of a list of captions (split on whitespace), k = 1..n, as integer arrays.

    ``ids``: the word id of every token (captions one after another); ``lengths``: the
    captions' lengths in words. For each k:

    - ``at[k]``: the id of the k-gram starting at each token (-1 where none fits);
    - ``keys[k]``: for k >= 2, the sorted array of key = id(first k-1 words) * n_words + id(last
      word); a k-gram's id is its index here (so the ids of another table can be looked up);
    - ``caption[k]``, ``gram[k]``, ``count[k]``: one entry per distinct (caption, k-gram) pair,
      sorted by caption then gram, with how often the caption contains the gram;
    - ``n_grams[k]``: the number of distinct k-grams.
    """

    def __init__(self, captions: Sequence[str], n: int):
        split = [c.split() for c in captions]
        self.lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        words = list(itertools.chain.from_iterable(split))
        self.vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}  # word -> id, first seen first
        self.ids = np.fromiter(map(self.vocab.__getitem__, words), dtype=np.int64, count=len(words))
        self.n_words = max(len(self.vocab), 1)
        owner = np.repeat(np.arange(len(split)), self.lengths)  # caption of each token
        ends = np.cumsum(self.lengths)[owner]  # one past the caption's last token
        position = np.arange(len(self.ids))
        self.at, self.keys, self.caption, self.gram, self.count, self.n_grams = {}, {}, {}, {}, {}, {}
        for k in range(1, n + 1):
            start = position[position + k <= ends]  # the k-grams that fit in their caption
            at = np.full(len(self.ids), -1, dtype=np.int64)
            if k == 1:
                at[start], n_grams = self.ids[start], self.n_words
            else:
                key = self.at[k - 1][start] * self.n_words + self.ids[start + k - 1]
                self.keys[k], at[start] = np.unique(key, return_inverse=True)
                n_grams = len(self.keys[k])
            size = max(n_grams, 1)
            pairs, counts = np.unique(owner[start] * size + at[start], return_counts=True)
            self.caption[k], self.gram[k], self.count[k] = pairs // size, pairs % size, counts
            self.at[k], self.n_grams[k] = at, n_grams

    def ids_in(self, other: _Grams, k: int) -> np.ndarray:
        """For every k-gram of this table, its id in ``other`` (-1 if ``other`` lacks it)."""
        words = np.array([other.vocab.get(w, -1) for w in self.vocab], dtype=np.int64)
        at = words[self.ids]  # per token: the 1-gram id in other
        for j in range(2, k + 1):  # extend to j-grams, one word at a time
            fits = np.flatnonzero(self.at[j] >= 0)
            prefix, last = at[fits], words[self.ids[fits + j - 1]]
            at = np.full(len(self.ids), -1, dtype=np.int64)
            if len(other.keys[j]) == 0:
                continue  # other has no j-grams at all
            key = prefix * other.n_words + last
            where = np.minimum(np.searchsorted(other.keys[j], key), len(other.keys[j]) - 1)
            found = (prefix >= 0) & (last >= 0) & (other.keys[j][where] == key)
            at[fits] = np.where(found, where, -1)
        out = np.full(self.n_grams[k], -1, dtype=np.int64)
        fits = self.at[k] >= 0
        out[self.at[k][fits]] = at[fits]
        return out


def _bleu_fast(
    grams: _Grams, n_images: int, ref_image: np.ndarray, n: int
) -> tuple[list[float], list[list[float]]]:
    """BLEU from a _Grams table holding the candidates (captions 0..N-1, in image order) and
    then all references (their images in ref_image)."""
    cand_len = grams.lengths[:n_images]
    ref_len = grams.lengths[n_images:]
    # closest reference length, ties to the shorter: the smallest (|len - c|, len) per image
    key = np.abs(ref_len - cand_len[ref_image]) * (ref_len.max() + 1) + ref_len
    starts = np.flatnonzero(np.r_[True, ref_image[1:] != ref_image[:-1]])  # refs are grouped by image
    closest = np.minimum.reduceat(key, starts) % (ref_len.max() + 1)

    correct = np.zeros((n, n_images))
    for k in range(1, n + 1):
        caption, gram, count = grams.caption[k], grams.gram[k], grams.count[k]
        size = max(grams.n_grams[k], 1)
        is_ref = caption >= n_images
        # the max count of each k-gram over one image's references: sort the (image, gram)
        # keys of all references, then take the max of each run of equal keys
        if is_ref.all() or not is_ref.any():
            continue  # no k-grams on one side: nothing matches
        ref_key = ref_image[caption[is_ref] - n_images] * size + gram[is_ref]
        order = np.argsort(ref_key, kind="stable")
        ref_key, ref_count = ref_key[order], count[is_ref][order]
        run = np.flatnonzero(np.r_[True, ref_key[1:] != ref_key[:-1]])
        max_key, max_count = ref_key[run], np.maximum.reduceat(ref_count, run)
        # each candidate k-gram is matched at most max_count times (clipping)
        cand_key = caption[~is_ref] * size + gram[~is_ref]
        where = np.minimum(np.searchsorted(max_key, cand_key), len(max_key) - 1)
        found = max_key[where] == cand_key
        clipped = np.where(found, np.minimum(count[~is_ref], max_count[where]), 0)
        correct[k - 1] = np.bincount(caption[~is_ref], weights=clipped, minlength=n_images)
    guess = np.maximum(cand_len[None, :] - np.arange(n)[:, None], 0)  # c - k + 1 k-grams

    # the same formula as _bleu_from_stats, on all images at once
    per_image = np.empty((n, n_images))
    product = np.ones(n_images)
    for k in range(n):
        product = product * ((correct[k] + _TINY) / (guess[k] + _SMALL))
        per_image[k] = product ** (1 / (k + 1))
    ratio = (cand_len + _TINY) / (closest + _SMALL)
    short = ratio < 1
    per_image[:, short] *= np.exp(1 - 1 / ratio[short])
    corpus = _bleu_from_stats(
        int(cand_len.sum()), int(closest.sum()),
        [int(x) for x in correct.sum(axis=1)], [int(x) for x in guess.sum(axis=1)],
    )
    return corpus, per_image.tolist()


def _ref_images(gts: Mapping, ids: list) -> np.ndarray:
    """The image index (0..N-1, in ids order) of every reference, references in order."""
    return np.repeat(np.arange(len(ids)), [len(gts[i]) for i in ids])


def _table(gts: Mapping, res: Mapping, ids: list, n: int) -> _Grams:
    """One _Grams table: the N candidates first, then all references image by image."""
    return _Grams([res[i] for i in ids] + [ref for i in ids for ref in gts[i]], n)


def bleu(gts: Mapping, res: Mapping, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n and per-image BLEU-1..n, as pycocoevalcap's ``Bleu(n)``.

    The same numbers as :func:`bleu_loop` (read that one to see the definition), computed with
    numpy over all images at once. ``per_image[k][i]`` is BLEU-(k+1) of the i-th image.

    >>> corpus, per_image = bleu({0: ["a cat sat on the mat"]}, {0: "a cat"})
    >>> round(corpus[0], 6) == round(math.exp(1 - 6 / 2), 6)  # perfect precision, short
    True
    """
    ids = _check_inputs(gts, res)
    _check_n(n)
    return _bleu_fast(_table(gts, res, ids, n), len(ids), _ref_images(gts, ids), n)


def _lcs_bits(masks: dict, n_cand: int, ref: Sequence[str]) -> int:
    """LCS length of a candidate (given as word -> bitmask of its positions) and a reference.

    The bit-parallel LCS of Allison and Dix (1986), in the form of Hyyrö (2004). Think of the
    dynamic programme's column for the reference words read so far: LCS(candidate[:i+1], ref so
    far) grows by 0 or 1 from i to i+1, and bit i of V is 0 exactly where it grows, so the LCS is
    the number of 0 bits. Reading one more reference word updates the whole column with one
    addition, whose carries do the work of the inner loop; Python ints serve as bit vectors of
    any length.
    """
    full = (1 << n_cand) - 1
    v = full
    for word in ref:
        u = v & masks.get(word, 0)
        v = ((v + u) | (v - u)) & full
    return n_cand - v.bit_count()


def rouge_l(gts: Mapping, res: Mapping, beta: float = 1.2) -> tuple[float, list[float]]:
    """Mean and per-image ROUGE-L F-scores, as pycocoevalcap's ``Rouge()``.

    The same numbers as :func:`rouge_l_loop`, with the LCS computed bit-parallel.

    >>> rouge_l({0: ["a b c d"]}, {0: "a b c d"})[0]
    1.0
    """
    ids = _check_inputs(gts, res)
    scores = []
    for image_id in ids:
        cand = res[image_id].split(" ")  # single spaces, as pycocoevalcap (see rouge_l_loop)
        masks: dict[str, int] = {}
        for position, word in enumerate(cand):
            masks[word] = masks.get(word, 0) | (1 << position)
        precision = recall = 0.0
        for ref in gts[image_id]:
            ref_words = ref.split(" ")
            lcs = _lcs_bits(masks, len(cand), ref_words)
            precision = max(precision, lcs / len(cand))
            recall = max(recall, lcs / len(ref_words))
        scores.append(_rouge_f(precision, recall, beta))
    return float(np.mean(scores)), scores


def _sum_by(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Sum of weights per index value 0..size-1, as floats (also when there is nothing)."""
    return np.bincount(index, weights=weights, minlength=size).astype(float, copy=False)


def _cider_fast(grams: _Grams, n_images: int, ref_image: np.ndarray, log_docs: float,
                doc_freq: dict[int, np.ndarray], n: int, sigma: float) -> np.ndarray:
    """Per-image CIDEr-D from a _Grams table (candidates, then references) and the document
    frequency of every gram of the table (doc_freq[k][gram])."""
    cand_len = grams.lengths[:n_images]
    ref_len = grams.lengths[n_images:]
    n_refs = len(ref_len)
    # pycocoevalcap's lengths are bigram counts, c - 1 (see _cider_loop)
    delta = np.maximum(cand_len - 1, 0)[ref_image] - np.maximum(ref_len - 1, 0)
    penalty = np.exp(-(delta.astype(float) ** 2) / (2 * sigma**2))
    total = np.zeros(n_refs)
    for k in range(1, n + 1):
        caption, gram, count = grams.caption[k], grams.gram[k], grams.count[k]
        size = max(grams.n_grams[k], 1)
        weight = count * (log_docs - np.log(np.maximum(1.0, doc_freq[k][gram])))  # tf * idf
        norm = np.sqrt(_sum_by(caption, weight**2, n_images + n_refs))
        is_ref = caption >= n_images
        cand_key = caption[~is_ref] * size + gram[~is_ref]  # sorted: the table is
        cand_weight = weight[~is_ref]
        ref_caption = caption[is_ref] - n_images
        ref_key = ref_image[ref_caption] * size + gram[is_ref]
        ref_weight = weight[is_ref]
        if len(cand_key):
            where = np.minimum(np.searchsorted(cand_key, ref_key), len(cand_key) - 1)
            matched = np.where(cand_key[where] == ref_key, cand_weight[where], 0.0)
        else:
            matched = np.zeros(len(ref_key))
        # clipped dot product: min(candidate weight, reference weight) * reference weight
        dot = _sum_by(ref_caption, np.minimum(matched, ref_weight) * ref_weight, n_refs)
        norms = norm[:n_images][ref_image] * norm[n_images:]
        dot = np.divide(dot, norms, out=dot, where=norms != 0)
        total += dot * penalty
    per_image = _sum_by(ref_image, total, n_images)
    return 10.0 * per_image / n / np.bincount(ref_image, minlength=n_images)


def _distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, sorted (np.unique without its hashing path,
    which is slower for these arrays)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


def _own_doc_freq(grams: _Grams, n_images: int, ref_image: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """Document frequency of each gram of the table over the images of its own references."""
    doc_freq = {}
    for k in range(1, n + 1):
        caption, gram = grams.caption[k], grams.gram[k]
        is_ref = caption >= n_images
        pairs = _distinct(ref_image[caption[is_ref] - n_images] * max(grams.n_grams[k], 1) + gram[is_ref])
        doc_freq[k] = np.bincount(pairs % max(grams.n_grams[k], 1), minlength=grams.n_grams[k]).astype(float)
    return doc_freq


def cider_d(gts: Mapping, res: Mapping, n: int = 4, sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """Mean and per-image CIDEr-D, as pycocoevalcap's ``Cider()`` (which is CIDEr-D).

    The same numbers as :func:`cider_d_loop` (read that one for the definition), computed
    with numpy over all images at once. The document frequencies come from ``gts`` itself;
    :class:`CiderD` fixes them from another corpus instead.

    >>> gts = {0: ["a cat"], 1: ["a dog"]}
    >>> mean, per_image = cider_d(gts, {0: "a cat", 1: "a bird"}, n=2)
    >>> per_image.tolist()  # "a" is in every image's references, so only "cat" counts
    [10.0, 0.0]
    """
    ids = _check_inputs(gts, res)
    _check_n(n)
    _check_sigma(sigma)
    grams = _table(gts, res, ids, n)
    ref_image = _ref_images(gts, ids)
    doc_freq = _own_doc_freq(grams, len(ids), ref_image, n)
    scores = _cider_fast(grams, len(ids), ref_image, math.log(len(ids)), doc_freq, n, sigma)
    return float(np.mean(scores)), scores


class CiderD:
    """CIDEr-D with document frequencies fixed from a reference corpus.

    pycocoevalcap computes the IDF from the references of the images being scored, so an
    image's score depends on which other images are in the batch. Self-critical sequence
    training (Rennie et al., 2017) and most captioning code instead fix the document
    frequencies once, from the training set's references, and score any batch against them.

    ``corpus_refs`` holds one entry per image (a document): that image's reference captions,
    as a ``{image_id: [captions]}`` dict or a list of caption lists, tokenized like the
    captions to score. ``CiderD(gts).per_image(gts, res)`` equals ``cider_d(gts, res)[1]``.

    >>> scorer = CiderD({0: ["a cat"], 1: ["a dog"], 2: ["a bird"]})
    >>> scorer.per_image({0: ["a cat"]}, {0: "a cat"}).round(4).tolist()  # idf from all three images
    [5.0]
    """

    def __init__(self, corpus_refs: Mapping[Hashable, Sequence[str]] | Sequence[Sequence[str]],
                 n: int = 4, sigma: float = 6.0):
        _check_n(n)
        _check_sigma(sigma)
        docs = list(corpus_refs.values()) if isinstance(corpus_refs, Mapping) else list(corpus_refs)
        if not docs:
            raise ValueError("corpus_refs is empty: CiderD needs at least one image's references")
        for i, refs in enumerate(docs):
            if isinstance(refs, str) or not isinstance(refs, Sequence):
                raise TypeError(f"corpus_refs entry {i} must be a list of captions, got {type(refs).__name__}")
        self.n, self.sigma, self.n_docs = n, sigma, len(docs)
        self._grams = _Grams([ref for refs in docs for ref in refs], n)
        ref_doc = np.repeat(np.arange(len(docs)), [len(refs) for refs in docs])
        self._doc_freq = {}  # k -> document frequency of each k-gram id of the corpus table
        for k in range(1, n + 1):
            size = max(self._grams.n_grams[k], 1)
            docs_with = _distinct(ref_doc[self._grams.caption[k]] * size + self._grams.gram[k])
            self._doc_freq[k] = np.bincount(docs_with % size, minlength=self._grams.n_grams[k])

    def doc_freq(self, gram: Sequence[str]) -> int:
        """In how many corpus images' references the n-gram (a sequence of words) occurs.

        >>> CiderD([["a cat", "a cat sat"], ["a dog"]]).doc_freq(["a"])
        2
        """
        if not 1 <= len(gram) <= self.n:
            return 0
        query = _Grams([" ".join(gram)], len(gram))
        found = query.ids_in(self._grams, len(gram))
        return int(self._doc_freq[len(gram)][found[0]]) if found[0] >= 0 else 0

    def per_image(self, gts: Mapping, res: Mapping) -> np.ndarray:
        """CIDEr-D of every image of ``gts``/``res`` (same convention as :func:`cider_d`)."""
        ids = _check_inputs(gts, res)
        grams = _table(gts, res, ids, self.n)
        doc_freq = {}
        for k in range(1, self.n + 1):
            in_corpus = grams.ids_in(self._grams, k)
            doc_freq[k] = np.where(in_corpus >= 0, self._doc_freq[k][in_corpus], 0).astype(float)
        return _cider_fast(grams, len(ids), _ref_images(gts, ids), math.log(self.n_docs), doc_freq,
                           self.n, self.sigma)

    def __call__(self, gts: Mapping, res: Mapping) -> tuple[float, np.ndarray]:
        """Mean and per-image CIDEr-D, like :func:`cider_d`."""
        scores = self.per_image(gts, res)
        return float(np.mean(scores)), scores


# -----------------------------------------------------------------------------
# everything at once


def score_captions(gts: Mapping, res: Mapping) -> dict[str, float]:
    """Corpus scores under pycocoevalcap's key names: Bleu_1..Bleu_4, ROUGE_L, CIDEr.

    Captions must be tokenized already (see the module docstring).

    >>> score_captions({0: ["a cat"], 1: ["a dog"]}, {0: "a cat", 1: "a dog"})["ROUGE_L"]
    1.0
    """
    return {name: corpus for name, (corpus, _) in _score_all(gts, res).items()}


def _score_all(gts: Mapping, res: Mapping) -> dict[str, tuple]:
    """{metric: (corpus score, per-image scores)} for BLEU-1..4, ROUGE-L and CIDEr-D, sharing
    one n-gram table between BLEU and CIDEr-D."""
    ids = _check_inputs(gts, res)
    grams = _table(gts, res, ids, 4)
    ref_image = _ref_images(gts, ids)
    corpus, per_image = _bleu_fast(grams, len(ids), ref_image, 4)
    out = {f"Bleu_{k + 1}": (corpus[k], per_image[k]) for k in range(4)}
    out["ROUGE_L"] = rouge_l(gts, res)
    doc_freq = _own_doc_freq(grams, len(ids), ref_image, 4)
    cider = _cider_fast(grams, len(ids), ref_image, math.log(len(ids)), doc_freq, 4, 6.0)
    out["CIDEr"] = (float(np.mean(cider)), cider)
    return out
