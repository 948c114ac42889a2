"""Does a word look at its object? Attention mass inside a bounding box, measured.

A cross-attention map spreads one word's attention over the N = g×g cells of the image grid.
If each cell's weight is spread evenly over the cell's pixels, the share of the word's
attention that lands inside an object's box is

    mass = sum_j w_j · coverage_j,    coverage_j = |cell_j ∩ box| / |cell_j|

Attention spread evenly over the whole image gets ``chance = |box| / |image|``, so
``mass / chance`` says how many times more than chance a word looks at its object.

Shape letters: N grid cells (g×g, row-major), g grid side.

>>> cov = box_coverage([0, 0, 32, 32], image_size=64, grid_side=2)  # the top-left quarter
>>> cov.tolist()
[1.0, 0.0, 0.0, 0.0]
>>> mass_in_box(torch.tensor([0.5, 0.5, 0.0, 0.0]), cov).item(), box_chance([0, 0, 32, 32], 64)
(0.5, 0.25)
"""

from __future__ import annotations

import torch


def box_coverage(bbox, image_size: int, grid_side: int) -> torch.Tensor:
    """Fraction of each grid cell's area inside the box [x, y, w, h] (pixels): (g*g,), row-major."""
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"box {list(bbox)} has no area")
    edges = torch.linspace(0, image_size, grid_side + 1, dtype=torch.float64)  # (g + 1,)
    lo, hi = edges[:-1], edges[1:]  # each cell's pixel span along one axis
    cover_x = (torch.minimum(hi, torch.tensor(x + w)) - torch.maximum(lo, torch.tensor(x))).clamp(min=0)
    cover_y = (torch.minimum(hi, torch.tensor(y + h)) - torch.maximum(lo, torch.tensor(y))).clamp(min=0)
    cell_area = (hi - lo)[:, None] * (hi - lo)[None, :]  # (g, g)
    cover = cover_y[:, None] * cover_x[None, :] / cell_area  # (g, g): rows are y, columns are x
    return cover.flatten().float()  # (g*g,)


def mass_in_box(weights: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Share of attention (..., N) inside the box whose ``box_coverage`` is (N,): (...)."""
    if weights.shape[-1] != coverage.shape[0]:
        raise ValueError(f"attention over {weights.shape[-1]} cells, coverage of {coverage.shape[0]}")
    return weights @ coverage.to(weights.dtype)


def box_chance(bbox, image_size: int) -> float:
    """The share of a uniform attention map inside the box: its area over the image's."""
    return float(bbox[2]) * float(bbox[3]) / image_size**2
