"""Caption metrics as the COCO caption evaluation reports them: BLEU-1..4, ROUGE-L and CIDEr-D.

Each scorer reproduces `pycocoevalcap` (the reference Python code of the COCO caption
evaluation) exactly, quirks included, so numbers from the course can be compared with
numbers in papers. The quirks are explained in comments where they happen.

Input convention, the same for every scorer:

- ``gts``: ``{image_id: [reference caption, ...]}``, at least one reference per image;
- ``res``: ``{image_id: candidate caption}``, one plain string per image. pycocoevalcap
  wants a one-element list here; we take the string itself;
- captions are already lower-cased and tokenised, with words separated by single spaces.
  Call :func:`tokenize_caption` on raw text first; the scorers never tokenise.

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

import math
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

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


def _check_inputs(gts: Mapping, res: Mapping) -> list[Hashable]:
    """Validate the input convention and return the image ids in ``gts`` order."""
    if not isinstance(gts, Mapping) or not isinstance(res, Mapping):
        raise TypeError("gts and res must be dicts: {image_id: [references]}, {image_id: candidate}")
    if len(gts) == 0 and len(res) == 0:
        raise ValueError("empty input: gts and res hold no images")
    if set(gts) != set(res):
        only_gts = [i for i in gts if i not in res][:5]
        only_res = [i for i in res if i not in gts][:5]
        raise ValueError(
            f"gts and res must have the same image ids; only in gts: {only_gts}, only in res: {only_res}"
        )
    for image_id, refs in gts.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"gts[{image_id!r}] must be a list of reference strings, got {type(refs).__name__}")
        if len(refs) == 0:
            raise ValueError(f"image {image_id!r} has no reference captions")
        for ref in refs:
            if not isinstance(ref, str):
                raise TypeError(f"gts[{image_id!r}] holds a {type(ref).__name__}, expected str")
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


# -----------------------------------------------------------------------------
# BLEU

# pycocoevalcap's smoothing constants: `tiny` is added to every numerator and `small` to every
# denominator. A k-gram precision with no matches becomes ~1e-15 / guesses (effectively zero, and
# no log(0) anywhere); a candidate too short to have any k-grams gets 1e-15 / 1e-9 = 1e-6 instead
# of 0 / 0. The results are therefore never exactly 0 or exactly 1.
_TINY = 1e-15
_SMALL = 1e-9


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


def _bleu_from_stats(c: float, r: float, correct: list[int], guess: list[int]) -> list[float]:
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


def bleu(gts: Mapping, res: Mapping, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n and per-image BLEU-1..n, as pycocoevalcap's ``Bleu(n)``.

    The corpus score is NOT the mean of the per-image scores: matched and total k-gram counts
    and the lengths c and r are summed over all images first, and BLEU is computed once from
    the sums. ``per_image[k][i]`` is BLEU-(k+1) of the i-th image (pycocoevalcap's layout).

    >>> corpus, per_image = bleu({0: ["a cat sat on the mat"]}, {0: "a cat"})
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


def rouge_l(gts: Mapping, res: Mapping, beta: float = 1.2) -> tuple[float, list[float]]:
    """Mean and per-image ROUGE-L F-scores, as pycocoevalcap's ``Rouge()``.

    For each reference, precision = LCS / c and recall = LCS / len(reference). pycocoevalcap
    takes the max precision and the max recall over the references SEPARATELY (they may come
    from different references) and combines them as
    F = (1 + beta^2) P R / (R + beta^2 P), with beta = 1.2 weighting recall a bit more.

    >>> rouge_l({0: ["a b c d"]}, {0: "a b c d"})[0]
    1.0
    """
    ids = _check_inputs(gts, res)
    scores = []
    for image_id in ids:
        cand = res[image_id].split()
        refs = [g.split() for g in gts[image_id]]
        if not cand:  # nothing in common with anything (pycocoevalcap also gives 0 here)
            scores.append(0.0)
            continue
        lcs = [lcs_length(ref, cand) for ref in refs]
        precision = max(m / len(cand) for m in lcs)
        recall = max(m / len(ref) for m, ref in zip(lcs, refs, strict=True))
        if precision == 0 or recall == 0:
            scores.append(0.0)
        else:
            scores.append((1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    return float(np.mean(scores)), scores


# -----------------------------------------------------------------------------
# CIDEr-D


def cider_d(gts: Mapping, res: Mapping, n: int = 4, sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """Mean and per-image CIDEr-D, as pycocoevalcap's ``Cider()`` (which is CIDEr-D).

    Every caption becomes one TF-IDF vector per k-gram order k = 1..n. For each order, the
    candidate is compared with each reference by a clipped cosine similarity, multiplied by a
    Gaussian penalty on the length difference; the result is averaged over k and over the
    references and multiplied by 10.

    The IDF comes from the references of the evaluated set itself, so the score of one image
    depends on the other images (with a single image every IDF is 0 and CIDEr-D is 0).

    >>> gts = {0: ["a cat"], 1: ["a dog"]}
    >>> mean, per_image = cider_d(gts, {0: "a cat", 1: "a bird"}, n=2)
    >>> per_image.tolist()  # "a" is in every image's references, so only "cat" counts
    [10.0, 0.0]
    """
    ids = _check_inputs(gts, res)
    _check_n(n)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    ref_counts = {i: [ngram_counts(g.split(), n) for g in gts[i]] for i in ids}

    # Document frequency: in how many images' reference SETS each k-gram occurs (an image
    # counts once however many of its references contain it). Candidates do not contribute.
    doc_freq = Counter()
    for counts in ref_counts.values():
        doc_freq.update(set().union(*counts))
    log_n_images = math.log(len(ids))

    def tfidf(counts: Counter) -> list[dict]:
        """One {k-gram: tf * idf} dict per order k."""
        vec: list[dict] = [{} for _ in range(n)]
        for gram, tf in counts.items():
            # idf = log(N / df). A k-gram absent from every reference is treated as if it were
            # in one image (df = 1), so it gets the largest idf, log N.
            idf = log_n_images - math.log(max(1.0, doc_freq[gram]))
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
        for ref, counts in zip(gts[image_id], ref_counts[image_id], strict=True):
            ref_vec = tfidf(counts)
            ref_norm = norms(ref_vec)
            # Gaussian length penalty: the "D" in CIDEr-D, against gaming by length.
            # (pycocoevalcap measures length as the number of bigrams, c - 1; the difference is
            # the same except for an empty candidate, which scores 0 either way.)
            delta = len(cand_words) - len(ref.split())
            penalty = math.exp(-(delta**2) / (2 * sigma**2))
            for k in range(n):
                # Clipping: the candidate weight of a k-gram is capped at its reference weight,
                # so repeating a k-gram more often than the reference does earns nothing.
                dot = sum(min(w, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0) for g, w in cand_vec[k].items())
                if cand_norm[k] > 0 and ref_norm[k] > 0:  # else dot is 0 as well
                    dot /= cand_norm[k] * ref_norm[k]
                total += dot * penalty
        scores.append(10.0 * total / n / len(gts[image_id]))
    scores_arr = np.array(scores)
    return float(np.mean(scores_arr)), scores_arr


# -----------------------------------------------------------------------------
# everything at once


def score_captions(gts: Mapping, res: Mapping) -> dict[str, float]:
    """Corpus scores under pycocoevalcap's key names: Bleu_1..Bleu_4, ROUGE_L, CIDEr.

    >>> score_captions({0: ["a cat"], 1: ["a dog"]}, {0: "a cat", 1: "a dog"})["ROUGE_L"]
    1.0
    """
    bleus, _ = bleu(gts, res, n=4)
    scores = {f"Bleu_{k}": s for k, s in enumerate(bleus, start=1)}
    scores["ROUGE_L"] = rouge_l(gts, res)[0]
    scores["CIDEr"] = cider_d(gts, res)[0]
    return scores


# -----------------------------------------------------------------------------
# tokenisation

# Tokens that the COCO evaluation deletes after Stanford's PTB tokenizer has run (PTB turns
# brackets into -LRB- and friends and double quotes into `` and '').
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
_CLITIC = re.compile(r"(\w)(" + "|".join(_CLITICS) + r")\b")  # don't -> do n't, man's -> man 's
_BRACKETS_AND_QUOTES = re.compile(r"[()\[\]{}\"`]")
_TOKEN = re.compile(
    r"""(?:[a-z]\.){2,}          # letter abbreviations kept whole: u.s. e.g. a.m.
      | \d+(?:[.,:]\d+)+         # numbers and times keep inner punctuation: 3.50 1,000 10:30
      | n't\b | '(?:s|re|ve|ll|d|m)\b   # clitics split off above
      | [\w'-]+                  # words, with inner hyphens and apostrophes: t-shirt o'clock
      | [^\w\s]                  # any other symbol is a token of its own: $ % & . ,
    """,
    re.VERBOSE,
)


def tokenize_caption(caption: str) -> str:
    """Lower-case and tokenise a raw caption roughly like the COCO evaluation does.

    COCO runs Stanford's PTB tokenizer (Java) with lower-casing and then deletes punctuation
    tokens. This pure-Python version does the common cases the same way: clitics split off
    ("don't" -> "do n't", "man's" -> "man 's"), hyphenated words, numbers and letter
    abbreviations kept whole, brackets, quotes and . , ; : ! ? - deleted, other symbols
    ($ % &) as separate tokens. Known differences from PTB: word abbreviations lose their
    period ("mr." -> "mr"; PTB keeps "mr."), symbols inside names are split ("at&t" ->
    "at & t"), and Unicode quotes and dashes are not normalised.

    Callers apply it; the scorers expect already-tokenised text.

    >>> tokenize_caption("A man's T-shirt (red), on the U.S. flag!")
    "a man 's t-shirt red on the u.s. flag"
    """
    text = _CLITIC.sub(r"\1 \2", caption.lower())
    text = _BRACKETS_AND_QUOTES.sub(" ", text)
    tokens = []
    for token in _TOKEN.findall(text):
        if token not in _CLITICS:
            token = token.strip("'-")  # quote marks and dangling hyphens around a word
        if token and token not in PTB_PUNCTUATION:
            tokens.append(token)
    return " ".join(tokens)
