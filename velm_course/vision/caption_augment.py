"""Augmentation that keeps a caption true: the image, its scene and its captions change together.

``train_transforms`` augments pixels and nothing else, which is right for a class label that
no flip or crop can change, and wrong for a caption. On the shapes data a caption states
colours, sizes, grid regions and left/right/above/below, and plain augmentation breaks each:

    horizontal flip      "a star left of a circle" becomes false: the words must flip too
    random resized crop  moves objects into other grid cells (regions and relations change)
                         and zooms them (a "medium" object becomes "large")
    colour jitter        strong brightness or saturation changes turn orange into yellow

Here every transformation knows the scene (the generator's objects) and keeps it true:

    flip_scene   mirrors the image, the objects (column, centre, box) and the text: "left" and
                 "right" swap in relations and region names. Every shape of the data is
                 symmetric about its vertical axis, so the mirrored picture is exactly the
                 mirrored scene drawn again.
    safe_crop    square crops (the aspect ratio stays), redrawn until every object keeps its
                 grid cell, stays whole, and keeps its size word (its zoomed size is still
                 closest to its own size class).
    safe_jitter  brightness, contrast and saturation, redrawn until every object's centre
                 pixel still has its palette colour as the nearest one.

``CaptionSafeAugment`` applies the three in turn with a ``random.Random`` of its caller's, so
runs are reproducible without touching torch's global generator.

Shape letters: H = W image side.

>>> flip_text("a red star to the left of a blue box in the top left")
'a red star to the right of a blue box in the top right'
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from ..data.shapes import COLORS, SIZES, cell_span, size_radius

_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def flip_text(text: str) -> str:
    """Swap the words "left" and "right" (relations and region names alike)."""
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def flip_scene(image: torch.Tensor, objects: list[dict], captions: list[str]
               ) -> tuple[torch.Tensor, list[dict], list[str]]:
    """The mirror image (3, H, W), its scene and its captions, all flipped left-right."""
    side = image.shape[-1]
    flipped = []
    for o in objects:
        x, y, w, h = o["bbox"]
        cx, cy = o["center"]
        flipped.append({**o, "cell": [o["cell"][0], 2 - o["cell"][1]], "center": [side - 1 - cx, cy],
                        "bbox": [side - x - w, y, w, h]})
    return image.flip(-1), flipped, [flip_text(c) for c in captions]


def cell_of(x: float, y: float, side: int) -> list[int]:
    """The grid cell [row, col] holding pixel (x, y)."""
    def index(v):
        return next(i for i in range(3) if cell_span(i, side)[0] <= v < cell_span(i, side)[1])
    return [index(int(y)), index(int(x))]


def size_class(radius: float, side: int) -> str:
    """The size word whose drawn half-side is nearest to ``radius``.

    >>> size_class(4.4, 64), size_class(8.2, 64)
    ('small', 'large')
    """
    return min(SIZES, key=lambda s: abs(size_radius(s, side) - radius))


def crop_object(obj: dict, side: int, left: int, top: int, width: int, height: int) -> tuple[dict, str | None]:
    """One object after cropping the box (left, top, width, height) and resizing it to a
    ``side`` square, and what went wrong: None, "cut" (part of it left the picture), "cell"
    (its centre moved to another grid cell: region and relation words may turn false) or
    "size" (its new size is nearer another size word)."""
    zx, zy = side / width, side / height
    cx, cy = obj["center"]
    r = (obj["bbox"][2] - 1) / 2
    # pixel centres map as (p + 0.5 - offset) * zoom - 0.5; the new centre is rounded to a pixel
    ncx, ncy = round((cx + 0.5 - left) * zx - 0.5), round((cy + 0.5 - top) * zy - 0.5)
    rx, ry = r * zx, r * zy  # a non-square crop stretches the object
    w = round(2 * max(rx, ry) + 1)
    moved = {**obj, "center": [ncx, ncy], "bbox": [ncx - w // 2, ncy - w // 2, w, w]}
    if not (rx <= ncx <= side - 1 - rx and ry <= ncy <= side - 1 - ry):
        return moved, "cut"
    if cell_of(ncx, ncy, side) != obj["cell"]:
        return moved, "cell"
    if size_class(max(rx, ry), side) != obj["size"]:
        return moved, "size"
    return moved, None


def crop_scene(objects: list[dict], side: int, left: int, top: int, crop: int) -> list[dict] | None:
    """The objects after cropping the square (left, top, crop) and resizing it back to ``side``;
    None if an object would be cut, leave its cell or change its size word."""
    out = []
    for o in objects:
        moved, problem = crop_object(o, side, left, top, crop, crop)
        if problem is not None:
            return None
        out.append(moved)
    return out


def safe_crop(image: torch.Tensor, objects: list[dict], rng: random.Random, min_scale: float = 0.8,
              tries: int = 20) -> tuple[torch.Tensor, list[dict]]:
    """A random square crop of at least ``min_scale`` of the area, resized back to the image's
    side, that keeps every object's cell, wholeness and size word; the image unchanged if no
    draw of ``tries`` does."""
    from torchvision.transforms.v2 import functional as TF

    side = image.shape[-1]
    for _ in range(tries):
        crop = rng.randint(round(side * min_scale ** 0.5), side)
        left, top = rng.randint(0, side - crop), rng.randint(0, side - crop)
        moved = crop_scene(objects, side, left, top, crop)
        if moved is not None:
            out = TF.resized_crop(image, top, left, crop, crop, [side, side], antialias=True)  # (3, H, W)
            return out, moved
    return image, objects


def nearest_color(rgb) -> str:
    """The palette colour closest (in RGB) to a pixel given as three 0-255 numbers."""
    return min(COLORS, key=lambda c: sum((float(v) - w) ** 2 for v, w in zip(rgb, COLORS[c], strict=True)))


def adjust_colors(image: torch.Tensor, brightness: float, contrast: float, saturation: float) -> torch.Tensor:
    """Brightness, then contrast, then saturation scaled by the given factors (1: unchanged)."""
    from torchvision.transforms.v2 import functional as TF

    return TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, brightness), contrast), saturation)


def safe_jitter(image: torch.Tensor, objects: list[dict], rng: random.Random, strength: float = 0.3,
                tries: int = 20) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s], redrawn
    until every object's centre pixel keeps its colour name; unchanged if no draw does."""
    for _ in range(tries):
        out = adjust_colors(image, *(rng.uniform(1 - strength, 1 + strength) for _ in range(3)))
        if all(nearest_color(out[:, o["center"][1], o["center"][0]].tolist()) == o["color"] for o in objects):
            return out
    return image


@dataclass(frozen=True)
class CaptionSafeAugment:
    flip_p: float = 0.5  # probability of the mirrored view (words flipped too)
    min_scale: float = 0.8  # smallest crop, as a share of the image's area (1: never crop)
    jitter: float = 0.3  # brightness, contrast and saturation strength (0: none)
    tries: int = 20  # draws before a crop or a jitter gives up and leaves the image as it was

    def __call__(self, image: torch.Tensor, objects: list[dict], captions: list[str], rng: random.Random
                 ) -> tuple[torch.Tensor, list[dict], list[str]]:
        """A uint8 image (3, H, W), its objects and captions -> the augmented three."""
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
            raise ValueError(f"expected a square uint8 image (3, H, W), got {image.dtype} {tuple(image.shape)}")
        if rng.random() < self.flip_p:
            image, objects, captions = flip_scene(image, objects, captions)
        if self.min_scale < 1:
            image, objects = safe_crop(image, objects, rng, self.min_scale, self.tries)
        if self.jitter > 0:
            image = safe_jitter(image, objects, rng, self.jitter, self.tries)
        return image, objects, captions
