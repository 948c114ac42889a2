"""The whole COCO caption evaluation: raw captions in, pycocoevalcap's numbers out.

:func:`evaluate_captions` does what pycocoevalcap's ``COCOEvalCap.evaluate`` does, without the
COCO objects: it tokenizes references and candidates with the PTB tokenizer (pure Python,
:mod:`velm_course.eval.ptb`), scores BLEU-1..4, ROUGE-L and CIDEr-D (pure Python and numpy,
:mod:`velm_course.eval.metrics`), and METEOR and SPICE through pycocoevalcap's Java programs
where this machine can run them:

- METEOR 1.5 needs Java (``java`` on the PATH);
- SPICE 1.0 needs Java and the Stanford CoreNLP 3.6.0 jars that pycocoevalcap's
  ``get_stanford_models.py`` downloads into its ``spice/lib`` folder (about 1 GB, internet).

A metric that cannot run is left out of the result with a warning saying what it needs.

The COCO results file format, ``[{"image_id": ..., "caption": ...}, ...]``, is read and
written by :func:`read_results` and :func:`write_results`.

>>> gts = {1: ["A cat sits on a mat.", "A cat on a mat."], 2: ["A dog runs on the grass!"]}
>>> res = {1: "a cat sits on the mat", 2: ["A dog sleeps."]}
>>> scores = evaluate_captions(gts, res, metrics=["Bleu", "ROUGE_L", "CIDEr"])
>>> sorted(scores)
['Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'CIDEr', 'ROUGE_L']
>>> round(scores["ROUGE_L"], 4)  # mean of 5/6 (image 1) and 0.4192 (image 2)
0.6263
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .metrics import _score_all, check_reference_lists
from .ptb import ptb_tokenize

METRICS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")


# -----------------------------------------------------------------------------
# input checks


def _candidate(image_id: Hashable, cand) -> str:
    """A candidate caption: a string, or a one-element list as pycocoevalcap takes it."""
    if isinstance(cand, (list, tuple)):
        if len(cand) != 1:
            raise ValueError(f"res[{image_id!r}] must hold exactly one caption, got {len(cand)}")
        cand = cand[0]
    if not isinstance(cand, str):
        raise TypeError(f"res[{image_id!r}] must be a caption string, got {type(cand).__name__}")
    return cand


def _check_raw(gts: Mapping, res: Mapping) -> tuple[list, dict]:
    """Image ids in gts order and {image_id: candidate string}; clear errors otherwise."""
    if not isinstance(gts, Mapping) or not isinstance(res, Mapping):
        raise TypeError("gts and res must be dicts: {image_id: [references]}, {image_id: caption}")
    if not gts:
        raise ValueError("empty input: gts holds no images")
    missing = [i for i in gts if i not in res]
    extra = [i for i in res if i not in gts]
    if missing or extra:
        raise ValueError(
            f"gts and res must have the same image ids: {len(missing)} image(s) without a candidate "
            f"(e.g. {missing[:5]}), {len(extra)} candidate(s) for unknown images (e.g. {extra[:5]})"
        )
    check_reference_lists(gts)
    return list(gts), {i: _candidate(i, res[i]) for i in gts}


def _tokenize(gts: Mapping, res: dict, ids: list) -> tuple[dict, dict]:
    """PTB-tokenize as COCOEvalCap does: all references as one batch, all candidates as another,
    image by image in the order of gts."""
    flat = ptb_tokenize([ref for i in ids for ref in gts[i]])
    tok_gts, start = {}, 0
    for i in ids:
        tok_gts[i] = flat[start : start + len(gts[i])]
        start += len(gts[i])
        for raw, tok in zip(gts[i], tok_gts[i], strict=True):
            if not tok.split():
                raise ValueError(
                    f"a reference caption of image {i!r} is empty after PTB tokenization: {raw!r} "
                    "(the tokenizer deletes punctuation); remove or fix it"
                )
    tok_res = dict(zip(ids, ptb_tokenize([res[i] for i in ids]), strict=True))
    return tok_gts, tok_res


# -----------------------------------------------------------------------------
# the Java metrics


def _pycocoevalcap_dir() -> Path:
    import pycocoevalcap  # a namespace package: no __file__, but a __path__

    return Path(next(iter(pycocoevalcap.__path__)))


def meteor_unavailable() -> str | None:
    """Why METEOR cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "METEOR needs Java 8 or newer on the PATH (it runs pycocoevalcap's meteor-1.5.jar)"
    try:
        jar = _pycocoevalcap_dir() / "meteor" / "meteor-1.5.jar"
    except ImportError:
        return "METEOR needs pycocoevalcap (pip install pycocoevalcap) for its meteor-1.5.jar"
    if not jar.is_file():
        return f"METEOR needs {jar}, which is missing from this pycocoevalcap install"
    return None


def spice_unavailable() -> str | None:
    """Why SPICE cannot run here, or None when it can."""
    if shutil.which("java") is None:
        return "SPICE needs Java 8 on the PATH and the Stanford CoreNLP 3.6.0 models"
    try:
        lib = _pycocoevalcap_dir() / "spice" / "lib"
    except ImportError:
        return "SPICE needs pycocoevalcap (pip install pycocoevalcap) for its spice-1.0.jar"
    models = [lib / "stanford-corenlp-3.6.0.jar", lib / "stanford-corenlp-3.6.0-models.jar"]
    if not all(m.is_file() for m in models):
        return (
            f"SPICE needs the Stanford CoreNLP 3.6.0 jars in {lib}; download them once (about 1 GB) "
            "with: python -c 'from pycocoevalcap.spice.get_stanford_models import get_stanford_models; "
            "get_stanford_models()'"
        )
    return None


def _close_meteor(scorer) -> None:
    """End a METEOR Java process and close its pipes (pycocoevalcap leaves them open)."""
    process = scorer.meteor_p
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    process.kill()
    process.wait()


@functools.cache
def _meteor_scorer():
    """One METEOR Java process for the whole Python session: starting it (the JVM and its
    paraphrase tables) takes about 10 s, scoring a few hundred captions then well under one."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    atexit.register(_close_meteor, scorer)
    return scorer


def meteor(gts: Mapping, res: Mapping) -> tuple[float, list[float]]:
    """METEOR 1.5 (pycocoevalcap's ``Meteor()``: its jar, English, normalised) of tokenized captions.

    ``gts`` and ``res`` follow :mod:`velm_course.eval.metrics`' convention (res: one string per
    image). Returns the corpus score and the per-image scores in ``gts`` order. METEOR aligns
    candidate and reference words in stages (exact, stem, synonym, paraphrase), so "a puppy"
    and "a dog" can match; the jar does the work. Its Java process starts at the first call
    and serves every later one (it ends with Python).
    """
    reason = meteor_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    refs, cands = {i: list(gts[i]) for i in gts}, {i: [res[i]] for i in gts}
    try:
        return _meteor_scorer().compute_score(refs, cands)
    except (OSError, ValueError):  # the process died (killed, out of memory): start a new one, once
        dead = _meteor_scorer()
        if dead.lock.locked():  # compute_score raised holding its lock; its __del__ would wait forever
            dead.lock.release()
        with contextlib.suppress(OSError, ValueError):
            _close_meteor(dead)
        _meteor_scorer.cache_clear()
        return _meteor_scorer().compute_score(refs, cands)


def parse_spice_results(results: Sequence[Mapping]) -> tuple[float, dict]:
    """Read the JSON that spice-1.0.jar writes: the mean SPICE F-score and per-image scores.

    ``results`` is the parsed file: one entry per image, ``{"image_id": ..., "scores":
    {"All": {"pr": .., "re": .., "f": .., "tp": .., "fp": .., "fn": .., "numImages": ..},
    "Object": {...}, "Attribute": {...}, "Relation": {...}, "Color": {...}, "Count": {...},
    "Size": {...}}, ...}``. Values that are not numbers (SPICE writes NaN for a category with
    no tuples) become nan, as pycocoevalcap does; the mean is over the "All" F-scores, so it is
    nan when any image's is.

    Returns ``(mean, {image_id: {category: {statistic: float}}})``.
    """

    def to_float(value) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return math.nan

    per_image = {}
    for item in results:
        if "image_id" not in item or "scores" not in item:
            raise ValueError(f"not a SPICE result entry (needs image_id and scores): {str(item)[:80]}")
        per_image[item["image_id"]] = {
            category: {stat: to_float(v) for stat, v in stats.items()} for category, stats in item["scores"].items()
        }
    mean = float(np.mean([scores["All"]["f"] for scores in per_image.values()]))
    return mean, per_image


def spice(gts: Mapping, res: Mapping) -> tuple[float, dict]:
    """SPICE 1.0 of tokenized captions through pycocoevalcap's spice-1.0.jar.

    SPICE parses every caption into a scene graph (objects, their attributes, relations between
    them) and scores the F1 of candidate tuples against reference tuples. It needs Java and the
    Stanford CoreNLP models (see :func:`spice_unavailable`). Returns the mean score and
    {image_id: {category: {statistic: value}}} as :func:`parse_spice_results`.
    """
    reason = spice_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    spice_dir = _pycocoevalcap_dir() / "spice"
    ids = list(gts)
    entries = [{"image_id": k, "test": res[i], "refs": list(gts[i])} for k, i in enumerate(ids)]
    with tempfile.TemporaryDirectory() as tmp:
        in_file, out_file = Path(tmp) / "input.json", Path(tmp) / "output.json"
        in_file.write_text(json.dumps(entries))
        cache = spice_dir / "cache"
        cache.mkdir(exist_ok=True)
        subprocess.check_call(
            ["java", "-jar", "-Xmx8G", "spice-1.0.jar", str(in_file), "-cache", str(cache),
             "-out", str(out_file), "-subset", "-silent"],
            cwd=spice_dir,
        )
        mean, by_index = parse_spice_results(json.loads(out_file.read_text()))
    return mean, {ids[k]: scores for k, scores in by_index.items()}


# -----------------------------------------------------------------------------
# everything at once


def evaluate_captions(
    gts: Mapping[Hashable, Sequence[str]],
    res: Mapping[Hashable, str | Sequence[str]],
    metrics: Sequence[str] | None = None,
    per_image: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, dict[Hashable, float]]]:
    """Score raw captions as pycocoevalcap's ``COCOEvalCap.evaluate`` does.

    ``gts`` maps an image id to its reference captions, ``res`` an image id to its generated
    caption (a string, or a one-element list as pycocoevalcap takes it), both raw text: they
    are PTB-tokenized here, references as one batch and candidates as another, in the order of
    ``gts``. ``metrics`` names any of "Bleu", "METEOR", "ROUGE_L", "CIDEr", "SPICE" (default:
    all five); one that cannot run on this machine is left out with a warning saying what it
    needs.

    Returns ``{"Bleu_1": .., "Bleu_2": .., "Bleu_3": .., "Bleu_4": .., "METEOR": .., "ROUGE_L": ..,
    "CIDEr": .., "SPICE": ..}`` (pycocoevalcap's names and scale: CIDEr-D is x10, the rest in
    [0, 1]); with ``per_image=True`` also ``{metric: {image_id: score}}`` (for SPICE the "All"
    F-score). CIDEr-D's document frequencies come from the evaluated references, so a score
    depends on which images are in the set (use :class:`~velm_course.eval.metrics.CiderD` to fix
    them).

    >>> evaluate_captions({0: ["A cat."]}, {1: "A cat."})
    Traceback (most recent call last):
    ...
    ValueError: gts and res must have the same image ids: 1 image(s) without a candidate (e.g. [0]), 1 candidate(s) for unknown images (e.g. [1])
    """
    chosen = list(METRICS) if metrics is None else list(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    ids, cands = _check_raw(gts, res)
    tok_gts, tok_res = _tokenize(gts, cands, ids)

    scores: dict[str, float] = {}
    images: dict[str, dict[Hashable, float]] = {}
    if {"Bleu", "ROUGE_L", "CIDEr"} & set(chosen):
        computed = _score_all(tok_gts, tok_res)
        names = (BLEU_KEYS if "Bleu" in chosen else ()) + tuple(m for m in ("ROUGE_L", "CIDEr") if m in chosen)
        for name in names:
            corpus, values = computed[name]
            scores[name] = float(corpus)
            images[name] = dict(zip(ids, (float(v) for v in values), strict=True))
    for name, unavailable, run in (("METEOR", meteor_unavailable, meteor), ("SPICE", spice_unavailable, spice)):
        if name not in chosen:
            continue
        reason = unavailable()
        if reason is not None:
            warnings.warn(f"{name} left out: {reason}", RuntimeWarning, stacklevel=2)
            continue
        corpus, values = run(tok_gts, tok_res)
        scores[name] = float(corpus)
        if name == "SPICE":
            images[name] = {i: values[i]["All"]["f"] for i in ids}
        else:
            images[name] = dict(zip(ids, (float(v) for v in values), strict=True))
    order = [k for k in (*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr", "SPICE") if k in scores]
    scores = {k: scores[k] for k in order}
    if per_image:
        return scores, {k: images[k] for k in order}
    return scores


# -----------------------------------------------------------------------------
# the COCO results format


def write_results(path: str | os.PathLike, res: Mapping[Hashable, str | Sequence[str]]) -> None:
    """Write captions as a COCO results file: ``[{"image_id": ..., "caption": ...}, ...]``.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "captions.json")
    >>> write_results(path, {42: "a cat on a mat", 7: ["a dog"]})
    >>> read_results(path)
    {42: 'a cat on a mat', 7: 'a dog'}
    """
    if not isinstance(res, Mapping):
        raise TypeError(f"res must be a dict {{image_id: caption}}, got {type(res).__name__}")
    for image_id in res:
        if not isinstance(image_id, (int, float, str)) or isinstance(image_id, bool):
            raise TypeError(f"image ids must be JSON numbers or strings (COCO uses ints), got {image_id!r}")
    entries = [{"image_id": image_id, "caption": _candidate(image_id, cap)} for image_id, cap in res.items()]
    Path(path).write_text(json.dumps(entries))


def read_results(path: str | os.PathLike) -> dict[Hashable, str]:
    """Read a COCO results file into ``{image_id: caption}``.

    Every entry needs "image_id" and "caption"; an image may appear only once (COCOEvalCap
    scores one caption per image, and a duplicate would silently change its BLEU and CIDEr).
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: a COCO results file holds a JSON list of entries, got {type(data).__name__}")
    out: dict[Hashable, str] = {}
    for k, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {k} is a {type(entry).__name__}, expected an object")
        lacking = [key for key in ("image_id", "caption") if key not in entry]
        if lacking:
            raise ValueError(f"{path}: entry {k} has no {' and no '.join(repr(x) for x in lacking)}: {entry}")
        image_id, caption = entry["image_id"], entry["caption"]
        if not isinstance(image_id, (int, float, str)) or isinstance(image_id, bool):
            raise ValueError(f"{path}: entry {k} has image_id {image_id!r}, expected a number or a string")
        if not isinstance(caption, str):
            raise ValueError(f"{path}: the caption of image {image_id!r} is a {type(caption).__name__}, expected a string")
        if image_id in out:
            raise ValueError(f"{path}: image {image_id!r} has more than one caption (entries must be unique per image)")
        out[image_id] = caption
    return out
