"""Regions of interest: R-CNN style per-object features, and object crops of the shapes data.

Shape letters:
    B  batch    C  channels    H, W  image side
    K  regions (boxes) over the whole batch
    oh, ow  size of the pooled grid of each region
    N  examples (object crops) in a dataset

>>> xywh_to_xyxy(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()
[[1.0, 2.0, 4.0, 6.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """COCO boxes ``[x, y, w, h]`` (top-left corner, size) to corners ``[x0, y0, x1, y1]``.

    >>> xywh_to_xyxy(torch.tensor([[2.0, 3.0, 4.0, 5.0]])).tolist()
    [[2.0, 3.0, 6.0, 8.0]]
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"expected boxes of shape (K, 4), got {tuple(boxes.shape)}")
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)  # (K, 4)


def roi_features(
    features: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    output_size: int | tuple[int, int] = 7,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
) -> torch.Tensor:
    """Pool a fixed-size (C, oh, ow) grid of features for every box: RoIAlign.

    ``features`` is (B, C, h, w); ``boxes[b]`` is a (K_b, 4) tensor of ``[x0, y0, x1, y1]``
    corners in *image* pixels for image b. ``spatial_scale`` maps image pixels to feature
    cells (1/8 for a map 8 times smaller than the image). Each box is cut into oh x ow bins
    and each bin is the mean of a few bilinear samples, so no box edge is rounded to the
    grid (that rounding is what RoIAlign fixed in the older RoIPool). With
    ``spatial_scale=1`` on an image this is crop-and-resize. Returns (K, C, oh, ow), boxes of
    image 0 first.

    >>> img = torch.arange(16.0).view(1, 1, 4, 4)
    >>> roi_features(img, [torch.tensor([[1.0, 1.0, 3.0, 3.0]])], 2, sampling_ratio=1)[0, 0].tolist()
    [[5.0, 6.0], [9.0, 10.0]]
    """
    from torchvision.ops import roi_align  # heavy import only where it is needed

    if features.dim() != 4:
        raise ValueError(f"expected features of shape (B, C, h, w), got {tuple(features.shape)}")
    if len(boxes) != features.shape[0]:
        raise ValueError(f"got {len(boxes)} box tensors for a batch of {features.shape[0]} images")
    for b in boxes:
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"each box tensor must be (K, 4) [x0, y0, x1, y1], got {tuple(b.shape)}")
        if (b[:, 2:] <= b[:, :2]).any():
            raise ValueError("every box needs x1 > x0 and y1 > y0")
    boxes = [b.to(features.dtype) for b in boxes]
    # aligned=True: a pixel's value sits at its centre (i + 0.5), so a box from pixel 1 to
    # pixel 3 covers exactly pixels 1 and 2, with no half-pixel shift
    return roi_align(features, boxes, output_size, spatial_scale=spatial_scale,
                     sampling_ratio=sampling_ratio, aligned=True)  # (K, C, oh, ow)


ATTRIBUTES = ("shape", "color")  # what object_crops can label an object with


def object_crops(
    root, split: str, attribute: str = "shape", size: int = 24, margin: int = 2,
    limit: int | None = None, shift: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One (3, size, size) crop per object of a generated shapes split, with its label.

    The boxes come from the annotations (``captions_<split>.json`` lists each image's
    ``objects``), widened by ``margin`` pixels so the shape's outline is visible, and
    resized to ``size`` with ``roi_features``. Resizing removes the object's size, so the
    labels are its ``"shape"`` or its ``"color"``. ``limit`` keeps only the first images.
    A larger ``margin`` shows the object smaller, with more of the scene around it (a zoomed-out
    test set); ``shift`` moves every box right by that fraction of the object's width, so the object
    sits off-centre (a translated test set) and part of the crop shows its neighbourhood.
    Where a box reaches past the image, the crop shows the scene's background colour.
    Returns ``(crops (N, 3, size, size) in [0, 1], labels (N,), class names)``.
    """
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from ..data.shapes import COLORS, SHAPES

    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, got {attribute!r}")
    if size < 1 or margin < 0:
        raise ValueError(f"need size >= 1 and margin >= 0, got size={size}, margin={margin}")
    root = Path(root)
    ann_file = root / "annotations" / f"captions_{split}.json"
    if not ann_file.is_file():
        raise FileNotFoundError(f"no annotations for split {split!r} ({ann_file.name}) in the dataset")
    classes = list(SHAPES) if attribute == "shape" else list(COLORS)
    crops, labels = [], []
    for info in json.loads(ann_file.read_text())["images"][:limit]:
        if not info["objects"]:
            continue
        image = np.array(Image.open(root / "images" / split / info["file_name"]).convert("RGB"))
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]  # (1, 3, H, W)
        # A widened box can reach past the image, where roi_align would read zeros (black). Beyond
        # its border a scene continues as background, so pad with the background colour: the
        # scene's most frequent one (the shapes cover less of it than the background does).
        colors, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        background = torch.from_numpy(colors[counts.argmax()]).float().div(255)  # (3,)
        pad = max(x.shape[-2:])
        canvas = background.view(1, 3, 1, 1).repeat(1, 1, x.shape[-2] + 2 * pad, x.shape[-1] + 2 * pad)
        canvas[..., pad:-pad, pad:-pad] = x  # (1, 3, H + 2 pad, W + 2 pad)
        boxes = xywh_to_xyxy(torch.tensor([o["bbox"] for o in info["objects"]], dtype=torch.float32))
        widths = boxes[:, 2] - boxes[:, 0]  # (K,): the objects' own widths
        boxes = boxes + torch.tensor([pad - margin, pad - margin, pad + margin, pad + margin])  # (K, 4) widened
        boxes[:, [0, 2]] += shift * widths[:, None]  # moved right: the object ends up left of centre
        crops.append(roi_features(canvas, [boxes], size))  # (K, 3, size, size)
        labels += [classes.index(o[attribute]) for o in info["objects"]]
    if not crops:
        raise ValueError(f"split {split!r} has no objects")
    return torch.cat(crops), torch.tensor(labels), classes
