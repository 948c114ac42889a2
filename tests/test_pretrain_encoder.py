"""The pretrained shapes encoder: labels, loss, the shipped weights, and training on fresh data."""

import pytest
import torch

from velm_course.data.shapes import ShapesConfig
from velm_course.profiles import get_profile
from velm_course.vision import pretrain
from velm_course.vision.pretrain import (
    CELL_FIELDS,
    CellAttributeHead,
    PretrainConfig,
    cell_accuracy,
    cell_attribute_loss,
    cell_labels,
    load_pretrained,
    pretrained_shapes_encoder,
)


def test_cell_labels_put_each_object_in_its_cell():
    objects = [{"cell": [0, 0], "color": "red", "shape": "circle", "size": "small"},
               {"cell": [2, 1], "color": "orange", "shape": "cross", "size": "large"}]
    y = cell_labels(objects)
    assert y.shape == (9, 3)
    assert y[0].tolist() == [1, 1, 1]  # red, circle, small: first of each list, 0 is "empty"
    assert y[7].tolist() == [6, 6, 3]
    assert int((y.sum(1) == 0).sum()) == 7


def test_loss_is_the_sum_of_three_cross_entropies_per_cell():
    torch.manual_seed(0)
    logits = torch.randn(2, 9, sum(n for _, n in CELL_FIELDS))
    labels = torch.stack([torch.randint(0, n, (2, 9)) for _, n in CELL_FIELDS], dim=-1)
    expected, start = 0.0, 0
    for b in range(2):
        for c in range(9):
            start = 0
            for k, (_, n) in enumerate(CELL_FIELDS):
                expected -= torch.log_softmax(logits[b, c, start:start + n], -1)[labels[b, c, k]].item()
                start += n
    assert cell_attribute_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_head_pools_the_grid_onto_the_three_by_three_cells():
    head = CellAttributeHead(4)
    grid = torch.zeros(1, 36, 4)  # a 6x6 grid: each cell of the layout is 2x2 grid tokens
    grid[0, 0] = 4.0  # only the top-left grid token: only the top-left cell's mean moves
    with torch.no_grad():
        out = head(grid) - head.proj.bias
    assert out[0, 0].abs().sum() > 0 and out[0, 1:].abs().sum() == 0


def test_the_shipped_weights_are_the_ci_profiles_and_good():
    """The committed file is found for the ci settings without training, and its head reads the
    cells of fresh scenes drawn with the ci generator."""
    profile = get_profile("ci")
    shapes_cfg = ShapesConfig.from_profile(profile)
    name = f"shapes_cnn-{pretrain._digest(shapes_cfg.digest(), PretrainConfig(d_model=profile.notebooks.fusion_d_model))}.pt"
    path = pretrain.REPO_PRETRAINED / name
    assert path.is_file(), f"{name} missing: run python -m velm_course.vision.pretrain --profile ci"
    encoder, head = load_pretrained(path)
    import random

    from velm_course.data.shapes import render_scene, sample_scene

    rng = random.Random(123)  # scenes the encoder never saw
    scenes = [sample_scene(rng, shapes_cfg) for _ in range(48)]
    images = torch.stack([torch.from_numpy(__import__("numpy").array(render_scene(s, shapes_cfg.image_size)))
                          .permute(2, 0, 1) for s in scenes])
    labels = torch.stack([cell_labels(s) for s in scenes])
    acc = cell_accuracy(encoder, head, images, labels)
    assert acc["color"] > 0.97 and acc["shape"] > 0.95 and acc["all_cells"] > 0.8


def test_other_settings_train_and_cache_their_own(tmp_path, monkeypatch):
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path))
    shapes_cfg = ShapesConfig(image_size=48, n_train=64, n_val=8, n_test=8, seed=3)
    cfg = PretrainConfig(d_model=16, steps=30, batch_size=16, warmup=3)
    encoder, head, path = pretrained_shapes_encoder(shapes_cfg, cfg, progress=False, cache_dir=tmp_path / "cache")
    assert path.startswith(str(tmp_path / "cache"))
    from velm_course.engine.checkpoint import load_checkpoint

    history = load_checkpoint(path, required=("history",))["history"]
    assert history[-1]["loss"] < history[0]["loss"]  # it learned something in 30 steps
    again, _, again_path = pretrained_shapes_encoder(shapes_cfg, cfg, progress=False, cache_dir=tmp_path / "cache")
    assert again_path == path  # read back, not retrained
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), again.state_dict().values(),
                                                 strict=True))
