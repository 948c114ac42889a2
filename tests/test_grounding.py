"""Attention mass in a box, against brute force over pixels."""

import pytest
import torch

from velm_course.eval.grounding import box_chance, box_coverage, mass_in_box


def brute_force_coverage(bbox, image_size, g):
    """Count pixels: cell j's share of pixels inside the box (pixel (px, py) covers [px, px+1))."""
    x, y, w, h = bbox
    inside = torch.zeros(image_size, image_size)
    inside[y:y + h, x:x + w] = 1  # (H, W)
    cover = torch.zeros(g, g)
    edges = [round(i * image_size / g) for i in range(g + 1)]
    for r in range(g):
        for c in range(g):
            cell = inside[edges[r]:edges[r + 1], edges[c]:edges[c + 1]]
            cover[r, c] = cell.mean()
    return cover.flatten()


@pytest.mark.parametrize("bbox", [[0, 0, 8, 8], [5, 9, 13, 7], [50, 3, 14, 20], [21, 21, 22, 22]])
def test_coverage_equals_counting_pixels(bbox):
    torch.testing.assert_close(box_coverage(bbox, 64, 8), brute_force_coverage(bbox, 64, 8))


def test_uniform_attention_gets_exactly_chance():
    bbox = [5, 9, 13, 7]
    uniform = torch.full((64,), 1 / 64)
    assert mass_in_box(uniform, box_coverage(bbox, 64, 8)).item() == pytest.approx(box_chance(bbox, 64))


def test_attention_on_the_box_cells_counts_their_covered_part():
    cover = box_coverage([0, 0, 12, 8], 64, 8)  # the first cell whole, half of the second
    w = torch.zeros(2, 64)
    w[0, 0] = 1.0
    w[1, 1] = 1.0
    assert mass_in_box(w, cover).tolist() == [1.0, 0.5]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no area"):
        box_coverage([3, 3, 0, 5], 64, 8)
    with pytest.raises(ValueError, match="attention over 16 cells"):
        mass_in_box(torch.ones(16) / 16, box_coverage([0, 0, 8, 8], 64, 8))
