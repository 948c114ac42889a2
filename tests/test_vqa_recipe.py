"""Pretrain -> fine-tune on a tiny shapes dataset, and the Hugging Face VQA model's loading code
run offline on a small random ViLT saved to disk."""

import pytest
import torch
from PIL import Image

from velm_course.data.shapes import QUESTION_TYPES, ShapesConfig, ensure_shapes
from velm_course.multimodal import vqa_recipe
from velm_course.multimodal.vqa_recipe import (
    VQARecipe,
    evaluate_vqa,
    finetune,
    load_shapes_vqa,
    new_vqa_model,
    pretrained_for_vqa,
)

RECIPE = VQARecipe(d_model=16, n_head=2, pretrain_steps=4, pretrain_batch_size=8)


@pytest.fixture(scope="module")
def data(tiny_vqa_data):  # conftest.py: 40 training images, a random frozen CNN
    return tiny_vqa_data[1]


def test_load_shapes_vqa(data):
    assert set(data.features) == {"train", "val", "test", "compositional"}
    grid, pooled = data.features["train"]
    assert grid.shape[:1] == pooled.shape[:1] == (40,) and data.image_dim == 16
    assert data.captions.shape[:2] == (40, 5)
    for split, q in data.questions.items():
        assert int(q.image.max()) < len(data.image_ids[split])
    # every training word has an id; training answers are all in the answer vocabulary
    assert data.vocab.stoi.keys() >= {"what", "color", "is", "there", "circle"}
    assert (data.questions["train"].answer != 0).all()


def test_pretrained_for_vqa_trains_once_then_loads(data, tmp_path, monkeypatch):
    model, history, path = pretrained_for_vqa(data, RECIPE, "shapes_cnn-test.pt", cache_dir=tmp_path,
                                              progress=False)
    assert path.startswith(str(tmp_path)) and history[-1]["step"] == RECIPE.pretrain_steps
    assert {"loss_text", "loss_contrastive", "loss_itm"} <= history[-1].keys()

    def must_not_train(*args, **kwargs):
        raise AssertionError("pretrained again instead of loading the cached weights")

    monkeypatch.setattr(vqa_recipe, "pretrain", must_not_train)
    again, history2, path2 = pretrained_for_vqa(data, RECIPE, "shapes_cnn-test.pt", cache_dir=tmp_path)
    assert path2 == path and history2 == history
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        if torch.is_tensor(a):
            assert torch.equal(a, b), name
    # other encoder weights, other settings: another file (here: would pretrain again)
    with pytest.raises(AssertionError, match="pretrained again"):
        pretrained_for_vqa(data, RECIPE, "shapes_cnn-other.pt", cache_dir=tmp_path)


def test_shipped_weights_are_used_unless_refused(data, tmp_path, monkeypatch):
    shipped_dir, cache = tmp_path / "shipped", tmp_path / "cache"
    _, _, made = pretrained_for_vqa(data, RECIPE, "shapes_cnn-test.pt", cache_dir=shipped_dir, progress=False)
    monkeypatch.setattr(vqa_recipe, "REPO_PRETRAINED", shipped_dir)  # as if the course shipped those weights
    _, _, path = pretrained_for_vqa(data, RECIPE, "shapes_cnn-test.pt", cache_dir=cache, progress=False)
    assert path == made and not cache.exists()
    _, _, path = pretrained_for_vqa(data, RECIPE, "shapes_cnn-test.pt", cache_dir=cache, progress=False,
                                    shipped=False)
    assert path.startswith(str(cache))  # trained here instead


def test_finetune_and_evaluate(data, tmp_path):
    pretrainer, _, _ = pretrained_for_vqa(data, RECIPE, "shapes_cnn-test.pt", cache_dir=tmp_path, progress=False)
    start = {k: v.clone() for k, v in pretrainer.itm_fusion.state_dict().items()}
    model = new_vqa_model(data, RECIPE, pretrainer, seed=1)
    history = finetune(model, data, steps=6, seed=0, fraction=0.5, batch_size=8, eval_every=3)
    assert [h["step"] for h in history] == [3, 6] and all(0 <= h["val_accuracy"] <= 1 for h in history)
    # fine-tuning changed the model's copy, never the pretrainer
    assert all(torch.equal(v, start[k]) for k, v in pretrainer.itm_fusion.state_dict().items())
    assert not all(torch.equal(v, start[k]) for k, v in model.fusion.state_dict().items())
    scores = evaluate_vqa(model, data, "compositional")
    assert set(scores["per_type"]) <= set(QUESTION_TYPES) and scores["n"] == len(data.questions["compositional"])
    assert set(scores["predictions"]) == set(data.questions["compositional"].question_id)
    frozen = new_vqa_model(data, RECIPE, pretrainer, seed=1).freeze_pretrained()
    finetune(frozen, data, steps=2, seed=0, batch_size=8, pretrained_lr_ratio=None)
    assert all(torch.equal(v, start[k]) for k, v in frozen.fusion.state_dict().items())


def test_blind_and_deaf_models_from_scratch(data):
    for inputs in ("question", "image"):
        model = new_vqa_model(data, RECIPE, inputs=inputs, seed=0)
        assert model.config.inputs == inputs and model.config.vocab_size == len(data.vocab)


# ---------------------------------------------------------------------------------------------
# Hugging Face ViLT: the real loading code, on a small random model saved to disk

def tiny_vilt(folder):
    from transformers import (
        BertTokenizerFast,
        ViltConfig,
        ViltForQuestionAnswering,
        ViltImageProcessor,
        ViltProcessor,
    )

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "how", "many", "cats", "are", "there", "what", "color",
             "is", "the", "bed", "?"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    processor = ViltProcessor(image_processor=ViltImageProcessor(size={"shortest_edge": 64}, size_divisor=32),
                              tokenizer=tokenizer)
    labels = ["yes", "no", "2", "white"]
    config = ViltConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, image_size=64, patch_size=32, max_position_embeddings=40,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={a: i for i, a in enumerate(labels)})
    torch.manual_seed(0)
    ViltForQuestionAnswering(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return labels


def test_hf_vqa_from_a_local_folder(tmp_path):
    from velm_course.multimodal.hf_vqa import hf_answer, load_hf_vqa

    labels = tiny_vilt(tmp_path)
    processor, model = load_hf_vqa(str(tmp_path))
    assert not model.training
    photos = [Image.new("RGB", (90, 60), (200, 30, 30)), Image.new("L", (50, 80), 128)]  # any size, any mode
    out = hf_answer(processor, model, photos, ["how many cats are there?", "what color is the bed?"], top_k=2)
    assert len(out) == 2 and all(len(top) == 2 for top in out)
    for top in out:
        assert all(a in labels and 0 <= p <= 1 for a, p in top) and top[0][1] >= top[1][1]
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        hf_answer(processor, model, photos, ["how many cats are there?"])


def test_hf_vqa_offline_names_the_reason(monkeypatch):
    from velm_course.multimodal.hf_vqa import load_hf_vqa
    from velm_course.text import hf_encoder

    monkeypatch.setattr(hf_encoder, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(RuntimeError, match="hub cannot be reached"):
        load_hf_vqa("dandelin/vilt-b32-finetuned-vqa")


@pytest.mark.parametrize("name", ["course_vit", "resnet18"])
def test_any_image_encoder(tmp_path, name):
    """The VQA model reads whatever (grid, pooled) an encoder of ``encoders`` gives."""
    from velm_course.vision.encoders import build_image_encoder

    root = ensure_shapes(ShapesConfig(image_size=48, n_train=10, n_val=4, n_test=4, seed=5), data_root=tmp_path,
                         progress=False)
    torch.manual_seed(0)
    encoder = build_image_encoder(name, d_model=24, image_size=48)
    data = load_shapes_vqa(root, encoder, splits=("train", "val"))
    assert data.image_dim == 24
    model = new_vqa_model(data, VQARecipe(d_model=16, n_head=2), seed=0)
    history = finetune(model, data, steps=2, seed=0, batch_size=4, eval_every=2)
    assert 0 <= history[-1]["val_accuracy"] <= 1
