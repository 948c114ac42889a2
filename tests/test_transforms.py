"""Image preprocessing: statistics, RGB conversion, pipelines and the caption-safe option."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from velm_course.vision.transforms import (
    compute_mean_std,
    denormalize,
    eval_transforms,
    to_rgb,
    train_transforms,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_compute_mean_std_hand_worked():
    # channel 0 holds 0, 2, 4, 6 (mean 3, variance (9+1+1+9)/4 = 5); channel 1 is constant 1
    batch = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]], [[[4.0, 6.0]], [[1.0, 1.0]]]])
    mean, std = compute_mean_std(batch)  # batch is (2, 2, 1, 2)
    assert mean == pytest.approx((3.0, 1.0))
    assert std == pytest.approx((math.sqrt(5.0), 0.0))


def test_compute_mean_std_uint8_and_mixed_sizes():
    # uint8 is rescaled to [0, 1]: half black, half white -> mean 0.5, std 0.5
    mean, std = compute_mean_std(np.array([[[[0, 255]]]], dtype=np.uint8))
    assert mean == pytest.approx((0.5,)) and std == pytest.approx((0.5,))
    # images of different sizes: every pixel counts once -> pixels 1, 0, 0, 0
    mean, std = compute_mean_std([torch.ones(1, 1, 1), torch.zeros(1, 1, 3)])
    assert mean == pytest.approx((0.25,))
    assert std == pytest.approx((math.sqrt(0.25 - 0.0625),))


def test_compute_mean_std_bad_input():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        compute_mean_std(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="no images"):
        compute_mean_std([])
    with pytest.raises(ValueError, match="same number of channels"):
        compute_mean_std([torch.zeros(3, 2, 2), torch.zeros(1, 2, 2)])
    with pytest.raises(ValueError, match="uint8 or floating"):
        compute_mean_std(torch.zeros(1, 3, 2, 2, dtype=torch.int64))


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGBA", 4), ("LA", 2)])
def test_to_rgb_tensor_agrees_with_pil(mode, channels):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(5, 6, channels), dtype=np.uint8)
    pil = Image.fromarray(array[..., 0] if channels == 1 else array, mode=mode)
    expected = torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
    tensor = torch.from_numpy(array).permute(2, 0, 1)  # (C, H, W)
    torch.testing.assert_close(to_rgb(tensor), expected)
    assert np.array_equal(np.asarray(to_rgb(pil)), np.asarray(pil.convert("RGB")))


def test_to_rgb_bad_input():
    with pytest.raises(ValueError, match="5 channels"):
        to_rgb(torch.zeros(5, 2, 2))
    with pytest.raises(ValueError):
        to_rgb(np.zeros((2, 2, 3)))


def _inputs():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    return [
        Image.fromarray(rgb),
        Image.fromarray(rgb[..., 0], mode="L"),
        Image.fromarray(np.concatenate([rgb, rgb[..., :1]], axis=2), mode="RGBA"),
        torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),  # (3, H, W) uint8
        torch.from_numpy(rgb[..., :1]).permute(2, 0, 1).contiguous(),  # (1, H, W) grayscale
    ]


@pytest.mark.parametrize("build", [eval_transforms, train_transforms])
def test_pipeline_shapes_and_dtypes(build):
    pipeline = build(24, mean=MEAN, std=STD)
    for image in _inputs():
        out = pipeline(image)
        assert type(out) is torch.Tensor  # a plain tensor, not a tv_tensors.Image
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32


def test_eval_normalises_with_the_given_statistics():
    image = torch.full((3, 8, 8), 51, dtype=torch.uint8)  # 51 / 255 = 0.2
    out = eval_transforms(4, mean=MEAN, std=STD)(image)
    expected = torch.tensor([(0.2 - m) / s for m, s in zip(MEAN, STD, strict=True)])
    torch.testing.assert_close(out, expected.view(3, 1, 1).expand(3, 4, 4))
    torch.testing.assert_close(denormalize(out, MEAN, STD), torch.full((3, 4, 4), 0.2))


def _has_flip(pipeline) -> bool:
    return any(type(t).__name__ == "RandomHorizontalFlip" for t in pipeline.transforms)


def test_caption_safe_never_flips():
    assert _has_flip(train_transforms(16))
    assert not _has_flip(train_transforms(16, caption_safe=True))
    # behaviour: with the crop pinned to the whole image and no jitter, the only randomness
    # left is the flip. A left-bright image must never come out right-bright when caption-safe.
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[:, :, :8] = 255
    reference = eval_transforms(16, MEAN, STD)(image)
    kwargs = dict(mean=MEAN, std=STD, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0)
    safe = train_transforms(16, caption_safe=True, **kwargs)
    unsafe = train_transforms(16, caption_safe=False, **kwargs)
    torch.manual_seed(0)
    safe_outs = [safe(image) for _ in range(20)]
    unsafe_outs = [unsafe(image) for _ in range(20)]
    assert all(torch.equal(out, reference) for out in safe_outs)
    assert any(torch.equal(out, reference.flip(-1)) for out in unsafe_outs)


def test_bad_statistics():
    with pytest.raises(ValueError, match="3 values"):
        eval_transforms(16, mean=(0.5, 0.5), std=(0.2, 0.2))
    with pytest.raises(ValueError, match="positive"):
        train_transforms(16, mean=MEAN, std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="scale"):
        train_transforms(16, scale=(0.0, 1.0))


def test_to_square_three_ways():
    from torchvision.transforms.v2 import functional as TF

    from velm_course.vision.transforms import to_square

    torch.manual_seed(0)
    wide = torch.rand(3, 30, 60)  # twice as wide as high
    squash, crop, pad = (to_square(wide, 30, m) for m in ("squash", "crop", "pad"))
    assert squash.shape == crop.shape == pad.shape == (3, 30, 30)
    assert torch.allclose(squash, TF.resize(wide, [30, 30], antialias=True))
    assert torch.allclose(crop, wide[:, :, 15:45])  # short side already 30: the middle square, untouched
    assert (pad[:, :7] == 0).all() and (pad[:, 23:] == 0).all()  # 15 rows of content, centred
    assert torch.allclose(pad[:, 7:22], TF.resize(wide, [15, 30], antialias=True))  # undistorted content
    tall = torch.rand(1, 3, 50, 20)  # batches work too
    assert to_square(tall, 10, "pad").shape == (1, 3, 10, 10)
    assert (to_square(tall, 10, "pad", fill=0.5)[..., :3] == 0.5).all()  # padding left and right
    with pytest.raises(ValueError, match="mode must be"):
        to_square(wide, 30, "stretch")
