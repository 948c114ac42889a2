"""VQA accuracy: the normalisation, the ten-answer rule (against brute force and by hand), per
question type, and the VQA v2 file formats."""

import itertools
import json

import pytest

from velm_course.eval.vqa import (
    majority_answers,
    normalize_answer,
    read_vqa_annotations,
    read_vqa_results,
    score_vqa,
    vqa_accuracy,
    write_vqa_results,
)


@pytest.mark.parametrize("raw, normal", [
    ("Yes", "yes"),
    ("  Red\n", "red"),
    ("two", "2"), ("None", "0"), ("Ten", "10"),
    ("a red circle", "red circle"), ("The cat", "cat"), ("an apple", "apple"),
    ("1,000", "1000"),  # a comma between digits goes
    ("3.5", "3.5"),  # a decimal point stays
    ("yes.", "yes"), ("2.", "2"),  # a full stop goes
    ("black/white", "black white"),  # punctuation between words becomes a space
    ("black / white", "black white"),  # and goes, when it touches a space
    ("dont know", "don't know"), ("isnt", "isn't"),  # contractions get their apostrophe back
    ("its", "its"), ("well", "well"),  # words of their own stay as they are
    ("left of", "left of"),
])
def test_normalize_answer(raw, normal):
    assert normalize_answer(raw) == normal
    assert normalize_answer(normal) == normal  # normalising twice changes nothing


def brute_force(prediction, answers):
    """The leave-one-out average written out, one subset at a time (normalised answers)."""
    pred = normalize_answer(prediction)
    refs = [normalize_answer(a) for a in answers]
    scores = []
    for left_out in range(len(refs)):
        others = refs[:left_out] + refs[left_out + 1:]
        scores.append(min(sum(a == pred for a in others) / 3, 1.0))
    return sum(scores) / len(scores)


def test_ten_answer_rule_by_hand():
    # k of ten people gave the answer: 0, 0.3, 0.6, 0.9, then 1
    expected = [0.0, 0.3, 0.6, 0.9] + [1.0] * 7
    for k, want in enumerate(expected):
        answers = ["two"] * k + ["3"] * (10 - k)
        assert vqa_accuracy("2", answers) == pytest.approx(want, abs=1e-12), k


def test_ten_answer_rule_against_brute_force():
    vocabulary = ["yes", "no", "2", "two", "Red", "red.", "blue"]
    for answers in itertools.islice(itertools.product(vocabulary, repeat=10), 0, 20000, 97):
        for pred in ("yes", "2", "red", "green"):
            assert vqa_accuracy(pred, answers) == pytest.approx(brute_force(pred, answers), abs=1e-9)


def test_official_mode_normalises_only_when_the_references_disagree():
    # all ten agree: the official script compares the prediction as given (stripped)
    assert vqa_accuracy(" 2\n", ["2"] * 10, official=True) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10, official=True) == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 1.0
    # they disagree: both sides normalised, as always
    answers = ["yes"] * 9 + ["no"]
    assert vqa_accuracy("Yes.", answers, official=True) == vqa_accuracy("Yes.", answers) == 1.0
    out = score_vqa({1: "Two", 2: "two"}, {1: ["2"] * 10, 2: ["2"] * 9 + ["3"]}, official=True)
    assert out["accuracy"] == 0.5


def test_punctuation_is_judged_on_the_answer_as_given():
    # in "x/-y c-d" no mark touches a space, so each becomes a space; judged after "/" had become
    # a space, "-" would touch one and vanish ("x y cd"), which the official script does not do
    assert normalize_answer("x/-y c-d") == "x y c d"
    assert normalize_answer("x / y-z") == "x y z"  # "/" touches a space and goes; "-" does not


def test_one_answer_is_exact_match_after_normalisation():
    assert vqa_accuracy("Red.", ["red"]) == 1.0
    assert vqa_accuracy("two", ["2"]) == 1.0
    assert vqa_accuracy("red circle", ["red"]) == 0.0  # no partial credit
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("red", [])


def test_per_type_accuracy_on_hand_made_predictions():
    answers = {1: ["red"], 2: ["blue"], 3: ["yes"], 4: ["no"], 5: ["two"], 6: ["green circle"]}
    types = {1: "color", 2: "color", 3: "exists", 4: "exists", 5: "count", 6: "relation"}
    predictions = {1: "red", 2: "red", 3: "yes", 4: "yes", 5: "2", 6: "the green circle"}
    out = score_vqa(predictions, answers, types)
    assert out["n"] == 6
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["per_type"] == {"color": {"accuracy": 0.5, "n": 2}, "count": {"accuracy": 1.0, "n": 1},
                               "exists": {"accuracy": 0.5, "n": 2}, "relation": {"accuracy": 1.0, "n": 1}}
    assert score_vqa(predictions, answers)["per_type"] == {}


def test_every_question_needs_exactly_one_prediction():
    with pytest.raises(ValueError, match="1 questions unanswered"):
        score_vqa({1: "red"}, {1: ["red"], 2: ["blue"]})
    with pytest.raises(ValueError, match="1 answers to unknown questions"):
        score_vqa({1: "red", 3: "x"}, {1: ["red"]})
    with pytest.raises(ValueError, match="no questions"):
        score_vqa({}, {})


def test_majority_answers():
    answers = ["yes", "no", "No", "red", "blue", "blue", "two", "2"]
    types = ["exists", "exists", "exists", "color", "color", "color", "count", "count"]
    assert majority_answers(answers, types) == {"color": "blue", "count": "2", "exists": "no"}
    assert majority_answers(["box", "bag"], ["t", "t"]) == {"t": "bag"}  # a tie: alphabetical


def test_vqa_v2_files(tmp_path):
    """A hand-made submission in the VQA v2 formats, scored with the same code."""
    ten = lambda *pairs: [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}  # noqa: E731
                          for i, a in enumerate(a for a, n in pairs for _ in range(n))]
    annotations = {"annotations": [
        {"question_id": 11, "image_id": 1, "answer_type": "number", "question_type": "how many",
         "answers": ten(("2", 2), ("3", 8))},
        {"question_id": 12, "image_id": 1, "answer_type": "yes/no", "question_type": "is there",
         "answers": ten(("yes", 10))},
        {"question_id": 13, "image_id": 2, "answer_type": "other", "question_type": "what color",
         "answers": ten(("red", 3), ("dark red", 7))},
    ]}
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    write_vqa_results({13: "Red", 11: "two", 12: "yes"}, tmp_path / "res.json")
    assert [r["question_id"] for r in json.loads((tmp_path / "res.json").read_text())] == [11, 12, 13]
    answers, types = read_vqa_annotations(tmp_path / "ann.json")
    out = score_vqa(read_vqa_results(tmp_path / "res.json"), answers, types)
    # "two" -> "2": 2 of 10 gave it -> 0.6; "yes": 1.0; "Red" -> "red": 3 of 10 -> 0.9
    assert out["per_type"] == {"number": {"accuracy": pytest.approx(0.6), "n": 1},
                               "other": {"accuracy": pytest.approx(0.9), "n": 1},
                               "yes/no": {"accuracy": 1.0, "n": 1}}
    assert out["accuracy"] == pytest.approx((0.6 + 1.0 + 0.9) / 3)
    _, by_question_type = read_vqa_annotations(tmp_path / "ann.json", type_key="question_type")
    assert by_question_type[13] == "what color"
    (tmp_path / "twice.json").write_text(json.dumps([{"question_id": 1, "answer": "a"},
                                                     {"question_id": 1, "answer": "b"}]))
    with pytest.raises(ValueError, match="answered twice"):
        read_vqa_results(tmp_path / "twice.json")
    (tmp_path / "bad.json").write_text(json.dumps({"questions": []}))
    with pytest.raises(ValueError, match="not a VQA annotation file"):
        read_vqa_annotations(tmp_path / "bad.json")
