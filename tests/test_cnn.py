"""ResNet against torchvision, receptive fields by hand and by gradient, the small CNN."""

import pytest
import torch
import torch.nn as nn
import torchvision

from velm_course.cnn import (
    ResNet,
    ResNetConfig,
    SmallCNN,
    SmallCNNConfig,
    empirical_receptive_field,
    layer_specs,
    receptive_field,
    resnet18,
    resnet50,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


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
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()  # BN now uses its running statistics
    with torch.no_grad():
        train_acc = (model(images).argmax(dim=1) == labels).float().mean().item()
        test_acc = (model(held_out).argmax(dim=1) == held_out_labels).float().mean().item()
    assert train_acc == 1.0
    assert test_acc >= 0.9  # new positions, new noise: chance is 0.25
