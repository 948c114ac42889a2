"""The shapes generator: determinism, schema, and captions/answers checked against the pixels.

The pixel checks do not trust the generator's drawing code: colours are read back from the
saved PNGs, each object's mask is compared with a reference rasterisation made here with
matplotlib's point-in-polygon test, and relations are recomputed from positions.
"""

import hashlib
import itertools
import json
import math
import random
import re
import threading
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.path import Path as MplPath
from PIL import Image

from velm_course.data import shapes
from velm_course.data.shapes import (
    BACKGROUNDS,
    COLORS,
    QUESTION_TYPES,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    ShapesConfig,
    captions_for,
    ensure_shapes,
    generate_shapes,
    heldout_pairs,
    oracle_caption,
    parse_objects,
    questions_for,
    read_scenes,
    render_scene,
    sample_scene,
    shapes_split,
    size_question,
)

SPLITS = ("train", "val", "test")
NUMBERS = {"zero": 0, "one": 1, "two": 2, "three": 3}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    cfg = ShapesConfig(image_size=64, n_train=40, n_val=10, n_test=10, seed=3)
    return generate_shapes(tmp_path_factory.mktemp("shapes"), cfg, progress=False), cfg


@pytest.fixture(scope="module")
def dataset96(tmp_path_factory):
    # another image size, so the size-relative drawing is checked at more radii
    cfg = ShapesConfig(image_size=96, n_train=15, n_val=0, n_test=0, seed=5)
    return generate_shapes(tmp_path_factory.mktemp("shapes96"), cfg, progress=False), cfg


def load(root, split):
    captions = json.loads((root / "annotations" / f"captions_{split}.json").read_text())
    vqa = json.loads((root / "annotations" / f"vqa_{split}.json").read_text())
    return captions, vqa


def file_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# Determinism and schema

def test_same_config_gives_identical_bytes_and_other_seed_differs(tmp_path, dataset):
    root, cfg = dataset
    again = file_hashes(generate_shapes(tmp_path / "again", cfg, progress=False))
    first = file_hashes(root)
    assert again == first
    assert len(first) == 60 + 3 * 2 + 1  # PNGs, captions+vqa per split, the Karpathy file
    other = file_hashes(generate_shapes(tmp_path / "other", ShapesConfig(
        image_size=64, n_train=40, n_val=10, n_test=10, seed=4), progress=False))
    assert other.keys() == first.keys()
    assert sum(other[k] != first[k] for k in first) > 50


def test_coco_schema(dataset):
    root, cfg = dataset
    all_image_ids, all_ann_ids, all_question_ids = [], [], []
    for split in SPLITS:
        captions, vqa = load(root, split)
        assert set(captions) >= {"info", "licenses", "images", "annotations"}
        assert isinstance(captions["info"], dict) and captions["licenses"] == []
        n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[split]
        assert len(captions["images"]) == n
        by_image = {}
        for img in captions["images"]:
            assert isinstance(img["id"], int) and isinstance(img["file_name"], str)
            assert img["file_name"] == f"{img['id']:012d}.png"
            assert img["width"] == img["height"] == cfg.image_size
            assert 1 <= len(img["objects"]) <= 3
            for obj in img["objects"]:
                assert set(obj) >= {"shape", "color", "size", "bbox", "center"}
                assert obj["shape"] in SHAPES and obj["color"] in COLORS and obj["size"] in SIZES
                assert all(isinstance(v, int) for v in obj["bbox"] + obj["center"])
            with Image.open(root / "images" / split / img["file_name"]) as im:
                assert im.size == (cfg.image_size, cfg.image_size) and im.mode == "RGB"
            by_image[img["id"]] = []
        for ann in captions["annotations"]:
            assert set(ann) == {"id", "image_id", "caption"}
            assert isinstance(ann["id"], int) and isinstance(ann["caption"], str)
            by_image[ann["image_id"]].append(ann["caption"])  # KeyError = points nowhere
        for caps in by_image.values():
            assert len(caps) == 5 and len(set(caps)) == 5
            for c in caps:
                assert re.fullmatch(r"[a-z]+( [a-z]+)*", c), c
        per_image = {}
        for q in vqa["questions"]:
            assert set(q) == {"question_id", "image_id", "question", "answer", "type"}
            assert q["image_id"] in by_image
            assert 1 <= len(q["answer"].split()) <= 2
            per_image.setdefault(q["image_id"], []).append(q["question"])
        assert per_image.keys() == by_image.keys()
        for qs in per_image.values():
            # 4-6 from the round robin, then one size question
            assert 5 <= len(qs) <= 7 and len(set(qs)) == len(qs)
        all_image_ids += list(by_image)
        all_ann_ids += [a["id"] for a in captions["annotations"]]
        all_question_ids += [q["question_id"] for q in vqa["questions"]]
    for ids in (all_image_ids, all_ann_ids, all_question_ids):
        assert len(ids) == len(set(ids))  # unique across splits too


def test_karpathy_file_matches_the_coco_files(dataset):
    root, _ = dataset
    karpathy = json.loads((root / "dataset_shapes.json").read_text())
    assert karpathy["dataset"] == "shapes"
    expected = {}
    for split in SPLITS:
        captions, _ = load(root, split)
        ann = {a["id"]: a for a in captions["annotations"]}
        for img in captions["images"]:
            expected[img["id"]] = (split, img["file_name"],
                                   sorted((a["id"], a["caption"]) for a in ann.values()
                                          if a["image_id"] == img["id"]))
    assert len(karpathy["images"]) == len(expected)
    for i, entry in enumerate(karpathy["images"]):
        split, file_name, sents = expected[entry["cocoid"]]
        assert entry["imgid"] == i and entry["split"] == split
        assert (root / entry["filepath"] / entry["filename"]).is_file()
        assert entry["filename"] == file_name
        assert entry["sentids"] == [s["sentid"] for s in entry["sentences"]]
        assert sorted((s["sentid"], s["raw"]) for s in entry["sentences"]) == sents
        assert all(s["tokens"] == s["raw"].split() and s["imgid"] == i for s in entry["sentences"])


# ----------------------------------------------------------------------------------------------
# Reading the scene back from the pixels

def reference_polygon(shape):
    """Outlines in box coordinates u, v in [-1, 1] (v down), written independently here."""
    w = 1 / 3
    if shape == "square":
        return [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    if shape == "diamond":
        return [(0, -1), (1, 0), (0, 1), (-1, 0)]
    if shape == "triangle":
        return [(0, -1), (1, 1), (-1, 1)]
    if shape == "cross":
        return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1),
                (-w, w), (-1, w), (-1, -w), (-w, -w)]
    assert shape == "star"
    points = []
    for k in range(10):
        radius = 1.0 if k % 2 == 0 else shapes.STAR_INNER
        angle = math.radians(-90 + 36 * k)
        points.append((radius * math.cos(angle), radius * math.sin(angle)))
    shift = (1 - max(y for _, y in points)) / 2  # centred vertically in the box
    return [(x, y + shift) for x, y in points]


def reference_mask(shape, r):
    coords = [(i / (r + 0.5), j / (r + 0.5)) for j in range(-r, r + 1) for i in range(-r, r + 1)]
    if shape == "circle":
        inside = [math.hypot(u, v) <= 1 for u, v in coords]
    else:
        inside = MplPath(reference_polygon(shape)).contains_points(coords)
    return np.array(inside, dtype=bool).reshape(2 * r + 1, 2 * r + 1)


def grid_index(x, side):
    return max(c for c in range(3) if c * side // 3 <= x)


def identify_color(pixel):
    pixel = [int(p) for p in pixel]  # from uint8, so differences cannot wrap around
    name = min(COLORS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLORS[c], pixel, strict=True)))
    assert tuple(COLORS[name]) == tuple(pixel), "not an exact palette colour"
    return name


def identify_shape(mask):
    r = (mask.shape[0] - 1) // 2
    matches = [s for s in SHAPES if np.array_equal(reference_mask(s, r), mask)]
    assert len(matches) == 1, matches
    return matches[0]


def identify_size(width, side):
    expected = {s: 2 * min(round(f * side / 2), (side // 3 - 1) // 2) + 1 for s, f in SIZES.items()}
    assert len(set(expected.values())) == 3  # the three sizes are told apart by width
    return next(s for s, w in expected.items() if w == width)


def observe_scene(png_path, objects, side):
    """The scene as the pixels show it: colour, shape and size of each annotated object."""
    img = np.array(Image.open(png_path))  # (H, W, 3)
    covered = np.zeros(img.shape[:2], dtype=bool)
    seen = []
    for obj in objects:
        x, y, w, h = obj["bbox"]
        cx, cy = obj["center"]
        assert w == h and w % 2 == 1 and (cx, cy) == (x + w // 2, y + h // 2)
        assert 0 <= x and x + w <= side and 0 <= y and y + h <= side
        assert not covered[y:y + h, x:x + w].any(), "boxes overlap"
        covered[y:y + h, x:x + w] = True
        row, col = grid_index(cy, side), grid_index(cx, side)
        # the whole box lies in one grid cell
        assert grid_index(x, side) == grid_index(x + w - 1, side) == col
        assert grid_index(y, side) == grid_index(y + h - 1, side) == row
        color = identify_color(img[cy, cx])
        mask = (img[y:y + h, x:x + w] == COLORS[color]).all(axis=-1)
        seen.append({"color": color, "shape": identify_shape(mask), "size": identify_size(w, side),
                     "row": row, "col": col, "cx": cx, "cy": cy})
    background = img[~covered]
    assert (background == background[0]).all() and tuple(background[0]) in BACKGROUNDS
    return seen


def rel_true(a, b, rel):
    if rel == "left of":
        return a["col"] < b["col"] and a["cx"] < b["cx"]
    if rel == "right of":
        return a["col"] > b["col"] and a["cx"] > b["cx"]
    if rel == "above":
        return a["col"] == b["col"] and a["row"] < b["row"] and a["cy"] < b["cy"]
    if rel == "below":
        return a["col"] == b["col"] and a["row"] > b["row"] and a["cy"] > b["cy"]
    raise AssertionError(rel)


CAPTION_RELATIONS = {"to the left of": "left of", "left of": "left of", "to the right of": "right of",
                     "right of": "right of", "above": "above", "over": "above",
                     "below": "below", "under": "below"}
SHAPE_OF = {"circle": "circle", "disc": "circle", "square": "square", "box": "square",
            "triangle": "triangle", "star": "star", "diamond": "diamond", "rhombus": "diamond",
            "cross": "cross", "plus": "cross"}
SIZE_OF = {"small": "small", "little": "small", "medium": "medium", "large": "large", "big": "large"}


def check_caption(caption, scene, side, counters):
    """Check every fact a caption states against the observed scene; count what was checked."""
    words = caption.split()
    by_pair = {(o["color"], o["shape"]): o for o in scene}
    mentions = []  # (start, end, object)
    for i, word in enumerate(words):
        if word in COLORS and i + 1 < len(words) and words[i + 1] in SHAPE_OF:
            obj = by_pair[(word, SHAPE_OF[words[i + 1]])]  # KeyError: names an absent object
            start = i
            if i > 0 and words[i - 1] in SIZE_OF:
                assert SIZE_OF[words[i - 1]] == obj["size"], caption
                counters["size"] += 1
                start = i - 1
            mentions.append((start, i + 2, obj))
    assert {(o["color"], o["shape"]) for _, _, o in mentions} == set(by_pair), caption
    for (_, end, a), (start, _, b) in itertools.pairwise(mentions):
        between = words[end:start]
        if between[:1] == ["is"]:
            between = between[1:]
        if between[-1:] and between[-1] in ("a", "an", "the"):
            between = between[:-1]
        phrase = " ".join(between)
        if phrase in CAPTION_RELATIONS:
            assert rel_true(a, b, CAPTION_RELATIONS[phrase]), caption
            counters["relation"] += 1
    for word in ("two", "three"):
        if f"{word} shapes" in caption:
            assert NUMBERS[word] == len(scene), caption
            counters["count"] += 1
    if m := re.search(r" in the (\w+ \w+|center)$", caption):
        (obj,) = scene
        rows, cols = ("top", "middle", "bottom"), ("left", "middle", "right")
        name = "center" if (obj["row"], obj["col"]) == (1, 1) else f"{rows[obj['row']]} {cols[obj['col']]}"
        assert m.group(1) == name, caption
        counters["region"] += 1


def answer(question, scene):
    """Answer a question from the observed scene, asserting the answer is unique."""
    name = {(o["color"], o["shape"]): o for o in scene}
    if m := re.fullmatch(r"what color is the (\w+)", question):
        (obj,) = [o for o in scene if o["shape"] == m.group(1)]
        return obj["color"]
    if m := re.fullmatch(r"what shape is the (\w+) object", question):
        (obj,) = [o for o in scene if o["color"] == m.group(1)]
        return obj["shape"]
    if m := re.fullmatch(r"what size is the (\w+) (\w+)", question):
        return name[m.group(1), m.group(2)]["size"]
    if question == "how many shapes are there":
        return {1: "one", 2: "two", 3: "three"}[len(scene)]
    if m := re.fullmatch(r"how many (\w+) objects are there", question):
        n = sum(o["color"] == m.group(1) for o in scene)
        return {0: "zero", 1: "one", 2: "two", 3: "three"}[n]
    if m := re.fullmatch(r"is there a (\w+) (\w+)", question):
        return "yes" if (m.group(1), m.group(2)) in name else "no"
    rels = "left of|right of|above|below"
    if m := re.fullmatch(rf"is the (\w+) (\w+) ({rels}) the (\w+) (\w+)", question):
        a, b = name[m.group(1), m.group(2)], name[m.group(4), m.group(5)]
        return "yes" if rel_true(a, b, m.group(3)) else "no"
    if m := re.fullmatch(rf"what is ({rels}) the (\w+) (\w+)", question):
        b = name[m.group(2), m.group(3)]
        (a,) = [o for o in scene if o is not b and rel_true(o, b, m.group(1))]
        return f"{a['color']} {a['shape']}"
    raise AssertionError(f"unexpected question {question!r}")


def test_palette_and_backgrounds_are_far_apart():
    for a, b in itertools.combinations(COLORS.values(), 2):
        assert math.dist(a, b) > 60, (a, b)
    for a, b in itertools.product(COLORS.values(), BACKGROUNDS):
        assert math.dist(a, b) > 60, (a, b)


@pytest.mark.parametrize("r", [2, 3, 4, 5, 7, 9, 13, 14, 19])
def test_drawing_matches_reference_rasterisation_and_shapes_differ(r):
    masks = {s: shapes.shape_mask(s, r) for s in SHAPES}
    for s in SHAPES:
        assert np.array_equal(masks[s], reference_mask(s, r)), s
        assert masks[s][r, r], f"{s} does not contain its centre"
    for a, b in itertools.combinations(SHAPES, 2):
        assert not np.array_equal(masks[a], masks[b]), (a, b)


@pytest.mark.parametrize("which", ["dataset", "dataset96"])
def test_captions_and_answers_agree_with_the_pixels(which, request):
    root, cfg = request.getfixturevalue(which)
    counters = dict.fromkeys(["size", "relation", "count", "region", "questions"], 0)
    exists_answers, types = [], set()
    for split in SPLITS:
        captions, vqa = load(root, split)
        caps = {}
        for ann in captions["annotations"]:
            caps.setdefault(ann["image_id"], []).append(ann["caption"])
        questions = {}
        for q in vqa["questions"]:
            questions.setdefault(q["image_id"], []).append(q)
        for img in captions["images"]:
            png = root / "images" / split / img["file_name"]
            scene = observe_scene(png, img["objects"], cfg.image_size)
            # the annotations say what the pixels show
            assert [(o["color"], o["shape"], o["size"]) for o in scene] == [
                (o["color"], o["shape"], o["size"]) for o in img["objects"]]
            pairs = {(o["color"], o["shape"]) for o in scene}
            assert len(pairs) == len(scene)  # distinct (colour, shape) pairs
            for caption in caps[img["id"]]:
                assert parse_objects(caption) == pairs, caption
                check_caption(caption, scene, cfg.image_size, counters)
            oracle = oracle_caption(img["objects"])
            assert parse_objects(oracle) == pairs and oracle not in caps[img["id"]]
            check_caption(oracle, scene, cfg.image_size, counters)
            for q in questions[img["id"]]:
                assert answer(q["question"], scene) == q["answer"], q
                counters["questions"] += 1
                types.add(q["type"])
                if q["type"] == "exists":
                    exists_answers.append(q["answer"])
    for key in ("size", "count", "questions"):
        assert counters[key] > 0, key  # the checks above did run
    if which == "dataset":  # big enough to see every kind of fact
        assert counters["relation"] > 0 and counters["region"] > 0
        assert types == set(QUESTION_TYPES) == {"color", "shape", "size", "count", "exists", "relation"}
        assert 0.3 <= exists_answers.count("no") / len(exists_answers) <= 0.7


def test_oracle_template_is_held_out(dataset):
    root, _ = dataset
    for split in SPLITS:
        captions, _ = load(root, split)
        for ann in captions["annotations"]:
            assert "this is" not in ann["caption"]


def test_parse_objects_by_hand():
    assert parse_objects("a small red disc to the left of a big blue box") == {
        ("red", "circle"), ("blue", "square")}
    assert parse_objects("red big plus and a purple little rhombus") == {
        ("red", "cross"), ("purple", "diamond")}
    assert parse_objects("A Green Triangle") == {("green", "triangle")}
    assert parse_objects("a green") == set()
    assert parse_objects("a grey square on a red") == set()
    assert parse_objects("") == set()


# ----------------------------------------------------------------------------------------------
# Pure pieces, on random inputs

@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), side=st.integers(48, 200), max_objects=st.integers(1, 3))
def test_scene_caption_question_invariants(seed, side, max_objects):
    rng = random.Random(seed)
    cfg = ShapesConfig(image_size=side, max_objects=max_objects)
    objects = sample_scene(rng, cfg)
    assert 1 <= len(objects) <= max_objects
    assert len({tuple(o["cell"]) for o in objects}) == len(objects)
    assert len({(o["color"], o["shape"]) for o in objects}) == len(objects)
    for a, b in itertools.combinations(objects, 2):  # boxes do not overlap
        (ax, ay, aw, _), (bx, by, bw, _) = a["bbox"], b["bbox"]
        assert ax + aw <= bx or bx + bw <= ax or ay + aw <= by or by + bw <= ay
    image = np.array(render_scene(objects, side, BACKGROUNDS[1]))
    for o in objects:
        x, y, w, _ = o["bbox"]
        assert 0 <= x and x + w <= side and 0 <= y and y + w <= side
        assert tuple(image[o["center"][1], o["center"][0]]) == COLORS[o["color"]]
    caps = captions_for(objects, rng)
    assert len(caps) == 5 and len(set(caps)) == 5
    pairs = {(o["color"], o["shape"]) for o in objects}
    for c in caps + [oracle_caption(objects)]:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", c) and parse_objects(c) == pairs
        size_words = [w for w in c.split() if w in {w for ws in SIZE_WORDS.values() for w in ws}]
        assert len(size_words) in (0, len(objects))  # a template names all sizes or none
    qas = questions_for(objects, rng)
    assert 4 <= len(qas) <= 6 and len({q["question"] for q in qas}) == len(qas)
    assert all(1 <= len(q["answer"].split()) <= 2 for q in qas)
    assert "size" not in {q["type"] for q in qas}  # the size question comes from its own stream
    size_q = size_question(objects, rng)
    assert size_q["type"] == "size" and size_q["answer"] in SIZES


def test_config_validation_and_profile():
    from velm_course.profiles import get_profile

    p = get_profile("ci")
    cfg = ShapesConfig.from_profile(p)
    data = p.run.data
    assert (cfg.image_size, cfg.n_train, cfg.n_val, cfg.n_test, cfg.seed) == (
        data.image_size, data.n_train, data.n_val, data.n_test, p.run.train.seed)
    assert (p.image_size, p.n_train, p.seed) == (data.image_size, data.n_train, p.run.train.seed)
    assert ShapesConfig.from_profile(p, n_train=5).n_train == 5
    # the notebooks' in-distribution data; the main job holds pairs out on top
    assert cfg.n_compositional == 0 and data.n_compositional > 0
    assert ShapesConfig.from_profile(p, n_compositional=3).n_compositional == 3
    for bad in (dict(image_size=32), dict(max_objects=4), dict(max_objects=0), dict(n_val=-1),
                dict(n_compositional=-1)):
        with pytest.raises(ValueError):
            ShapesConfig(**bad)
    with pytest.raises(ValueError, match="unknown shape"):
        shapes.shape_mask("hexagon", 3)


# ----------------------------------------------------------------------------------------------
# ensure_shapes: cached, atomic, race-safe

TINY = ShapesConfig(image_size=48, n_train=6, n_val=2, n_test=2, seed=1)


def test_ensure_shapes_generates_once_then_reuses(tmp_path, monkeypatch):
    folder = ensure_shapes(TINY, tmp_path, progress=False)
    assert folder == tmp_path / "generated" / f"shapes-{TINY.digest()}"
    assert (folder / "dataset_shapes.json").is_file() and (folder / shapes.COMPLETE_MARKER).is_file()
    before = file_hashes(folder)

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated an existing dataset")

    monkeypatch.setattr(shapes, "generate_shapes", must_not_run)
    assert ensure_shapes(TINY, tmp_path) == folder
    assert file_hashes(folder) == before
    # the default root comes from profiles.data_dir()
    monkeypatch.setenv("VELM_DATA_DIR", str(tmp_path))
    assert ensure_shapes(TINY) == folder
    monkeypatch.undo()
    other = ensure_shapes(ShapesConfig(image_size=48, n_train=6, n_val=2, n_test=2, seed=2),
                          tmp_path, progress=False)
    assert other.parent == folder.parent and other != folder


def test_ensure_shapes_regenerates_outdated_questions_only_in_the_vqa_files(tmp_path):
    folder = ensure_shapes(TINY, tmp_path, progress=False)
    current = file_hashes(folder)
    # a folder from before the size questions: version-1 marker, no size questions
    marker = folder / shapes.COMPLETE_MARKER
    marker.write_text(json.dumps({"config": TINY.to_dict(), "version": 1}))
    vqa_file = folder / "annotations" / "vqa_train.json"
    old = json.loads(vqa_file.read_text())
    old["questions"] = [q for q in old["questions"] if q["type"] != "size"]
    vqa_file.write_text(json.dumps(old))
    assert ensure_shapes(TINY, tmp_path, progress=False) == folder
    assert file_hashes(folder) == current  # regenerated: size questions back, nothing else moved
    assert any(q["type"] == "size" for q in json.loads(vqa_file.read_text())["questions"])


def test_ensure_shapes_never_exposes_a_partial_folder(tmp_path, monkeypatch):
    real = shapes.generate_shapes

    def interrupted(root, cfg, progress=None):
        real(root, cfg, progress=False)
        (root / "annotations" / "captions_test.json").unlink()  # half-written ...
        raise KeyboardInterrupt  # ... and then the user pressed Ctrl-C

    monkeypatch.setattr(shapes, "generate_shapes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(TINY, tmp_path)
    assert list((tmp_path / "generated").iterdir()) == []  # nothing final, no temp left
    monkeypatch.setattr(shapes, "generate_shapes", real)
    folder = ensure_shapes(TINY, tmp_path, progress=False)
    assert (folder / "annotations" / "captions_test.json").is_file()


def test_ensure_shapes_race_both_get_a_good_folder(tmp_path, monkeypatch):
    real = shapes.generate_shapes
    barrier = threading.Barrier(2, timeout=30)

    def in_step(root, cfg, progress=None):
        barrier.wait()  # both callers are generating at the same time
        real(root, cfg, progress=False)
        barrier.wait()  # and both finish before either renames

    monkeypatch.setattr(shapes, "generate_shapes", in_step)
    results, errors = [], []

    def call():
        try:
            results.append(ensure_shapes(TINY, tmp_path))
        except BaseException as e:  # surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    assert [p.name for p in (tmp_path / "generated").iterdir()] == [results[0].name]
    expected = file_hashes(real(tmp_path / "reference", TINY, progress=False))
    got = file_hashes(results[0])
    got.pop(shapes.COMPLETE_MARKER)
    assert got == expected


# ----------------------------------------------------------------------------------------------
# The digest and the files of a config without a compositional split never change: datasets and
# pretrained weights are cached under the digest. These values were computed before the
# compositional split and the size questions existed (questions version 1): the size questions
# are the one change since, and only in the VQA files.

def test_digest_and_default_files_are_pinned(tmp_path):
    ci = ShapesConfig(image_size=64, n_train=4000, n_val=200, n_test=300, seed=0)
    assert ShapesConfig().digest() == ci.digest() == "32635162d9"
    assert ShapesConfig(n_compositional=0).digest() == "32635162d9"
    assert ShapesConfig(n_compositional=1).digest() != "32635162d9"
    # the annotation files (pure Python, unlike the PNG bytes, which depend on zlib)
    root = generate_shapes(tmp_path, TINY, progress=False)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.json")):
        if not path.name.startswith("vqa_"):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    assert digest.hexdigest() == "b323268b1747fb2e9e735db08aad7d71e28ec549340c450e0a0abd8c610ce2fe"
    # the VQA files: the version-1 questions as they were, and one size question per image
    digest = hashlib.sha256()
    for path in sorted(root.rglob("vqa_*.json")):
        questions = json.loads(path.read_text())["questions"]
        digest.update(json.dumps([q for q in questions if q["type"] != "size"], sort_keys=True).encode())
        sizes = Counter(q["image_id"] for q in questions if q["type"] == "size")
        assert sizes.keys() == {q["image_id"] for q in questions} and set(sizes.values()) == {1}
    assert digest.hexdigest() == "ab5a36480661d84185d2c9d5295d80f4d5306609dbc3115149f47619b116966f"
    assert not (root / "images" / "compositional").exists()


# ----------------------------------------------------------------------------------------------
# The compositional split (CLEVR-CoGenT style)

COMP = ShapesConfig(image_size=48, n_train=60, n_val=10, n_test=10, n_compositional=12, seed=2)


@pytest.fixture(scope="module")
def comp_dataset(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("comp"), COMP, progress=False)


def test_heldout_pairs_cover_every_colour_and_shape_once():
    assert heldout_pairs(ShapesConfig()) == ()
    pairs = heldout_pairs(COMP)
    assert len(pairs) == 6
    assert sorted(c for c, _ in pairs) == sorted(COLORS)
    assert sorted(s for _, s in pairs) == sorted(SHAPES)
    assert heldout_pairs(ShapesConfig(n_compositional=1, seed=2)) == pairs  # the seed decides
    assert len({heldout_pairs(ShapesConfig(n_compositional=1, seed=k)) for k in range(10)}) > 1


def test_compositional_split_holds_only_heldout_pairs(comp_dataset):
    root = comp_dataset
    heldout = set(heldout_pairs(COMP))
    seen_in_training = set()
    for split in SPLITS:
        for objects in read_scenes(root, split).values():
            pairs = {(o["color"], o["shape"]) for o in objects}
            assert not pairs & heldout, split
            seen_in_training |= pairs
    comp = read_scenes(root, "compositional")
    assert len(comp) == COMP.n_compositional
    assert {len(objects) for objects in comp.values()} == {1, 2, 3}
    for objects in comp.values():
        pairs = [(o["color"], o["shape"]) for o in objects]
        assert set(pairs) <= heldout and len(set(pairs)) == len(pairs)
    # every colour and every shape still occurs in training, with other partners
    assert {c for c, _ in seen_in_training} == set(COLORS)
    assert {s for _, s in seen_in_training} == set(SHAPES)
    # ids continue after test
    last_test = max(read_scenes(root, "test"))
    assert sorted(comp) == list(range(last_test + 1, last_test + 1 + COMP.n_compositional))


def test_compositional_split_files(comp_dataset, tmp_path):
    root = comp_dataset
    captions, vqa = load(root, "compositional")
    assert captions["info"]["heldout_pairs"] == [list(p) for p in heldout_pairs(COMP)]
    assert captions["info"]["config"]["n_compositional"] == COMP.n_compositional
    assert len(vqa["questions"]) >= 4 * COMP.n_compositional
    by_image = {}
    for ann in captions["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["caption"])
    scenes = read_scenes(root, "compositional")
    for image_id, caps in by_image.items():
        pairs = {(o["color"], o["shape"]) for o in scenes[image_id]}
        assert len(caps) == 5 and all(parse_objects(c) == pairs for c in caps)
    karpathy = json.loads((root / "dataset_shapes.json").read_text())
    assert sum(e["split"] == "compositional" for e in karpathy["images"]) == COMP.n_compositional
    ds = shapes_split(root, "compositional")
    assert len(ds) == COMP.n_compositional and sorted(ds.image_ids) == sorted(scenes)
    # deterministic
    again = generate_shapes(tmp_path / "again", COMP, progress=False)
    assert file_hashes(again) == file_hashes(root)


def test_shapes_split_without_a_compositional_split(dataset):
    root, _ = dataset
    with pytest.raises(shapes.DatasetNotFoundError, match="n_compositional=0"):
        shapes_split(root, "compositional")
    with pytest.raises(ValueError, match="unknown split"):
        shapes_split(root, "restval")
