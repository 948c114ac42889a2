"""Convolution, from the integral to ``conv2d``.

We walk the same idea down three levels of abstraction:

1. the continuous convolution ``(f * g)(t) = ∫ f(τ) g(t - τ) dτ``, approximated by a Riemann sum;
2. the discrete 1-D convolution ``y[n] = Σ_m x[m] k[n - m]`` (what ``numpy.convolve`` computes);
3. the 2-D "convolution" of deep learning, written once with plain loops and once as
   im2col (unfold) + one big matrix multiply, both matching ``torch.nn.functional.conv2d``.

The subtle point: what deep learning calls convolution is *cross-correlation*. The kernel
slides over the image without being flipped. True convolution flips the kernel first. For a
learned kernel the difference does not matter (the network just learns the flipped weights),
but it matters when you apply a hand-made kernel such as Sobel. ``cross_correlate`` and
``convolve`` below make the difference explicit.

Shape letters used throughout this module:
    B  batch size
    C  input channels               Co output channels
    G  groups (C and Co split into G independent slices); Cg = C / G
    H, W    input height and width   (after padding: Hp, Wp)
    kh, kw  kernel height and width
    Ho, Wo  output height and width
    L  number of output positions, Ho * Wo

>>> import numpy as np
>>> conv1d([1, 2, 3], [0, 1, 0.5], mode="full").tolist()
[0.0, 1.0, 2.5, 4.0, 1.5]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IntPair = int | tuple[int, int]

# -----------------------------------------------------------------------------
# 1. The continuous integral, approximated numerically


def box(t: np.ndarray, width: float = 1.0) -> np.ndarray:
    """The box function: 1 on [-width/2, width/2], 0 elsewhere (area ``width``).

    >>> box(np.array([-1.0, 0.0, 1.0])).tolist()
    [0.0, 1.0, 0.0]
    """
    t = np.asarray(t, dtype=float)
    return (np.abs(t) <= width / 2).astype(float)


def triangle(t: np.ndarray, width: float = 1.0) -> np.ndarray:
    """The analytic convolution of two boxes of the same ``width``: a triangle of base 2*width.

    Its peak is ``width`` (the full overlap of the two boxes) and it falls linearly to 0 when
    the boxes stop overlapping.

    >>> triangle(np.array([0.0, 0.5, 1.0])).tolist()
    [1.0, 0.5, 0.0]
    """
    t = np.asarray(t, dtype=float)
    return np.clip(width - np.abs(t), 0.0, None)


def gaussian(t: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """The normal density with mean 0 and standard deviation ``sigma``.

    Convolving two of them gives another one: variances add, so
    ``gaussian(., s1) * gaussian(., s2) = gaussian(., sqrt(s1**2 + s2**2))``.

    >>> round(float(gaussian(np.array(0.0), 1.0)), 4)
    0.3989
    """
    t = np.asarray(t, dtype=float)
    return np.exp(-0.5 * (t / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def riemann_convolution(
    f: Callable[[np.ndarray], np.ndarray],
    g: Callable[[np.ndarray], np.ndarray],
    t: np.ndarray,
    lo: float = -10.0,
    hi: float = 10.0,
    n: int = 4001,
) -> np.ndarray:
    """Approximate ``(f * g)(t) = ∫ f(τ) g(t - τ) dτ`` at each point of ``t`` by a Riemann sum.

    The integral runs over ``τ`` in ``[lo, hi]`` (f should be ~0 outside it), sampled at ``n``
    evenly spaced points ``τ_i`` of spacing ``dτ``: ``Σ_i f(τ_i) g(t - τ_i) dτ``.
    Read it as: flip g, slide it to position t, multiply with f, and add up the overlap.

    >>> out = riemann_convolution(box, box, np.array([0.0]))
    >>> bool(abs(out[0] - 1.0) < 1e-2)
    True
    """
    if n < 2 or not hi > lo:
        raise ValueError(f"need n >= 2 and hi > lo, got n={n}, lo={lo}, hi={hi}")
    tau = np.linspace(lo, hi, n)  # (n,) sample points
    dtau = tau[1] - tau[0]
    t = np.atleast_1d(np.asarray(t, dtype=float))  # (T,)
    # one row per output time: g(t - τ) for every τ, shape (T, n)
    shifted = g(t[:, None] - tau[None, :])
    return (f(tau)[None, :] * shifted).sum(axis=1) * dtau


# -----------------------------------------------------------------------------
# 2. Discrete 1-D convolution


def conv1d(x: Sequence[float], k: Sequence[float], mode: str = "full") -> np.ndarray:
    """Discrete convolution ``y[n] = Σ_m x[m] k[n - m]``, same modes as ``numpy.convolve``.

    - ``full``: every shift where x and the flipped k overlap at all, length ``len(x)+len(k)-1``;
    - ``same``: the centre ``max(len(x), len(k))`` values of ``full``;
    - ``valid``: only shifts where one fully covers the other, length ``|len(x)-len(k)|+1``.

    >>> conv1d([1, 2, 3], [1, 1], mode="valid").tolist()
    [3.0, 5.0]
    """
    x = np.asarray(x, dtype=float)
    k = np.asarray(k, dtype=float)
    if x.ndim != 1 or k.ndim != 1 or len(x) == 0 or len(k) == 0:
        raise ValueError("conv1d expects two non-empty 1-D sequences")
    if mode not in ("full", "same", "valid"):
        raise ValueError(f"mode must be 'full', 'same' or 'valid', got {mode!r}")
    nx, nk = len(x), len(k)
    full = np.zeros(nx + nk - 1)
    for n in range(len(full)):
        # only the m where both x[m] and k[n - m] exist contribute
        for m in range(max(0, n - nk + 1), min(nx, n + 1)):
            full[n] += x[m] * k[n - m]
    if mode == "full":
        return full
    if mode == "same":
        size = max(nx, nk)
        start = (len(full) - size) // 2
        return full[start : start + size]
    size = max(nx, nk) - min(nx, nk) + 1
    start = min(nx, nk) - 1
    return full[start : start + size]


# -----------------------------------------------------------------------------
# 3. 2-D convolution, the deep-learning way (cross-correlation over channels)


def _pair(v: IntPair, name: str) -> tuple[int, int]:
    """Turn an int or a pair into a pair of ints, checking it."""
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int) for p in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return pair  # type: ignore[return-value]


def _check_and_pad(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntPair,
    padding: IntPair | str,
    dilation: IntPair,
    groups: int,
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], int, int]:
    """Validate the arguments the way F.conv2d does and zero-pad the input.

    Returns the padded input, stride, dilation and the output size (Ho, Wo).
    """
    if input.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"expected input (B, C, H, W) and weight (Co, C/G, kh, kw), got "
            f"{tuple(input.shape)} and {tuple(weight.shape)}"
        )
    B, C, H, W = input.shape
    Co, Cg, kh, kw = weight.shape
    if groups < 1 or C % groups or Co % groups:
        raise ValueError(f"groups={groups} must divide in channels {C} and out channels {Co}")
    if Cg != C // groups:
        raise ValueError(f"weight has {Cg} input channels per group, expected {C // groups}")
    if bias is not None and bias.shape != (Co,):
        raise ValueError(f"bias must have shape ({Co},), got {tuple(bias.shape)}")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    if min(sh, sw, dh, dw) < 1:
        raise ValueError("stride and dilation must be >= 1")
    # the "effective" kernel covers d*(k-1)+1 pixels: dilation leaves d-1 holes between taps
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        if (sh, sw) != (1, 1):
            raise ValueError("padding='same' needs stride 1")
        # like PyTorch: when the total is odd, the extra pixel goes to the right/bottom
        pads = ((ew - 1) // 2, ew - 1 - (ew - 1) // 2, (eh - 1) // 2, eh - 1 - (eh - 1) // 2)
    elif isinstance(padding, str):
        raise ValueError(f"padding string must be 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = _pair(padding, "padding")
        if min(ph, pw) < 0:
            raise ValueError("padding must be >= 0")
        pads = (pw, pw, ph, ph)  # F.pad order: left, right, top, bottom
    x = F.pad(input, pads)  # (B, C, Hp, Wp), zeros around the border
    Hp, Wp = x.shape[-2:]
    Ho = (Hp - eh) // sh + 1
    Wo = (Wp - ew) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"kernel ({eh}x{ew} after dilation) is larger than the padded input")
    return x, (sh, sw), (dh, dw), Ho, Wo


def conv2d_loops(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` written as explicit loops over output positions. Slow: small inputs only.

    Every output pixel ``out[b, o, i, j]`` is a dot product between the kernel of channel o
    and the input window whose top-left corner is at ``(i*stride, j*stride)``, read with
    gaps of ``dilation``, over the input channels of o's group. No kernel flip.

    >>> x = torch.arange(9.0).view(1, 1, 3, 3)
    >>> conv2d_loops(x, torch.ones(1, 1, 2, 2)).flatten().tolist()
    [8.0, 12.0, 20.0, 24.0]
    """
    x, (sh, sw), (dh, dw), Ho, Wo = _check_and_pad(
        input, weight, bias, stride, padding, dilation, groups
    )
    B, C = x.shape[:2]
    Co, Cg, kh, kw = weight.shape
    Og = Co // groups  # output channels per group
    out = x.new_zeros(B, Co, Ho, Wo)
    for o in range(Co):
        g = o // Og  # the group of output channel o sees input channels [g*Cg, (g+1)*Cg)
        xg = x[:, g * Cg : (g + 1) * Cg]  # (B, Cg, Hp, Wp)
        for i in range(Ho):
            for j in range(Wo):
                top, left = i * sh, j * sw
                # the dilated window: kh rows spaced dh apart, kw columns spaced dw apart
                window = xg[:, :, top : top + dh * (kh - 1) + 1 : dh,
                            left : left + dw * (kw - 1) + 1 : dw]  # (B, Cg, kh, kw)
                out[:, o, i, j] = (window * weight[o]).sum(dim=(1, 2, 3))
    if bias is not None:
        out = out + bias.view(1, Co, 1, 1)  # (1, Co, 1, 1): one shift per channel, broadcast
    return out


def im2col(
    x: torch.Tensor, kernel_size: IntPair, stride: IntPair = 1, dilation: IntPair = 1
) -> torch.Tensor:
    """Gather every (dilated) kernel window of an already padded ``x`` into a column.

    Returns (B, C*kh*kw, L), the same layout as ``F.unfold`` with no padding: row
    ``c*kh*kw + u*kw + v`` holds input channel c at kernel offset (u, v) for all L positions.
    Instead of looping over the L windows we loop over the kh*kw kernel offsets: for a fixed
    offset, the pixels it touches across all windows form one strided slice of the image.

    >>> im2col(torch.arange(4.0).view(1, 1, 2, 2), 2).flatten().tolist()
    [0.0, 1.0, 2.0, 3.0]
    """
    B, C, Hp, Wp = x.shape
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    Ho = (Hp - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wp - dw * (kw - 1) - 1) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError("kernel is larger than the input")
    slices = []
    for u in range(kh):
        for v in range(kw):
            # the pixel at kernel offset (u, v) of every window: start at (u*dh, v*dw), step by stride
            top, left = u * dh, v * dw
            slices.append(x[:, :, top : top + sh * (Ho - 1) + 1 : sh,
                            left : left + sw * (Wo - 1) + 1 : sw])  # (B, C, Ho, Wo)
    cols = torch.stack(slices, dim=2)  # (B, C, kh*kw, Ho, Wo)
    return cols.reshape(B, C * kh * kw, Ho * Wo)  # (B, C*kh*kw, L)


def conv2d_unfold(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` as im2col + one batched matrix multiply (how many libraries do it).

    Once every window is a column, the convolution of all windows with all kernels is a
    single matmul ``(Co, C*kh*kw) @ (C*kh*kw, L)``. Groups split both sides into G independent
    blocks, so it becomes G smaller matmuls done as one batched matmul.

    >>> x, w = torch.randn(2, 4, 5, 5), torch.randn(6, 2, 3, 3)
    >>> torch.allclose(conv2d_unfold(x, w, groups=2), F.conv2d(x, w, groups=2), atol=1e-5)
    True
    """
    x, stride2, dilation2, Ho, Wo = _check_and_pad(
        input, weight, bias, stride, padding, dilation, groups
    )
    B, C = x.shape[:2]
    Co, Cg, kh, kw = weight.shape
    G = groups
    cols = im2col(x, (kh, kw), stride2, dilation2)  # (B, C*kh*kw, L)
    # channels are the slowest-varying index of a column row, so the G groups are contiguous
    cols = cols.view(B, G, Cg * kh * kw, Ho * Wo)  # (B, G, Cg*kh*kw, L)
    w = weight.reshape(G, Co // G, Cg * kh * kw)  # (G, Co/G, Cg*kh*kw), one matrix per group
    out = w @ cols  # (G, Co/G, K) @ (B, G, K, L) broadcasts to (B, G, Co/G, L)
    out = out.reshape(B, Co, Ho, Wo)  # (B, Co, Ho, Wo): groups back to back give Co channels
    if bias is not None:
        out = out + bias.view(1, Co, 1, 1)  # (1, Co, 1, 1): one shift per channel, broadcast
    return out


# -----------------------------------------------------------------------------
# 4. Cross-correlation vs true convolution on a single-channel image


def cross_correlate(image: torch.Tensor, kernel: torch.Tensor, padding: str = "valid") -> torch.Tensor:
    """Slide ``kernel`` over ``image`` without flipping it: what ``F.conv2d`` computes.

    ``image`` is (H, W), ``kernel`` is (kh, kw); ``padding`` is ``'valid'`` or ``'same'``.

    >>> cross_correlate(torch.arange(3.0).view(1, 3), torch.tensor([[1.0, 0.0]])).tolist()
    [[0.0, 1.0]]
    """
    if image.dim() != 2 or kernel.dim() != 2:
        raise ValueError("cross_correlate expects a (H, W) image and a (kh, kw) kernel")
    # (H, W) -> (1, 1, H, W): one image, one channel, one kernel
    out = conv2d_unfold(image[None, None], kernel[None, None], padding=padding)
    return out[0, 0]  # (Ho, Wo)


def convolve(image: torch.Tensor, kernel: torch.Tensor, padding: str = "valid") -> torch.Tensor:
    """True 2-D convolution: flip the kernel in both directions, then cross-correlate.

    ``out[i, j] = Σ_{u,v} image[i + u, j + v] * kernel[kh-1-u, kw-1-v]`` (for 'valid').

    >>> convolve(torch.arange(3.0).view(1, 3), torch.tensor([[1.0, 0.0]])).tolist()
    [[1.0, 2.0]]
    """
    if kernel.dim() != 2:
        raise ValueError("convolve expects a (kh, kw) kernel")
    return cross_correlate(image, kernel.flip(0, 1), padding=padding)


# -----------------------------------------------------------------------------
# 5. Classic hand-made kernels


def gaussian_kernel(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """A (size, size) Gaussian blur kernel that sums to 1.

    It is separable: the outer product of a 1-D Gaussian with itself.

    >>> k = gaussian_kernel(3, 1.0)
    >>> k.shape, round(float(k.sum()), 6)
    (torch.Size([3, 3]), 1.0)
    """
    if size < 1 or size % 2 == 0 or sigma <= 0:
        raise ValueError(f"need an odd size >= 1 and sigma > 0, got size={size}, sigma={sigma}")
    half = (size - 1) / 2
    t = torch.linspace(-half, half, size)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()  # normalised so blurring keeps the mean brightness
    return g[:, None] * g[None, :]  # (size, size)


def box_kernel(size: int = 3) -> torch.Tensor:
    """A (size, size) box blur: every tap is 1/size**2, the local mean.

    >>> box_kernel(2).tolist()
    [[0.25, 0.25], [0.25, 0.25]]
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    return torch.full((size, size), 1.0 / size**2)


def classic_kernels() -> dict[str, torch.Tensor]:
    """The usual hand-made 3x3 kernels, as used by cross-correlation (``F.conv2d``).

    ``sobel_x`` responds to intensity rising from left to right (vertical edges), ``sobel_y`` to
    intensity rising from top to bottom. Blurs sum to 1 (keep the mean), edge detectors to 0
    (flat regions give 0), and ``sharpen`` to 1 (identity plus a negative Laplacian).

    >>> sorted(classic_kernels())
    ['box_blur', 'gaussian_blur', 'identity', 'sharpen', 'sobel_x', 'sobel_y']
    """
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    return {
        "identity": torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        "sobel_x": sobel_x,
        "sobel_y": sobel_x.t().contiguous(),
        "box_blur": box_kernel(3),
        "gaussian_blur": gaussian_kernel(3, 1.0),
        "sharpen": torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
    }
