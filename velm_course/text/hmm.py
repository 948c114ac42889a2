"""A small hidden Markov model: the forward algorithm and Viterbi decoding.

An HMM has hidden states z_1 ... z_T that follow a Markov chain and observations
x_1 ... x_T that each depend only on the current state:

    P(x, z) = pi[z_1] B[z_1, x_1] * prod_{t>1} A[z_{t-1}, z_t] B[z_t, x_t]

with start probabilities pi (S,), transitions A (S, S) (row = from, column = to) and
emissions B (S, K). Summing P(x, z) over all S^T state paths is exponential, but the
forward algorithm shares work: alpha_t[j] = P(x_1..x_t, z_t = j) obeys

    alpha_1 = pi * B[:, x_1],   alpha_t[j] = (sum_i alpha_{t-1}[i] A[i, j]) B[j, x_t],

so P(x) = sum_j alpha_T[j] costs O(T S^2). Viterbi is the same recursion with the sum
replaced by a max (plus back-pointers to recover the argmax path). We work in log space:
products of many probabilities underflow float64 after a few hundred steps, logs do not.

Shape letters: S hidden states, K observation symbols, T time steps.

>>> hmm = ice_cream_hmm()
>>> path, logp = viterbi(hmm, ["3", "1", "3"])
>>> path  # 0.8*0.4 * 0.4*0.5 * 0.5*0.4 = 0.0128 beats HOT HOT HOT (0.0092)
['HOT', 'COLD', 'HOT']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class HMM:
    start: np.ndarray  # (S,) P(z_1 = i)
    trans: np.ndarray  # (S, S) P(z_t = j | z_{t-1} = i) at [i, j]; rows sum to 1
    emit: np.ndarray  # (S, K) P(x_t = o | z_t = i) at [i, o]; rows sum to 1
    states: list[str]  # names of the S hidden states
    observations: list[str]  # names of the K observation symbols

    def __post_init__(self):
        self.start = np.asarray(self.start, dtype=np.float64)
        self.trans = np.asarray(self.trans, dtype=np.float64)
        self.emit = np.asarray(self.emit, dtype=np.float64)
        S, K = len(self.states), len(self.observations)
        for name, arr, shape in [("start", self.start, (S,)), ("trans", self.trans, (S, S)),
                                 ("emit", self.emit, (S, K))]:
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape} "
                                 f"for {S} states and {K} observation symbols")
            if (arr < 0).any() or not np.allclose(arr.sum(axis=-1), 1.0):
                raise ValueError(f"{name} must hold probabilities that sum to 1 (per row)")

    def encode(self, observations: Sequence) -> np.ndarray:
        """(T,) observation indices, from names or from indices."""
        if len(observations) == 0:
            raise ValueError("need at least one observation")
        index = {o: i for i, o in enumerate(self.observations)}
        out = []
        for o in observations:
            if isinstance(o, str):
                if o not in index:
                    raise ValueError(f"unknown observation {o!r}; known: {self.observations}")
                out.append(index[o])
            elif isinstance(o, (int, np.integer)) and 0 <= o < len(self.observations):
                out.append(int(o))
            else:
                raise ValueError(f"observation {o!r} is neither a name nor an index < "
                                 f"{len(self.observations)}")
        return np.array(out, dtype=np.int64)


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # log(0) = -inf: an impossible step stays impossible
        return np.log(p)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(a))) without overflow; -inf when every term is -inf."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # all -inf: shift by 0 and let log(0) give -inf
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def forward_trellis(hmm: HMM, observations: Sequence) -> np.ndarray:
    """(T, S) log alpha: log P(x_1..x_t, z_t = j) at [t, j].

    >>> np.exp(forward_trellis(ice_cream_hmm(), ["3"]))[0]  # pi * B[:, "3"]
    array([0.32, 0.02])
    """
    x = hmm.encode(observations)
    log_a, log_b = _log(hmm.trans), _log(hmm.emit)
    alpha = np.empty((len(x), len(hmm.states)))
    alpha[0] = _log(hmm.start) + log_b[:, x[0]]
    for t in range(1, len(x)):
        # alpha[t-1][:, None] + log_a is (S, S): from state i (rows) to state j (columns)
        alpha[t] = _logsumexp(alpha[t - 1][:, None] + log_a, axis=0) + log_b[:, x[t]]
    return alpha


def forward(hmm: HMM, observations: Sequence) -> float:
    """log P(observations), summed over every hidden state path.

    >>> round(float(np.exp(forward(ice_cream_hmm(), ["3"]))), 4)  # 0.8 * 0.4 + 0.2 * 0.1
    0.34
    """
    return float(_logsumexp(forward_trellis(hmm, observations)[-1], axis=0))


def viterbi(hmm: HMM, observations: Sequence) -> tuple[list[str], float]:
    """The most probable state path and its log joint probability log P(x, path).

    Ties go to the lower state index. An impossible sequence (probability 0) still
    returns a path, with log probability -inf.
    """
    x = hmm.encode(observations)
    log_a, log_b = _log(hmm.trans), _log(hmm.emit)
    T, S = len(x), len(hmm.states)
    delta = _log(hmm.start) + log_b[:, x[0]]  # (S,) best log prob of a path ending in each state
    back = np.zeros((T, S), dtype=np.int64)  # back[t, j]: best previous state for j at step t
    for t in range(1, T):
        scores = delta[:, None] + log_a  # (S, S): previous state i (rows) -> state j (columns)
        back[t] = np.argmax(scores, axis=0)
        delta = scores[back[t], np.arange(S)] + log_b[:, x[t]]
    best = [int(np.argmax(delta))]
    for t in range(T - 1, 0, -1):  # follow the back-pointers from the end
        best.append(int(back[t, best[-1]]))
    best.reverse()
    return [hmm.states[i] for i in best], float(delta[best[-1]])


def ice_cream_hmm() -> HMM:
    """Jason Eisner's ice-cream task: hidden weather (HOT/COLD) explains how many ice
    creams (1, 2 or 3) were eaten each day. Hot days favour 3, cold days favour 1, and the
    weather tends to persist. The numbers are the ones used in Jurafsky & Martin's HMM
    chapter.

    >>> ice_cream_hmm().states
    ['HOT', 'COLD']
    """
    return HMM(
        start=[0.8, 0.2],
        trans=[[0.6, 0.4],  # from HOT
               [0.5, 0.5]],  # from COLD
        emit=[[0.2, 0.4, 0.4],  # HOT eats 1, 2, 3
              [0.5, 0.4, 0.1]],  # COLD eats 1, 2, 3
        states=["HOT", "COLD"],
        observations=["1", "2", "3"],
    )
