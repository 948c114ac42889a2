import random

import pytest
import torch

from velm_course.data.captions import CaptionVocab
from velm_course.data.shapes import (
    ShapesConfig,
    captions_for,
    content_accuracy,
    oracle_captions,
    sample_scene,
)
from velm_course.eval.captioning import caption_images, score_split
from velm_course.multimodal.captioner import Captioner, CaptionerConfig
from velm_course.plots import plot_caption_grid, plot_loss_curves, plot_seed_architecture


def scenes_and_refs(n=30, seed=0):
    rng, cfg = random.Random(seed), ShapesConfig(image_size=64, n_train=1, n_val=1, n_test=1)
    scenes = {i: sample_scene(rng, cfg) for i in range(n)}
    refs = {i: captions_for(objs, rng) for i, objs in scenes.items()}
    return scenes, refs


def test_content_accuracy_counts_exact_object_sets():
    scenes = {1: [{"color": "red", "shape": "circle"}, {"color": "blue", "shape": "square"}],
              2: [{"color": "green", "shape": "star"}]}
    assert content_accuracy({1: "a blue box and a red disc", 2: "a green star"}, scenes) == 1.0
    assert content_accuracy({1: "a red circle", 2: "a green star and a red star"}, scenes) == 0.0


def test_oracle_is_right_but_worded_differently():
    scenes, refs = scenes_and_refs()
    oracle = oracle_captions(scenes)
    scores = score_split(oracle, refs, lambda caps: {"content_accuracy": content_accuracy(caps, scenes)})
    assert scores["content_accuracy"] == 1.0
    assert all(oracle[i] not in refs[i] and oracle[i].startswith("this is ") for i in scenes)
    assert 0 < scores["CIDEr"] < 10  # right content, yet far from a perfect n-gram match


def test_score_split_keys():
    scenes, refs = scenes_and_refs(5)
    scores = score_split({i: r[0] for i, r in refs.items()}, refs, lambda caps: {"content_accuracy": 1.0})
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "content_accuracy"}
    # a dataset without content scores (COCO) gets the n-gram metrics only
    assert "content_accuracy" not in score_split({i: r[0] for i, r in refs.items()}, refs)


def test_caption_images_matches_generate_for_uint8_and_float():
    torch.manual_seed(0)
    vocab = CaptionVocab.build(["a red circle", "a blue box"])
    model = Captioner(CaptionerConfig(vocab_size=len(vocab), d_model=16, n_layer=1, n_head=2, max_len=6)).eval()
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    texts = caption_images(model, images, vocab, batch_size=2)
    expected = [vocab.decode(row) for row in model.generate(images.float() / 255).tolist()]
    assert texts == expected
    assert caption_images(model, images.float() / 255, vocab) == expected


@pytest.mark.parametrize("name", ["loss", "grid", "architecture"])
def test_figures_are_written(tmp_path, name):
    import matplotlib

    matplotlib.use("Agg")
    path = tmp_path / f"{name}.png"
    if name == "loss":
        fig = plot_loss_curves({"a": [{"step": s, "loss": 1 / s, **({"val_loss": 2 / s} if s % 5 == 0 else {})}
                                      for s in range(1, 30)]}, path)
        labels = [line.get_label() for line in fig.axes[0].lines]
        assert labels == ["a (train)", "a (validation)"]
    elif name == "grid":
        plot_caption_grid(torch.zeros(3, 3, 64, 64, dtype=torch.uint8), ["x"] * 3, [["y"]] * 3, path)
    else:
        plot_seed_architecture(path)
    assert path.read_bytes()[:4] == b"\x89PNG"
