"""ResNet against torchvision, receptive fields by hand and by gradient, the small CNN."""

import pytest
import torch
import torch.nn as nn
import torchvision

from velm_course.data.shapes import COLORS, SHAPES, ShapesConfig, generate_shapes
from velm_course.vision.receptive_field import (
    empirical_receptive_field,
    input_gradient_map,
    layer_specs,
    receptive_field,
)
from velm_course.vision.resnet import ResNet, ResNetConfig, resnet18, resnet50
from velm_course.vision.roi import object_crops, roi_features, xywh_to_xyxy
from velm_course.vision.small_cnn import (
    SmallCNN,
    SmallCNNConfig,
    confusion_matrix,
    predict,
    train_classifier,
)


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Give every BN non-trivial statistics, so eval mode is not just the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize(
    "ours_fn,theirs_fn,channels",
    [(resnet18, torchvision.models.resnet18, 512), (resnet50, torchvision.models.resnet50, 2048)],
)
def test_resnet_matches_torchvision(ours_fn, theirs_fn, channels):
    torch.manual_seed(0)
    theirs = theirs_fn(weights=None, num_classes=7)
    _randomise_batchnorm(theirs, seed=1)
    ours = ours_fn(num_classes=7)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same names, same shapes
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
        # the feature map is torchvision's network with avgpool and fc cut off
        trunk = nn.Sequential(*list(theirs.children())[:-2])
        feats = ours.forward_features(x)
    assert feats.shape == (2, channels, 2, 2)  # 64 / 32 = 2
    torch.testing.assert_close(feats, trunk(x), atol=1e-5, rtol=1e-5)
    assert ours.out_channels == channels


def test_resnet_bad_input():
    with pytest.raises(ValueError, match="block"):
        ResNet(ResNetConfig(block="wide"))
    with pytest.raises(ValueError, match="same length"):
        ResNet(ResNetConfig(layers=(1, 1), widths=(8,)))
    model = ResNet(ResNetConfig(layers=(1,), widths=(8,), stem_width=8, num_classes=2))
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(1, 1, 32, 32))


# --- receptive fields ---------------------------------------------------------


def _ones_stack() -> nn.Sequential:
    """A linear stack with all-one weights: every path carries gradient, none cancels."""
    stack = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, bias=False),
        nn.Conv2d(2, 2, 3, stride=2, padding=1, bias=False),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 1, 3, padding=2, dilation=2, bias=False),
    )
    for m in stack:
        if isinstance(m, nn.Conv2d):
            nn.init.ones_(m.weight)
    return stack.double()


def test_receptive_field_hand_worked():
    # worked by hand with size += (k'-1)*jump, jump *= s, start += ((k'-1)/2 - p)*jump
    assert receptive_field([(3, 1, 1), (3, 2, 1), (2, 2, 0), (3, 1, 2, 2)]) == [
        (3, 1, 0.0),
        (5, 2, 0.0),
        (7, 4, 1.0),
        (23, 4, 1.0),
    ]
    assert layer_specs(_ones_stack()) == [(3, 1, 1, 1), (3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 2, 2)]


def test_receptive_field_theory_matches_gradient():
    stack = _ones_stack()
    size, jump, start = receptive_field(layer_specs(stack))[-1]
    height, width, (top, left) = empirical_receptive_field(stack, input_size=64, in_channels=1)
    assert height == width == size
    centre_unit = stack(torch.zeros(1, 1, 64, 64, dtype=torch.float64)).shape[-1] // 2
    centre = start + centre_unit * jump  # where the centre unit looks, in input pixels
    assert top == left == centre - (size - 1) / 2


def test_resnet18_receptive_field():
    # stem 7x7/2 then pool 3x3/2: 11 px, jump 4; each 3x3 then adds 2*jump:
    # layer1 4 convs -> 43; layer2 (jump 4, then 8) -> 51, 99; layer3 -> 115, 211; layer4 -> 243, 435
    size, jump, _ = receptive_field(resnet18().receptive_field_layers())[-1]
    assert (size, jump) == (435, 32)


def test_stage_receptive_fields_match_the_hand_worked_values():
    # the numbers worked by hand in test_resnet18_receptive_field, stage by stage
    fields = resnet18().stage_receptive_fields()
    assert {k: v[:2] for k, v in fields.items()} == {
        "stem": (11, 4), "layer1": (43, 4), "layer2": (99, 8), "layer3": (211, 16), "layer4": (435, 32),
    }
    # bottleneck stages count three convs per block: the last entry is the whole network's
    model = resnet50()
    assert model.stage_receptive_fields()["layer4"] == receptive_field(model.receptive_field_layers())[-1]


def test_input_gradient_map_counts_paths():
    # two 3x3 all-one convs: the centre unit reaches pixel offset (u, v) through
    # (3 - |u|) * (3 - |v|)-ish paths; brute force: the full 2-D convolution of two 3x3 boxes
    stack = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.Conv2d(1, 1, 3, bias=False)).double()
    for m in stack:
        nn.init.ones_(m.weight)
    grad = input_gradient_map(stack, input_size=9, in_channels=1)
    paths = torch.zeros(5, 5, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            for c in range(3):
                for d in range(3):
                    paths[a + c, b + d] += 1  # first-conv offset (a, b) + second-conv offset (c, d)
    assert grad.shape == (9, 9)
    torch.testing.assert_close(grad[2:7, 2:7], paths)  # the 7x7 output's centre is pixel (4, 4)
    assert grad.sum() == paths.sum()  # nothing outside the 5x5 window


def test_receptive_field_bad_input():
    with pytest.raises(ValueError):
        receptive_field([(3, 1)])
    with pytest.raises(ValueError):
        receptive_field([(3, 0, 1)])


# --- small CNN -----------------------------------------------------------------


def test_small_cnn_shapes_and_errors():
    model = SmallCNN(SmallCNNConfig(num_classes=5, widths=(8, 16, 32)))
    x = torch.randn(3, 3, 64, 64)
    assert model(x).shape == (3, 5)
    assert model.forward_features(x).shape == (3, 32, 8, 8)
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(3, 4, 64, 64))
    with pytest.raises(ValueError):
        SmallCNN(SmallCNNConfig(widths=()))


def _squares(n: int, seed: int, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy 32x32 images; class = colour (red/blue) x shape (filled/hollow square).

    The square sits at a random position, so the network has to detect a local pattern
    wherever it is, not memorise pixels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.rand(n, 3, 32, 32, generator=g) * 0.2
    for i, label in enumerate(labels.tolist()):
        r, c = torch.randint(0, 32 - side, (2,), generator=g).tolist()
        patch = torch.ones(side, side)
        if label // 2:  # hollow: keep only a 2-pixel border
            patch[2:-2, 2:-2] = 0.0
        channel = label % 2 * 2  # red (0) or blue (2)
        region = images[i, channel, r : r + side, c : c + side]
        images[i, channel, r : r + side, c : c + side] = torch.maximum(region, patch)
    return images, labels


def test_small_cnn_learns_colour_and_shape():
    images, labels = _squares(64, seed=0)
    held_out, held_out_labels = _squares(64, seed=1)
    torch.manual_seed(0)
    model = SmallCNN(SmallCNNConfig(num_classes=4, widths=(8, 16), dropout=0.0))
    # full batch: one step per epoch
    losses = train_classifier(model, images, labels, epochs=80, batch_size=64, lr=1e-2, progress=False)
    assert len(losses) == 80 and not model.training  # left in eval mode: BN uses running stats
    train_acc = (predict(model, images, batch_size=16) == labels).float().mean().item()
    test_acc = (predict(model, held_out) == held_out_labels).float().mean().item()
    assert train_acc == 1.0
    assert test_acc >= 0.9  # new positions, new noise: chance is 0.25


def test_train_classifier_is_repeatable():
    images, labels = _squares(32, seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = SmallCNN(SmallCNNConfig(num_classes=4, widths=(4,), dropout=0.5))
        runs.append(train_classifier(model, images, labels, epochs=2, batch_size=10, progress=False))
    assert runs[0] == runs[1]  # same seeds, same batches, same dropout masks: the same losses
    assert len(runs[0]) == 2 * 4  # 4 batches per epoch, the last one of 2 examples
    with pytest.raises(ValueError, match="labels"):
        train_classifier(model, images, labels[:3], progress=False)


def test_confusion_matrix_against_counting():
    g = torch.Generator().manual_seed(0)
    y_true, y_pred = torch.randint(0, 4, (50,), generator=g), torch.randint(0, 4, (50,), generator=g)
    m = confusion_matrix(y_true, y_pred, 4)
    for i in range(4):
        for j in range(4):
            assert m[i, j] == sum(1 for t, p in zip(y_true.tolist(), y_pred.tolist(), strict=True)
                                  if t == i and p == j)
    with pytest.raises(ValueError, match="lie in"):
        confusion_matrix(torch.tensor([0, 4]), torch.tensor([0, 1]), 4)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 4)


# --- regions ---------------------------------------------------------------------


def test_roi_features_is_a_crop_when_bins_are_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 12, generator=g)
    boxes = [torch.tensor([[1.0, 2.0, 5.0, 5.0]]), torch.tensor([[0.0, 0.0, 12.0, 10.0], [7, 4, 9, 8]])]
    out = roi_features(x, boxes, output_size=(3, 4), sampling_ratio=1)
    torch.testing.assert_close(out[0], x[0, :, 2:5, 1:5])  # rows y0:y1, columns x0:x1
    # on a 2x nearest-upsampled map, spatial_scale 2 and 2x2 samples per bin give the same crop
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (2, 3, 20, 24)
    upsampled = roi_features(up, boxes, (3, 4), spatial_scale=2.0, sampling_ratio=2)
    torch.testing.assert_close(upsampled[0], out[0])
    full = roi_features(x, boxes, output_size=(10, 12), sampling_ratio=1)
    torch.testing.assert_close(full[1], x[1])
    torch.testing.assert_close(roi_features(x, boxes, (4, 2), sampling_ratio=1)[2], x[1, :, 4:8, 7:9])
    assert out.shape == (3, 3, 3, 4)
    with pytest.raises(ValueError, match="box tensors"):
        roi_features(x, boxes[:1])
    with pytest.raises(ValueError, match="x1 > x0"):
        roi_features(x, [boxes[0], torch.tensor([[3.0, 3.0, 3.0, 5.0]])])
    assert xywh_to_xyxy(torch.tensor([[1, 2, 3, 4]])).tolist() == [[1.0, 2.0, 4.0, 6.0]]


def test_object_crops_from_generated_shapes(tmp_path):
    cfg = ShapesConfig(image_size=48, n_train=6, n_val=0, n_test=0, seed=3)
    root = generate_shapes(tmp_path / "shapes", cfg, progress=False)
    import json

    images = json.loads((root / "annotations" / "captions_train.json").read_text())["images"]
    objects = [o for info in images for o in info["objects"]]
    crops, labels, classes = object_crops(root, "train", attribute="color", size=16, margin=0)
    assert crops.shape == (len(objects), 3, 16, 16) and classes == list(COLORS)
    assert [classes[i] for i in labels.tolist()] == [o["color"] for o in objects]
    for crop, obj in zip(crops, objects, strict=True):
        # every shape covers the centre of its box, so the centre of the crop has its colour
        centre = crop[:, 7:9, 7:9].mean(dim=(1, 2))
        torch.testing.assert_close(centre, torch.tensor(COLORS[obj["color"]]) / 255, atol=0.02, rtol=0)
    _, shape_labels, shape_classes = object_crops(root, "train", size=8, limit=2)
    assert shape_classes == list(SHAPES)
    assert [shape_classes[i] for i in shape_labels.tolist()] == [
        o["shape"] for info in images[:2] for o in info["objects"]]
    with pytest.raises(ValueError, match="attribute"):
        object_crops(root, "train", attribute="size")
    with pytest.raises(FileNotFoundError):
        object_crops(root, "nope")
