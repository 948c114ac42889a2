"""The VQA cell of the experiment grid (from scratch vs pretrain -> fine-tune, pretraining's loss
weights) on a tiny shapes dataset, and the grid's comparison helpers, by hand."""

import pytest
import torch

from velm_course.data.shapes import shapes_split
from velm_course.experiments.grid import failed, paired_gap, run_grid, summarize
from velm_course.experiments.vqa import (
    STRATEGY_GRID,
    VQA_METRICS,
    VQASetup,
    cell_recipe,
    history_seconds,
    retrieval_scores,
    vqa_task,
)
from velm_course.multimodal.vqa_recipe import VQARecipe

RECIPE = VQARecipe(d_model=16, n_head=2, pretrain_steps=4, pretrain_batch_size=8)


@pytest.fixture(scope="module")
def setup(tiny_vqa_data):  # conftest.py: 40 training images, a random frozen CNN
    root, data = tiny_vqa_data
    by_id = shapes_split(root, "val").captions_by_id()
    val_captions = torch.stack([data.vocab.encode_batch(by_id[i], data.max_words) for i in data.image_ids["val"]])
    return VQASetup(data, RECIPE, "encoder-for-tests.pt", val_captions, steps=6, share=0.5, batch_size=8)


def test_cell_recipe_rejects_what_means_nothing():
    assert cell_recipe(RECIPE, {"pretrain": False}, seed=3) is None
    r = cell_recipe(RECIPE, {"pretrain": True, "alpha": 0.0, "gamma": 2.0}, seed=3)
    assert (r.alpha, r.beta, r.gamma, r.seed) == (0.0, RECIPE.beta, 2.0, 3)  # unset weights keep the recipe's
    for bad in ({"pretrain": True, "alpha": 0, "beta": 0, "gamma": 0}, {"alpha": 1.0},
                {"pretrain": True, "lr": 1.0}):
        with pytest.raises(ValueError):
            cell_recipe(RECIPE, bad, seed=0)


def test_history_seconds_by_hand():
    rows = [{"step": 50, "images_per_s": 800.0}, {"step": 120, "images_per_s": 700.0}]
    assert history_seconds(rows, 32, "images") == pytest.approx(50 * 32 / 800 + 70 * 32 / 700)


def test_retrieval_scores_brute_force(setup):
    from velm_course.multimodal.pretrainer import Pretrainer
    from velm_course.multimodal.vqa_recipe import _pretrainer_config

    torch.manual_seed(1)
    model = Pretrainer(_pretrainer_config(setup.data, RECIPE, 36)).eval()
    grid, pooled = setup.data.features["val"]
    got = retrieval_scores(model, grid, pooled, setup.val_captions)
    n, k = setup.val_captions.shape[:2]
    with torch.no_grad():
        img = torch.stack([model.embed_images(grid[i:i + 1], pooled[i:i + 1])[0] for i in range(n)])
        txt = torch.stack([model.embed_texts(c[None])[0] for c in setup.val_captions.flatten(0, 1)])
    sim = img @ txt.T
    # image -> text: right when the best caption belongs to the image (the embeddings are continuous: no ties)
    i2t = sum(int(sim[i].argmax()) // k == i for i in range(n)) / n
    t2i = sum(int(sim[:, j].argmax()) == j // k for j in range(n * k)) / (n * k)
    assert got["i2t_R@1"] == pytest.approx(i2t) and got["t2i_R@1"] == pytest.approx(t2i)


def test_vqa_grid_trains_every_cell_and_reports_invalid_ones(setup, tmp_path):
    cells = {name: STRATEGY_GRID[name] for name in ("from scratch", "captioning only (a=1, b=0, g=0)",
                                                   "course recipe (a=1, b=0, g=1)")}
    cells["nothing to pretrain on"] = {"pretrain": True, "alpha": 0.0, "beta": 0.0, "gamma": 0.0}
    rows = run_grid(cells, (0, 1), vqa_task(setup, tmp_path / "pretrained"), tmp_path / "grid",
                    signature=setup.signature(), progress=False)
    assert set(failed(rows)) == {"nothing to pretrain on"}
    ok = [r for r in rows if "metrics" in r]
    assert len(ok) == 6
    for r in ok:
        m = r["metrics"]
        assert {"val", "test", "compositional"} <= set(m) and 0 <= m["val"]["accuracy"] <= 1
        assert [h["step"] for h in m["val_curve"]] == [1, 2, 3, 4, 5, 6]
        assert ("retrieval" in m) == (r["cell"] != "from scratch")
        assert m["train_seconds"] >= m["finetune_seconds"] > 0
    # one pretrainer per (recipe, seed), each trained and cached: two cells x two seeds
    assert len(list((tmp_path / "pretrained").glob("vqa_pretrainer-*.pt"))) == 4
    # every pretraining is its own run: four distinct final pretraining losses
    pretrain_losses = {(r["cell"], r["seed"]): r["metrics"]["pretrain_final_loss"] for r in ok
                       if "retrieval" in r["metrics"]}
    assert len(pretrain_losses) == 4 and len(set(pretrain_losses.values())) == 4
    summary = summarize(rows, VQA_METRICS)
    assert "retrieval.i2t_R@1" not in summary["from scratch"]
    assert summary["course recipe (a=1, b=0, g=1)"]["retrieval.i2t_R@1"]["n"] == 2
    # a second call reads every result back instead of training again
    again = run_grid(cells, (0, 1), vqa_task(setup, tmp_path / "pretrained"), tmp_path / "grid",
                     signature=setup.signature(), progress=False)
    assert [r.get("metrics") for r in again] == [r.get("metrics") for r in rows]


def test_summarize_refuses_a_metric_only_some_seeds_have():
    rows = [{"cell": "a", "seed": 0, "metrics": {"x": 1.0, "y": 2.0}}, {"cell": "a", "seed": 1, "metrics": {"x": 3.0}}]
    assert summarize(rows, ["x"])["a"]["x"]["mean"] == 2.0
    with pytest.raises(KeyError, match="missing from some seeds"):
        summarize(rows, ["y"])


def test_paired_gap_by_hand():
    rows = [{"cell": c, "seed": s, "metrics": {"m": v}}
            for c, vals in {"a": (1.0, 2.0, 3.0), "b": (1.5, 1.0, 2.0), "c": (0.0, 0.0, 0.0)}.items()
            for s, v in enumerate(vals)]
    gap = paired_gap(rows, "m", "a", "b")
    assert gap["differences"] == [-0.5, 1.0, 1.0] and gap["mean"] == pytest.approx(0.5)
    assert gap["verdict"] == "within noise"  # b wins seed 0
    assert paired_gap(rows, "m", "c", "a")["verdict"] == "a"
    with pytest.raises(ValueError):
        paired_gap(rows, "m", "a", "nowhere")


def test_paired_gap_for_a_loss_names_the_lower_cell():
    rows = [{"cell": c, "seed": s, "metrics": {"loss": v}}
            for c, vals in {"a": (0.5, 0.6), "b": (0.7, 0.8)}.items() for s, v in enumerate(vals)]
    assert paired_gap(rows, "loss", "a", "b", higher_is_better=False)["verdict"] == "a"
    assert paired_gap(rows, "loss", "a", "b")["verdict"] == "b"
