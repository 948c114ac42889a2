"""Count-based word vectors: co-occurrence counts, PPMI and a truncated SVD.

Words get vectors from the company they keep. Count how often each word appears near each
other word, re-weight the counts by positive pointwise mutual information (PPMI: how much
more often than chance two words meet), and compress the rows with a truncated SVD. Words
used in the same contexts end up with similar rows (``word_vectors``, ``nearest_neighbours``).

Shape letters used in comments: V the vocabulary size, d the vector dimension, k the rank
kept by the SVD.

>>> import numpy as np
>>> ppmi(np.array([[0.0, 2.0], [2.0, 0.0]])).round(3).tolist()
[[0.0, 0.693], [0.693, 0.0]]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


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
