"""Convolution from scratch, checked against numpy, scipy and torch."""

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from velm_course.vision.conv import (
    box,
    box_kernel,
    classic_kernels,
    conv1d,
    conv2d_loops,
    conv2d_unfold,
    convolve,
    cross_correlate,
    gaussian,
    gaussian_kernel,
    im2col,
    riemann_convolution,
    triangle,
)

# --- 1-D --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("nx,nk", [(7, 3), (3, 7), (6, 4), (5, 5), (1, 4), (8, 1)])
def test_conv1d_matches_numpy(mode, nx, nk):
    rng = np.random.default_rng(nx * 10 + nk)
    x, k = rng.normal(size=nx), rng.normal(size=nk)
    np.testing.assert_allclose(conv1d(x, k, mode), np.convolve(x, k, mode), atol=1e-12)


def test_conv1d_bad_input():
    with pytest.raises(ValueError, match="mode"):
        conv1d([1, 2], [1], mode="circular")
    with pytest.raises(ValueError, match="non-empty"):
        conv1d([], [1])


def test_riemann_box_box_is_triangle():
    t = np.linspace(-1.5, 1.5, 31)
    approx = riemann_convolution(box, box, t, lo=-2, hi=2, n=8001)
    # the box edges make the sum off by at most about one sample width
    np.testing.assert_allclose(approx, triangle(t), atol=2e-3)


def test_riemann_gaussians_add_variances():
    s1, s2 = 0.7, 1.2
    t = np.linspace(-4, 4, 41)
    approx = riemann_convolution(lambda u: gaussian(u, s1), lambda u: gaussian(u, s2), t)
    np.testing.assert_allclose(approx, gaussian(t, np.hypot(s1, s2)), atol=1e-8)


def test_riemann_bad_input():
    with pytest.raises(ValueError):
        riemann_convolution(box, box, np.zeros(1), lo=1, hi=0)


# --- 2-D, against F.conv2d ----------------------------------------------------

CASES = [
    # (C, Co, kernel, stride, padding, dilation, groups)
    (3, 4, 3, 1, 0, 1, 1),
    (3, 4, 3, 2, 1, 1, 1),
    (2, 3, (2, 3), (2, 1), (1, 0), 1, 1),
    (3, 2, 3, 1, 2, 2, 1),
    (4, 6, 3, 1, 1, (1, 2), 2),
    (4, 4, 3, 2, 1, 1, 4),  # depthwise
    (6, 3, 1, 1, 0, 1, 3),
    (3, 5, 3, 1, "same", 2, 1),
    (3, 5, (2, 4), 1, "same", 1, 1),  # even kernel: torch pads one more on the right/bottom
    (3, 5, 3, 1, "valid", 1, 1),
]


# torch warns that it copies the input for an even 'same' kernel; that is expected here
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("impl", [conv2d_loops, conv2d_unfold])
@pytest.mark.parametrize("C,Co,k,stride,padding,dilation,groups", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_matches_torch(impl, C, Co, k, stride, padding, dilation, groups, bias):
    g = torch.Generator().manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, C, 7, 8, generator=g, dtype=torch.float64)
    w = torch.randn(Co, C // groups, kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(Co, generator=g, dtype=torch.float64) if bias else None
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    expected = F.conv2d(x, w, b, **args)
    out = impl(x, w, b, **args)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


def test_im2col_matches_unfold():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    cols = im2col(x, (3, 2), stride=(2, 1), dilation=(1, 2))
    torch.testing.assert_close(cols, F.unfold(x, (3, 2), stride=(2, 1), dilation=(1, 2)))


def test_conv2d_unfold_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: conv2d_unfold(x, w, b, stride=2, padding=1, dilation=1, groups=2), (x, w, b)
    )


@pytest.mark.parametrize("impl", [conv2d_loops, conv2d_unfold])
def test_conv2d_bad_input(impl):
    x = torch.randn(1, 4, 6, 6)
    with pytest.raises(ValueError, match="groups"):
        impl(x, torch.randn(3, 2, 3, 3), groups=2)  # 3 out channels not divisible by 2
    with pytest.raises(ValueError, match="input channels per group"):
        impl(x, torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="larger"):
        impl(x, torch.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match="stride 1"):
        impl(x, torch.randn(2, 4, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="bias"):
        impl(x, torch.randn(2, 4, 3, 3), torch.randn(3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        impl(x[0], torch.randn(2, 4, 3, 3))


# --- the no-flip point ----------------------------------------------------------


def test_deep_learning_conv_is_cross_correlation():
    g = torch.Generator().manual_seed(2)
    image = torch.randn(6, 7, generator=g, dtype=torch.float64)
    kernel = torch.randn(3, 2, generator=g, dtype=torch.float64)  # asymmetric on purpose
    as_torch = F.conv2d(image[None, None], kernel[None, None])[0, 0]
    flipped_torch = F.conv2d(image[None, None], kernel.flip(0, 1)[None, None])[0, 0]
    torch.testing.assert_close(cross_correlate(image, kernel), as_torch)
    torch.testing.assert_close(convolve(image, kernel), flipped_torch)
    # and the two really differ for a non-symmetric kernel
    assert not torch.allclose(convolve(image, kernel), cross_correlate(image, kernel))


def test_convolve_matches_scipy_and_cross_correlation_too():
    g = torch.Generator().manual_seed(3)
    image = torch.randn(6, 7, generator=g, dtype=torch.float64)
    kernel = torch.randn(3, 3, generator=g, dtype=torch.float64)
    for padding, mode in [("valid", "valid"), ("same", "same")]:
        np.testing.assert_allclose(
            convolve(image, kernel, padding).numpy(),
            scipy.signal.convolve2d(image.numpy(), kernel.numpy(), mode=mode),
            atol=1e-12,
        )
        np.testing.assert_allclose(
            cross_correlate(image, kernel, padding).numpy(),
            scipy.signal.correlate2d(image.numpy(), kernel.numpy(), mode=mode),
            atol=1e-12,
        )


# --- classic kernels --------------------------------------------------------------


def test_classic_kernel_sums_and_responses():
    k = classic_kernels()
    for name in ("identity", "box_blur", "gaussian_blur", "sharpen"):
        assert k[name].sum().item() == pytest.approx(1.0)
    for name in ("sobel_x", "sobel_y"):
        assert k[name].sum().item() == 0.0
    # a step from dark (left) to bright (right): sobel_x fires positively, sobel_y stays 0
    step = torch.zeros(5, 6)
    step[:, 3:] = 1.0
    assert (cross_correlate(step, k["sobel_x"]) >= 0).all()
    assert cross_correlate(step, k["sobel_x"]).max() == 4.0  # 1 + 2 + 1 across the edge
    assert cross_correlate(step, k["sobel_y"]).abs().max() == 0.0
    torch.testing.assert_close(cross_correlate(step, k["identity"]), step[1:-1, 1:-1])
    torch.testing.assert_close(box_kernel(3), torch.full((3, 3), 1 / 9))


def test_gaussian_blur_matches_torchvision():
    from torchvision.transforms.v2 import functional as TF

    img = torch.rand(1, 1, 12, 10, generator=torch.Generator().manual_seed(4))
    k = gaussian_kernel(5, 1.5)
    # torchvision pads by reflection before blurring; do the same, then a valid conv
    ours = conv2d_unfold(F.pad(img, (2, 2, 2, 2), mode="reflect"), k[None, None])
    torch.testing.assert_close(ours, TF.gaussian_blur(img, [5, 5], [1.5, 1.5]), atol=1e-6, rtol=0)


def test_gaussian_kernel_bad_input():
    with pytest.raises(ValueError):
        gaussian_kernel(4, 1.0)
    with pytest.raises(ValueError):
        gaussian_kernel(3, 0.0)
