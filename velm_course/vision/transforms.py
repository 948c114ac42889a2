"""Image preprocessing: from a PIL image or uint8 tensor to a normalised float tensor.

Every pipeline does the same four things, in this order: make sure the image has 3 channels,
bring it to a fixed size (randomly cropped for training), scale uint8 [0, 255] to float
[0, 1], and normalise each channel with a dataset mean and std so that inputs are roughly
zero-mean and unit-variance. Training adds augmentation.

For captioning, augmentation must not change what the caption says. A horizontal flip turns
"a square left of a circle" into a picture of "a square right of a circle", so the caption
becomes false; ``caption_safe=True`` leaves the flip out. Hue jitter would similarly change
colour words, which is why no pipeline here jitters hue. These pipelines see pixels only, so
even their crop and jitter can make a caption false (cut an object, change its size word or
its colour name); for the shapes data, ``velm_course.vision.caption_augment`` transforms the
image, its scene and its captions together and keeps every word true.

>>> import torch
>>> t = eval_transforms(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
>>> t(torch.zeros(1, 64, 48, dtype=torch.uint8)).shape  # a grayscale image
torch.Size([3, 32, 32])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

# The usual ImageNet statistics; use compute_mean_std for your own data.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_float_chw(image) -> torch.Tensor:
    """A (C, H, W) or (N, C, H, W) tensor/array as float64, uint8 rescaled to [0, 1]."""
    t = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    if t.dtype == torch.uint8:
        return t.double() / 255.0
    if not t.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point, got {t.dtype}")
    return t.double()


def compute_mean_std(
    images: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation over all pixels of all images.

    ``images`` is a (N, C, H, W) batch, or an iterable of (C, H, W) images that may differ in
    size (every pixel counts once). uint8 values are rescaled to [0, 1] first, so the result
    can go straight into ``Normalize`` after ``ToDtype(scale=True)``.
    We accumulate sums of x and x**2 in float64, so a big dataset can be streamed.

    >>> compute_mean_std(torch.tensor([[[[0.0, 1.0]]]]))
    ((0.5,), (0.5,))
    """
    if isinstance(images, torch.Tensor | np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"a batch of images must be (N, C, H, W), got shape {tuple(images.shape)}")
        images = list(images)
    total = total_sq = None
    count = 0
    for image in images:
        x = _as_float_chw(image)
        if x.dim() != 3:
            raise ValueError(f"each image must be (C, H, W), got shape {tuple(x.shape)}")
        x = x.flatten(1)  # (C, H*W): all pixels of a channel in one row
        if total is None:
            total, total_sq = x.sum(dim=1), (x * x).sum(dim=1)
        else:
            if x.shape[0] != total.shape[0]:
                raise ValueError("all images must have the same number of channels")
            total, total_sq = total + x.sum(dim=1), total_sq + (x * x).sum(dim=1)
        count += x.shape[1]
    if count == 0:
        raise ValueError("no images given")
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)  # rounding can give a tiny -eps
    return tuple(mean.tolist()), tuple(var.sqrt().tolist())


def to_rgb(image):
    """Convert a PIL image or a (..., C, H, W) tensor to 3 channels.

    Grayscale (1 channel) is repeated into R, G and B. An alpha channel is dropped, which is
    what PIL's ``convert("RGB")`` does (transparent pixels show whatever colour they store).
    PIL images of any mode (L, LA, P, RGBA, CMYK...) go through ``convert("RGB")``.

    >>> to_rgb(torch.zeros(4, 2, 2)).shape
    torch.Size([3, 2, 2])
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, torch.Tensor) or image.dim() < 3:
        raise ValueError("to_rgb expects a PIL image or a (..., C, H, W) tensor")
    C = image.shape[-3]
    if C == 3:
        return image
    if C in (1, 2):  # gray, or gray + alpha
        return image[..., :1, :, :].expand(*image.shape[:-3], 3, *image.shape[-2:]).clone()
    if C == 4:  # RGB + alpha
        return image[..., :3, :, :].clone()
    raise ValueError(f"cannot convert an image with {C} channels to RGB")


class ToRGB(torch.nn.Module):
    """``to_rgb`` as a transform, so it can sit in a ``v2.Compose``."""

    def forward(self, image):
        return to_rgb(image)


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (R, G, B), got {mean!r} and {std!r}")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {std!r}")


def eval_transforms(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
):
    """Deterministic pipeline: RGB, resize to (image_size, image_size), float, normalise.

    We resize the whole image instead of centre-cropping it: a crop could cut off an
    object the caption talks about. Non-square images are squashed.

    >>> eval_transforms(16)(torch.zeros(3, 20, 20, dtype=torch.uint8)).dtype
    torch.float32
    """
    from torchvision.transforms import v2

    _check_stats(mean, std)
    return v2.Compose([
        ToRGB(),
        v2.ToImage(),  # PIL or tensor -> uint8 image tensor (C, H, W)
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),  # uint8 [0, 255] -> float [0, 1]
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),  # a plain torch.Tensor for the DataLoader
    ])


def train_transforms(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    caption_safe: bool = False,
    scale: tuple[float, float] = (0.8, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    jitter: float = 0.2,
    flip_p: float = 0.5,
):
    """Random pipeline for training: random resized crop, (flip), colour jitter, normalise.

    - ``scale``/``ratio``: the crop covers this fraction of the area, with this aspect ratio,
      before being resized to (image_size, image_size). Keep ``scale`` close to 1 for
      captions, or objects named in the caption may be cropped away.
    - ``caption_safe``: leave out the horizontal flip, because a mirrored image contradicts
      captions that say "left of" / "right of".
    - ``jitter``: strength of brightness, contrast and saturation changes (0 turns it off).
      Hue is never jittered: it would turn "a red square" into a green one.

    >>> t = train_transforms(16, caption_safe=True)
    >>> any(type(s).__name__ == "RandomHorizontalFlip" for s in t.transforms)
    False
    """
    from torchvision.transforms import v2

    _check_stats(mean, std)
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale!r}")
    if jitter < 0:
        raise ValueError("jitter must be >= 0")
    steps = [
        ToRGB(),
        v2.ToImage(),
        v2.RandomResizedCrop((image_size, image_size), scale=scale, ratio=ratio, antialias=True),
    ]
    if not caption_safe:
        steps.append(v2.RandomHorizontalFlip(p=flip_p))
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


SQUARE_MODES = ("squash", "crop", "pad")


def to_square(image: torch.Tensor, size: int, mode: str = "squash", fill: float = 0.0) -> torch.Tensor:
    """A (..., C, H, W) image as a (..., C, size, size) square, three ways:

    - "squash": resize height and width separately (what ``Resize((S, S))`` does): everything
      stays, but a non-square image is stretched, shapes and proportions change;
    - "crop": resize the short side to ``size`` and cut the middle square: proportions stay,
      the ends of the long side are lost;
    - "pad": resize the long side to ``size`` and pad the short one with ``fill`` on both
      sides (letterboxing): everything stays, undistorted, at the cost of empty borders.

    >>> x = torch.rand(3, 40, 80)  # twice as wide as high
    >>> [tuple(to_square(x, 20, m).shape) for m in SQUARE_MODES]
    [(3, 20, 20), (3, 20, 20), (3, 20, 20)]
    >>> bool((to_square(x, 20, "pad")[:, :5] == 0).all())  # 5 rows of padding above
    True
    """
    from torchvision.transforms.v2 import functional as TF

    if mode not in SQUARE_MODES:
        raise ValueError(f"mode must be one of {SQUARE_MODES}, got {mode!r}")
    h, w = image.shape[-2:]
    if mode == "squash":
        return TF.resize(image, [size, size], antialias=True)
    if mode == "crop":
        scale = size / min(h, w)
        resized = TF.resize(image, [max(size, round(h * scale)), max(size, round(w * scale))], antialias=True)
        return TF.center_crop(resized, [size, size])
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = TF.resize(image, [nh, nw], antialias=True)
    top, left = (size - nh) // 2, (size - nw) // 2
    # pad takes [left, top, right, bottom]
    return TF.pad(resized, [left, top, size - nw - left, size - nh - top], fill=fill)


def zoom_shift(
    images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Shrink (or enlarge) each image about its centre, move it, and optionally mirror it.

    ``images`` is (B, C, H, W) float; ``scale`` (B,) is the new size of the content (0.5: half
    as wide and high); ``shift`` (B, 2) moves it right and down by that fraction of the side;
    ``flip`` (B,) bool mirrors it left to right first. Pixels the content no longer covers
    repeat the nearest edge pixel, which for an object crop is the flat background. Sampling is
    bilinear (``grid_sample``), so an integer shift is exact and a 0.5 zoom averages 2x2 blocks.

    >>> x = torch.arange(4.0).view(1, 1, 1, 4)
    >>> zoom_shift(x, torch.ones(1), torch.tensor([[0.25, 0.0]])).flatten().tolist()  # one pixel right
    [0.0, 0.0, 1.0, 2.0]
    """
    import torch.nn.functional as F

    B = images.shape[0]
    if images.dim() != 4 or scale.shape != (B,) or shift.shape != (B, 2):
        raise ValueError(f"need images (B, C, H, W), scale (B,) and shift (B, 2); got {tuple(images.shape)}, "
                         f"{tuple(scale.shape)} and {tuple(shift.shape)}")
    if not bool((scale > 0).all()):
        raise ValueError("every scale must be positive")
    mirror = torch.ones(B) if flip is None else 1.0 - 2.0 * flip.float()  # (B,) +1 or -1
    # affine_grid maps each output position u (coordinates from -1 to 1, so a whole side is 2)
    # to the input position it reads: in = A (u - 2 shift), with A = diag(mirror / s, 1 / s)
    theta = torch.zeros(B, 2, 3, dtype=images.dtype, device=images.device)  # (B, 2, 3)
    theta[:, 0, 0] = mirror.to(images) / scale.to(images)
    theta[:, 1, 1] = 1.0 / scale.to(images)
    theta[:, :, 2] = -2.0 * shift.to(images) * theta[:, [0, 1], [0, 1]]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_zoom_shift(
    images: torch.Tensor, generator: torch.Generator, min_scale: float = 0.5, max_shift: float = 0.25,
    flip: bool = True,
) -> torch.Tensor:
    """``zoom_shift`` with random settings per image: a scale in ``[min_scale, 1]``, a shift of up
    to ``max_shift`` of the side in each direction, and a mirror half the time (``flip``).

    An augmentation for object crops whose test images may show the object smaller or
    off-centre (notebook 06). The draws come from ``generator`` only, so a run is repeatable.

    >>> g = torch.Generator().manual_seed(0)
    >>> random_zoom_shift(torch.rand(5, 3, 16, 16), g).shape
    torch.Size([5, 3, 16, 16])
    """
    if not 0 < min_scale <= 1 or max_shift < 0:
        raise ValueError(f"need 0 < min_scale <= 1 and max_shift >= 0, got {min_scale} and {max_shift}")
    B = images.shape[0]
    scale = min_scale + (1 - min_scale) * torch.rand(B, generator=generator)  # (B,)
    shift = max_shift * (2 * torch.rand(B, 2, generator=generator) - 1)  # (B, 2)
    mirror = torch.rand(B, generator=generator) < 0.5 if flip else None  # (B,)
    return zoom_shift(images, scale, shift, mirror)


def denormalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Undo ``Normalize`` on a (..., 3, H, W) tensor, e.g. to display it; not clamped.

    >>> denormalize(torch.zeros(3, 1, 1), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)).flatten().tolist()
    [0.5, 0.5, 0.5]
    """
    _check_stats(mean, std)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)  # (3, 1, 1) broadcasts
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x * s + m
