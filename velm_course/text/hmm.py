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


# -----------------------------------------------------------------------------
# Learning an HMM from observations alone: forward-backward and Baum-Welch


def sample(hmm: HMM, length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``length`` steps from the model: (states (T,), observations (T,)) as indices.

    >>> states, obs = sample(ice_cream_hmm(), 5, seed=0)
    >>> states.shape, obs.shape
    ((5,), (5,))
    """
    if length < 1:
        raise ValueError("length must be >= 1")
    rng = np.random.default_rng(seed)
    S, K = hmm.emit.shape
    z = np.empty(length, dtype=np.int64)
    x = np.empty(length, dtype=np.int64)
    z[0] = rng.choice(S, p=hmm.start)
    for t in range(length):
        if t:
            z[t] = rng.choice(S, p=hmm.trans[z[t - 1]])
        x[t] = rng.choice(K, p=hmm.emit[z[t]])
    return z, x


def _scaled_passes(hmm: HMM, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rabiner's scaled forward and backward passes over (T,) indices.

    Each alpha_t is normalised to sum to 1 and its normaliser c_t kept: alpha_hat_t =
    P(z_t | x_1..t), and log P(x) = sum_t log c_t. The backward pass divides by the same c_t,
    so alpha_hat_t * beta_hat_t = P(z_t | x_1..T) directly. Plain probabilities (no logs) keep
    each step to a few small matrix products, which is what makes fitting a long text cheap.
    Returns (alpha_hat (T, S), beta_hat (T, S), c (T,)).
    """
    T, S = len(x), len(hmm.states)
    alpha, beta, c = np.empty((T, S)), np.empty((T, S)), np.empty(T)
    a = hmm.start * hmm.emit[:, x[0]]
    for t in range(T):
        if t:
            a = (alpha[t - 1] @ hmm.trans) * hmm.emit[:, x[t]]  # (S,)
        c[t] = a.sum()
        if c[t] == 0:
            raise ValueError(f"the observations are impossible under this model (step {t})")
        alpha[t] = a / c[t]
    beta[-1] = 1.0
    for t in range(T - 2, -1, -1):
        beta[t] = hmm.trans @ (hmm.emit[:, x[t + 1]] * beta[t + 1]) / c[t + 1]  # (S,)
    return alpha, beta, c


def posteriors(hmm: HMM, observations: Sequence) -> np.ndarray:
    """(T, S) smoothed marginals P(z_t = j | x_1..x_T): the forward-backward algorithm.

    Unlike ``forward_trellis`` (filtered: only the days so far), every day here sees the
    whole sequence.

    >>> p = posteriors(ice_cream_hmm(), ["3", "1", "3"])
    >>> bool(np.allclose(p.sum(axis=1), 1.0))
    True
    """
    alpha, beta, _ = _scaled_passes(hmm, hmm.encode(observations))
    return alpha * beta


def expected_counts(hmm: HMM, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The E-step: expected (start (S,), transition (S, S), emission (S, K)) counts of the
    hidden states given (T,) observation indices, and log P(x).

    start[i] = P(z_1 = i | x); trans[i, j] = sum_t P(z_t = i, z_{t+1} = j | x);
    emit[i, o] = sum over the steps t with x_t = o of P(z_t = i | x).
    """
    alpha, beta, c = _scaled_passes(hmm, x)
    gamma = alpha * beta  # (T, S) P(z_t | x)
    # xi_t[i, j] = alpha_hat_t[i] A[i, j] B[j, x_t+1] beta_hat_t+1[j] / c_t+1, summed over t
    weighted = hmm.emit[:, x[1:]].T * beta[1:] / c[1:, None]  # (T-1, S)
    trans = hmm.trans * (alpha[:-1].T @ weighted)  # (S, S)
    emit = np.zeros_like(hmm.emit)
    np.add.at(emit.T, x, gamma)  # row o of emit.T gathers gamma_t for every t with x_t = o
    return gamma[0], trans, emit, float(np.log(c).sum())


def baum_welch(
    observations: Sequence, n_states: int, symbols: Sequence[str], n_iter: int = 50, seed: int = 0,
    tol: float = 1e-6, init: HMM | None = None, restarts: int = 1,
) -> tuple[HMM, list[float]]:
    """Fit an HMM to one observation sequence by expectation-maximisation (Baum-Welch).

    Each iteration computes the expected counts of the hidden states under the current model
    (``expected_counts``) and sets every probability to its expected relative frequency. The
    log-likelihood never decreases (EM's guarantee); the loop stops after ``n_iter`` rounds or
    when it gains less than ``tol`` per symbol. It finds a local optimum (or stalls near a saddle
    for a long time) depending on the random start, so ``restarts`` random starts (seeds ``seed``,
    ``seed + 1``, ...) are run and the one with the highest final log-likelihood is kept; ``init``
    gives one start of your own instead. Returns the model and log P(x) before each update.

    >>> truth = ice_cream_hmm()
    >>> _, x = sample(truth, 2000, seed=1)
    >>> model, lls = baum_welch(x, 2, truth.observations, n_iter=20)
    >>> all(b >= a - 1e-9 for a, b in zip(lls, lls[1:]))  # monotone
    True
    """
    symbols = list(symbols)
    if n_states < 1 or not symbols or restarts < 1:
        raise ValueError("need at least one state, one symbol and one restart")
    states = [f"s{i}" for i in range(n_states)]

    def random_start(rng: np.random.Generator) -> HMM:
        # random rows near uniform: a symmetric start would keep the states identical forever
        def rows(n, k):
            r = rng.uniform(0.5, 1.5, size=(n, k))
            return r / r.sum(axis=1, keepdims=True)

        return HMM(rows(1, n_states)[0], rows(n_states, n_states), rows(n_states, len(symbols)), states, symbols)

    starts = [init] if init is not None else [random_start(np.random.default_rng(seed + r)) for r in range(restarts)]
    fits = [_em(model, model.encode(observations), n_iter, tol) for model in starts]
    return max(fits, key=lambda fit: fit[1][-1])


def _em(model: HMM, x: np.ndarray, n_iter: int, tol: float) -> tuple[HMM, list[float]]:
    lls: list[float] = []
    for _ in range(n_iter):
        start, trans, emit, ll = expected_counts(model, x)
        lls.append(ll)
        if len(lls) > 1 and lls[-1] - lls[-2] < tol * len(x):
            break
        # M-step: relative frequencies (a state never visited keeps its old row)
        trans_rows, emit_rows = trans.sum(axis=1, keepdims=True), emit.sum(axis=1, keepdims=True)
        model = HMM(
            start / start.sum(),
            np.where(trans_rows > 0, trans / np.where(trans_rows > 0, trans_rows, 1), model.trans),
            np.where(emit_rows > 0, emit / np.where(emit_rows > 0, emit_rows, 1), model.emit),
            model.states, model.observations,
        )
    return model, lls
