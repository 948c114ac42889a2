"""Caption-preserving augmentation, checked by re-reading the augmented image against the
transformed scene and captions (as the generator's tests check the generator)."""

import json
import random

import numpy as np
import pytest
import torch

from velm_course.data.shapes import COLORS, ShapesConfig, generate_shapes, render_scene
from velm_course.eval.scene import scene_scores
from velm_course.vision.caption_augment import (
    CaptionSafeAugment,
    adjust_colors,
    cell_of,
    crop_scene,
    flip_scene,
    flip_text,
    nearest_color,
    safe_crop,
    safe_jitter,
    size_class,
)

CFG = ShapesConfig(image_size=64, n_train=80, n_val=0, n_test=0, seed=7)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from PIL import Image

    root = generate_shapes(tmp_path_factory.mktemp("shapes"), CFG, progress=False)
    ann = json.loads((root / "annotations" / "captions_train.json").read_text())
    caps = {}
    for a in ann["annotations"]:
        caps.setdefault(a["image_id"], []).append(a["caption"])
    out = []
    for img in ann["images"]:
        pixels = torch.from_numpy(np.array(Image.open(root / "images" / "train" / img["file_name"]))).permute(2, 0, 1)
        out.append((img["id"], pixels, img["objects"], caps[img["id"]]))
    return out


def exact(captions, objects):
    return scene_scores({i: c for i, c in enumerate(captions)}, {i: objects for i in range(len(captions))})


def test_flip_text():
    assert flip_text("the red star is left of the blue box") == "the red star is right of the blue box"
    assert flip_text("a red disc in the middle right") == "a red disc in the middle left"
    assert flip_text("a bright red circle") == "a bright red circle"  # "bright" is not "right"
    text = "a star to the left of a box in the top right"
    assert flip_text(flip_text(text)) == text


def test_flip_is_the_mirrored_scene_drawn_again_and_keeps_captions_true(scenes):
    relations = 0
    for _, image, objects, captions in scenes:
        background = tuple(image[:, 0, 0].tolist())
        flipped, objs, caps = flip_scene(image, objects, captions)
        redrawn = torch.from_numpy(np.array(render_scene(objs, CFG.image_size, background))).permute(2, 0, 1)
        assert torch.equal(flipped, redrawn)  # pixel for pixel
        for o in objs:
            assert cell_of(*o["center"], CFG.image_size) == o["cell"]
        scores = exact(caps, objs)
        assert scores["exact_scene"] == 1.0, caps
        relations += bool(scores["relation_n"])
    assert relations > 5
    # with two objects side by side, the unflipped relation is false in the mirror
    side_by_side = [(im, o, c) for _, im, o, c in scenes if len(o) == 2 and o[0]["cell"][1] != o[1]["cell"][1]
                    and any(" left of " in x or " right of " in x for x in c)]
    assert side_by_side
    for image, objects, captions in side_by_side:
        _, objs, _ = flip_scene(image, objects, captions)
        stated = [c for c in captions if " left of " in c or " right of " in c]
        assert exact(stated, objs)["relation_accuracy"] == 0.0


def measured(image, obj):
    """(centre colour name, half-side measured from the pixels nearer the object's colour than to
    any other palette colour or to the background, around the object)."""
    side = image.shape[-1]
    cx, cy = obj["center"]
    x0, y0, w, _ = obj["bbox"]
    lo_x, lo_y = max(0, x0 - 3), max(0, y0 - 3)
    patch = image[:, lo_y:min(side, y0 + w + 3), lo_x:min(side, x0 + w + 3)].float()  # (3, h, w)
    background = image[:, 0, 0].float()
    refs = torch.stack([torch.tensor(v, dtype=torch.float32) for v in COLORS.values()] + [background])  # (7, 3)
    dist = ((patch[None] - refs[:, :, None, None]) ** 2).sum(1)  # (7, h, w)
    mask = dist.argmin(0) == list(COLORS).index(obj["color"])  # pixels of the object's colour
    ys, xs = mask.nonzero(as_tuple=True)
    half = (max(xs.max() - xs.min(), ys.max() - ys.min()).item()) / 2
    return nearest_color(image[:, cy, cx].tolist()), half


def test_safe_crop_keeps_cells_wholeness_and_sizes(scenes):
    rng = random.Random(0)
    cropped = 0
    for _, image, objects, _ in scenes:
        out, objs = safe_crop(image, objects, rng, min_scale=0.6)
        cropped += not torch.equal(out, image)
        for o in objs:
            x, y, w, _ = o["bbox"]
            assert 0 <= x and x + w <= CFG.image_size and 0 <= y and y + w <= CFG.image_size  # whole
            assert cell_of(*o["center"], CFG.image_size) == o["cell"]
            color, half = measured(out, o)
            assert color == o["color"]
            nominal = (w - 1) / 2  # the zoomed half-side the new box records
            assert size_class(nominal, CFG.image_size) == o["size"]
            assert abs(half - nominal) <= 1.0, (o, half)  # and the pixels agree with the box
    assert cropped > len(scenes) // 2  # the constraints leave room for most images


def test_crop_constraints_can_refuse():
    obj = {"color": "red", "shape": "star", "size": "medium", "cell": [0, 0], "center": [10, 10],
           "bbox": [3, 3, 15, 15]}
    assert crop_scene([obj], 64, 0, 0, 64) == [obj] or crop_scene([obj], 64, 0, 0, 64)[0]["cell"] == [0, 0]
    assert crop_scene([obj], 64, 8, 8, 48) is None  # zoomed 4/3: the object leaves its cell
    assert crop_scene([obj], 64, 0, 0, 52) is None  # zoomed 1.23: "medium" would read "large"


def test_safe_jitter_keeps_colour_names_where_plain_jitter_does_not(scenes):
    rng = random.Random(0)
    renamed_plain = renamed_safe = 0
    for _, image, objects, _ in scenes[:40]:
        for _ in range(3):
            b, c, s = (rng.uniform(0.2, 1.8) for _ in range(3))
            plain = adjust_colors(image, b, c, s)
            renamed_plain += any(nearest_color(plain[:, o["center"][1], o["center"][0]].tolist()) != o["color"]
                                 for o in objects)
            safe = safe_jitter(image, objects, rng, strength=0.8)
            renamed_safe += any(nearest_color(safe[:, o["center"][1], o["center"][0]].tolist()) != o["color"]
                                for o in objects)
    assert renamed_plain > 0 and renamed_safe == 0


def test_augment_end_to_end(scenes):
    augment = CaptionSafeAugment(flip_p=0.5, min_scale=0.7, jitter=0.4)
    views = []
    for seed in range(2):
        rng = random.Random(seed)
        views.append([augment(image, objects, captions, rng) for _, image, objects, captions in scenes])
    for (image, objs, caps), (_, original, _, _) in zip(views[0], scenes, strict=True):
        assert image.dtype == torch.uint8 and image.shape == original.shape
        assert exact(caps, objs)["exact_scene"] == 1.0
        for o in objs:
            assert nearest_color(image[:, o["center"][1], o["center"][0]].tolist()) == o["color"]
            assert cell_of(*o["center"], 64) == o["cell"]
    rng = random.Random(0)  # the same seed: the same views
    again = [augment(image, objects, captions, rng) for _, image, objects, captions in scenes]
    assert all(torch.equal(a[0], b[0]) and a[2] == b[2] for a, b in zip(again, views[0], strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(views[0], views[1], strict=True))
    with pytest.raises(ValueError, match="square uint8"):
        augment(torch.zeros(3, 64, 48, dtype=torch.uint8), [], [], random.Random(0))
