"""HMM forward and Viterbi against brute-force enumeration of every state path."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velm_course.text.hmm import (
    HMM,
    baum_welch,
    expected_counts,
    forward,
    forward_trellis,
    ice_cream_hmm,
    posteriors,
    sample,
    viterbi,
)


def joint_prob(hmm: HMM, path: list[int], obs: list[int]) -> float:
    """P(x, z) straight from the definition, as a plain product."""
    p = hmm.start[path[0]] * hmm.emit[path[0], obs[0]]
    for t in range(1, len(obs)):
        p *= hmm.trans[path[t - 1], path[t]] * hmm.emit[path[t], obs[t]]
    return p


def brute_force(hmm: HMM, obs: list[int]) -> tuple[float, float]:
    """(P(x), max_z P(x, z)) by enumerating all S^T state paths."""
    probs = [joint_prob(hmm, list(z), obs)
             for z in itertools.product(range(len(hmm.states)), repeat=len(obs))]
    return sum(probs), max(probs)


def random_hmm(rng: np.random.Generator, S: int, K: int, with_zeros: bool) -> HMM:
    def rows(n_rows, n_cols):
        m = rng.dirichlet(np.ones(n_cols), size=n_rows)
        if with_zeros:  # knock out some entries so impossible paths (log 0) are exercised
            m = m * (rng.random(m.shape) > 0.3)
            m[np.arange(n_rows), rng.integers(n_cols, size=n_rows)] += 0.1  # keep rows non-zero
            m = m / m.sum(axis=1, keepdims=True)
        return m

    return HMM(start=rows(1, S)[0], trans=rows(S, S), emit=rows(S, K),
               states=[f"s{i}" for i in range(S)], observations=[f"o{i}" for i in range(K)])


@settings(max_examples=60, deadline=None)
@given(S=st.integers(1, 3), K=st.integers(1, 3), T=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1), with_zeros=st.booleans())
def test_forward_and_viterbi_match_brute_force(S, K, T, seed, with_zeros):
    rng = np.random.default_rng(seed)
    hmm = random_hmm(rng, S, K, with_zeros)
    obs = rng.integers(K, size=T).tolist()
    total, best = brute_force(hmm, obs)

    assert math.isclose(math.exp(forward(hmm, obs)), total, rel_tol=1e-9, abs_tol=1e-300)
    # The last row of the trellis sums to P(x) too (alpha_T summed over the final state).
    assert math.isclose(np.exp(forward_trellis(hmm, obs)[-1]).sum(), total, rel_tol=1e-9)

    path, logp = viterbi(hmm, obs)
    assert len(path) == T
    assert math.isclose(math.exp(logp), best, rel_tol=1e-9, abs_tol=1e-300)
    # The returned path really has that probability (robust to ties between paths).
    z = [hmm.states.index(s) for s in path]
    assert math.isclose(joint_prob(hmm, z, obs), best, rel_tol=1e-9, abs_tol=1e-300)


def test_ice_cream_by_hand():
    hmm = ice_cream_hmm()
    # One day, 3 ice creams: P = pi_H B_H(3) + pi_C B_C(3) = 0.8*0.4 + 0.2*0.1 = 0.34.
    assert math.isclose(math.exp(forward(hmm, ["3"])), 0.34)
    # "3 1": alpha_1 = [0.32, 0.02];
    #   alpha_2[H] = (0.32*0.6 + 0.02*0.5) * 0.2 = 0.0404
    #   alpha_2[C] = (0.32*0.4 + 0.02*0.5) * 0.5 = 0.069      -> P = 0.1094
    np.testing.assert_allclose(np.exp(forward_trellis(hmm, ["3", "1"])[1]), [0.0404, 0.069])
    assert math.isclose(math.exp(forward(hmm, [2, 0])), 0.1094)  # indices work too
    # "3 1 3": H C H = 0.8*0.4 * 0.4*0.5 * 0.5*0.4 = 0.0128, better than H H H
    # = 0.8*0.4 * 0.6*0.2 * 0.6*0.4 = 0.009216 and every other path.
    path, logp = viterbi(hmm, ["3", "1", "3"])
    assert path == ["HOT", "COLD", "HOT"]
    assert math.isclose(math.exp(logp), 0.0128)
    total, best = brute_force(hmm, [2, 0, 2])
    assert math.isclose(math.exp(forward(hmm, ["3", "1", "3"])), total)
    assert math.isclose(best, 0.0128)


def test_long_sequence_does_not_underflow():
    hmm = ice_cream_hmm()
    obs = np.random.default_rng(0).integers(3, size=3000)
    # Reference: the probability-space recursion, rescaled to sum 1 at every step, with the
    # log of each scale factor added up (an independent way to avoid underflow).
    alpha, log_p = hmm.start * hmm.emit[:, obs[0]], 0.0
    for o in obs[1:]:
        log_p += math.log(alpha.sum())
        alpha = (alpha / alpha.sum()) @ hmm.trans * hmm.emit[:, o]
    log_p += math.log(alpha.sum())
    got = forward(hmm, obs)
    assert np.isfinite(got) and got < -1000  # the plain product would be 0.0 in float64
    assert math.isclose(got, log_p, rel_tol=1e-10)
    assert viterbi(hmm, obs)[1] <= got  # one path can't be likelier than all of them


def test_bad_input():
    hmm = ice_cream_hmm()
    with pytest.raises(ValueError, match="unknown observation"):
        forward(hmm, ["4"])
    with pytest.raises(ValueError, match="neither a name nor an index"):
        viterbi(hmm, [3])
    with pytest.raises(ValueError, match="at least one observation"):
        forward(hmm, [])
    with pytest.raises(ValueError, match="shape"):
        HMM(start=[1.0], trans=[[1.0]], emit=[[0.5, 0.5]], states=["a", "b"], observations=["x", "y"])
    with pytest.raises(ValueError, match="sum to 1"):
        HMM(start=[0.5, 0.5], trans=[[0.5, 0.6], [0.5, 0.5]], emit=[[1.0], [1.0]],
            states=["a", "b"], observations=["x"])


def seeded_hmm(S: int, K: int, seed: int) -> HMM:
    rng = np.random.default_rng(seed)

    def rows(n, k):
        r = rng.uniform(0.1, 1.0, size=(n, k))
        return r / r.sum(axis=1, keepdims=True)

    return HMM(rows(1, S)[0], rows(S, S), rows(S, K), [f"z{i}" for i in range(S)], [str(k) for k in range(K)])


def test_posteriors_and_expected_counts_against_every_path():
    hmm = seeded_hmm(3, 4, seed=7)
    x = [2, 0, 3, 3, 1, 0]
    S, K, T = 3, 4, len(x)
    paths = list(itertools.product(range(S), repeat=T))
    joint = np.array([joint_prob(hmm, list(p), x) for p in paths])
    post = joint / joint.sum()  # P(z | x) for every path
    gamma = np.zeros((T, S))
    start, trans, emit = np.zeros(S), np.zeros((S, S)), np.zeros((S, K))
    for p, w in zip(paths, post, strict=True):
        start[p[0]] += w
        for t in range(T):
            gamma[t, p[t]] += w
            emit[p[t], x[t]] += w
            if t:
                trans[p[t - 1], p[t]] += w
    np.testing.assert_allclose(posteriors(hmm, x), gamma, atol=1e-12)
    e_start, e_trans, e_emit, ll = expected_counts(hmm, np.array(x))
    np.testing.assert_allclose(e_start, start, atol=1e-12)
    np.testing.assert_allclose(e_trans, trans, atol=1e-12)
    np.testing.assert_allclose(e_emit, emit, atol=1e-12)
    assert ll == pytest.approx(math.log(joint.sum()), rel=1e-12)
    assert ll == pytest.approx(forward(hmm, x), rel=1e-12)  # the scaled pass agrees with the log-space one


def test_one_baum_welch_step_is_relative_frequencies_of_the_expected_counts():
    hmm = seeded_hmm(2, 3, seed=3)
    x = np.array([0, 2, 1, 1, 0, 2, 2])
    start, trans, emit, _ = expected_counts(hmm, x)
    model, lls = baum_welch(x, 2, hmm.observations, n_iter=1, init=hmm, tol=0.0)
    np.testing.assert_allclose(model.start, start / start.sum())
    np.testing.assert_allclose(model.trans, trans / trans.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(model.emit, emit / emit.sum(axis=1, keepdims=True))
    assert lls == [pytest.approx(forward(hmm, x))]  # log P(x) under the starting model


def test_baum_welch_recovers_a_planted_model():
    planted = HMM(start=[0.5, 0.5], trans=[[0.9, 0.1], [0.2, 0.8]],
                  emit=[[0.7, 0.2, 0.1], [0.05, 0.25, 0.7]], states=["a", "b"], observations=["x", "y", "z"])
    _, x = sample(planted, 4000, seed=0)
    # EM finds local optima: from some starts it stalls near a mixture that ignores time, so keep
    # the best of a few restarts, as one does in practice
    model, lls = baum_welch(x, 2, planted.observations, n_iter=150, seed=1, tol=1e-9, restarts=4)
    assert all(b >= a - 1e-6 for a, b in zip(lls, lls[1:], strict=False))  # EM never goes down
    order = [0, 1] if model.emit[0, 0] > model.emit[1, 0] else [1, 0]  # states are found in any order
    np.testing.assert_allclose(model.emit[order], planted.emit, atol=0.04)
    np.testing.assert_allclose(model.trans[np.ix_(order, order)], planted.trans, atol=0.04)
    # and it explains the data about as well as the truth does
    assert lls[-1] >= forward(planted, x) - 5.0


def test_sample_and_baum_welch_errors():
    hmm = ice_cream_hmm()
    states, obs = sample(hmm, 3000, seed=2)
    assert set(states.tolist()) == {0, 1} and set(obs.tolist()) == {0, 1, 2}
    assert abs((states == 0).mean() - 5 / 9) < 0.03  # the chain's stationary share of HOT
    with pytest.raises(ValueError):
        sample(hmm, 0)
    with pytest.raises(ValueError):
        baum_welch([0, 1], 0, ["a", "b"])
    with pytest.raises(ValueError):
        baum_welch([0, 1], 2, ["a", "b"], restarts=0)
    impossible = HMM(start=[1.0], trans=[[1.0]], emit=[[1.0, 0.0]], states=["s"], observations=["a", "b"])
    with pytest.raises(ValueError, match="impossible"):
        posteriors(impossible, ["b"])
