"""VQA accuracy: the VQA v2 answer normalisation and scoring rule, per question type.

**The rule.** VQA v2 asked ten people each question. An answer counts as fully right when at
least three of them gave it, and partly right below that:

    acc(a) = min(#people who said a / 3, 1)

averaged over the ten ways of leaving one person out (each subset has nine answers), so that
the score of a human answer, measured against the other nine, is on the same scale as a
model's. With k of the ten people saying a, the average works out to

    k:      0    1    2    3    >= 4
    acc:    0    0.3  0.6  0.9  1

With a single reference answer (the shapes data: every answer is unique and exact) the rule
is plain exact match after normalisation.

**Normalisation.** Before comparing, both the prediction and the references are put in one
form, as in the official evaluation script: lower case; punctuation removed (a comma between
digits goes, "1,000" -> "1000"; a full stop goes unless a digit follows, as in "3.5"); number words
"zero".."ten" (and "none") become digits; the articles "a", "an", "the" are dropped; common
contractions written without their apostrophe get it back ("dont" -> "don't"; a shorter list
than the official script's). The official script normalises the answers, the prediction's
included, only when the ten human answers disagree: where all ten agree, "Two" scores 0
against "2". ``official=True`` reproduces that, to match its scores on a submission; the
default normalises always, which is what the rule intends.

**Files.** ``read_vqa_annotations`` and ``read_vqa_results`` read the VQA v2 formats
(``{"annotations": [{"question_id", "answers": [{"answer"}...], "answer_type", ...}]}`` and
``[{"question_id", "answer"}]``), so ``score_vqa`` scores a VQA v2 submission with the same
code that scores the course's models.

>>> vqa_accuracy("Two", ["2"])
1.0
>>> vqa_accuracy("2", ["2", "2", "two", "3", "3", "3", "3", "3", "3", "3"])
0.9
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

# Number words as digits; "none" is how people often say zero.
NUMBER_DIGITS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
# Removed outright when it touches a space, or when a digit-comma-digit occurs in the answer;
# replaced by a space otherwise (so "black/white" -> "black white").
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_FULL_STOP = re.compile(r"\.(?!\d)")  # a full stop, not a decimal point: "2." -> "2", "3.5" stays
# Contractions people type without the apostrophe. Spellings that are words of their own
# ("its", "ill", "were", "well", "shed", "wed", "hell", "lets") are left alone.
_CONTRACTIONS = ("aren't", "can't", "couldn't", "couldn't've", "didn't", "doesn't", "don't",
                 "hadn't", "hasn't", "haven't", "he'd", "he's", "how'd", "how'll", "how's",
                 "i'd've", "i'm", "i've", "isn't", "it'd", "it'll", "ma'am", "mightn't",
                 "might've", "mustn't", "must've", "needn't", "o'clock", "oughtn't", "shan't",
                 "she'd", "she'll", "she's", "should've", "shouldn't", "someone's", "something's",
                 "that's", "there'd", "there're", "there's", "they'd", "they'll", "they're",
                 "they've", "wasn't", "we'd've", "we're", "we've", "weren't", "what'll", "what're",
                 "what's", "what've", "when's", "where'd", "where's", "where've", "who'd", "who'll",
                 "who're", "who's", "who've", "why's", "won't", "would've", "wouldn't", "y'all",
                 "you'd", "you'll", "you're", "you've")
CONTRACTIONS = {c.replace("'", ""): c for c in _CONTRACTIONS}


def normalize_answer(answer: str) -> str:
    """The form in which answers are compared (see the module docstring).

    >>> normalize_answer("The Two dogs.")
    '2 dogs'
    >>> normalize_answer("1,000"), normalize_answer("3.5"), normalize_answer("black/white")
    ('1000', '3.5', 'black white')
    >>> normalize_answer("Dont know!")
    "don't know"
    """
    original = text = answer.replace("\n", " ").replace("\t", " ").strip()
    has_digit_comma = _COMMA_BETWEEN_DIGITS.search(original) is not None
    for p in PUNCTUATION:  # whether a mark touches a space is read off the answer as given
        if has_digit_comma or f"{p} " in original or f" {p}" in original:
            text = text.replace(p, "")
        else:
            text = text.replace(p, " ")
    text = _FULL_STOP.sub("", text)
    words = []
    for word in text.lower().split():
        word = NUMBER_DIGITS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str], official: bool = False) -> float:
    """The VQA score of one predicted answer against the reference answers.

    One reference: exact match after normalisation. Several (VQA v2 has ten): the mean over
    the leave-one-out subsets of min(#matches / 3, 1). ``official=True`` normalises only when
    the references disagree, as the official script does (see the module docstring).

    >>> [vqa_accuracy("cat", ["cat"] * k + ["dog"] * (10 - k)) for k in range(5)]
    [0.0, 0.3, 0.6, 0.9, 1.0]
    >>> vqa_accuracy("Two", ["2"] * 10), vqa_accuracy("Two", ["2"] * 10, official=True)
    (1.0, 0.0)
    """
    if not answers:
        raise ValueError("a question needs at least one reference answer")
    if official and len({a.replace("\n", " ").replace("\t", " ").strip() for a in answers}) == 1:
        norm = lambda a: a.replace("\n", " ").replace("\t", " ").strip()  # noqa: E731
    else:
        norm = normalize_answer
    pred = norm(prediction)
    hits = [norm(a) == pred for a in answers]
    if len(hits) == 1:
        return float(hits[0])
    k = sum(hits)
    # leaving out a matching answer leaves k - 1 matches; leaving out another leaves k
    total = sum(min((k - hit) / 3, 1.0) for hit in hits)
    return round(total / len(hits), 10)  # 0.3, not 0.30000000000000004


def score_vqa(predictions: Mapping[int, str], answers: Mapping[int, Sequence[str]],
              types: Mapping[int, str] | None = None, official: bool = False) -> dict:
    """Accuracy over every question of ``answers``, overall and per question type.

    predictions: question id -> predicted answer; answers: question id -> reference answers;
    types: question id -> type (e.g. "color", or VQA v2's answer_type "yes/no"). Every
    question must have exactly one prediction, as the official evaluation requires; a
    prediction for a question not in ``answers`` is an error too. ``official``: see
    ``vqa_accuracy``.

    Returns {"accuracy": float, "n": int, "per_type": {type: {"accuracy", "n"}}} (per_type
    empty without types).

    >>> score_vqa({1: "red", 2: "2", 3: "no"}, {1: ["red"], 2: ["three"], 3: ["no"]},
    ...           {1: "color", 2: "count", 3: "exists"})["per_type"]["count"]
    {'accuracy': 0.0, 'n': 1}
    """
    missing = [q for q in answers if q not in predictions]
    extra = [q for q in predictions if q not in answers]
    if missing or extra:
        raise ValueError(f"predictions and questions differ: {len(missing)} questions unanswered "
                         f"(e.g. {missing[:3]}), {len(extra)} answers to unknown questions "
                         f"(e.g. {extra[:3]})")
    if not answers:
        raise ValueError("no questions to score")
    scores = {q: vqa_accuracy(predictions[q], refs, official) for q, refs in answers.items()}
    out = {"accuracy": sum(scores.values()) / len(scores), "n": len(scores), "per_type": {}}
    if types is not None:
        by_type: dict[str, list[float]] = {}
        for q, s in scores.items():
            by_type.setdefault(types[q], []).append(s)
        out["per_type"] = {t: {"accuracy": sum(v) / len(v), "n": len(v)} for t, v in sorted(by_type.items())}
    return out


def majority_answers(answers: Sequence[str], types: Sequence[str]) -> dict[str, str]:
    """The most common (normalised) answer of each question type: the "prior" baseline.

    Ties go to the alphabetically first answer, so the baseline does not depend on order.

    >>> majority_answers(["yes", "no", "no", "red"], ["exists", "exists", "exists", "color"])
    {'color': 'red', 'exists': 'no'}
    """
    if len(answers) != len(types):
        raise ValueError(f"{len(answers)} answers but {len(types)} types")
    counts: dict[str, Counter] = {}
    for a, t in zip(answers, types, strict=True):
        counts.setdefault(t, Counter())[normalize_answer(a)] += 1
    return {t: min(c, key=lambda a: (-c[a], a)) for t, c in sorted(counts.items())}


def read_vqa_annotations(path, type_key: str = "answer_type"
                         ) -> tuple[dict[int, list[str]], dict[int, str]]:
    """A VQA v2 annotation file as (question id -> its answers, question id -> its type).

    ``type_key`` picks the type: "answer_type" (yes/no, number, other) or "question_type"
    ("what color is the", ...). The course's shapes questions, written in this format by
    ``velm_course.data.vqa.write_vqa_annotations``, keep their type under "answer_type".
    """
    data = json.loads(Path(path).read_text())
    if "annotations" not in data:
        raise ValueError(f"{path}: not a VQA annotation file (no 'annotations' list)")
    answers, types = {}, {}
    for ann in data["annotations"]:
        q = int(ann["question_id"])
        answers[q] = [a["answer"] for a in ann["answers"]]
        types[q] = ann.get(type_key, "all")
    return answers, types


def read_vqa_results(path) -> dict[int, str]:
    """A VQA v2 results file ``[{"question_id": int, "answer": str}, ...]`` as a dict;
    a question answered twice is an error."""
    results = json.loads(Path(path).read_text())
    if not isinstance(results, list):
        raise ValueError(f"{path}: a results file is a list of {{'question_id', 'answer'}}")
    out: dict[int, str] = {}
    for r in results:
        q = int(r["question_id"])
        if q in out:
            raise ValueError(f"{path}: question {q} is answered twice")
        out[q] = r["answer"]
    return out


def write_vqa_results(predictions: Mapping[int, str], path) -> None:
    """Write predictions in the VQA v2 results format (sorted by question id)."""
    rows = [{"question_id": int(q), "answer": a} for q, a in sorted(predictions.items())]
    Path(path).write_text(json.dumps(rows) + "\n")
