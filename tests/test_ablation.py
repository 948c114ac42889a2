"""The vision experiments' parts: plain vs residual stacks, learning curves measured without
disturbing training, zoom-and-shift augmentation checked against exact pixel operations, shifted
and zoomed-out object crops, and the seeded ablation runners."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_cnn import _randomise_batchnorm  # the ResNet tests' random BN statistics

from velm_course.data.shapes import ShapesConfig, generate_shapes
from velm_course.vision.ablation import augmentation_ablation, depth_ablation, final_scores
from velm_course.vision.resnet import BasicBlock, ConvStack, ConvStackConfig, resnet18
from velm_course.vision.roi import object_crops
from velm_course.vision.small_cnn import (
    SmallCNN,
    SmallCNNConfig,
    accuracy,
    classifier_history,
    train_classifier,
)
from velm_course.vision.transforms import random_zoom_shift, zoom_shift


def test_basic_block_with_and_without_the_skip():
    torch.manual_seed(0)
    block = BasicBlock(8, 8).eval()
    _randomise_batchnorm(block, 0)  # no block close to the identity by accident
    plain = BasicBlock(8, 8, residual=False).eval()
    plain.load_state_dict(block.state_dict())  # the same layers, the same weights
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))  # F(x), written out
        torch.testing.assert_close(block(x), torch.relu(branch + x))
        torch.testing.assert_close(plain(x), torch.relu(branch))
    assert plain.downsample is None and BasicBlock(8, 16, residual=False).downsample is None
    # the flag must not disturb torchvision's layout: resnet18 still has its keys
    assert "layer2.0.downsample.0.weight" in resnet18().state_dict()


def test_conv_stack_layers_shapes_and_errors():
    for blocks in (0, 3):
        for residual in (False, True):
            net = ConvStack(ConvStackConfig(num_classes=5, blocks=blocks, residual=residual, width=4))
            assert net.num_layers == 2 * blocks + 2
            assert net(torch.randn(2, 3, 24, 24)).shape == (2, 5)
            n_convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
            assert n_convs + 1 == net.num_layers  # convolutions plus the linear head
    plain = ConvStack(ConvStackConfig(blocks=2, residual=False))
    residual = ConvStack(ConvStackConfig(blocks=2, residual=True))
    assert plain.state_dict().keys() == residual.state_dict().keys()  # only the additions differ
    with pytest.raises(ValueError):
        ConvStack(ConvStackConfig(width=0))


def _blobs(n: int, seed: int):
    # two classes told apart by which half of the image is bright
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.3
    y = torch.arange(n) % 2
    x[y == 0, :, :, :4] += 0.7
    x[y == 1, :, :, 4:] += 0.7
    return x, y


def test_classifier_history_measures_without_changing_the_run():
    x, y = _blobs(40, 0)
    x_val, y_val = _blobs(20, 1)
    runs = []
    for sets in (None, {"val": (x_val, y_val)}):
        torch.manual_seed(0)
        model = SmallCNN(SmallCNNConfig(num_classes=2, widths=(4, 8), dropout=0.3))
        runs.append((model, classifier_history(model, x, y, epochs=3, batch_size=8, eval_sets=sets, eval_every=4,
                                               final_sets={"test": (x_val, y_val)}, progress=False)))
    (m0, plain), (m1, measured) = runs
    # dropout and batch norm make any disturbance visible: measuring must change no loss and no weight
    assert [r["loss"] for r in plain] == [r["loss"] for r in measured]
    for a, b in zip(m0.state_dict().values(), m1.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    steps = len(measured)
    assert steps == 3 * 5
    assert [r["step"] for r in measured if "acc_val" in r] == [4, 8, 12, 15]
    assert [r["step"] for r in measured if "acc_test" in r] == [steps]  # the test set, once
    assert measured[-1]["acc_val"] == accuracy(m1, x_val, y_val)  # what the curve says is what it is
    assert [r["loss"] for r in plain] == train_classifier(_fresh(), x, y, epochs=3, batch_size=8, progress=False)
    with pytest.raises(ValueError, match="eval_every"):
        classifier_history(_fresh(), x, y, eval_sets={"val": (x_val, y_val)}, progress=False)


def _fresh():
    torch.manual_seed(0)
    return SmallCNN(SmallCNNConfig(num_classes=2, widths=(4, 8), dropout=0.3))


def test_accuracy_by_hand():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))  # predicts the larger coordinate
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert accuracy(model, x, torch.tensor([0, 1, 1, 1])) == 0.75


def test_zoom_shift_against_exact_pixel_operations():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 8, 8)
    one, none = torch.ones(3), torch.zeros(3, 2)
    torch.testing.assert_close(zoom_shift(x, one, none), x)  # the identity
    torch.testing.assert_close(zoom_shift(x, one, none, torch.tensor([True, False, True]))[0], x[0].flip(-1))
    # 2 pixels right and 1 down (a quarter and an eighth of 8): the rest repeats the edge
    moved = zoom_shift(x, one, torch.tensor([[0.25, 0.125]]).repeat(3, 1))
    torch.testing.assert_close(moved[..., 1:, 2:], x[..., :-1, :-2])
    torch.testing.assert_close(moved[..., 1:, :2], x[..., :-1, :1].expand(-1, -1, -1, 2))
    # half the size: the middle 4x4 is the image averaged over 2x2 blocks; the border is its edge
    half = zoom_shift(x, torch.full((3,), 0.5), none)
    torch.testing.assert_close(half[..., 2:6, 2:6], F.avg_pool2d(x, 2))
    with pytest.raises(ValueError):
        zoom_shift(x, torch.zeros(3), none)
    with pytest.raises(ValueError):
        zoom_shift(x, one, torch.zeros(3))


def test_random_zoom_shift_is_seeded_and_bounded():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0  # a 4x4 object in the middle
    a = random_zoom_shift(x, torch.Generator().manual_seed(1))
    b = random_zoom_shift(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    mass = a.sum(dim=(1, 2, 3))  # the object's area after scaling by s in [0.5, 1]: 16 s^2
    assert bool((mass > 16 * 0.25 - 0.5).all()) and bool((mass < 16 + 0.5).all())
    assert mass.std() > 1  # the scales really vary
    with pytest.raises(ValueError):
        random_zoom_shift(x, torch.Generator(), min_scale=0.0)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    cfg = ShapesConfig(image_size=48, n_train=8, n_val=0, n_test=0, seed=5)
    return generate_shapes(tmp_path_factory.mktemp("shapes") / "shapes", cfg, progress=False)


def test_object_crops_shift_margin_and_background(shapes_root):
    images = json.loads((shapes_root / "annotations" / "captions_train.json").read_text())["images"]
    size = 16
    base, labels, _ = object_crops(shapes_root, "train", size=size, margin=0)
    zoomed, labels_zoomed, _ = object_crops(shapes_root, "train", size=size, margin=8)
    moved, labels_moved, _ = object_crops(shapes_root, "train", size=size, margin=0, shift=0.5)
    assert torch.equal(labels, labels_zoomed) and torch.equal(labels, labels_moved)
    objects = [(info, o) for info in images for o in info["objects"]]
    for k in range(len(objects)):
        # shifted by half the box: the crop's left half is the right half of the unshifted crop
        torch.testing.assert_close(moved[k, :, :, : size // 2], base[k, :, :, size // 2 :], atol=0.05, rtol=0)
        # the zoomed-out crop never shows black: beyond the image lies the background colour
        assert zoomed[k].sum(dim=0).min() > 0.1
    # with a margin, the box moves by a share of the object's own width, not of the widened box's:
    # recompute the crops of objects whose moved box stays inside the image straight from the PNG
    import numpy as np
    from PIL import Image

    from velm_course.vision.roi import roi_features

    moved2, _, _ = object_crops(shapes_root, "train", size=size, margin=2, shift=0.5)
    checked = 0
    for k, (info, obj) in enumerate(objects):
        x0, y0, w, h = obj["bbox"]
        box = [x0 - 2 + 0.5 * w, y0 - 2, x0 + w + 2 + 0.5 * w, y0 + h + 2]
        if box[0] < 0 or box[1] < 0 or box[2] > 48 or box[3] > 48:
            continue
        png = np.array(Image.open(shapes_root / "images" / "train" / info["file_name"]).convert("RGB"))
        image = torch.from_numpy(png).permute(2, 0, 1).float().div(255)[None]
        expected = roi_features(image, [torch.tensor([box])], size)[0]
        torch.testing.assert_close(moved2[k], expected, atol=1e-5, rtol=0)
        checked += 1
    assert checked >= 3

    # a box near the image's left edge: its zoomed-out crop's first column lies beyond the image,
    # and shows that image's background colour (one of the three greys)
    from velm_course.data.shapes import BACKGROUNDS

    side = 48
    edge = [k for k, (_, o) in enumerate(objects) if o["bbox"][0] - 8 < -1]
    assert edge, "the fixture should have an object near the left edge"
    greys = torch.tensor(BACKGROUNDS, dtype=torch.float32) / 255  # (3, 3)
    for k in edge:
        column = zoomed[k, :, :, 0].mean(dim=1)  # (3,): the crop's first column, averaged
        assert (greys - column).abs().max(dim=1).values.min() < 0.02, column
    assert zoomed.shape == (len(objects), 3, size, size) and side == 48


def test_ablations_on_a_tiny_setting():
    x, y = _blobs(32, 0)
    sets = {"val": _blobs(16, 1)}
    rows = depth_ablation(x, y, sets, blocks=(1,), seeds=(0, 1), epochs=2, batch_size=16, eval_every=2, width=4,
                          final_sets={"test": _blobs(16, 2)}, progress=False)
    assert {(r["variant"], r["layers"], r["residual"]) for r in rows} == {
        ("plain, 4 layers", 4, False), ("residual, 4 layers", 4, True)}
    assert len(rows) == 2 * 2 * 4  # variants x seeds x steps
    again = depth_ablation(x, y, sets, blocks=(1,), seeds=(0, 1), epochs=2, batch_size=16, eval_every=2, width=4,
                           final_sets={"test": _blobs(16, 2)}, progress=False)

    def untimed(rs):
        return [{k: v for k, v in r.items() if not (k.endswith("_per_s") or k == "data_wait")} for r in rs]

    assert untimed(rows) == untimed(again)  # repeatable, wall-clock timings aside
    scores = final_scores(rows, ["acc_test"])
    assert set(scores) == {"plain, 4 layers", "residual, 4 layers"}

    # augmentation: the plain run sees the images unchanged, the augmented run sees augment's views
    seen = []

    def spy(images, g):
        seen.append(images.clone())
        return images.flip(-1)

    aug = augmentation_ablation(x, y, sets, spy, lambda t: t, 2, seeds=(3,), epochs=3, batch_size=16,
                                eval_every=3, progress=False)
    assert len(seen) == 3 and all(torch.equal(s, x) for s in seen)  # one view per pass, from the originals
    assert [r["variant"] for r in aug].count("augmentation") == [r["variant"] for r in aug].count("no augmentation")
    # a flip the plain run never sees changes its losses; the same initial weights make step 1 comparable
    plain_losses = [r["loss"] for r in aug if r["variant"] == "no augmentation"]
    aug_losses = [r["loss"] for r in aug if r["variant"] == "augmentation"]
    assert plain_losses != aug_losses


def test_final_scores_by_hand():
    rows = [
        {"variant": "a", "seed": 0, "step": 1, "acc": 0.0},
        {"variant": "a", "seed": 0, "step": 2, "acc": 0.5},
        {"variant": "a", "seed": 1, "step": 2, "acc": 1.0},
        {"variant": "b", "seed": 0, "step": 2, "loss": 3.0},  # no accuracy measured: not counted
    ]
    assert final_scores(rows, ["acc"]) == {"a": {"acc": (0.75, 0.25)}}
