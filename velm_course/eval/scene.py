"""Reading a generated caption back into a scene, and scores that check it against the drawing.

The shapes data knows what every image shows (``velm_course.data.shapes``), so a caption can be
checked fact by fact instead of n-gram by n-gram. ``parse_scene`` reads the objects a caption
names (with any size or grid region it states), the count it states ("two shapes") and the
relations it states ("the red circle is left of the blue box"). The scores compare that with
the drawn scene:

=====================  ===========================================================================
``scene_f1``           per-image F1 between the caption's correct mentions and the scene's objects
``exact_scene``        the caption names the scene's objects, each once, every stated fact right
``count_accuracy``     as many mentions as objects, and any stated count right
``relation_accuracy``  over captions that state a relation, every stated relation true
``hallucination_rate`` mentions of objects the image does not hold, over all mentions
=====================  ===========================================================================

``content_accuracy`` (the older score: the set of (colour, shape) pairs is right) is kept in
``scene_scores`` so old and new results can be compared. Unlike it, these scores see a repeated
object ("a red star and a red star"), a wrong size and a wrong spatial phrase.

>>> scene = [{"color": "red", "shape": "circle", "size": "small", "cell": [0, 0]},
...          {"color": "blue", "shape": "square", "size": "large", "cell": [0, 2]}]
>>> parse_scene("a small red disc to the left of a big blue box").relations
((0, 'left of', 1),)
>>> scores = scene_scores({1: "a small red disc to the left of a big blue box"}, {1: scene})
>>> scores["exact_scene"], scores["relation_accuracy"], scores["hallucination_rate"]
(1.0, 1.0, 0.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..data.shapes import (
    COLORS,
    NUMBER_WORDS,
    REGIONS,
    RELATION_PHRASES,
    SHAPE_WORDS,
    SIZE_WORDS,
    content_accuracy,
    relation,
)

# Reverse lookups: a caption word (or phrase) -> canonical name.
_SHAPE_OF_WORD = {w: s for s, words in SHAPE_WORDS.items() for w in words}
_SIZE_OF_WORD = {w: s for s, words in SIZE_WORDS.items() for w in words}
_RELATION_OF_PHRASE = {p: r for r, phrases in RELATION_PHRASES.items() for p in phrases}
_REGION_OF_WORDS = {tuple(name.split()): name for name in REGIONS}
_COUNT_NOUNS = ("shape", "shapes", "object", "objects")
_ARTICLES = ("a", "an", "the")


@dataclass(frozen=True)
class Mention:
    """One object a caption names: canonical colour and shape, and the size and grid region
    it states (None when it states none)."""

    color: str
    shape: str
    size: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class ParsedCaption:
    """What a caption states about its image.

    ``mentions`` in caption order; ``counts`` every stated count ("two shapes" -> 2), usually
    none or one; ``relations`` as (mention index a, canonical relation, mention index b),
    read "a is <relation> b".
    """

    mentions: tuple[Mention, ...] = ()
    counts: tuple[int, ...] = ()
    relations: tuple[tuple[int, str, int], ...] = ()


def _words(caption: str) -> list[str]:
    # letters only: punctuation and tokens such as "<unk>" never glue onto a vocabulary word
    return re.findall(r"[a-z]+", caption.lower())


def _find_mentions(words: list[str]) -> list[tuple[int, int, str, str, str | None]]:
    """(start, stop, colour, shape, size) of every "colour [size] shape" or "size colour shape"
    in ``words``; the span includes the size word."""
    found = []
    for i, word in enumerate(words):
        if word not in COLORS:
            continue
        j, size = i + 1, None
        if j < len(words) and words[j] in _SIZE_OF_WORD:
            size, j = _SIZE_OF_WORD[words[j]], j + 1
        if j >= len(words) or words[j] not in _SHAPE_OF_WORD:
            continue  # a colour without a shape ("a red", a truncated caption) names nothing
        start = i
        if i > 0 and words[i - 1] in _SIZE_OF_WORD:
            start = i - 1
            # "big red small circle" never comes from the templates; the nearer word wins
            size = size or _SIZE_OF_WORD[words[i - 1]]
        found.append((start, j + 1, word, _SHAPE_OF_WORD[words[j]], size))
    return found


def _region(gap: list[str]) -> str | None:
    """The region named right after a mention: "[is] in the top left", "at the center"."""
    if gap[:1] == ["is"]:
        gap = gap[1:]
    if gap[:2] not in (["in", "the"], ["at", "the"]):
        return None
    rest = gap[2:]
    return _REGION_OF_WORDS.get(tuple(rest[:2])) or _REGION_OF_WORDS.get(tuple(rest[:1]))


def _relation(gap: list[str]) -> str | None:
    """The relation between two neighbouring mentions, when the words between them are exactly
    "[is] <relation phrase> [article]", as in every template that states one."""
    if gap[:1] in (["is"], ["are"]):
        gap = gap[1:]
    if gap[-1:] and gap[-1] in _ARTICLES:
        gap = gap[:-1]
    return _RELATION_OF_PHRASE.get(" ".join(gap))


def parse_scene(caption: str) -> ParsedCaption:
    """The mentions, stated counts and stated relations of a caption.

    A mention is a colour, an optional size and a shape word ("red big disc"), or a size before
    the colour ("big red disc"); synonyms come from ``SHAPE_WORDS`` and ``SIZE_WORDS``. A
    region ("in the top left") right after a mention belongs to it. A relation is read only
    between two neighbouring mentions, when the words between them are "[is] <phrase> [a/an/the]"
    ("a red circle to the left of a blue box", "the red circle is above the blue box"); a
    dangling phrase ("a red circle left of") states nothing that can be checked. A count is a
    number word before "shapes" or "objects". Other words are ignored, so a model's imperfect
    or truncated caption still reads sensibly.

    >>> p = parse_scene("there are two shapes a big red disc and a blue box in the center")
    >>> [(m.color, m.shape, m.size, m.region) for m in p.mentions]
    [('red', 'circle', 'large', None), ('blue', 'square', None, 'center')]
    >>> p.counts, p.relations
    ((2,), ())
    """
    words = _words(caption)
    spans = _find_mentions(words)
    mentions, relations = [], []
    for k, (_, stop, color, shape, size) in enumerate(spans):
        gap = words[stop:spans[k + 1][0]] if k + 1 < len(spans) else words[stop:]
        mentions.append(Mention(color, shape, size, _region(gap)))
        if k + 1 < len(spans) and (rel := _relation(gap)) is not None:
            relations.append((k, rel, k + 1))
    counts = [NUMBER_WORDS.index(w) for w, noun in zip(words, words[1:], strict=False)
              if w in NUMBER_WORDS and noun in _COUNT_NOUNS]
    return ParsedCaption(tuple(mentions), tuple(counts), tuple(relations))


# ----------------------------------------------------------------------------------------------
# Checking one caption against one scene


def _region_of(obj: dict) -> str:
    row, col = obj["cell"]
    return REGIONS[3 * row + col]


@dataclass(frozen=True)
class _Verdict:
    """The facts of one caption, checked against its scene."""

    n_mentions: int
    n_objects: int
    matched: int  # mentions matching a not yet matched object, every stated attribute right
    hallucinated: int  # mentions whose (colour, shape) the scene does not hold
    count_ok: bool
    n_relations: int
    relations_ok: bool  # every stated relation true (True when none is stated)

    @property
    def exact(self) -> bool:
        return (self.matched == self.n_mentions == self.n_objects and self.count_ok
                and self.relations_ok)


def _agrees(m: Mention, obj: dict) -> bool:
    """Colour and shape are the object's, and so are the size and region, if stated."""
    return ((m.color, m.shape) == (obj["color"], obj["shape"])
            and m.size in (None, obj["size"]) and m.region in (None, _region_of(obj)))


def _judge(caption: str, scene: list[dict]) -> _Verdict:
    parsed = parse_scene(caption)
    claimed: set[int] = set()  # scene objects a correct mention has already matched
    referent: list[int | None] = []  # the scene object each mention names, for relations
    matched = hallucinated = 0
    for m in parsed.mentions:
        pair = (m.color, m.shape)
        same_pair = [i for i, o in enumerate(scene) if (o["color"], o["shape"]) == pair]
        if not same_pair:
            hallucinated += 1
            referent.append(None)
            continue
        # A second mention of an object finds it claimed: a false positive, not a match.
        free = [i for i in same_pair if i not in claimed and _agrees(m, scene[i])]
        if free:
            claimed.add(free[0])
            matched += 1
        referent.append(free[0] if free else same_pair[0])
    n = len(scene)
    count_ok = len(parsed.mentions) == n and all(c == n for c in parsed.counts)
    relations_ok = all(
        referent[a] is not None and referent[b] is not None and referent[a] != referent[b]
        and relation(scene[referent[a]], scene[referent[b]]) == rel
        for a, rel, b in parsed.relations)
    return _Verdict(len(parsed.mentions), n, matched, hallucinated, count_ok,
                    len(parsed.relations), relations_ok)


def _verdicts(captions: dict, scenes: dict) -> list[_Verdict]:
    if not captions:
        raise ValueError("no captions to score")
    missing = [i for i in captions if i not in scenes]
    if missing:
        raise KeyError(f"no scene for image ids {missing[:5]} ({len(missing)} in all)")
    return [_judge(captions[i], scenes[i]) for i in captions]


# ----------------------------------------------------------------------------------------------
# Scores. Each takes {image_id: caption} and {image_id: scene objects} and averages over the
# captions' images; every image id of ``captions`` needs a scene.


def _f1(v: _Verdict) -> float:
    total = v.n_mentions + v.n_objects
    return 2 * v.matched / total if total else 1.0


def scene_f1(captions: dict[int, str], scenes: dict[int, list[dict]]) -> float:
    """Mean over images of the F1 between the caption's mentions and the scene's objects.

    A mention matches a scene object when colour and shape agree, any size or region it states
    is the object's, and no earlier mention matched that object. So with M mentions, N objects
    and T matches, precision is T/M, recall T/N and F1 = 2T/(M+N): a repeated object or a wrong
    size counts as a false positive, and its object as missed unless another mention gets it
    right. An empty caption scores 0 (an empty scene with an empty caption would score 1).

    >>> scene = [{"color": "red", "shape": "star", "size": "small", "cell": [0, 0]}]
    >>> scene_f1({1: "a red star and a red star", 2: "a big red star"}, {1: scene, 2: scene})
    0.3333333333333333
    """
    return sum(_f1(v) for v in _verdicts(captions, scenes)) / len(captions)


def exact_scene(captions: dict[int, str], scenes: dict[int, list[dict]]) -> float:
    """Share of images whose caption names every scene object exactly once and nothing else,
    with every fact it states right: sizes, regions, counts and relations.

    A fact the references also leave out at times (size, region, relation, count) is not
    required, but a wrong one fails the caption.

    >>> scene = [{"color": "red", "shape": "star", "size": "small", "cell": [0, 0]}]
    >>> exact_scene({1: "a red star", 2: "a little red star in the center"}, {1: scene, 2: scene})
    0.5
    """
    return sum(v.exact for v in _verdicts(captions, scenes)) / len(captions)


def count_accuracy(captions: dict[int, str], scenes: dict[int, list[dict]]) -> float:
    """Share of images whose caption mentions as many objects as the scene holds (right or
    wrong ones alike) and, if it states a count ("three shapes"), states the right one.

    >>> scene = [{"color": "red", "shape": "star", "size": "small", "cell": [0, 0]}]
    >>> count_accuracy({1: "a blue box", 2: "two shapes a red star"}, {1: scene, 2: scene})
    0.5
    """
    return sum(v.count_ok for v in _verdicts(captions, scenes)) / len(captions)


def _relation_accuracy(verdicts: list[_Verdict]) -> tuple[float | None, int]:
    stating = [v for v in verdicts if v.n_relations]
    return (sum(v.relations_ok for v in stating) / len(stating) if stating else None), len(stating)


def relation_accuracy(captions: dict[int, str], scenes: dict[int, list[dict]]) -> float | None:
    """Over the captions that state at least one relation, the share whose every stated
    relation is true: both mentions name objects of the scene, two different ones, and
    ``shapes.relation`` says the same. None when no caption states a relation: there is nothing
    to be right or wrong about (``scene_scores`` also reports how many did, as ``relation_n``).

    >>> scene = [{"color": "red", "shape": "star", "size": "small", "cell": [0, 0]},
    ...          {"color": "blue", "shape": "cross", "size": "small", "cell": [2, 0]}]
    >>> captions = {1: "a red star above a blue cross", 2: "the red star is below the blue cross",
    ...             3: "a red star and a blue cross"}
    >>> relation_accuracy(captions, {1: scene, 2: scene, 3: scene})
    0.5
    """
    return _relation_accuracy(_verdicts(captions, scenes))[0]


def hallucination_rate(captions: dict[int, str], scenes: dict[int, list[dict]]) -> float:
    """Mentions of a (colour, shape) the image does not hold, over all mentions of all captions
    (pooled, like CHAIR-i). A wrong size or a repeat of a present object is not a
    hallucination. 0.0 when no caption mentions anything.

    >>> scene = [{"color": "red", "shape": "star", "size": "small", "cell": [0, 0]}]
    >>> captions = {1: "a red star and a blue box", 2: "a big red star"}
    >>> hallucination_rate(captions, {1: scene, 2: scene})
    0.3333333333333333
    """
    verdicts = _verdicts(captions, scenes)
    mentions = sum(v.n_mentions for v in verdicts)
    return sum(v.hallucinated for v in verdicts) / mentions if mentions else 0.0


def scene_scores(captions: dict[int, str], scenes: dict[int, list[dict]]) -> dict[str, float | None]:
    """All scene scores at once (each caption is parsed once), plus ``content_accuracy`` and
    ``relation_n``, the number of captions ``relation_accuracy`` covered.

    >>> scene = [{"color": "red", "shape": "star", "size": "small", "cell": [0, 0]}]
    >>> scene_scores({1: "a red star and a red star"}, {1: scene})["content_accuracy"]
    1.0
    """
    verdicts = _verdicts(captions, scenes)
    n = len(verdicts)
    mentions = sum(v.n_mentions for v in verdicts)
    rel_acc, rel_n = _relation_accuracy(verdicts)
    return {
        "content_accuracy": content_accuracy(captions, scenes),
        "scene_f1": sum(_f1(v) for v in verdicts) / n,
        "exact_scene": sum(v.exact for v in verdicts) / n,
        "count_accuracy": sum(v.count_ok for v in verdicts) / n,
        "relation_accuracy": rel_acc,
        "relation_n": rel_n,
        "hallucination_rate": (sum(v.hallucinated for v in verdicts) / mentions
                               if mentions else 0.0),
    }
