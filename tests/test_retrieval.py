"""Recall@K (velm_course.eval.retrieval) on hand-made similarity matrices: perfect, off by
one, several captions per image, ties ranked against the model, K clipped; the chance level
against brute-force enumeration of rankings and against random rankings; clear errors."""

import itertools
import math

import pytest
import torch

from velm_course.eval.retrieval import chance_recall, recall_at_k


def one_caption_each(n: int) -> torch.Tensor:
    return torch.arange(n)


def test_perfect_diagonal_scores_one_everywhere():
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(12, 12, generator=g) + 2 * torch.eye(12)  # own pair always highest
    scores = recall_at_k(sim, one_caption_each(12))
    assert scores == {f"{d}_R@{k}": 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert list(scores) == ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]


def test_correct_answer_second_misses_at_one_and_hits_at_five():
    n = 6
    sim = torch.zeros(n, n)
    i = torch.arange(n)
    sim[i, i] = 0.5
    sim[i, (i + 1) % n] = 0.9  # image i prefers caption i + 1; caption i + 1 prefers image i
    scores = recall_at_k(sim, one_caption_each(n), ks=(1, 2, 5))
    assert scores == {"i2t_R@1": 0.0, "i2t_R@2": 1.0, "i2t_R@5": 1.0,
                      "t2i_R@1": 0.0, "t2i_R@2": 1.0, "t2i_R@5": 1.0}


def test_any_of_several_captions_counts_for_image_to_text():
    n_img, per_image = 4, 5
    text_image = torch.arange(n_img).repeat_interleave(per_image)  # (N_txt,) 0,0,0,0,0,1,...
    sim = torch.zeros(n_img, n_img * per_image)
    for i in range(n_img):
        sim[i, per_image * i: per_image * (i + 1)] = -1.0  # its captions rank last...
        sim[i, per_image * i + 3] = 1.0  # ...except one (not the first), which ranks first
    scores = recall_at_k(sim, text_image, ks=(1, 5))
    assert scores["i2t_R@1"] == 1.0 and scores["i2t_R@5"] == 1.0
    # text->image: the chosen caption finds its image first; the other four see their own
    # image below the 3 others (rank 4 of 4)
    assert scores["t2i_R@1"] == pytest.approx(n_img / (n_img * per_image))
    assert scores["t2i_R@5"] == 1.0
    assert recall_at_k(sim, text_image, ks=(3,))["t2i_R@3"] == pytest.approx(0.2)


def test_ties_are_ranked_against_the_model():
    n_img, per_image = 4, 5
    text_image = torch.arange(n_img).repeat_interleave(per_image)
    constant = torch.full((n_img, n_img * per_image), 0.3)
    scores = recall_at_k(constant, text_image, ks=(1, 3, 4, 15, 16))
    # image->text: all 15 wrong captions tie with the right ones and go above them
    assert [scores[f"i2t_R@{k}"] for k in (1, 3, 4, 15, 16)] == [0, 0, 0, 0, 1]
    # text->image: the 3 wrong images go above the right one
    assert [scores[f"t2i_R@{k}"] for k in (1, 3, 4, 15, 16)] == [0, 0, 1, 1, 1]
    for k in (1, 3):  # never better than chance
        assert scores[f"i2t_R@{k}"] <= chance_recall(n_img * per_image, per_image, k)
        assert scores[f"t2i_R@{k}"] <= chance_recall(n_img, 1, k)

    # a single tie: the right caption shares the top score with one wrong caption
    sim = torch.eye(3) + 0.1 * torch.arange(3.0)[None, :]  # rows [1, .1, .2], [0, 1.1, .2], ...
    sim[0, 2] = 1.0
    scores = recall_at_k(sim, one_caption_each(3), ks=(1, 2))
    assert scores["i2t_R@1"] == pytest.approx(2 / 3) and scores["i2t_R@2"] == 1.0


def test_k_beyond_the_candidates_is_clipped():
    g = torch.Generator().manual_seed(1)
    sim = torch.rand(3, 6, generator=g)
    text_image = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = recall_at_k(sim, text_image, ks=(6, 50))
    # 50 > 6 captions and > 3 images: everything is found, as with K = N
    assert scores == {"i2t_R@6": 1.0, "i2t_R@50": 1.0, "t2i_R@6": 1.0, "t2i_R@50": 1.0}
    assert chance_recall(6, 2, 50) == chance_recall(6, 2, 6) == 1.0


def test_bad_k_is_a_clear_error():
    sim, text_image = torch.eye(3), one_caption_each(3)
    for bad in ((0,), (-1,), (1.5,), (True,), ()):
        with pytest.raises(ValueError, match="K|ks"):
            recall_at_k(sim, text_image, ks=bad)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        chance_recall(5, 1, 0)
    with pytest.raises(ValueError, match="n_positive=6 is more than n_candidates=5"):
        chance_recall(5, 6, 1)


@pytest.mark.parametrize("n,p", [(6, 1), (6, 2), (6, 5), (5, 3)])
def test_chance_recall_equals_enumeration_of_all_rankings(n, p):
    positives = set(range(p))  # which items are right does not matter under random ranking
    rankings = list(itertools.permutations(range(n)))
    for k in range(1, n + 2):
        hits = sum(bool(positives & set(r[:k])) for r in rankings)
        assert chance_recall(n, p, k) == pytest.approx(hits / len(rankings), rel=1e-12)
    # the same from the top-k sets alone: every k-subset is equally likely
    k = 2
    subsets = list(itertools.combinations(range(n), k))
    assert chance_recall(n, p, k) == pytest.approx(
        sum(bool(positives & set(s)) for s in subsets) / len(subsets), rel=1e-12)


def test_chance_recall_matches_random_rankings_and_random_similarities():
    g = torch.Generator().manual_seed(2)
    n, p, k, draws = 50, 5, 5, 4000
    ranks = torch.rand(draws, n, generator=g).argsort(dim=1)  # (draws, n) a random ranking each
    found = (ranks[:, :k] < p).any(dim=1).double().mean().item()  # items 0..p-1 are right
    expected = chance_recall(n, p, k)
    assert abs(found - expected) < 4 * math.sqrt(expected * (1 - expected) / draws)

    # recall_at_k of random scores is a random ranking: it lands near chance too
    n_img, per_image = 400, 5
    text_image = torch.arange(n_img).repeat_interleave(per_image)
    sim = torch.rand(n_img, n_img * per_image, generator=g)
    scores = recall_at_k(sim, text_image, ks=(10,))
    for key, n_queries, c in (("i2t_R@10", n_img, chance_recall(n_img * per_image, per_image, 10)),
                              ("t2i_R@10", n_img * per_image, chance_recall(n_img, 1, 10))):
        assert abs(scores[key] - c) < 4 * math.sqrt(c * (1 - c) / n_queries)


def test_bad_input_is_a_clear_error():
    sim = torch.rand(3, 4)
    text_image = torch.tensor([0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"sim must be a \(N_img, N_txt\) matrix"):
        recall_at_k(torch.rand(4), text_image)
    with pytest.raises(ValueError, match="empty batch"):
        recall_at_k(torch.rand(0, 4), text_image)
    with pytest.raises(ValueError, match="text_image has 3 entries but sim has 4 columns"):
        recall_at_k(sim, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        recall_at_k(sim, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        recall_at_k(sim, torch.tensor([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="image 1 has no caption"):
        recall_at_k(sim, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="1-D int64"):
        recall_at_k(sim, text_image.float())
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(torch.full((3, 4), math.nan), text_image)
