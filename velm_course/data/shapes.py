"""The synthetic "shapes" dataset: coloured shapes on a grey background, with captions and VQA.

Every image holds one to three objects (a colour, a shape and a size each) placed in distinct
cells of a 3x3 grid. Each image gets five different reference captions, like the five human
captions of COCO, and a handful of question/answer pairs. Because we drew the scene, we know
exactly what is true of it, so captions and answers can be checked, and a captioner's output
can be parsed back into the objects it names (``parse_objects``).

The files on disk follow the COCO captions layout, so the loader in ``velm_course.data.coco``
reads this dataset and real COCO with the same code:

    <root>/images/<split>/<image_id:012d>.png            split in train, val, test
                                                          (and compositional, see below)
    <root>/annotations/captions_<split>.json              COCO captions format (+ "objects")
    <root>/annotations/vqa_<split>.json                   {"questions": [...]}
    <root>/dataset_shapes.json                            Karpathy-style split file

Generation is deterministic: the same ``ShapesConfig`` gives byte-identical files.

A compositional split, as in CLEVR-CoGenT: with ``n_compositional > 0``, six (colour, shape)
pairs (``heldout_pairs``) never appear in train, val or test, and a fourth split,
"compositional", shows only them. Every colour and every shape still occurs in training, with
other partners, so the split asks whether a model composes what it has seen apart.

>>> import random
>>> cfg = ShapesConfig(image_size=64, n_train=10, n_val=2, n_test=2)
>>> objects = sample_scene(random.Random(0), cfg)
>>> parse_objects(captions_for(objects, random.Random(1))[0]) == {(o["color"], o["shape"]) for o in objects}
True
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .coco import CocoCaptions, DatasetNotFoundError

# Bump when the generator's output changes, so cached datasets made by an older version are
# not reused (the version is part of the folder name's digest).
GENERATOR_VERSION = 1
# Bump when only the questions change. Images and captions stay byte-identical (so the folder's
# digest, and weights filed under it, stay valid); ``ensure_shapes`` regenerates a folder
# whose questions are older. Version 2 added the "size" questions.
QUESTIONS_VERSION = 2

SPLITS = ("train", "val", "test")
COMPOSITIONAL = "compositional"  # the fourth split, written only when n_compositional > 0

# ----------------------------------------------------------------------------------------------
# Vocabulary. The generator writes with it and parse_objects reads with it.

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")

# Saturated colours far apart in RGB (the closest pair, yellow/orange, is ~80 apart), so a
# pixel's colour names its object without doubt.
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}

# Neutral greys, all at least ~80 away from every palette colour.
BACKGROUNDS = ((100, 100, 100), (128, 128, 128), (160, 160, 160))

# Object side as a fraction of the image side (the drawn box is 2r+1 pixels, r = frac*side/2).
SIZES = {"small": 0.14, "medium": 0.21, "large": 0.29}

# Words a caption may use for each canonical shape and size (single words, so parsing is easy).
SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus"),
}
SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium",), "large": ("large", "big")}

# Relations between two objects. Different grid columns -> left of / right of; same column ->
# above / below. Captions say them in a few ways; questions use the canonical phrase.
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Names of the nine grid cells, row-major, used by one single-object caption template.
REGIONS = ("top left", "top middle", "top right", "middle left", "center", "middle right",
           "bottom left", "bottom middle", "bottom right")

STAR_INNER = 0.5  # inner radius of the five-pointed star, as a fraction of the outer radius
CROSS_ARM = 1 / 3  # half-width of the cross's arms, as a fraction of the half-side

# Reverse lookups for the parser: any caption word -> canonical name.
_SHAPE_OF_WORD = {w: s for s, words in SHAPE_WORDS.items() for w in words}
_SIZE_OF_WORD = {w: s for s, words in SIZE_WORDS.items() for w in words}


@dataclass(frozen=True)
class ShapesConfig:
    image_size: int = 64  # side of the square images, in pixels (at least 48)
    n_train: int = 4000  # training images
    n_val: int = 200  # validation images
    n_test: int = 300  # test images
    seed: int = 0  # seeds every split's random stream (each split has its own stream)
    max_objects: int = 3  # objects per image are drawn uniformly from 1..max_objects (<= 3)
    n_compositional: int = 0  # images of held-out colour-shape pairs (0: hold none out)

    def __post_init__(self):
        if self.image_size < 48:
            raise ValueError(f"image_size must be at least 48 pixels, got {self.image_size}")
        if not 1 <= self.max_objects <= 3:
            raise ValueError(f"max_objects must be 1, 2 or 3, got {self.max_objects}")
        for name in ("n_train", "n_val", "n_test", "n_compositional"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_profile(cls, profile, **overrides) -> ShapesConfig:
        """The in-distribution dataset at a run profile's size: the one the notebooks use.

        The main job also holds colour-shape pairs out for its compositional split
        (``profile.run.data.n_compositional``), which changes the other splits too; pass
        ``n_compositional=profile.run.data.n_compositional`` to get the main job's data.

        >>> from velm_course.profiles import get_profile
        >>> ShapesConfig.from_profile(get_profile("ci")).image_size
        64
        >>> ShapesConfig.from_profile(get_profile("ci")).n_compositional
        0
        """
        data = profile.run.data
        fields = dict(image_size=data.image_size, n_train=data.n_train, n_val=data.n_val,
                      n_test=data.n_test, seed=profile.seed)
        fields.update(overrides)
        return cls(**fields)

    def to_dict(self) -> dict:
        """The fields, without ``n_compositional`` when it is 0.

        Leaving it out keeps the digest and the written files of every config made before the
        field existed exactly as they were: cached datasets and pretrained weights are filed
        under the digest.
        """
        fields = asdict(self)
        if fields["n_compositional"] == 0:
            del fields["n_compositional"]
        return fields

    def digest(self) -> str:
        """A short hash of the config and generator version; names the cached folder.

        >>> ShapesConfig().digest()
        '32635162d9'
        """
        blob = json.dumps({"config": self.to_dict(), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def heldout_pairs(cfg: ShapesConfig) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs kept out of train, val and test; none when n_compositional=0.

    One pair per colour and one per shape (the shapes in an order drawn from the seed), so each
    colour and each shape still appears in training with its five other partners.

    >>> pairs = heldout_pairs(ShapesConfig(n_compositional=10))
    >>> [c for c, _ in pairs] == list(COLORS) and sorted(s for _, s in pairs) == sorted(SHAPES)
    True
    >>> heldout_pairs(ShapesConfig())
    ()
    """
    if cfg.n_compositional == 0:
        return ()
    shapes = random.Random(f"shapes/{cfg.seed}/heldout").sample(SHAPES, len(SHAPES))
    return tuple(zip(COLORS, shapes, strict=True))


# ----------------------------------------------------------------------------------------------
# Geometry and drawing

def cell_span(index: int, image_size: int) -> tuple[int, int]:
    """Pixel range [start, stop) of grid row or column ``index`` (0, 1, 2).

    >>> [cell_span(i, 64) for i in range(3)]
    [(0, 21), (21, 42), (42, 64)]
    """
    return index * image_size // 3, (index + 1) * image_size // 3


def size_radius(size: str, image_size: int) -> int:
    """Half-side r of an object of this size: it is drawn in a (2r+1)-pixel box.

    The box is capped so it always fits inside the smallest grid cell.

    >>> [size_radius(s, 64) for s in SIZES]
    [4, 7, 9]
    """
    r = round(SIZES[size] * image_size / 2)
    smallest_cell = image_size // 3
    return min(r, (smallest_cell - 1) // 2)


def _star_vertices() -> np.ndarray:
    """The 10 corners of a five-pointed star with outer radius 1, first point straight up."""
    k = np.arange(10)
    radius = np.where(k % 2 == 0, 1.0, STAR_INNER)
    angle = -np.pi / 2 + k * np.pi / 5  # y grows downwards in images, so -pi/2 points up
    x, y = radius * np.cos(angle), radius * np.sin(angle)
    # The points reach y = -1 at the top but only sin(54 deg) ~ 0.81 at the bottom: move the
    # star down by half the gap so it sits in the middle of its box.
    y = y + (1 - y.max()) / 2
    return np.stack([x, y], axis=1)


def _inside_polygon(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: a point is inside if a ray going right crosses the outline an odd number
    of times. Vectorised over all points at once."""
    inside = np.zeros(x.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        straddles = (y1 > y) != (y2 > y)  # this edge spans the point's height
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= straddles & (x < x_cross)
    return inside


@functools.cache
def shape_mask(shape: str, r: int) -> np.ndarray:
    """Boolean (2r+1, 2r+1) mask of ``shape`` drawn in a box of half-side r, no anti-aliasing.

    Pixel centres are mapped to u, v in (-1, 1) (v grows downwards). Every shape contains the
    centre pixel, so the pixel at an object's centre always has its exact palette colour.

    >>> shape_mask("diamond", 2).astype(int)
    array([[0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [1, 1, 1, 1, 1],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0]])
    """
    mask = _draw_mask(shape, r)
    mask.flags.writeable = False  # cached and shared between calls: keep it read-only
    return mask


def _draw_mask(shape: str, r: int) -> np.ndarray:
    d = np.arange(-r, r + 1) / (r + 0.5)
    u, v = np.meshgrid(d, d)  # u: column (x), v: row (y); both (2r+1, 2r+1)
    if shape == "circle":
        return u**2 + v**2 <= 1
    if shape == "square":
        return np.ones_like(u, dtype=bool)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if shape == "triangle":  # apex at the top middle, base along the bottom edge
        return np.abs(u) <= (v + 1) / 2
    if shape == "cross":
        return (np.abs(u) <= CROSS_ARM) | (np.abs(v) <= CROSS_ARM)
    if shape == "star":
        return _inside_polygon(u, v, _star_vertices())
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


ALL_PAIRS = tuple((c, s) for c in COLORS for s in SHAPES)


def sample_scene(rng: random.Random, cfg: ShapesConfig,
                 pairs: tuple[tuple[str, str], ...] = ALL_PAIRS) -> list[dict]:
    """Draw 1..max_objects objects with distinct (colour, shape) pairs in distinct grid cells.

    The pairs are drawn from ``pairs`` (all 36 by default; the compositional split narrows it).

    Each object is a dict with shape, color, size, cell [row, col], center [cx, cy] (a pixel)
    and bbox [x, y, w, h]. The box lies inside its cell (with random jitter), so objects never
    overlap and never leave the image. Objects are listed in reading order of their cells.
    """
    side = cfg.image_size
    n = rng.randint(1, cfg.max_objects)
    cells = sorted(rng.sample(range(9), n))
    objects = []
    for cell, (color, shape) in zip(cells, rng.sample(pairs, n), strict=True):
        size = rng.choice(tuple(SIZES))
        r = size_radius(size, side)
        row, col = divmod(cell, 3)
        (x0, x1), (y0, y1) = cell_span(col, side), cell_span(row, side)
        cx, cy = rng.randint(x0 + r, x1 - 1 - r), rng.randint(y0 + r, y1 - 1 - r)
        objects.append({
            "shape": shape, "color": color, "size": size, "cell": [row, col],
            "center": [cx, cy], "bbox": [cx - r, cy - r, 2 * r + 1, 2 * r + 1],
        })
    return objects


def render_scene(objects: list[dict], image_size: int, background=BACKGROUNDS[0]):
    """Draw the objects on a flat background; returns an RGB ``PIL.Image``.

    >>> obj = {"shape": "circle", "color": "red", "bbox": [10, 10, 9, 9], "center": [14, 14]}
    >>> render_scene([obj], 48).getpixel((14, 14))
    (220, 40, 40)
    """
    from PIL import Image

    canvas = np.empty((image_size, image_size, 3), dtype=np.uint8)  # (H, W, 3)
    canvas[:] = background
    for obj in objects:
        x, y, w, _ = obj["bbox"]
        mask = shape_mask(obj["shape"], (w - 1) // 2)
        canvas[y:y + w, x:x + w][mask] = COLORS[obj["color"]]
    return Image.fromarray(canvas, "RGB")


def relation(a: dict, b: dict) -> str:
    """Where ``a`` is relative to ``b``: 'left of'/'right of' between different grid columns,
    'above'/'below' within one column. (Objects always sit in different cells.)"""
    (ra, ca), (rb, cb) = a["cell"], b["cell"]
    if ca != cb:
        return "left of" if ca < cb else "right of"
    return "above" if ra < rb else "below"


# ----------------------------------------------------------------------------------------------
# Captions

# Caption templates by object count. Placeholders: {a} "a red circle", {A} the same with a size
# word ("a small red circle"), {the_a} "the red circle", {rel_ab} how a sits relative to b,
# {region_a} the grid cell's name. Objects are shuffled before filling, so a, b, c vary.
TEMPLATES = {
    1: (
        "{a}",
        "there is {A} in the picture",
        "a picture of {a}",
        "{A} on a grey background",
        "{a} in the {region_a}",
        "an image showing {A}",
    ),
    2: (
        "{a} and {b}",
        "{A} {rel_ab} {B}",
        "there are two shapes {a} and {b}",
        "a picture of {A} and {B}",
        "{the_a} is {rel_ab} {the_b}",
        "{a} {rel_ab} {b} on a grey background",
    ),
    3: (
        "{a} {b} and {c}",
        "{A} {B} and {C}",
        "there are three shapes {a} {b} and {c}",
        "{c} and {a} {rel_ab} {b}",
        "a picture of {A} {B} and {C}",
        "{the_a} is {rel_ab} {the_b} and there is also {c}",
    ),
}
# Held out: no reference caption uses this template (see oracle_caption). It is plain and
# close to how a person might write, so its lower score is about wording, not about content.
ORACLE_TEMPLATE = "this is {items}"


def _with_article(words: list[str]) -> str:
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def captions_for(objects: list[dict], rng: random.Random, n: int = 5) -> list[str]:
    """``n`` different reference captions, from ``n`` different templates and random synonyms.

    >>> obj = {"shape": "square", "color": "blue", "size": "large", "cell": [1, 1]}
    >>> all(parse_objects(c) == {("blue", "square")} for c in captions_for([obj], random.Random(0)))
    True
    """
    templates = TEMPLATES[len(objects)]
    if n > len(templates):
        raise ValueError(f"only {len(templates)} templates for {len(objects)} objects, asked {n}")
    captions = []
    for template in rng.sample(templates, n):
        order = list(objects)
        rng.shuffle(order)
        fields = {}
        for key, obj in zip("abc", order, strict=False):
            shape_word = rng.choice(SHAPE_WORDS[obj["shape"]])
            size_word = rng.choice(SIZE_WORDS[obj["size"]])
            fields[key] = _with_article([obj["color"], shape_word])
            fields[key.upper()] = _with_article([size_word, obj["color"], shape_word])
            fields["the_" + key] = f"the {obj['color']} {shape_word}"
            fields["region_" + key] = REGIONS[3 * obj["cell"][0] + obj["cell"][1]]
        if len(order) >= 2:
            fields["rel_ab"] = rng.choice(RELATION_PHRASES[relation(order[0], order[1])])
        captions.append(template.format(**fields))
    assert len(set(captions)) == n, captions  # different templates give different sentences
    return captions


def oracle_caption(objects: list[dict]) -> str:
    """The full correct content (every object with its size) in a template no reference uses.

    It shows that n-gram metrics on templated references reward the template, not only the
    content: this caption is right, yet scores well below a caption in a reference template.

    >>> oracle_caption([{"shape": "star", "color": "orange", "size": "small"}])
    'this is a small orange star'
    """
    items = [_with_article([o["size"], o["color"], o["shape"]]) for o in objects]
    return ORACLE_TEMPLATE.format(items=" and ".join(items))


def parse_objects(caption: str) -> set[tuple[str, str]]:
    """The canonical (colour, shape) pairs a caption names.

    A mention is a colour word followed by an optional size word and then a shape word or a
    synonym ("red circle", "red big disc"); a size word before the colour is fine too. Words
    outside the vocabulary are ignored, so this also reads a model's (imperfect) captions.

    >>> sorted(parse_objects("a small red disc to the left of a big blue box"))
    [('blue', 'square'), ('red', 'circle')]
    """
    words = caption.lower().split()
    found = set()
    for i, word in enumerate(words):
        if word not in COLORS:
            continue
        j = i + 1
        if j < len(words) and words[j] in _SIZE_OF_WORD:
            j += 1
        if j < len(words) and words[j] in _SHAPE_OF_WORD:
            found.add((word, _SHAPE_OF_WORD[words[j]]))
    return found


# ----------------------------------------------------------------------------------------------
# Questions

QUESTION_TYPES = ("color", "shape", "size", "count", "exists", "relation")


def _name(obj: dict) -> str:
    return f"{obj['color']} {obj['shape']}"


def questions_for(objects: list[dict], rng: random.Random) -> list[dict]:
    """4 to 6 question/answer pairs about the scene, each with exactly one correct answer.

    Types: color, shape, count, exists (about half of them with answer "no") and relation;
    ``size_question`` adds the sixth. Answers are one or two words. Returns dicts with
    question, answer and type.

    >>> obj = {"shape": "star", "color": "red", "size": "small", "cell": [0, 0]}
    >>> qas = questions_for([obj], random.Random(0))
    >>> 4 <= len(qas) <= 6 and all(len(q["answer"].split()) <= 2 for q in qas)
    True
    """
    shape_count = Counter(o["shape"] for o in objects)
    color_count = Counter(o["color"] for o in objects)
    present = {(o["color"], o["shape"]) for o in objects}
    # every type but size, in their version-1 order: the draws below come from the scene
    # stream, and changing them would change every later image
    pool = {t: [] for t in ("color", "shape", "count", "exists", "relation")}

    for o in objects:  # only ask about a shape (or colour) that occurs once: a unique answer
        if shape_count[o["shape"]] == 1:
            pool["color"].append((f"what color is the {o['shape']}", o["color"]))
        if color_count[o["color"]] == 1:
            pool["shape"].append((f"what shape is the {o['color']} object", o["shape"]))

    pool["count"].append(("how many shapes are there", NUMBER_WORDS[len(objects)]))
    absent_colors = [c for c in COLORS if c not in color_count]
    for color in sorted(color_count) + [rng.choice(absent_colors)]:
        pool["count"].append((f"how many {color} objects are there", NUMBER_WORDS[color_count[color]]))

    # As many "no" as "yes"; negatives share a colour or a shape with a real object when they
    # can, so the question cannot be answered from the colours (or shapes) alone.
    for color, shape in sorted(present):
        pool["exists"].append((f"is there a {color} {shape}", "yes"))
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    hard = [(c, s) for c, s in absent if c in color_count or s in shape_count]
    for color, shape in rng.sample(hard, len(present)):
        pool["exists"].append((f"is there a {color} {shape}", "no"))

    for a in objects:
        for b in objects:
            if a is b:
                continue
            rel = relation(a, b)
            if rng.random() < 0.5:
                pool["relation"].append((f"is the {_name(a)} {rel} the {_name(b)}", "yes"))
            else:
                pool["relation"].append((f"is the {_name(a)} {OPPOSITE[rel]} the {_name(b)}", "no"))
        for rel in RELATIONS:
            matches = [o for o in objects if o is not a and relation(o, a) == rel]
            if len(matches) == 1:
                pool["relation"].append((f"what is {rel} the {_name(a)}", _name(matches[0])))

    # Round-robin over the question types in random order, so every image mixes types.
    k = rng.randint(4, 6)
    types = [t for t in pool if pool[t]]
    rng.shuffle(types)
    chosen: list[dict] = []
    while len(chosen) < k and any(pool[t] for t in types):
        for t in types:
            if pool[t] and len(chosen) < k:
                question, answer = pool[t].pop(rng.randrange(len(pool[t])))
                chosen.append({"question": question, "answer": answer, "type": t})
    return chosen


def size_question(objects: list[dict], rng: random.Random) -> dict:
    """"what size is the <colour> <shape>" about one object drawn at random.

    Every object's (colour, shape) pair is unique in its scene, so the answer is unique. The
    generator draws it from a stream of its own (``questions_version`` 2 added it), so the
    images and captions of version 1 stay byte-identical.

    >>> size_question([{"shape": "star", "color": "red", "size": "small"}], random.Random(0))
    {'question': 'what size is the red star', 'answer': 'small', 'type': 'size'}
    """
    obj = rng.choice(objects)
    return {"question": f"what size is the {_name(obj)}", "answer": obj["size"], "type": "size"}


# ----------------------------------------------------------------------------------------------
# Writing the dataset

def _write_json(path: Path, obj) -> None:
    # sorted keys and fixed separators: the same data always gives the same bytes
    path.write_text(json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n")


def generate_shapes(root, cfg: ShapesConfig, progress: bool | None = None) -> Path:
    """Write the whole dataset for ``cfg`` under ``root`` and return ``root`` as a Path.

    Image ids run 1, 2, ... across train, val, test and compositional (unique over splits).
    ``progress=None`` shows a tqdm bar only on a terminal. ``root`` should be new or empty:
    files from an earlier, bigger run would stay behind (``ensure_shapes`` always starts from
    a fresh folder).
    """
    from tqdm.auto import tqdm

    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    info = {"description": "synthetic shapes captioning and VQA dataset (velm_course)",
            "version": GENERATOR_VERSION, "config": cfg.to_dict()}
    heldout = heldout_pairs(cfg)
    # Train, val and test draw from the other 30 pairs, the compositional split only from the
    # held-out six. With nothing held out, every split draws from all 36 pairs, as before.
    pairs = {split: tuple(p for p in ALL_PAIRS if p not in heldout) for split in SPLITS}
    if heldout:
        sizes[COMPOSITIONAL] = cfg.n_compositional
        pairs[COMPOSITIONAL] = heldout
        info["heldout_pairs"] = [list(p) for p in heldout]
    karpathy = []
    image_id, sent_id = 0, 0
    bar = tqdm(total=sum(sizes.values()), desc="generating shapes", unit="img",
               disable=None if progress is None else not progress)
    for split in sizes:
        # one stream per split: val and test stay the same when only n_train changes
        rng = random.Random(f"shapes/{cfg.seed}/{split}")
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations, questions = [], [], []
        for _ in range(sizes[split]):
            image_id += 1
            objects = sample_scene(rng, cfg, pairs[split])
            background = rng.choice(BACKGROUNDS)
            captions = captions_for(objects, rng)
            qas = questions_for(objects, rng)
            qas.append(size_question(objects, random.Random(f"shapes/{cfg.seed}/{split}/size/{image_id}")))
            file_name = f"{image_id:012d}.png"
            image = render_scene(objects, cfg.image_size, background)
            image.save(image_dir / file_name, format="PNG", optimize=False, compress_level=6)

            images.append({"id": image_id, "file_name": file_name, "width": cfg.image_size,
                           "height": cfg.image_size, "objects": objects})
            sent_ids = []
            for caption in captions:
                sent_id += 1
                sent_ids.append(sent_id)
                annotations.append({"id": sent_id, "image_id": image_id, "caption": caption})
            for k, qa in enumerate(qas):
                questions.append({"question_id": image_id * 10 + k, "image_id": image_id, **qa})
            karpathy.append({
                "filepath": f"images/{split}", "filename": file_name, "imgid": len(karpathy),
                "cocoid": image_id, "split": split, "sentids": sent_ids,
                "sentences": [{"raw": c, "tokens": c.split(), "imgid": len(karpathy), "sentid": s}
                              for c, s in zip(captions, sent_ids, strict=True)],
            })
            bar.update(1)
        _write_json(root / "annotations" / f"captions_{split}.json",
                    {"info": info, "licenses": [], "images": images, "annotations": annotations})
        _write_json(root / "annotations" / f"vqa_{split}.json",
                    {"info": {**info, "questions_version": QUESTIONS_VERSION}, "questions": questions})
    bar.close()
    _write_json(root / "dataset_shapes.json", {"dataset": "shapes", "images": karpathy})
    return root


COMPLETE_MARKER = ".complete"


def _is_current(folder: Path) -> bool:
    """Complete, and with questions of the current version (a marker without one is version 1)."""
    try:
        marker = json.loads((folder / COMPLETE_MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return marker.get("questions_version", 1) == QUESTIONS_VERSION


def ensure_shapes(cfg: ShapesConfig, data_root=None, progress: bool | None = None) -> Path:
    """The dataset folder for ``cfg``, generated on first use and reused afterwards.

    The folder is ``<data_root or profiles.data_dir()>/generated/shapes-<digest>``. It is built
    in a temporary sibling and renamed into place only when complete, so an interrupted run
    never leaves a half-written dataset behind, and when two processes race, one rename wins
    and the other process throws its copy away and uses the winner's. A folder whose questions
    are older than ``QUESTIONS_VERSION`` is generated again and replaced.
    """
    from velm_course.profiles import data_dir

    base = Path(data_root) if data_root is not None else data_dir()
    final = base / "generated" / f"shapes-{cfg.digest()}"
    if _is_current(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate_shapes(tmp, cfg, progress=progress)
        _write_json(tmp / COMPLETE_MARKER, {"config": cfg.to_dict(), "version": GENERATOR_VERSION,
                                            "questions_version": QUESTIONS_VERSION})
        if final.exists() and not _is_current(final):
            shutil.rmtree(final)  # a foreign, damaged or outdated folder under our name: replace it
        try:
            os.rename(tmp, final)  # atomic; fails if another process got there first
        except OSError:
            if not _is_current(final):
                raise
    finally:
        if tmp.exists():  # we failed, or we lost the race: drop our copy
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def shapes_split(root, split: str, image_size: int | None = None,
                 verify: bool = True) -> CocoCaptions:
    """The train, val, test or compositional split of a generated shapes dataset folder."""
    if split not in (*SPLITS, COMPOSITIONAL):
        raise ValueError(f"unknown split {split!r}; expected train, val, test or {COMPOSITIONAL}")
    root = Path(root)
    ann_file = root / "annotations" / f"captions_{split}.json"
    generated = (root / "dataset_shapes.json").is_file()
    if split == COMPOSITIONAL and generated and not ann_file.is_file():
        raise DatasetNotFoundError(
            f"the shapes dataset at {root} has no {COMPOSITIONAL} split: it was generated with "
            "n_compositional=0; generate one with ShapesConfig(n_compositional=...)")
    if not ann_file.is_file():
        raise DatasetNotFoundError(
            f"no shapes dataset at {root} ({ann_file.name} is missing); generate one with "
            "velm_course.data.shapes.ensure_shapes(ShapesConfig(...))")
    return CocoCaptions(root / "images" / split, ann_file, image_size=image_size, verify=verify)


# ----------------------------------------------------------------------------- scoring
# The shapes data knows what each image shows, so it can score a caption's content, not only
# its n-grams. The captioning pipeline asks the dataset for these scores (see
# velm_course.data.registry) instead of importing them.
# content_accuracy is the first, coarse score (the set of colour-shape pairs);
# velm_course.eval.scene parses sizes, counts and relations too and scores each of them.


def content_accuracy(captions: dict[int, str], scenes: dict[int, list[dict]]) -> float:
    """Fraction of images whose caption names exactly the scene's set of (colour, shape) pairs.

    >>> scene = [{"color": "red", "shape": "circle"}]
    >>> content_accuracy({1: "a red circle", 2: "a blue circle"}, {1: scene, 2: scene})
    0.5
    """
    hits = [parse_objects(captions[i]) == {(o["color"], o["shape"]) for o in scenes[i]} for i in captions]
    return sum(hits) / len(hits)


def oracle_captions(scenes: dict[int, list[dict]]) -> dict[int, str]:
    """Right content, held-out template: the ceiling for a model that sees perfectly but
    writes differently from the annotators."""
    return {i: oracle_caption(objs) for i, objs in scenes.items()}


def read_scenes(root, split: str) -> dict[int, list[dict]]:
    """The drawn objects of every image in a split, by image id."""
    ann = json.loads((Path(root) / "annotations" / f"captions_{split}.json").read_text())
    return {img["id"]: img["objects"] for img in ann["images"]}
