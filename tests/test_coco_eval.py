"""evaluate_captions against pycocoevalcap's whole pipeline; METEOR, SPICE, results files.

The reference is computed in the test, not stored: pycocoevalcap's PTBTokenizer (Java), then
its Bleu(4), Meteor() (Java), Rouge() and Cider(), once per module on a generated set of raw
captions. SPICE needs the Stanford CoreNLP models, which are not installed here or in CI: its
output parser is checked on a recorded fixture against pycocoevalcap's own parsing code.
"""

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_ptb_tokenizer import random_captions  # the tokenizer tests' caption generator

from velm_course.eval import coco_eval
from velm_course.eval.coco_eval import (
    evaluate_captions,
    parse_spice_results,
    read_results,
    write_results,
)
from velm_course.eval.ptb import ptb_tokenize

FIXTURES = Path(__file__).parent / "fixtures"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed (pycocoevalcap's tokenizer and METEOR are jars)")


def raw_caption_sets(seed: int, n_images: int = 300):
    """Raw references and candidates: punctuation, mixed case, Unicode, repeated words, very
    short and very long captions, an empty candidate, a candidate that tokenizes to nothing,
    candidates given as one-element lists; 1 to 6 references per image."""
    captions = iter(random_captions(8 * n_images, seed))
    rng = random.Random(seed)
    gts, res = {}, {}
    for k in range(n_images):
        image_id = 1000 * k + rng.randint(0, 999)  # COCO-like ids, not in sorted order
        # a reference that tokenizes to nothing is rejected (see test_errors), so skip those
        refs = [c for c in (next(captions) for _ in range(rng.randint(1, 6))) if ptb_tokenize([c])[0]]
        gts[image_id] = refs or ["A dog."]
        cand = next(captions)
        res[image_id] = [cand] if rng.random() < 0.3 else cand
    ids = list(gts)
    res[ids[0]], res[ids[1]] = "", "..."
    res[ids[2]] = gts[ids[2]][0]  # a perfect candidate
    return gts, res


def pycocoevalcap_scores(gts, res) -> dict:
    """{metric: (corpus score, per-image scores in gts order)} from pycocoevalcap's own code."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    tok_gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in gts.items()})
    tok_res = tokenizer.tokenize({i: [{"caption": res[i] if isinstance(res[i], str) else res[i][0]}] for i in gts})
    out = {}
    corpus, per_image = Bleu(4).compute_score(tok_gts, tok_res, verbose=0)
    for k in range(4):
        out[f"Bleu_{k + 1}"] = (corpus[k], per_image[k])
    meteor = Meteor()
    out["METEOR"] = meteor.compute_score(tok_gts, tok_res)
    del meteor
    out["ROUGE_L"] = Rouge().compute_score(tok_gts, tok_res)
    out["CIDEr"] = Cider().compute_score(tok_gts, tok_res)
    return out


SETS = raw_caption_sets(seed=7)


@pytest.fixture(scope="module")
def reference():
    return pycocoevalcap_scores(*SETS)


@needs_java
def test_equal_to_pycocoevalcap(reference):
    gts, res = SETS
    with pytest.warns(RuntimeWarning, match="SPICE left out"):
        scores, per_image = evaluate_captions(gts, res, per_image=True)
    assert list(scores) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    for name, (corpus, images) in reference.items():
        assert scores[name] == pytest.approx(corpus, abs=1e-6), name
        assert list(per_image[name]) == list(gts)
        np.testing.assert_allclose(list(per_image[name].values()), images, rtol=0, atol=1e-6, err_msg=name)
    assert 0 < scores["Bleu_4"] < scores["Bleu_1"] < 1 and scores["CIDEr"] > 0


@needs_java
def test_one_meteor_process_serves_every_call_and_scores_like_a_fresh_one(reference):
    gts, res = SETS
    first = evaluate_captions(gts, res, metrics=["METEOR"])["METEOR"]
    process = coco_eval._meteor_scorer().meteor_p
    other = {i: "a dog runs on the grass" for i in gts}  # another call in between
    evaluate_captions(gts, other, metrics=["METEOR"])
    again = evaluate_captions(gts, res, metrics=["METEOR"])["METEOR"]
    assert coco_eval._meteor_scorer().meteor_p is process and process.poll() is None  # still the same, alive
    assert first == again == pytest.approx(reference["METEOR"][0], abs=1e-6)
    # a process that died is replaced, and the score is the same
    process.kill()
    process.wait()
    assert evaluate_captions(gts, res, metrics=["METEOR"])["METEOR"] == pytest.approx(first, abs=1e-9)
    assert coco_eval._meteor_scorer().meteor_p is not process


def test_metric_selection_and_order():
    gts, res = SETS
    scores = evaluate_captions(gts, res, metrics=["CIDEr", "Bleu"])
    assert list(scores) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr"]
    only, images = evaluate_captions(gts, res, metrics=["ROUGE_L"], per_image=True)
    assert list(only) == ["ROUGE_L"] and list(images) == ["ROUGE_L"]
    assert only["ROUGE_L"] == pytest.approx(np.mean(list(images["ROUGE_L"].values())))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_captions(gts, res, metrics=["BLEU"])


def test_java_metrics_left_out_with_a_warning(monkeypatch):
    gts, res = {1: ["A cat sits."]}, {1: "A cat."}
    monkeypatch.setattr(coco_eval.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning) as caught:
        scores = evaluate_captions(gts, res)
    messages = [str(w.message) for w in caught]
    assert any("METEOR left out" in m and "Java" in m for m in messages)
    assert any("SPICE left out" in m and "Java" in m for m in messages)
    assert "METEOR" not in scores and "SPICE" not in scores and "CIDEr" in scores
    with pytest.raises(RuntimeError, match="needs Java"):
        coco_eval.meteor({1: ["a cat"]}, {1: "a cat"})


def test_spice_needs_the_stanford_models(monkeypatch, tmp_path):
    monkeypatch.setattr(coco_eval, "_pycocoevalcap_dir", lambda: tmp_path)
    monkeypatch.setattr(coco_eval.shutil, "which", lambda name: "/usr/bin/java")
    reason = coco_eval.spice_unavailable()
    assert "Stanford CoreNLP 3.6.0" in reason and str(tmp_path / "spice" / "lib") in reason
    with pytest.raises(RuntimeError, match="CoreNLP"):
        coco_eval.spice({1: ["a cat"]}, {1: "a cat"})


def test_errors():
    with pytest.raises(ValueError, match=r"same image ids: 1 image\(s\) without a candidate \(e.g. \[2\]\)"):
        evaluate_captions({1: ["A cat."], 2: ["A dog."]}, {1: "A cat."})
    with pytest.raises(ValueError, match=r"1 candidate\(s\) for unknown images \(e.g. \[3\]\)"):
        evaluate_captions({1: ["A cat."]}, {1: "A cat.", 3: "A dog."})
    with pytest.raises(ValueError, match="image 2 has an empty list of reference captions"):
        evaluate_captions({1: ["A cat."], 2: []}, {1: "A cat.", 2: "A dog."})
    with pytest.raises(ValueError, match="image 2 is empty after PTB tokenization"):
        evaluate_captions({1: ["A cat."], 2: ["A dog.", "..."]}, {1: "A cat.", 2: "A dog."})
    with pytest.raises(ValueError, match=r"res\[1\] must hold exactly one caption, got 2"):
        evaluate_captions({1: ["A cat."]}, {1: ["A cat.", "A dog."]})
    with pytest.raises(TypeError, match=r"res\[1\] must be a caption string, got int"):
        evaluate_captions({1: ["A cat."]}, {1: 5})
    with pytest.raises(TypeError, match=r"gts\[1\] must be a list of reference captions, got str"):
        evaluate_captions({1: "A cat."}, {1: "A cat."})
    with pytest.raises(ValueError, match="empty input"):
        evaluate_captions({}, {})


# -----------------------------------------------------------------------------
# results files


def test_results_file_round_trip(tmp_path):
    gts, res = SETS
    path = tmp_path / "captions_results.json"
    write_results(path, res)
    entries = json.loads(path.read_text())
    assert set(entries[0]) == {"image_id", "caption"} and len(entries) == len(res)
    back = read_results(path)
    assert back == {i: (c if isinstance(c, str) else c[0]) for i, c in res.items()}
    assert evaluate_captions(gts, back, metrics=["CIDEr"]) == evaluate_captions(gts, res, metrics=["CIDEr"])


@pytest.mark.parametrize("content, message", [
    ([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}], "image 1 has more than one caption"),
    ([{"image_id": 1, "caption": "a"}, {"caption": "b"}], "entry 1 has no 'image_id'"),
    ([{"image_id": 1}], "entry 0 has no 'caption'"),
    ([{}], "no 'image_id' and no 'caption'"),
    ([{"image_id": 1, "caption": ["a"]}], "the caption of image 1 is a list"),
    ([{"image_id": [1], "caption": "a"}], "entry 0 has image_id \\[1\\]"),
    ([["a"]], "entry 0 is a list"),
    ({"1": "a"}, "holds a JSON list"),
])
def test_read_results_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        read_results(path)


def test_write_results_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one caption"):
        write_results(tmp_path / "x.json", {1: ["a", "b"]})
    with pytest.raises(TypeError, match="JSON numbers or strings"):
        write_results(tmp_path / "x.json", {(1, 2): "a"})
    with pytest.raises(TypeError, match="must be a dict"):
        write_results(tmp_path / "x.json", [("a", 1)])


# -----------------------------------------------------------------------------
# SPICE's output, on a recorded fixture

# What spice-1.0.jar -subset writes, for 4 images: per category precision, recall, F-score and
# counts, and the tuples. A statistic that is undefined (no tuples of that kind on a side) is
# null in the file (the jar's JSON library writes NaN that way); the fourth image's candidate has
# no tuples at all, so its F-score is undefined too, and so is pycocoevalcap's mean.
SPICE_FIXTURE = FIXTURES / "spice_output.json"


def pycocoevalcap_spice(monkeypatch, tmp_path, gts, res):
    """pycocoevalcap's Spice().compute_score with the jar replaced by the fixture."""
    from pycocoevalcap.spice import spice as spice_module

    def fake_jar(cmd, cwd=None):
        out = Path(cmd[cmd.index("-out") + 1])
        out.write_text(SPICE_FIXTURE.read_text())

    monkeypatch.setattr(spice_module, "get_stanford_models", lambda: None)  # no download
    monkeypatch.setattr(spice_module, "TEMP_DIR", str(tmp_path / "tmp"))  # not in site-packages
    monkeypatch.setattr(spice_module, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(spice_module.subprocess, "check_call", fake_jar)
    return spice_module.Spice().compute_score(gts, res)


def test_spice_parser_equals_pycocoevalcap(monkeypatch, tmp_path):
    results = json.loads(SPICE_FIXTURE.read_text())
    ids = sorted(r["image_id"] for r in results)
    gts = {i: ["a reference"] for i in ids}
    res = {i: ["a candidate"] for i in ids}
    ref_mean, ref_images = pycocoevalcap_spice(monkeypatch, tmp_path, gts, res)
    mean, per_image = parse_spice_results(results)
    assert math.isnan(mean) and math.isnan(ref_mean)  # one undefined F-score spoils the mean
    assert parse_spice_results(results[:3])[0] == pytest.approx(np.mean([0.6, 0.7272727272727272, 0.2222222222222222]))
    flat = [(c, stat, v) for i in ids for c, stats in per_image[i].items() for stat, v in stats.items()]
    ref_flat = [(c, stat, v) for image in ref_images for c, stats in image.items() for stat, v in stats.items()]
    assert [x[:2] for x in flat] == [x[:2] for x in ref_flat]
    np.testing.assert_array_equal([x[2] for x in flat], [x[2] for x in ref_flat])  # nan equals nan here
    assert math.isnan(per_image[184613]["Size"]["f"])  # null in the file: no tuples of that kind
    tp, fp, fn = (per_image[391895]["All"][k] for k in ("tp", "fp", "fn"))  # the file is consistent:
    assert per_image[391895]["All"]["f"] == pytest.approx(2 * tp / (2 * tp + fp + fn))  # F = 2TP/(2TP+FP+FN)


def test_spice_parser_errors():
    with pytest.raises(ValueError, match="not a SPICE result entry"):
        parse_spice_results([{"image_id": 1}])


def test_spice_runner_plumbing(monkeypatch, tmp_path):
    # everything but the jar: the input file spice-1.0.jar reads, the command, and mapping the
    # output back to our image ids
    (tmp_path / "spice" / "lib").mkdir(parents=True)
    monkeypatch.setattr(coco_eval, "_pycocoevalcap_dir", lambda: tmp_path)
    monkeypatch.setattr(coco_eval, "spice_unavailable", lambda: None)
    recorded = json.loads(SPICE_FIXTURE.read_text())
    seen = {}

    def fake_jar(cmd, cwd=None):
        assert cmd[:4] == ["java", "-jar", "-Xmx8G", "spice-1.0.jar"] and "-subset" in cmd
        entries = json.loads(Path(cmd[4]).read_text())
        seen["entries"] = entries
        out = [dict(recorded[k % 3], image_id=e["image_id"]) for k, e in enumerate(entries)]
        Path(cmd[cmd.index("-out") + 1]).write_text(json.dumps(out))

    monkeypatch.setattr(coco_eval.subprocess, "check_call", fake_jar)
    gts = {"b": ["a cat on a mat"], "a": ["a dog", "a big dog"]}
    res = {"b": "a cat", "a": "a dog"}
    mean, per_image = coco_eval.spice(gts, res)
    assert [e["refs"] for e in seen["entries"]] == [["a cat on a mat"], ["a dog", "a big dog"]]
    assert [e["test"] for e in seen["entries"]] == ["a cat", "a dog"]
    assert list(per_image) == ["b", "a"]
    assert per_image["a"]["All"]["f"] == pytest.approx(recorded[1]["scores"]["All"]["f"])
    scores, images = evaluate_captions(gts, res, metrics=["SPICE"], per_image=True)
    assert scores["SPICE"] == pytest.approx(mean) and images["SPICE"]["a"] == per_image["a"]["All"]["f"]
