"""The scene parser and scene scores: every reference caption reads back as its scene, and
hand-made wrong captions lose exactly what the docstrings say they lose."""

import random
import re
from collections import Counter

import pytest

from velm_course.data.shapes import (
    REGIONS,
    TEMPLATES,
    ShapesConfig,
    captions_for,
    oracle_caption,
    sample_scene,
)
from velm_course.eval.scene import (
    Mention,
    count_accuracy,
    exact_scene,
    hallucination_rate,
    parse_scene,
    relation_accuracy,
    scene_f1,
    scene_scores,
)

RELATION_WORDS = re.compile(r"\b(left of|right of|above|over|below|under)\b")


def obj(color, shape, size, cell):
    return {"color": color, "shape": shape, "size": size, "cell": list(cell)}


# Two scenes to write captions about. In THREE the red circle is left of the blue square and
# above the green star (same column); the blue square is right of the green star.
THREE = [obj("red", "circle", "small", (0, 0)), obj("blue", "square", "large", (0, 2)),
         obj("green", "star", "medium", (2, 0))]
TWO = THREE[:2]
ONE = [obj("red", "star", "small", (0, 0))]


def scores(caption, scene):
    return scene_scores({1: caption}, {1: scene})


# ----------------------------------------------------------------------------------------------
# Round trip: the generator's own captions


def test_every_reference_caption_parses_to_its_scene():
    rng = random.Random(0)
    captions, scenes = {}, {}
    seen = Counter()
    stating_a_relation = 0
    for scene_id in range(2000):
        scene = sample_scene(rng, ShapesConfig())
        # every template of this object count, plus the held-out oracle wording
        texts = captions_for(scene, rng, n=len(TEMPLATES[len(scene)])) + [oracle_caption(scene)]
        for k, text in enumerate(texts):
            captions[scene_id * 10 + k], scenes[scene_id * 10 + k] = text, scene
            parsed = parse_scene(text)
            by_pair = {(o["color"], o["shape"]): o for o in scene}
            assert sorted((m.color, m.shape) for m in parsed.mentions) == sorted(by_pair), text
            for m in parsed.mentions:
                o = by_pair[m.color, m.shape]
                region = REGIONS[3 * o["cell"][0] + o["cell"][1]]
                assert m.size in (None, o["size"]) and m.region in (None, region), text
                seen["size"] += m.size is not None
                seen["region"] += m.region is not None
            # a relation is read exactly when the template states one
            assert len(parsed.relations) == len(RELATION_WORDS.findall(text)), text
            assert all(c == len(scene) for c in parsed.counts)
            seen["relation"] += len(parsed.relations)
            stating_a_relation += bool(parsed.relations)
            seen["count"] += len(parsed.counts)
    assert min(seen.values()) > 100, seen  # each kind of fact was read many times
    assert scene_scores(captions, scenes) == {
        "content_accuracy": 1.0, "scene_f1": 1.0, "exact_scene": 1.0, "count_accuracy": 1.0,
        "relation_accuracy": 1.0, "relation_n": stating_a_relation, "hallucination_rate": 0.0}


@pytest.mark.parametrize("template, relations", [
    ("{A} {rel_ab} {B}", ((0, "left of", 1),)),
    ("{the_a} is {rel_ab} {the_b}", ((0, "left of", 1),)),
    ("{a} {rel_ab} {b} on a grey background", ((0, "left of", 1),)),
    ("{c} and {a} {rel_ab} {b}", ((1, "left of", 2),)),
    ("{the_a} is {rel_ab} {the_b} and there is also {c}", ((0, "left of", 1),)),
    ("there are three shapes {a} {b} and {c}", ()),
])
def test_template_forms(template, relations):
    fields = {"a": "a red circle", "A": "a small red circle", "the_a": "the red circle",
              "b": "a blue box", "B": "a big blue box", "the_b": "the blue box",
              "c": "a green star", "rel_ab": "to the left of"}
    assert parse_scene(template.format(**fields)).relations == relations


# ----------------------------------------------------------------------------------------------
# Hand-made captions, each with the scores its docstrings promise


def test_parser_reads_sizes_regions_counts_and_ignores_the_rest():
    p = parse_scene("There are TWO shapes: a big red disc, <unk> and a little blue box in the "
                    "top right.")
    assert p.mentions == (Mention("red", "circle", "large"),
                          Mention("blue", "square", "small", "top right"))
    assert p.counts == (2,) and p.relations == ()
    assert parse_scene("red big plus").mentions == (Mention("red", "cross", "large"),)
    assert parse_scene("") == parse_scene("a red") == parse_scene("a grey square on a")
    assert parse_scene("").mentions == ()
    # truncated: the dangling relation states nothing checkable
    truncated = parse_scene("a small red circle to the left of a")
    assert truncated.mentions == (Mention("red", "circle", "small"),) and truncated.relations == ()


def test_right_caption():
    s = scores("there are three shapes a small red circle a big blue box and a medium green star",
               THREE)
    assert s["exact_scene"] == s["scene_f1"] == s["count_accuracy"] == 1.0
    assert s["hallucination_rate"] == 0.0 and s["relation_n"] == 0 and s["relation_accuracy"] is None


def test_repeated_object():
    # The old content_accuracy reads a set and is fooled; F1 counts the repeats.
    s = scores("a red star and a red star and a red star", ONE)
    assert s["content_accuracy"] == 1.0
    assert s["scene_f1"] == pytest.approx(2 * 1 / (3 + 1))  # 1 match, 3 mentions, 1 object
    assert s["exact_scene"] == 0.0 and s["count_accuracy"] == 0.0
    assert s["hallucination_rate"] == 0.0  # a repeat of a present object is no hallucination
    # three mentions for three objects: the count is right, the scene is not
    s = scores("a red circle and a red circle and a red circle", THREE)
    assert s["count_accuracy"] == 1.0 and s["exact_scene"] == 0.0
    assert s["scene_f1"] == pytest.approx(2 * 1 / 6)


def test_wrong_size():
    s = scores("a large red circle a large blue square and a medium green star", THREE)
    assert s["scene_f1"] == pytest.approx(2 * 2 / 6) and s["exact_scene"] == 0.0
    assert s["content_accuracy"] == 1.0 and s["count_accuracy"] == 1.0
    assert s["hallucination_rate"] == 0.0
    # a wrong size on one mention, a right one on a repeat: the repeat matches
    assert scene_f1({1: "a big red star and a little red star"}, {1: ONE}) == pytest.approx(2 / 3)


@pytest.mark.parametrize("caption, true", [
    ("a red circle to the left of a blue square", True),
    ("the blue box is right of the red disc", True),
    ("a red circle above a blue square", False),  # wrong relation
    ("a blue square to the left of a red circle", False),  # swapped
    ("the red circle is to the right of the blue square", False),  # opposite
])
def test_relations(caption, true):
    s = scores(caption, TWO)
    assert s["relation_n"] == 1 and s["relation_accuracy"] == float(true)
    assert s["exact_scene"] == float(true)
    assert s["scene_f1"] == 1.0  # the objects are right either way


def test_relation_within_a_column_and_to_absent_or_repeated_objects():
    assert relation_accuracy({1: "a red circle above a green star"}, {1: THREE}) == 1.0
    assert relation_accuracy({1: "a green star under a red circle"}, {1: THREE}) == 1.0
    assert relation_accuracy({1: "a red circle left of a green star"}, {1: THREE}) == 0.0
    assert relation_accuracy({1: "a red circle left of a yellow cross"}, {1: THREE}) == 0.0
    assert relation_accuracy({1: "a red circle left of a red circle"}, {1: THREE}) == 0.0
    # over the captions that state one; None (with relation_n 0) when none does
    caps = {1: "a red circle left of a blue box", 2: "a red circle and a blue box",
            3: "a blue box left of a red circle"}
    assert relation_accuracy(caps, dict.fromkeys(caps, TWO)) == 0.5
    assert scene_scores(caps, dict.fromkeys(caps, TWO))["relation_n"] == 2
    assert relation_accuracy({1: "a red circle"}, {1: TWO}) is None


def test_missing_and_extra_object():
    s = scores("a red circle and a blue square", THREE)
    assert s["scene_f1"] == pytest.approx(2 * 2 / 5) and s["exact_scene"] == 0.0
    assert s["count_accuracy"] == 0.0 and s["hallucination_rate"] == 0.0
    s = scores("a red circle a blue square a green star and a yellow cross", THREE)
    assert s["scene_f1"] == pytest.approx(2 * 3 / 7) and s["exact_scene"] == 0.0
    assert s["count_accuracy"] == 0.0 and s["hallucination_rate"] == 0.25


def test_count_words():
    assert count_accuracy({1: "there are two shapes a red circle a blue box and a green star"},
                          {1: THREE}) == 0.0
    assert exact_scene({1: "there are two shapes a red circle a blue box and a green star"},
                       {1: THREE}) == 0.0
    assert exact_scene({1: "there are three shapes a red circle a blue box and a green star"},
                       {1: THREE}) == 1.0
    assert count_accuracy({1: "there are two shapes a red circle"}, {1: TWO}) == 0.0


def test_regions():
    assert exact_scene({1: "a red star in the top left"}, {1: ONE}) == 1.0
    s = scores("a red star in the center", ONE)
    assert s["exact_scene"] == s["scene_f1"] == 0.0  # the mention's region is wrong
    assert s["hallucination_rate"] == 0.0 and s["count_accuracy"] == 1.0


def test_empty_caption_and_pooled_hallucination():
    s = scores("", ONE)
    assert s["scene_f1"] == s["exact_scene"] == s["count_accuracy"] == 0.0
    assert s["hallucination_rate"] == 0.0  # no mentions at all
    caps = {1: "a blue box", 2: "a red star and a red star and a red star"}
    assert hallucination_rate(caps, dict.fromkeys(caps, ONE)) == 0.25  # 1 of 4 mentions


def test_scores_agree_with_scene_scores_and_errors_are_clear():
    caps = {1: "a red circle to the left of a blue box", 2: "a big red circle", 3: ""}
    scenes = dict.fromkeys(caps, TWO)
    all_scores = scene_scores(caps, scenes)
    for fn in (scene_f1, exact_scene, count_accuracy, relation_accuracy, hallucination_rate):
        assert fn(caps, scenes) == all_scores[fn.__name__]
    with pytest.raises(ValueError, match="no captions"):
        scene_f1({}, {})
    with pytest.raises(KeyError, match="no scene for image ids"):
        scene_scores({7: "a red star"}, {1: ONE})
